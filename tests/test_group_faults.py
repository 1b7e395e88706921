"""Task groups under cancellation from odd places and failures of their own machinery.

Regression tests: each pins a case that once hung, lost an error or left a
phantom child behind.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from typing import Any

import pytest

import cohort
from _util import now, ok, start
from cohort import ChildStatus

S = ChildStatus


async def forever() -> None:
    await asyncio.Event().wait()


# -- a deadline held back by a shield in the body ----------------------------------


@pytest.mark.virtual_clock
@pytest.mark.parametrize("kind", ["move_on_after", "fail_after", "cancel"])
async def test_held_back_cancellation_raised_at_shield_exit_stops_the_group(kind: str) -> None:
    """The cancellation raised at a shield's exit in the body cancels the children."""
    outer = cohort.fail_after(1) if kind == "fail_after" else cohort.move_on_after(1)
    if kind == "cancel":
        outer = cohort.CancelScope()
    caught: list[BaseException] = []
    try:
        with outer:
            async with cohort.TaskGroup() as g:
                g.spawn(forever)
                if kind == "cancel":
                    outer.cancel()
                with cohort.CancelScope(shield=True):
                    await asyncio.sleep(2)
    except TimeoutError as exc:
        caught.append(exc)
    assert outer.cancel_called
    assert (kind == "fail_after") == bool(caught)
    assert now() == 2  # not later: the group did not wait for `forever`
    assert [o.status for o in g.outcomes] == [S.CANCELLED]


# -- children of a group whose host sits in a shield --------------------------------


async def sleep_and_note_the_end(ended: list[float]) -> None:
    """Sleep 10 s; note when the sleep ended, whichever way."""
    try:
        await asyncio.sleep(10)
    finally:
        ended.append(now())


@pytest.mark.virtual_clock
async def test_outer_deadline_cancels_children_while_the_host_is_shielded() -> None:
    """anyio's test_cancel_child_task_when_host_is_shielded: children are not shielded."""
    cancelled_at: list[float] = []
    child = functools.partial(sleep_and_note_the_end, cancelled_at)

    with cohort.move_on_after(1) as outer:
        async with cohort.TaskGroup() as g:
            g.spawn(child)
            with cohort.CancelScope(shield=True):
                await asyncio.sleep(3)
                host_ran_until = now()
    assert outer.cancelled_caught
    assert cancelled_at == [1]
    assert host_ran_until == 3
    assert [o.status for o in g.outcomes] == [S.CANCELLED]


@pytest.mark.virtual_clock
async def test_parent_group_cancelling_a_shielded_host_cancels_its_children() -> None:
    """A whole-task cancellation held back by the host's shield still stops the children."""
    cancelled_at: list[float] = []
    child = functools.partial(sleep_and_note_the_end, cancelled_at)

    async def host() -> None:
        async with cohort.TaskGroup() as inner:
            inner.spawn(child)
            with cohort.CancelScope(shield=True):
                await asyncio.sleep(3)

    async with cohort.TaskGroup(join=cohort.FirstWins()) as outer:
        outer.spawn(host)
        outer.spawn(ok, "fast", 1)
    assert outer.result == "fast"
    assert cancelled_at == [1]
    assert now() == 3


@pytest.mark.virtual_clock
async def test_group_inside_the_shield_is_not_cancelled_by_the_outer_deadline() -> None:
    with cohort.move_on_after(1) as outer, cohort.CancelScope(shield=True):
        async with cohort.TaskGroup() as g:
            g.spawn(ok, "done", 3)
    assert g.results == ["done"]
    assert outer.cancelled_caught
    assert now() == 3


# -- BaseExceptions other than KeyboardInterrupt/SystemExit -------------------------


class MyBaseError(BaseException):
    pass


def error_types(exc: BaseException) -> set[type[BaseException]]:
    assert isinstance(exc, BaseExceptionGroup)
    found: set[type[BaseException]] = set()
    for e in exc.exceptions:
        found |= error_types(e) if isinstance(e, BaseExceptionGroup) else {type(e)}
    return found


async def test_body_base_exception_keeps_the_child_error() -> None:
    """CPython's test_taskgroup_20a: both errors in one BaseExceptionGroup."""

    async def crash_soon() -> None:
        await asyncio.sleep(0)
        1 / 0  # noqa: B018

    with pytest.raises(BaseExceptionGroup) as info:
        async with cohort.TaskGroup() as g:
            g.spawn(crash_soon)
            try:
                await forever()
            finally:
                raise MyBaseError
    assert error_types(info.value) == {MyBaseError, ZeroDivisionError}


@pytest.mark.parametrize("join", [cohort.Gather(), cohort.Settle(), cohort.Quorum(2)])
async def test_child_base_exception_is_raised_with_the_body_error(join: Any) -> None:
    """CPython's test_taskgroup_21a; no policy swallows a BaseException."""

    async def crash_soon() -> None:
        await asyncio.sleep(0)
        raise MyBaseError

    with pytest.raises(BaseExceptionGroup) as info:
        async with cohort.TaskGroup(join=join) as g:
            g.spawn(crash_soon)
            g.spawn(forever)
            try:
                await forever()
            finally:
                raise TypeError
    assert error_types(info.value) == {MyBaseError, TypeError}


async def test_optional_child_base_exception_is_raised() -> None:
    async def crash() -> None:
        raise MyBaseError

    with pytest.raises(BaseExceptionGroup) as info:
        async with cohort.TaskGroup() as g:
            g.spawn(crash, critical=False)
            g.spawn(forever)
    assert error_types(info.value) == {MyBaseError}


async def test_keyboard_interrupt_is_still_raised_bare() -> None:
    async def crash_soon() -> None:
        await asyncio.sleep(0)
        1 / 0  # noqa: B018

    with pytest.raises(KeyboardInterrupt):
        async with cohort.TaskGroup() as g:
            g.spawn(crash_soon)
            try:
                await forever()
            finally:
                raise KeyboardInterrupt


# -- spawn when no task can be made --------------------------------------------------


def _refusing_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
    raise RuntimeError("no tasks today")


async def test_spawn_propagates_task_creation_failure_and_records_nothing() -> None:
    loop = asyncio.get_running_loop()
    made: list[Any] = []

    async def child() -> None:
        pass

    def make() -> Any:
        made.append(child())
        return made[-1]

    async with cohort.TaskGroup() as g:
        loop.set_task_factory(_refusing_factory)
        try:
            with pytest.raises(RuntimeError, match="no tasks today"):
                g.spawn(make)
        finally:
            loop.set_task_factory(None)
        assert g.handles == []
        assert g.pending == 0
    assert g.outcomes == []
    assert inspect.getcoroutinestate(made[0]) == inspect.CORO_CLOSED


async def test_queued_child_whose_task_cannot_be_made_fails() -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Event()

    async def child() -> None:
        pass

    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup(limit=1) as g:
            g.spawn(gate.wait)
            g.spawn(child)
            loop.set_task_factory(_refusing_factory)
            try:
                gate.set()
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            finally:
                loop.set_task_factory(None)
    assert [type(e) for e in info.value.exceptions] == [RuntimeError]
    assert [o.status for o in g.outcomes] == [S.SUCCEEDED, S.FAILED]


async def test_spawning_a_coroutine_into_a_closed_group_closes_it() -> None:
    async with cohort.TaskGroup() as g:
        pass
    coro = ok(1, 0)
    with pytest.raises(RuntimeError, match="it has exited"):
        g.spawn(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


async def test_spawning_a_coroutine_with_a_bad_timeout_closes_it() -> None:
    async with cohort.TaskGroup() as g:
        coro = ok(1, 0)
        with pytest.raises(ValueError, match="timeout"):
            g.spawn(coro, timeout=-1)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


async def test_spawn_from_another_thread_raises() -> None:
    errors: list[BaseException] = []

    async with cohort.TaskGroup() as g:

        def other_thread() -> None:
            try:
                g.spawn(forever)
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1
    assert "outside its event loop's thread" in str(errors[0])
    assert g.handles == []


def test_spawn_from_the_loops_thread_while_the_loop_is_stopped_runs_when_it_resumes(
    how: str,
) -> None:
    # The check is for the thread (as asyncio.TaskGroup allows it): the child is
    # scheduled on the group's loop and runs once the loop runs again.
    loop = asyncio.new_event_loop()
    ran: list[str] = []
    groups: list[cohort.TaskGroup] = []

    async def child() -> None:
        ran.append("child")

    async def body(gate: asyncio.Future[None]) -> None:
        async with cohort.TaskGroup() as g:
            groups.append(g)
            await gate

    try:
        gate = loop.create_future()
        task = loop.create_task(body(gate))
        loop.run_until_complete(asyncio.sleep(0))  # the body waits at the gate
        loop.call_soon(gate.set_result, None)
        start(groups[0], how, child)  # from this thread, between runs of the loop
        loop.run_until_complete(task)
    finally:
        loop.close()
    assert ran == ["child"]
    assert groups[0].statistics().succeeded == 1


# -- a child that raised CancelledError on its own -----------------------------------


async def _cancelled_elsewhere() -> Any:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.cancel)
    return await future


async def test_gather_never_returns_a_shorter_list() -> None:
    with pytest.raises(ExceptionGroup) as info:
        await cohort.gather(ok("a", 0), _cancelled_elsewhere(), ok("c", 0))
    (error,) = info.value.exceptions
    assert isinstance(error, RuntimeError)
    assert "raised CancelledError without being cancelled" in str(error)
    assert isinstance(error.__cause__, asyncio.CancelledError)


async def test_self_cancelled_child_is_a_failure_in_settle() -> None:
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        g.spawn(ok, "a", 0)
        g.spawn(_cancelled_elsewhere)
    assert [o.status for o in g.outcomes] == [S.SUCCEEDED, S.FAILED]
    assert isinstance(g.errors[0], RuntimeError)


async def test_child_cancelled_by_the_group_is_still_cancelled() -> None:
    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        g.spawn(ok, "a", 0)
        g.spawn(forever)
    assert [o.status for o in g.outcomes] == [S.SUCCEEDED, S.CANCELLED]


# -- errors win over a raw outside cancellation, which is not lost (gh-116720) -------------


async def test_a_raw_cancel_that_lost_to_child_errors_arrives_at_the_next_await() -> None:
    ready = asyncio.Event()
    after: list[str] = []

    async def boom() -> None:
        ready.set()
        await asyncio.sleep(0)
        raise RuntimeError("child failed")

    async def host() -> None:
        try:
            async with cohort.TaskGroup() as g:
                g.spawn(boom)
                await asyncio.sleep(1)
        except* RuntimeError:
            after.append("errors caught")
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 1  # the outside cancellation is still counted
        await asyncio.sleep(0.1)  # ... and is delivered here
        after.append("ran on")

    task = asyncio.ensure_future(host())
    await ready.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert after == ["errors caught"]


async def test_a_scope_cancel_that_lost_to_child_errors_is_caught_by_its_scope() -> None:
    ready = asyncio.Event()

    async def boom() -> None:
        ready.set()
        await asyncio.sleep(0)
        raise RuntimeError("child failed")

    with cohort.CancelScope() as scope:
        try:
            async with cohort.TaskGroup() as g:
                g.spawn(boom)
                await ready.wait()
                scope.cancel()
                await asyncio.sleep(1)
        except* RuntimeError:
            pass
        await asyncio.sleep(1)  # the scope's cancellation, delivered again
        pytest.fail("the scope's cancellation was lost")
    assert scope.cancelled_caught
    task = asyncio.current_task()
    assert task is not None
    assert task.cancelling() == 0
