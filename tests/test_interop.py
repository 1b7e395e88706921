"""cohort inside foreign scopes, and foreign scopes inside cohort.

Foreign: anyio (on its asyncio backend) cancel scopes, ``fail_after``,
``move_on_after`` and task groups; ``asyncio.timeout``; ``asyncio.TaskGroup``;
a plain ``task.cancel()``. In every combination each scope catches exactly
its own cancellation (``asyncio.timeout`` and anyio's ``fail_after`` still
raise ``TimeoutError``, cohort's ``move_on_after`` stays silent) and
``Task.cancelling()`` is what it was before the block.

Shields: ``cohort.CancelScope(shield=True)`` holds back cancellation that comes
from cohort scopes and groups around it (also for awaits after the outer
deadline passed) and delivers it when the shield exits. It is NOT a
protection against cancellation from outside cohort: a raw ``task.cancel()``,
``asyncio.timeout``, an ``asyncio.TaskGroup`` or an anyio scope cancel the
task as usual, straight through the shield. The other way round, an anyio
shield entered inside a cohort scope (or in a group's child) holds back
cohort's cancellation until it exits, as anyio's own scopes would be.

Everything runs on the virtual clock, so times are asserted exactly; events
order tasks, never sleeps.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import pytest

import cohort
from _util import now
from cohort.testing import VirtualClockLoop, run, wait_all_tasks_blocked

T = TypeVar("T")


def anyio_run(main: Callable[[], Awaitable[T]]) -> T:
    """``anyio.run`` on the asyncio backend, on a virtual-clock loop."""
    return anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualClockLoop})


def cancelling() -> int:
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


class Tracker:
    """Children that sleep, recording their tasks, so that a test can check all finished."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []
        self.cancelled: list[str] = []

    async def sleep(self, name: str, seconds: float) -> str:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        return name

    def all_done(self) -> bool:
        return all(t.done() for t in self.tasks)


# --------------------------------------------------------------------------- anyio around cohort

# Regression: when the cancellation reaches a TaskGroup while it waits in
# __aexit__ (the body has finished), the group must re-raise the CancelledError
# it caught, not a new one: anyio recognises its own cancellation by the
# message ("Cancelled via cancel scope ..."), and would let a bare one escape.


def test_anyio_move_on_after_around_a_cohort_group_cancels_and_awaits_children() -> None:
    """anyio.move_on_after around a TaskGroup: children cancelled and awaited, anyio catches."""
    tracker = Tracker()

    async def main() -> None:
        handles: list[cohort.Handle[str]] = []
        with anyio.move_on_after(1.5) as anyio_scope:
            async with cohort.TaskGroup() as g:
                handles.append(g.spawn(tracker.sleep, "a", 1))
                handles.append(g.spawn(tracker.sleep, "b", 5))
        assert anyio_scope.cancelled_caught
        assert now() == 1.5
        assert tracker.all_done()
        assert [h.status for h in handles] == [
            cohort.ChildStatus.SUCCEEDED,
            cohort.ChildStatus.CANCELLED,
        ]
        assert cancelling() == 0

    anyio_run(main)


def test_anyio_fail_after_around_a_cohort_group_raises_timeout_error() -> None:
    """anyio.fail_after around a TaskGroup still raises TimeoutError at its deadline."""
    tracker = Tracker()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(2):
                async with cohort.TaskGroup(cohort.Settle()) as g:
                    g.spawn(tracker.sleep, "a", 10)
        assert now() == 2
        assert tracker.all_done()
        assert tracker.cancelled == ["a"]
        assert cancelling() == 0

    anyio_run(main)


def test_anyio_cancel_scope_cancelled_by_hand_around_a_cohort_group() -> None:
    """CancelScope.cancel() of anyio from another task stops a TaskGroup; counts balance."""
    tracker = Tracker()
    reached: list[bool] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def runner() -> None:
                with scope:
                    async with cohort.TaskGroup() as g:
                        g.spawn(tracker.sleep, "a", 10)
                reached.append(scope.cancelled_caught)
                assert cancelling() == 0

            tg.start_soon(runner)
            await anyio.sleep(3)
            scope.cancel()
        assert reached == [True]
        assert now() == 3
        assert tracker.all_done()

    anyio_run(main)


@pytest.mark.parametrize(
    ("cohort_delay", "anyio_delay"), [(1, 2), (2, 1)], ids=["cohort-first", "anyio-first"]
)
def test_cohort_move_on_after_inside_anyio_move_on_after(
    cohort_delay: float, anyio_delay: float
) -> None:
    """cohort scope inside an anyio scope: each catches only its own deadline."""

    async def main() -> None:
        with anyio.move_on_after(anyio_delay) as outer:
            with cohort.move_on_after(cohort_delay) as inner:
                await asyncio.sleep(10)
            assert now() == cohort_delay
            await asyncio.sleep(10)
        assert inner.cancelled_caught == (cohort_delay < anyio_delay)
        assert outer.cancelled_caught
        assert now() == anyio_delay
        assert cancelling() == 0

    anyio_run(main)


@pytest.mark.parametrize(
    ("cohort_delay", "anyio_delay"), [(1, 2), (2, 1)], ids=["cohort-first", "anyio-first"]
)
def test_anyio_move_on_after_inside_cohort_move_on_after(
    cohort_delay: float, anyio_delay: float
) -> None:
    """anyio scope inside a cohort scope: each catches only its own deadline."""

    async def main() -> None:
        with cohort.move_on_after(cohort_delay) as outer:
            with anyio.move_on_after(anyio_delay) as inner:
                await asyncio.sleep(10)
            assert now() == anyio_delay
            await asyncio.sleep(10)
        assert inner.cancelled_caught == (anyio_delay < cohort_delay)
        assert outer.cancelled_caught
        assert now() == cohort_delay
        assert cancelling() == 0

    anyio_run(main)


def test_cohort_fail_after_inside_anyio_move_on_after_raises_only_its_own_timeout() -> None:
    """cohort.fail_after inside anyio.move_on_after: cohort raises TimeoutError, anyio stays out."""

    async def main() -> None:
        with anyio.move_on_after(5) as outer:
            with pytest.raises(TimeoutError), cohort.fail_after(1):
                await asyncio.sleep(10)
            assert now() == 1
        assert not outer.cancel_called
        assert cancelling() == 0
        # and anyio's deadline first: cohort.fail_after raises nothing, anyio catches.
        with anyio.move_on_after(1) as outer:
            with cohort.fail_after(5) as inner:
                await asyncio.sleep(10)
        assert outer.cancelled_caught
        assert not inner.cancel_called
        assert not inner.cancelled_caught
        assert now() == 2
        assert cancelling() == 0

    anyio_run(main)


def test_anyio_fail_after_around_cohort_move_on_after_raises_timeout_error() -> None:
    """anyio.fail_after firing around a cohort scope raises TimeoutError; cohort does not catch."""

    async def main() -> None:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(1):
                with cohort.move_on_after(5) as inner:
                    await asyncio.sleep(10)
        assert not inner.cancelled_caught
        assert now() == 1
        assert cancelling() == 0

    anyio_run(main)


async def _cleanup_takes_a_second(log: list[str]) -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        log.append(f"cancelled at {now()}")
        await asyncio.sleep(1)  # cleanup: a cancellation is delivered once
        log.append(f"cleaned up at {now()}")
        raise


async def _cleanup_in_steps(log: list[str]) -> None:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        log.append(f"cancelled at {now()}")
        for _ in range(3):
            await asyncio.sleep(0)  # cleanup: a cancellation is delivered once
        log.append(f"cleaned up at {now()}")
        raise


def test_anyio_scope_around_a_group_lets_a_cancelled_child_clean_up() -> None:
    """anyio re-cancels its host task every iteration; the group cancels each child only once.

    (The cleanup takes no time on purpose: while anyio retries its cancellation
    there is always something runnable, so the virtual clock cannot jump.)
    """
    log: list[str] = []

    async def main() -> None:
        with anyio.move_on_after(1) as scope:
            async with cohort.TaskGroup() as g:
                g.spawn(_cleanup_in_steps, log)
        assert scope.cancelled_caught
        assert log == ["cancelled at 1.0", "cleaned up at 1.0"]
        assert now() == 1

    anyio_run(main)


@pytest.mark.parametrize("cohort_outside", [True, False], ids=["cohort-outside", "anyio-outside"])
def test_same_deadline_for_anyio_fail_after_and_cohort_scope_the_outer_one_wins(
    cohort_outside: bool,
) -> None:
    """anyio.fail_after and cohort.fail_after at the same instant: only the outer one raises."""

    async def main() -> None:
        scopes: list[Any] = [cohort.fail_after(1), anyio.fail_after(1)]
        if not cohort_outside:
            scopes.reverse()
        with pytest.raises(TimeoutError), scopes[0] as outer, scopes[1] as inner:
            await asyncio.sleep(5)
        assert not inner.cancelled_caught
        assert outer.cancelled_caught
        assert now() == 1
        assert cancelling() == 0

    anyio_run(main)


def test_quorum_reached_while_the_body_awaits_inside_an_anyio_scope() -> None:
    """Quorum reached: the group stops its body through an anyio scope; the block exits silently."""

    async def main() -> None:
        async with cohort.TaskGroup(cohort.Quorum(1)) as g:
            g.spawn(asyncio.sleep, 1, "a")
            with anyio.move_on_after(5) as inner:
                await asyncio.sleep(10)
            raise AssertionError("the body goes on after being stopped")
        assert not inner.cancelled_caught
        assert g.results == ["a"]
        assert now() == 1
        assert cancelling() == 0

    anyio_run(main)


# --------------------------------------------------------------------------- cohort around anyio


def test_cohort_move_on_after_around_an_anyio_task_group() -> None:
    """A cohort deadline cancels an anyio task group's children; the cohort scope catches."""
    tracker = Tracker()

    async def main() -> None:
        with cohort.move_on_after(2) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(tracker.sleep, "a", 10)
                tg.start_soon(tracker.sleep, "b", 1)
        assert scope.cancelled_caught
        assert now() == 2
        assert sorted(tracker.cancelled) == ["a"]
        assert tracker.all_done()
        assert cancelling() == 0

    anyio_run(main)


def test_cohort_fail_after_around_anyio_move_on_after() -> None:
    """cohort.fail_after around anyio.move_on_after: each scope catches only its own deadline."""

    async def main() -> None:
        with cohort.fail_after(5):
            with anyio.move_on_after(1) as inner:
                await asyncio.sleep(10)
        assert inner.cancelled_caught
        assert now() == 1
        with pytest.raises(TimeoutError), cohort.fail_after(1):
            with anyio.move_on_after(5) as inner:
                await asyncio.sleep(10)
        assert not inner.cancelled_caught
        assert now() == 2
        assert cancelling() == 0

    anyio_run(main)


def test_cohort_group_child_uses_anyio_scopes_and_task_groups() -> None:
    """Inside a cohort child, anyio scopes and task groups work and do not disturb the group."""

    async def child() -> str:
        with anyio.move_on_after(1) as scope:
            await asyncio.sleep(10)
        assert scope.cancelled_caught
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 2)
        return "ok"

    async def main() -> None:
        async with cohort.TaskGroup() as g:
            h = g.spawn(child)
        assert h.result() == "ok"
        assert now() == 3
        assert cancelling() == 0

    anyio_run(main)


def test_cohort_group_inside_an_anyio_task_group_child_that_is_cancelled() -> None:
    """An anyio task group cancelling a sibling running a TaskGroup: the group's children stop."""
    tracker = Tracker()

    async def failing() -> None:
        await anyio.sleep(1)
        raise ValueError("sibling failed")

    async def runs_group() -> None:
        async with cohort.TaskGroup() as g:
            g.spawn(tracker.sleep, "a", 10)

    async def main() -> None:
        with pytest.raises(ExceptionGroup) as info:
            async with anyio.create_task_group() as tg:
                tg.start_soon(runs_group)
                tg.start_soon(failing)
        assert info.group_contains(ValueError, match="sibling failed")
        assert now() == 1
        assert tracker.cancelled == ["a"]
        assert tracker.all_done()
        assert cancelling() == 0

    anyio_run(main)


# --------------------------------------------------------------------------- asyncio.timeout


def test_asyncio_timeout_around_a_cohort_group_raises_timeout_error() -> None:
    """asyncio.timeout around a TaskGroup: TimeoutError, children cancelled, counts balanced."""
    tracker = Tracker()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                async with cohort.TaskGroup(cohort.Quorum(2)) as g:
                    g.spawn(tracker.sleep, "a", 1)
                    g.spawn(tracker.sleep, "b", 3)
                    g.spawn(tracker.sleep, "c", 4)
        assert now() == 1.5
        assert sorted(tracker.cancelled) == ["b", "c"]
        assert tracker.all_done()
        assert [h.status for h in g.handles] == [
            cohort.ChildStatus.SUCCEEDED,
            cohort.ChildStatus.CANCELLED,
            cohort.ChildStatus.CANCELLED,
        ]
        assert cancelling() == 0

    run(main)


@pytest.mark.parametrize(
    ("cohort_delay", "asyncio_delay"), [(1, 2), (2, 1)], ids=["cohort-first", "asyncio-first"]
)
def test_asyncio_timeout_and_cohort_scopes_nest_both_ways(
    cohort_delay: float, asyncio_delay: float
) -> None:
    """asyncio.timeout and cohort.move_on_after nested either way: only the one that fired acts."""

    async def main() -> None:
        first = min(cohort_delay, asyncio_delay)
        # asyncio.timeout outside
        start = now()
        raised = False
        try:
            async with asyncio.timeout(asyncio_delay):
                with cohort.move_on_after(cohort_delay) as scope:
                    await asyncio.sleep(10)
                assert now() - start == cohort_delay
                await asyncio.sleep(10)
        except TimeoutError:
            raised = True
        assert raised
        assert scope.cancelled_caught == (cohort_delay < asyncio_delay)
        assert now() - start == asyncio_delay
        assert cancelling() == 0

        # cohort outside
        start = now()
        with cohort.move_on_after(cohort_delay) as scope:
            try:
                async with asyncio.timeout(asyncio_delay):
                    await asyncio.sleep(10)
            except TimeoutError:
                assert asyncio_delay < cohort_delay
                assert now() - start == first
            await asyncio.sleep(10)
        assert scope.cancelled_caught
        assert now() - start == cohort_delay
        assert cancelling() == 0

    run(main)


def test_asyncio_timeout_inside_a_cohort_child() -> None:
    """asyncio.timeout inside a child: its TimeoutError is the child's failure."""

    async def child() -> None:
        async with asyncio.timeout(1):
            await asyncio.sleep(10)

    async def main() -> None:
        async with cohort.TaskGroup(cohort.Settle()) as g:
            h = g.spawn(child)
        assert h.status is cohort.ChildStatus.FAILED
        assert isinstance(h.exception(), TimeoutError)
        assert now() == 1

    run(main)


def test_asyncio_timeout_around_a_group_lets_a_cancelled_child_clean_up() -> None:
    """asyncio.timeout around a TaskGroup: the child is cancelled once and its cleanup runs."""
    log: list[str] = []

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1), cohort.TaskGroup() as g:
                g.spawn(_cleanup_takes_a_second, log)
        assert log == ["cancelled at 1.0", "cleaned up at 2.0"]
        assert now() == 2
        assert cancelling() == 0

    run(main)


@pytest.mark.parametrize("cohort_outside", [True, False], ids=["cohort-outside", "asyncio-outside"])
def test_same_deadline_for_asyncio_timeout_and_cohort_scope_the_outer_one_wins(
    cohort_outside: bool,
) -> None:
    """Both deadlines at the same instant: the outer scope handles it, the inner one stays out."""

    async def main() -> None:
        if cohort_outside:
            with cohort.move_on_after(1) as scope:
                async with asyncio.timeout(1):
                    await asyncio.sleep(5)
            assert scope.cancelled_caught
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(1):
                    with cohort.move_on_after(1) as scope:
                        await asyncio.sleep(5)
            assert not scope.cancelled_caught
        assert now() == 1
        assert cancelling() == 0

    run(main)


# --------------------------------------------------------------------------- asyncio.TaskGroup


def asyncio_task_group_leftover() -> int:
    """What a failing asyncio.TaskGroup alone leaves in ``cancelling()`` (1 on 3.11: CPython's
    TaskGroup does not uncancel its parent when the failure came during __aexit__)."""

    async def failing() -> None:
        await asyncio.sleep(1)
        raise ValueError("boom")

    async def main() -> int:
        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(asyncio.sleep(10))
                tg.create_task(failing())
        return cancelling()

    return run(main)


def test_asyncio_task_group_around_a_cohort_group() -> None:
    """A failing asyncio.TaskGroup sibling cancels a task in a TaskGroup; its children stop."""
    leftover = asyncio_task_group_leftover()
    tracker = Tracker()

    async def failing() -> None:
        await asyncio.sleep(1)
        raise ValueError("boom")

    async def runs_group() -> None:
        async with cohort.TaskGroup() as g:
            g.spawn(tracker.sleep, "a", 10)

    async def main() -> None:
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(runs_group())
                tg.create_task(failing())
        assert info.group_contains(ValueError, match="boom")
        assert tracker.cancelled == ["a"]
        assert tracker.all_done()
        assert now() == 1
        assert cancelling() == leftover

    run(main)


def test_asyncio_task_group_inside_a_cohort_scope() -> None:
    """A cohort deadline around an asyncio.TaskGroup cancels its tasks; cohort catches."""
    tracker = Tracker()

    async def main() -> None:
        with cohort.move_on_after(2) as scope:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(tracker.sleep("a", 10))
                tg.create_task(tracker.sleep("b", 1))
        assert scope.cancelled_caught
        assert now() == 2
        assert tracker.cancelled == ["a"]
        assert tracker.all_done()
        assert cancelling() == 0

    run(main)


def test_asyncio_task_group_inside_a_cohort_child_cancelled_by_its_group() -> None:
    """FirstWins cancels a loser that runs an asyncio.TaskGroup: that group's tasks stop."""
    tracker = Tracker()

    async def loser() -> str:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(tracker.sleep("inner", 10))
        return "loser"

    async def main() -> None:
        async with cohort.TaskGroup(cohort.FirstWins()) as g:
            g.spawn(loser)
            g.spawn(tracker.sleep, "winner", 1)
        assert g.result == "winner"
        assert tracker.cancelled == ["inner"]
        assert tracker.all_done()
        assert now() == 1

    run(main)


def test_cohort_group_inside_asyncio_task_group_child_with_cohort_timeout() -> None:
    """A TaskGroup timeout inside an asyncio.TaskGroup child fails that child only."""
    leftover = asyncio_task_group_leftover()

    async def runs_group() -> None:
        async with cohort.TaskGroup(timeout=1) as g:
            g.spawn(asyncio.sleep, 10)

    async def main() -> None:
        with pytest.raises(ExceptionGroup) as info:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(runs_group())
                tg.create_task(asyncio.sleep(5))
        assert info.group_contains(TimeoutError)
        assert now() == 1
        assert cancelling() == leftover

    run(main)


# --------------------------------------------------------------------------- raw task.cancel()


def test_raw_cancel_goes_through_a_cohort_scope_and_is_not_caught() -> None:
    """task.cancel() on a task inside a cohort scope propagates; the scope does not catch it."""

    async def inner(entered: asyncio.Event) -> None:
        with cohort.move_on_after(10):
            entered.set()
            await asyncio.sleep(20)
        raise AssertionError("not reached")

    async def main() -> None:
        entered = asyncio.Event()
        task = asyncio.create_task(inner(entered))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelling() == 1
        assert now() == 0

    run(main)


def test_raw_cancel_of_a_task_running_a_cohort_group() -> None:
    """task.cancel() on a task in a TaskGroup: children cancelled and awaited, cancel propagates."""
    tracker = Tracker()
    seen: list[int] = []

    async def runs_group(entered: asyncio.Event) -> None:
        try:
            async with cohort.TaskGroup(cohort.Settle()) as g:
                g.spawn(tracker.sleep, "a", 10)
                g.spawn(tracker.sleep, "b", 10)
                entered.set()
        finally:
            seen.append(cancelling())

    async def main() -> None:
        entered = asyncio.Event()
        task = asyncio.create_task(runs_group(entered))
        await entered.wait()
        await wait_all_tasks_blocked()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sorted(tracker.cancelled) == ["a", "b"]
        assert tracker.all_done()
        assert seen == [1]

    run(main)


def test_raw_cancel_and_cohort_deadline_together_the_raw_cancel_propagates() -> None:
    """A raw cancel in the same instant as a cohort deadline: the scope must not swallow it."""

    async def victim(started: asyncio.Event) -> None:
        with cohort.move_on_after(1):
            started.set()
            await asyncio.sleep(10)
        await asyncio.sleep(10)  # must not be reached: the raw cancel is pending

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(victim(started))
        await started.wait()
        await asyncio.sleep(1)  # wakes at the deadline, in the same iteration as the timer
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert now() == 1

    run(main)


def test_raw_cancel_caught_inside_a_cohort_scope_keeps_counts() -> None:
    """A raw cancel caught (and uncancelled) inside a cohort scope leaves the scope working."""

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        with cohort.move_on_after(2) as scope:
            asyncio.get_running_loop().call_later(1, task.cancel)
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                task.uncancel()
            assert now() == 1
            await asyncio.sleep(10)
        assert scope.cancelled_caught
        assert now() == 2
        assert cancelling() == 0

    run(main)


# --------------------------------------------------------------------------- shields


def test_shield_holds_back_a_cohort_deadline_across_awaits_and_delivers_on_exit() -> None:
    """Shielded awaits run past the outer deadline; the held cancellation ends the block at exit."""
    reached: list[str] = []

    async def main() -> None:
        with cohort.move_on_after(1) as outer:
            with cohort.CancelScope(shield=True):
                await asyncio.sleep(2)
                reached.append("after the deadline")
                await asyncio.sleep(1)  # an await after the deadline, still shielded
                reached.append("second await")
            reached.append("after the shield")  # not reached: delivered at the shield's exit
        assert outer.cancelled_caught
        assert now() == 3
        assert reached == ["after the deadline", "second await"]
        assert cancelling() == 0

    run(main)


def test_shield_entered_after_the_outer_deadline_passed_holds_it_back() -> None:
    """A shield entered when the outer deadline has already passed still shields its awaits."""

    async def main() -> None:
        with cohort.move_on_after(0) as outer:
            with cohort.CancelScope(shield=True):
                await asyncio.sleep(1)
                await asyncio.sleep(1)
            raise AssertionError("the held cancellation is raised at the shield's exit")
        assert outer.cancelled_caught
        assert now() == 2
        assert cancelling() == 0

    run(main)


def test_shield_holds_back_a_cohort_group_cancelling_its_child() -> None:
    """A shielded child of a FirstWins group finishes its block, then ends CANCELLED."""
    reached: list[float] = []

    async def shielded() -> str:
        with cohort.CancelScope(shield=True):
            await asyncio.sleep(3)
            reached.append(now())
        await asyncio.sleep(10)
        return "slow"

    async def main() -> None:
        async with cohort.TaskGroup(cohort.FirstWins()) as g:
            h = g.spawn(shielded)
            g.spawn(asyncio.sleep, 1, "fast")
        assert g.result == "fast"
        assert h.status is cohort.ChildStatus.CANCELLED
        assert reached == [3]
        assert now() == 3

    run(main)


def test_shield_holds_back_a_group_timeout() -> None:
    """A group's timeout waits for a child's shielded block, then the child ends TIMED_OUT."""

    async def shielded() -> None:
        with cohort.CancelScope(shield=True):
            await asyncio.sleep(2)
        await asyncio.sleep(10)

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with cohort.TaskGroup(timeout=1) as g:
                h = g.spawn(shielded)
        assert h.status is cohort.ChildStatus.TIMED_OUT
        assert now() == 2
        assert cancelling() == 0

    run(main)


def test_shield_is_no_protection_against_raw_task_cancel() -> None:
    """task.cancel() reaches the task inside a shield at once (shields hold back cohort only)."""

    async def victim(started: asyncio.Event) -> None:
        with cohort.CancelScope(shield=True):
            started.set()
            await asyncio.sleep(10)

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(victim(started))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert now() == 0

    run(main)


def test_shield_is_no_protection_against_asyncio_timeout() -> None:
    """asyncio.timeout around a shield fires inside it and still raises TimeoutError."""

    async def main() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                with cohort.CancelScope(shield=True):
                    await asyncio.sleep(10)
        assert now() == 1
        assert cancelling() == 0

    run(main)


def test_shield_is_no_protection_against_anyio_scopes() -> None:
    """anyio.move_on_after around a cohort shield cancels inside it; anyio catches."""

    async def main() -> None:
        with anyio.move_on_after(1) as outer:
            with cohort.CancelScope(shield=True):
                await asyncio.sleep(10)
        assert outer.cancelled_caught
        assert now() == 1
        assert cancelling() == 0

    anyio_run(main)


def test_shield_inside_anyio_and_cohort_scopes_holds_only_cohort() -> None:
    """anyio outside, cohort deadline, shield: the cohort deadline waits, anyio's does not."""

    async def main() -> None:
        with (
            anyio.move_on_after(3) as anyio_scope,
            cohort.move_on_after(1) as cohort_scope,
            cohort.CancelScope(shield=True),
        ):
            await asyncio.sleep(10)
        assert anyio_scope.cancelled_caught
        assert now() == 3
        assert cohort_scope.cancel_called
        assert not cohort_scope.cancelled_caught
        assert cancelling() == 0

    anyio_run(main)


def test_held_cancellation_is_delivered_when_the_shield_exits_with_an_error() -> None:
    """A shield left by an error: the error propagates; if caught, the next await is cancelled."""

    async def main() -> None:
        with cohort.move_on_after(1) as outer:
            try:
                with cohort.CancelScope(shield=True):
                    await asyncio.sleep(2)
                    raise ValueError("inside the shield")
            except ValueError:
                pass
            await asyncio.sleep(10)  # cancelled: the held cancellation lands here
        assert outer.cancelled_caught
        assert now() == 2
        assert cancelling() == 0

    run(main)


def test_nested_shields_deliver_only_when_the_outermost_shield_exits() -> None:
    """Two shields: the inner one exiting does not deliver; the outer one does."""
    reached: list[float] = []

    async def main() -> None:
        with cohort.move_on_after(1) as outer:
            with cohort.CancelScope(shield=True):
                with cohort.CancelScope(shield=True):
                    await asyncio.sleep(2)
                await asyncio.sleep(1)
                reached.append(now())
            reached.append(-1)
        assert outer.cancelled_caught
        assert reached == [3]
        assert now() == 3
        assert cancelling() == 0

    run(main)


def test_shield_own_deadline_applies_and_catches_itself() -> None:
    """A shield's own deadline still cancels its block; the outer deadline then ends the rest."""

    async def main() -> None:
        with cohort.move_on_after(1) as outer:
            with cohort.move_on_after(2, shield=True) as shield:
                await asyncio.sleep(10)
            assert shield.cancelled_caught
            await asyncio.sleep(10)
        assert outer.cancelled_caught
        assert now() == 2
        assert cancelling() == 0

    run(main)


def test_current_deadline_stops_at_a_shield() -> None:
    """current_deadline() inside a shield ignores the outer cohort deadline."""

    async def main() -> None:
        with cohort.move_on_after(1):
            assert cohort.current_deadline() == 1
            with cohort.CancelScope(shield=True):
                assert cohort.current_deadline() == math.inf

    run(main)


def test_shield_delivers_a_held_group_cancellation_once() -> None:
    """After a shield releases a group's cancellation, cleanup awaits are not cancelled again."""
    log: list[str] = []

    async def child() -> None:
        try:
            with cohort.CancelScope(shield=True):
                await asyncio.sleep(2)
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            log.append(f"cancelled at {now()}")
            await asyncio.sleep(1)  # cleanup: a cancellation is delivered once
            log.append(f"cleaned up at {now()}")
            raise

    async def main() -> None:
        async with cohort.TaskGroup(cohort.FirstWins()) as g:
            h = g.spawn(child)
            g.spawn(asyncio.sleep, 1, "fast")
        assert h.status is cohort.ChildStatus.CANCELLED
        assert log == ["cancelled at 2.0", "cleaned up at 3.0"]

    run(main)


def test_group_cancellation_held_by_a_shield_inside_a_cancelled_scope_is_not_lost() -> None:
    """A child's shield holds both its own scope's deadline and the group's cancellation:
    both are delivered at the shield's exit, and the child ends CANCELLED."""
    log: list[str] = []

    async def loser() -> str:
        with cohort.move_on_after(1), cohort.CancelScope(shield=True):
            await asyncio.sleep(3)
        log.append(f"went on at {now()}")
        await asyncio.sleep(100)
        return "loser"

    async def main() -> None:
        async with cohort.TaskGroup(cohort.FirstWins()) as g:
            h = g.spawn(loser)
            g.spawn(asyncio.sleep, 2, "fast")
        assert g.result == "fast"
        assert h.status is cohort.ChildStatus.CANCELLED
        assert now() == 3
        assert log == []

    run(main)


# ----------------------------------------------------------------- anyio shields inside cohort


def test_anyio_shield_holds_back_a_cohort_deadline_until_it_exits() -> None:
    """A cohort deadline does not pierce an anyio shield entered inside it (httpcore's and
    Starlette's shielded cleanup): it is delivered shortly after the shield exits."""

    async def main() -> None:
        finished_shielded_work = False
        with cohort.move_on_after(1) as scope:
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(5)
                finished_shielded_work = True
            await asyncio.sleep(100)
        assert finished_shielded_work
        assert scope.cancelled_caught
        assert 5 <= now() < 5.1  # retried every few ms after the shield exits
        assert cancelling() == 0

    anyio_run(main)


def test_anyio_shield_holds_back_a_deadline_entered_before_any_task_held_anyio_state() -> None:
    """Plain asyncio, no anyio task: the scope is entered while anyio holds no task
    state (its look-ups skipped); the anyio shield entered afterwards still counts."""

    async def main() -> None:
        with cohort.move_on_after(1) as scope:
            await asyncio.sleep(0)
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(5)
            await asyncio.sleep(100)
        assert scope.cancelled_caught
        assert 5 <= now() < 5.1  # retried every few ms after the shield exits

    run(main)


def test_anyio_shield_holds_back_a_deadline_while_another_task_holds_anyio_state() -> None:
    """Another task holds anyio state, this one none when its scope is entered: the
    anyio shield it enters afterwards still counts (no answer is kept for a task that
    anyio knows nothing about yet)."""

    async def main() -> None:
        release = asyncio.Event()

        async def hold() -> None:
            with anyio.CancelScope():
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        with cohort.move_on_after(1) as scope:
            await asyncio.sleep(0)
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(5)
            await asyncio.sleep(100)
        assert scope.cancelled_caught
        assert 5 <= now() < 5.1  # retried every few ms after the shield exits
        release.set()
        await holder

    run(main)


def test_anyio_scopes_are_read_afresh_in_a_task_anyio_already_knows() -> None:
    """In an anyio task, each cohort scope reads anyio's innermost scope at its entry:
    a shield outside it does not hold it back, one inside does, in any order."""

    async def main() -> None:
        with cohort.move_on_after(1) as first:  # anyio's state of the task found here
            await asyncio.sleep(10)
        assert first.cancelled_caught
        assert now() == 1
        with anyio.CancelScope(shield=True), cohort.move_on_after(1) as outside:
            await asyncio.sleep(10)
        assert outside.cancelled_caught
        assert now() == 2
        with cohort.move_on_after(1) as inside:
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(5)
            await asyncio.sleep(100)
        assert inside.cancelled_caught
        assert 7 <= now() < 7.1

    anyio_run(main)


def test_cohort_deadline_inside_an_anyio_shield_still_fires() -> None:
    """Only anyio shields entered inside the cohort scope hold it back."""

    async def main() -> None:
        with anyio.CancelScope(shield=True), cohort.move_on_after(1) as scope:
            await asyncio.sleep(10)
        assert scope.cancelled_caught
        assert now() == 1

    anyio_run(main)


def test_group_child_in_anyio_to_thread_is_not_abandoned_by_its_timeout() -> None:
    """A child waiting in ``anyio.to_thread.run_sync`` (shielded by anyio) is cancelled
    after the thread returns, never while it still runs: the group does not return
    while the thread is working."""

    async def main() -> None:
        release = __import__("threading").Event()
        finished: list[str] = []

        def blocking() -> str:
            release.wait(30)
            finished.append("thread")
            return "done"

        async def child() -> str:
            result = await anyio.to_thread.run_sync(blocking)
            finished.append("after thread")
            await asyncio.sleep(100)
            return result

        async def releaser() -> None:
            await asyncio.sleep(2)  # well past the child's timeout
            release.set()

        async with cohort.TaskGroup(cohort.Settle()) as g:
            h = g.spawn(child, timeout=0.5)
            g.spawn(releaser)
        assert finished == ["thread", "after thread"]
        assert h.status is cohort.ChildStatus.TIMED_OUT

    asyncio.run(main())


def test_a_group_cancelling_a_child_waits_for_the_childs_anyio_shield() -> None:
    async def main() -> None:
        cleaned: list[float] = []

        async def child() -> None:
            try:
                await asyncio.sleep(100)
            finally:
                with anyio.CancelScope(shield=True):
                    await asyncio.sleep(3)  # e.g. closing a connection politely
                    cleaned.append(now())

        async def failing() -> None:
            await asyncio.sleep(1)
            raise ValueError("boom")

        async with cohort.TaskGroup(cohort.Settle()) as g:
            g.spawn(child)
            g.spawn(failing)
            await asyncio.sleep(1.5)
            g.cancel()
        assert cleaned == [4.5]

    anyio_run(main)


def test_a_group_cancel_waits_for_an_anyio_shield_the_child_is_in() -> None:
    async def main() -> None:
        done: list[float] = []

        async def child() -> None:
            with anyio.CancelScope(shield=True):
                await asyncio.sleep(3)
                done.append(now())
            await asyncio.sleep(100)

        async with cohort.TaskGroup() as g:
            h = g.spawn(child)
            await asyncio.sleep(1)
            g.cancel()
        assert done == [pytest.approx(3)]  # polls on the virtual clock round it
        assert h.status is cohort.ChildStatus.CANCELLED
        assert now() < 3.1

    anyio_run(main)


def test_a_group_decision_waits_for_an_anyio_shield_in_the_body() -> None:
    """The group's scope is entered only when it decides: the body, then inside an
    anyio shield, is cancelled once the shield has exited."""

    async def main() -> None:
        shielded_until: list[float] = []

        async def failing() -> None:
            await asyncio.sleep(1)
            raise ValueError("boom")

        with pytest.raises(ExceptionGroup):
            async with cohort.TaskGroup() as g:
                g.spawn(failing)
                with anyio.CancelScope(shield=True):
                    await asyncio.sleep(3)
                    shielded_until.append(now())
                await asyncio.sleep(100)
        assert shielded_until == [pytest.approx(3)]
        assert now() < 3.1

    anyio_run(main)


def test_a_deadline_held_by_an_anyio_shield_in_a_group_body_cancels_the_children() -> None:
    """An enclosing scope's deadline passes while the body of a group (no timeout of
    its own) sits in an anyio shield: the group's children are cancelled then."""

    async def main() -> None:
        with cohort.move_on_after(1) as scope:
            async with cohort.TaskGroup() as g:
                h = g.spawn(asyncio.sleep, 100)
                with anyio.CancelScope(shield=True):
                    await asyncio.sleep(3)
                await asyncio.sleep(100)
        assert scope.cancelled_caught
        assert h.status is cohort.ChildStatus.CANCELLED
        assert h.outcome().ended == pytest.approx(1, abs=0.1)
        assert now() < 3.1

    anyio_run(main)
