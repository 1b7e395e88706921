"""Task groups and join policies (cohort._core._group, cohort._core._policies)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import math
from typing import Any

import pytest

import cohort
from _util import bad, closed, now, ok, start
from cohort import ChildStatus, Decision
from cohort._core._coros import spawn_hook
from cohort.testing import wait_all_tasks_blocked

S = ChildStatus


def statuses(g: cohort.TaskGroup) -> list[ChildStatus]:
    return [o.status for o in g.outcomes]


# -- basics (run on asyncio and uvloop) ------------------------------------------


async def test_empty_group_exits_at_once() -> None:
    async with cohort.TaskGroup() as g:
        pass
    assert g.results == []
    assert g.outcomes == []


async def test_gather_results_in_spawn_order() -> None:
    gate = asyncio.Event()

    async def wait_then(value: int) -> int:
        await gate.wait()
        return value

    async with cohort.TaskGroup() as g:
        for i in range(5):
            g.spawn(wait_then, i)
        gate.set()
    assert g.results == [0, 1, 2, 3, 4]
    assert statuses(g) == [S.SUCCEEDED] * 5


async def test_spawn_accepts_coroutine_objects_and_partial() -> None:
    async def kw(a: int, *, b: int) -> int:
        return a + b

    async with cohort.TaskGroup() as g:
        h1 = g.spawn(ok(1, 0))
        h2 = g.spawn(functools.partial(kw, 1, b=2))
    assert h1.result() == 1
    assert h2.result() == 3


async def test_spawn_validates_arguments_at_call_site() -> None:
    def not_async(x: int) -> int:
        return x

    async with cohort.TaskGroup() as g:
        with pytest.raises(TypeError, match="async function"):
            g.spawn(not_async, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="coroutine object and arguments"):
            g.spawn(ok(1), 2)
        with pytest.raises(TypeError, match="async callable"):
            g.spawn(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            g.spawn(ok, 1, timeout=-1)


def test_constructor_validates_arguments() -> None:
    with pytest.raises(TypeError, match=r"Gather\(\)"):
        cohort.TaskGroup(join=cohort.Gather)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JoinPolicy"):
        cohort.TaskGroup(join="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        cohort.TaskGroup(limit=0)
    with pytest.raises(ValueError, match="timeout"):
        cohort.TaskGroup(timeout=-1)
    with pytest.raises(ValueError, match="on_timeout"):
        cohort.TaskGroup(on_timeout="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Quorum\(k\) must be an int >= 1"):
        cohort.Quorum(0)


def test_constructor_validates_on_timeout_of_another_type() -> None:
    with pytest.raises(TypeError, match="on_timeout"):
        cohort.TaskGroup(on_timeout=1)  # type: ignore[arg-type]
    assert cohort.TaskGroup(on_timeout="".join(["par", "tial"])).statistics().phase == "new"  # type: ignore[arg-type]


def test_groups_without_join_share_one_gather() -> None:
    first, second = cohort.TaskGroup(), cohort.TaskGroup()
    assert type(first.policy) is cohort.Gather
    assert first.policy is second.policy
    assert cohort.TaskGroup(join=cohort.Gather()).policy is not first.policy


async def test_spawn_before_enter_and_after_exit_raise() -> None:
    g = cohort.TaskGroup(name="g1")
    with pytest.raises(RuntimeError, match="enter it"):
        g.spawn(ok, 1)
    async with g:
        pass
    with pytest.raises(RuntimeError, match=r"'g1'.*exited"):
        g.spawn(ok, 1)
    with pytest.raises(RuntimeError, match="already been entered"):
        async with g:
            pass


async def test_handle_is_awaitable_and_awaiting_never_cancels_the_child() -> None:
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "done"

    async with cohort.TaskGroup() as g:
        h = g.spawn(slow, name="slow")
        waiter = asyncio.create_task(h.__await__().__next__() and asyncio.sleep(0))
        waiter.cancel()
        assert h.status is S.RUNNING
        assert not h.done()
        with pytest.raises(asyncio.InvalidStateError):
            h.result()
        gate.set()
        assert await h == "done"
    assert h.name == "slow"
    assert h.exception() is None


async def test_handle_wait_returns_the_outcome_without_raising() -> None:
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        failing = g.spawn(bad, "x", 0)
        fine = g.spawn(ok, 7, 0)
        outcome = await failing.wait()
        assert outcome.status is S.FAILED
        assert isinstance(outcome.error, ValueError)
        assert (await fine.wait()).value == 7


async def test_child_failure_cancels_siblings_and_body_gather(how: str) -> None:
    gate = asyncio.Event()
    body_reached_end = False

    async def wait_forever() -> None:
        await gate.wait()

    async def fail_now() -> None:
        raise ValueError("boom")

    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup() as g:
            start(g, how, wait_forever)
            start(g, how, fail_now)
            await gate.wait()
            body_reached_end = True
    assert not body_reached_end
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert statuses(g) == [S.CANCELLED, S.FAILED]


async def test_body_error_cancels_children_and_is_raised_in_a_group(how: str) -> None:
    gate = asyncio.Event()
    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup() as g:
            start(g, how, gate.wait)
            await asyncio.sleep(0)
            raise KeyError("body")
    assert [type(e) for e in info.value.exceptions] == [KeyError]
    assert statuses(g) == [S.CANCELLED]


async def test_keyboard_interrupt_in_body_is_reraised_bare(how: str) -> None:
    gate = asyncio.Event()
    with pytest.raises(KeyboardInterrupt):
        async with cohort.TaskGroup() as g:
            start(g, how, gate.wait)
            await asyncio.sleep(0)
            raise KeyboardInterrupt
    assert statuses(g) == [S.CANCELLED]


def test_keyboard_interrupt_in_child_is_reraised_bare(how: str) -> None:
    async def interrupt() -> None:
        raise KeyboardInterrupt

    async def main() -> None:
        async with cohort.TaskGroup() as g:
            start(g, how, interrupt)
            start(g, how, asyncio.sleep, 10)

    with pytest.raises(KeyboardInterrupt):
        cohort.testing.run(main)


async def test_handle_cancel_is_not_a_failure() -> None:
    gate = asyncio.Event()
    async with cohort.TaskGroup() as g:
        h = g.spawn(gate.wait)
        g.spawn(ok, 1, 0)
        await asyncio.sleep(0)
        assert h.cancel()
    assert h.status is S.CANCELLED
    assert not h.cancel()
    with pytest.raises(asyncio.CancelledError):
        h.result()
    with pytest.raises(asyncio.CancelledError):
        h.exception()
    assert g.results == [1]


async def test_cancel_the_whole_group_exits_normally(how: str) -> None:
    gate = asyncio.Event()
    async with cohort.TaskGroup() as g:
        start(g, how, gate.wait)
        g.cancel()
        await gate.wait()  # the body is cancelled too
    assert statuses(g) == [S.CANCELLED]


async def test_errors_raised_while_cancelling_are_not_lost(how: str) -> None:
    gate = asyncio.Event()

    async def bad_cleanup() -> None:
        try:
            await gate.wait()
        finally:
            raise RuntimeError("cleanup failed")

    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("first")

    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup() as g:
            start(g, how, bad_cleanup)
            start(g, how, fail)
    assert {type(e) for e in info.value.exceptions} == {ValueError, RuntimeError}


async def test_settle_records_errors_never_raises() -> None:
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        g.spawn(ok, 1, 0)
        g.spawn(bad, "x", 0)
        g.spawn(ok, 3, 0)
    assert g.results == [1, 3]
    assert [str(e) for e in g.errors] == ["x"]
    assert statuses(g) == [S.SUCCEEDED, S.FAILED, S.SUCCEEDED]


async def test_optional_failure_never_fails_the_group() -> None:
    async with cohort.TaskGroup() as g:
        g.spawn(bad, "optional", 0, critical=False)
        g.spawn(ok, 1, 0)
    assert g.results == [1]
    assert [str(e) for e in g.errors] == ["optional"]


async def test_only_optional_children_are_tied_to_the_body() -> None:
    gate = asyncio.Event()
    async with cohort.TaskGroup() as g:
        h = g.spawn(gate.wait, critical=False)
        await asyncio.sleep(0)
    assert h.status is S.CANCELLED


async def test_spawn_from_a_child_after_body_finished() -> None:
    async def parent(g: cohort.TaskGroup) -> str:
        await asyncio.sleep(0)
        g.spawn(ok, "grandchild", 0)
        return "parent"

    async with cohort.TaskGroup() as g:
        g.spawn(parent, g)
    assert g.results == ["parent", "grandchild"]


@pytest.mark.virtual_clock
async def test_statistics_elapsed_counts_from_entry_and_is_zero_before() -> None:
    g = cohort.TaskGroup(name="g")
    assert (g.statistics().phase, g.statistics().elapsed) == ("new", 0.0)
    await asyncio.sleep(3)  # time before entry does not count
    async with g:
        await asyncio.sleep(2)
        assert g.statistics().elapsed == 2
    assert (g.statistics().phase, g.statistics().elapsed) == ("closed", 2)


@pytest.mark.virtual_clock
async def test_custom_policy_two_successes_or_three_failures() -> None:
    class TwoOrThreeStrikes(cohort.JoinPolicy):
        def on_child_done(self, group: cohort.GroupView, handle: cohort.ChildView) -> Decision:
            if group.succeeded >= 2:
                return Decision.DONE
            if group.failed >= 3:
                return Decision.FAIL
            return Decision.CONTINUE

    async with cohort.TaskGroup(join=TwoOrThreeStrikes()) as g:
        for i in range(5):
            g.spawn(ok, i, i + 1)
    assert g.results == [0, 1]

    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup(join=TwoOrThreeStrikes()) as g:
            for i in range(3):
                g.spawn(bad, str(i), 0)
            g.spawn(asyncio.Event().wait)
    assert len(info.value.exceptions) == 3
    assert statuses(g)[-1] is S.CANCELLED


async def test_nested_groups_inner_failure_propagates_out() -> None:
    async def inner() -> None:
        async with cohort.TaskGroup(name="inner") as g:
            g.spawn(bad, "deep", 0)

    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup(name="outer") as g:
            g.spawn(inner)
    nested = info.value.exceptions[0]
    assert isinstance(nested, ExceptionGroup)
    assert str(nested.exceptions[0]) == "deep"


# -- virtual clock: quorum, limits, timeouts, cancellation ------------------------

vc = pytest.mark.virtual_clock


@vc
async def test_quorum_done_when_k_succeed_results_in_completion_order() -> None:
    async with cohort.TaskGroup(join=cohort.Quorum(2)) as g:
        for value, delay in (("a", 3), ("b", 1), ("c", 2), ("d", 5)):
            g.spawn(ok, value, delay)
    assert g.results == ["b", "c"]
    assert now() == 2
    assert statuses(g) == [S.CANCELLED, S.SUCCEEDED, S.SUCCEEDED, S.CANCELLED]


@vc
async def test_quorum_reached_while_body_still_runs_cancels_body_silently() -> None:
    after_sleep = False
    async with cohort.TaskGroup(join=cohort.Quorum(1)) as g:
        g.spawn(ok, 1, 1)
        await asyncio.sleep(0.5)
        g.spawn(ok, 2, 2)
        await asyncio.sleep(100)
        after_sleep = True
    assert not after_sleep
    assert g.results == [1]
    assert now() == 1


@vc
async def test_quorum_unreachable_raises_as_soon_as_certain() -> None:
    with pytest.raises(cohort.QuorumError) as info:
        async with cohort.TaskGroup(join=cohort.Quorum(3)) as g:
            g.spawn(ok, 1, 1)
            g.spawn(bad, "x", 2)
            g.spawn(bad, "y", 3)
            g.spawn(ok, 4, 10)
    err = info.value
    assert now() == 3
    assert err.needed == 3
    assert err.successes == [1]
    assert sorted(str(e) for e in err.exceptions) == ["x", "y"]
    assert statuses(g)[-1] is S.CANCELLED


@vc
async def test_quorum_larger_than_children_fails_when_the_body_ends() -> None:
    with pytest.raises(cohort.QuorumError) as info:
        async with cohort.TaskGroup(join=cohort.Quorum(3)) as g:
            g.spawn(ok, 1, 1)
    assert "not enough children" in str(info.value.exceptions[0])
    assert info.value.successes == []
    assert now() == 0
    assert statuses(g) == [S.CANCELLED]


@vc
async def test_cancelled_child_counts_against_quorum() -> None:
    with pytest.raises(cohort.QuorumError):
        async with cohort.TaskGroup(join=cohort.Quorum(2)) as g:
            g.spawn(ok, 1, 1)
            h = g.spawn(ok, 2, 5)
            await asyncio.sleep(0)
            h.cancel()


@vc
async def test_quorum_error_counts_cancelled_children_apart_from_failed() -> None:
    with pytest.raises(cohort.QuorumError) as info:
        async with cohort.TaskGroup(join=cohort.Quorum(2), name="reads") as g:
            handles = [g.spawn(ok, i, 5) for i in range(3)]
            await asyncio.sleep(0)
            for h in handles:
                h.cancel()
    err = info.value
    assert (err.failed, err.cancelled) == (0, 3)
    assert str(err).startswith(
        "reads: quorum of 2 unreachable (0 succeeded, 0 failed, 3 cancelled of 3)"
    )
    assert statuses(g) == [S.CANCELLED] * 3


@vc
async def test_quorum_error_counts_children_the_group_cancelled_as_cancelled() -> None:
    with pytest.raises(cohort.QuorumError) as info:
        async with cohort.TaskGroup(join=cohort.Quorum(3), name="reads") as g:
            g.spawn(ok, 1, 1)
            g.spawn(bad, "x", 2)
            g.spawn(bad, "y", 3)
            g.spawn(ok, 4, 10)  # cancelled by the group at 3: the quorum is out of reach
    err = info.value
    assert (err.failed, err.cancelled, len(err.exceptions)) == (2, 1, 2)
    assert "(1 succeeded, 2 failed, 1 cancelled of 4)" in str(err)
    # ExceptionGroup.split keeps the counts.
    matched, _ = err.split(ValueError)
    assert isinstance(matched, cohort.QuorumError)
    assert (matched.failed, matched.cancelled) == (2, 1)


@vc
async def test_first_wins_takes_first_success() -> None:
    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        g.spawn(bad, "fast failure", 0.5)
        g.spawn(ok, "slow", 3)
        g.spawn(ok, "winner", 2)
    assert g.result == "winner"
    assert now() == 2


@vc
async def test_first_wins_all_fail_raises_quorum_error() -> None:
    with pytest.raises(cohort.QuorumError) as info:
        async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
            g.spawn(bad, "a", 1)
            g.spawn(bad, "b", 2)
    assert now() == 2
    assert len(info.value.exceptions) == 2
    with pytest.raises(LookupError):
        _ = g.result


@vc
async def test_limit_runs_at_most_n_and_starts_in_spawn_order() -> None:
    running = 0
    peak = 0
    started: list[int] = []

    async def work(i: int) -> int:
        nonlocal running, peak
        started.append(i)
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(1)
        running -= 1
        return i

    async with cohort.TaskGroup(limit=2) as g:
        handles = [g.spawn(work, i) for i in range(5)]
        assert [h.status for h in handles] == [S.RUNNING] * 2 + [S.PENDING] * 3
    assert peak == 2
    assert started == [0, 1, 2, 3, 4]
    assert now() == 3
    assert g.results == [0, 1, 2, 3, 4]


@vc
async def test_limit_with_failures_cancels_queued_children(how: str) -> None:
    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup(limit=1) as g:
            start(g, how, bad, "first", 1)
            start(g, how, ok, 2, 1)
            start(g, how, ok, 3, 1)
    assert statuses(g) == [S.FAILED, S.CANCELLED, S.CANCELLED]
    assert now() == 1


@vc
async def test_limit_with_settle_keeps_going_after_failures() -> None:
    async with cohort.TaskGroup(join=cohort.Settle(), limit=2) as g:
        for i in range(4):
            g.spawn(bad if i % 2 else ok, str(i), 1)
    assert g.results == ["0", "2"]
    assert len(g.errors) == 2
    assert now() == 2


@vc
async def test_cancelling_a_queued_child_never_runs_it() -> None:
    ran: list[int] = []

    async def work(i: int) -> None:
        ran.append(i)
        await asyncio.sleep(1)

    async with cohort.TaskGroup(limit=1) as g:
        g.spawn(work, 0)
        queued = g.spawn(work, 1)
        assert queued.cancel()
    assert ran == [0]
    assert queued.status is S.CANCELLED


@vc
async def test_group_timeout_raise() -> None:
    with pytest.raises(TimeoutError):
        async with cohort.TaskGroup(timeout=1.5) as g:
            g.spawn(ok, 1, 1)
            g.spawn(ok, 2, 5)
            await asyncio.sleep(10)
    assert now() == 1.5
    assert statuses(g) == [S.SUCCEEDED, S.TIMED_OUT]
    assert g.timed_out


@vc
async def test_group_timeout_with_failures_raises_group_with_timeout_error() -> None:
    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup(join=cohort.Gather(), timeout=2) as g:
            g.spawn(bad, "x", 1, critical=True)
            g.spawn(ok, 2, 5)
            await asyncio.sleep(0.5)
    # Gather fails fast at t=1 on the error: no timeout involved.
    assert [type(e) for e in info.value.exceptions] == [ValueError]
    assert now() == 1

    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup(join=cohort.Gather(), timeout=2) as g:
            g.spawn(bad, "x", 1, timeout=0.5)
            g.spawn(ok, 2, 5)
    assert [type(e) for e in info.value.exceptions] == [TimeoutError]


@vc
async def test_group_timeout_partial_exits_with_what_completed() -> None:
    async with cohort.TaskGroup(join=cohort.Quorum(3), timeout=2, on_timeout="partial") as g:
        g.spawn(ok, "a", 1)
        g.spawn(ok, "b", 3)
        g.spawn(ok, "c", 4)
    assert g.results == ["a"]
    assert statuses(g) == [S.SUCCEEDED, S.TIMED_OUT, S.TIMED_OUT]
    assert now() == 2


@vc
async def test_group_timeout_zero_times_out_at_first_await(how: str) -> None:
    with pytest.raises(TimeoutError):
        async with cohort.TaskGroup(timeout=0) as g:
            start(g, how, ok, 1, 1)
            await asyncio.sleep(1)
    assert statuses(g) == [S.TIMED_OUT]
    assert now() == 0


@vc
async def test_group_timeout_while_waiting_in_exit(how: str) -> None:
    async with cohort.TaskGroup(timeout=3, on_timeout="partial") as g:
        start(g, how, ok, 1, 10)
    assert now() == 3
    assert statuses(g) == [S.TIMED_OUT]


@vc
async def test_child_timeout_is_a_failure_and_starts_when_the_child_starts() -> None:
    async with cohort.TaskGroup(join=cohort.Settle(), limit=1) as g:
        g.spawn(ok, "first", 2)
        g.spawn(ok, "second", 1, timeout=1.5)  # starts at t=2, so it makes it
        g.spawn(ok, "third", 5, timeout=1)
    assert statuses(g) == [S.SUCCEEDED, S.SUCCEEDED, S.TIMED_OUT]
    assert isinstance(g.errors[0], TimeoutError)
    assert now() == 4
    third = g.outcomes[2]
    assert (third.started, third.ended) == (3, 4)


@vc
async def test_child_timeout_fails_gather(how: str) -> None:
    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup() as g:
            start(g, how, ok, 1, 5, timeout=1)
    assert isinstance(info.value.exceptions[0], TimeoutError)
    assert now() == 1


@vc
async def test_outside_cancellation_cancels_children_and_propagates() -> None:
    task = asyncio.current_task()
    assert task is not None
    with cohort.move_on_after(2) as outer:
        async with cohort.TaskGroup() as g:
            g.spawn(ok, 1, 10)
            g.spawn(ok, 2, 1)
    assert outer.cancelled_caught
    assert statuses(g) == [S.CANCELLED, S.SUCCEEDED]
    assert task.cancelling() == 0
    assert now() == 2


@vc
async def test_outside_cancellation_while_waiting_in_exit(how: str) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2), cohort.TaskGroup() as g:
            start(g, how, ok, 1, 10)
    assert statuses(g) == [S.CANCELLED]


@vc
async def test_outside_task_cancel_reaches_children(how: str) -> None:
    started = asyncio.Event()
    child_cancelled = asyncio.Event()

    async def child() -> None:
        started.set()
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            child_cancelled.set()
            raise

    async def run_group() -> None:
        async with cohort.TaskGroup() as g:
            start(g, how, child)

    task = asyncio.create_task(run_group())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert child_cancelled.is_set()


@vc
async def test_child_errors_win_over_outside_cancellation(how: str) -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            raise ValueError("while cancelling") from None

    with cohort.move_on_after(1) as outer:
        with pytest.raises(ExceptionGroup):
            async with cohort.TaskGroup() as g:
                start(g, how, fails_when_cancelled)
        await asyncio.sleep(10)  # the enclosing scope still gets its cancellation
        pytest.fail("outer cancellation was lost")
    assert outer.cancelled_caught
    assert now() == 1


@vc
async def test_body_error_keeps_an_outside_cancellation_that_came_during_the_exit_wait(
    how: str,
) -> None:
    """The body fails, the group waits for a shielded child, the enclosing scope's
    deadline passes during that wait: the body's error wins, the scope's
    cancellation still ends the next await inside it."""

    shielded = asyncio.Event()

    async def slow_to_stop() -> None:
        with cohort.CancelScope(shield=True):
            shielded.set()
            await asyncio.sleep(2)

    with cohort.move_on_after(1) as outer:
        with pytest.raises(ExceptionGroup) as raised:
            async with cohort.TaskGroup() as g:
                start(g, how, slow_to_stop)
                await shielded.wait()
                raise ValueError("body")
        await asyncio.sleep(10)  # the enclosing scope still gets its cancellation
        pytest.fail("outer cancellation was lost")
    assert [str(e) for e in raised.value.exceptions] == ["body"]
    assert statuses(g) == [S.CANCELLED]
    assert outer.cancelled_caught
    assert now() == 2


@vc
async def test_child_errors_keep_an_outside_cancellation_raised_at_a_shields_exit(
    how: str,
) -> None:
    """The enclosing scope's deadline passes while the body sits in a shield: the
    children are cancelled at once (one fails), the cancellation is raised at the
    shield's exit; the children's errors win, the scope still gets its cancellation."""

    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            raise ValueError("while cancelling") from None

    with cohort.move_on_after(1) as outer:
        with pytest.raises(ExceptionGroup) as raised:
            async with cohort.TaskGroup() as g:
                start(g, how, fails_when_cancelled)
                with cohort.CancelScope(shield=True):
                    await asyncio.sleep(2)
        await asyncio.sleep(10)  # the enclosing scope still gets its cancellation
        pytest.fail("outer cancellation was lost")
    assert [str(e) for e in raised.value.exceptions] == ["while cancelling"]
    assert statuses(g) == [S.FAILED]
    assert outer.cancelled_caught
    assert now() == 2


@vc
async def test_a_cancellation_the_body_caught_is_not_delivered_again_by_child_errors(
    how: str,
) -> None:
    """Edge-triggered: the body catches the cancellation raised at its shield's
    exit and ends normally; a child's error is raised and nothing cancels the
    next await inside the enclosing scope a second time."""

    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            raise ValueError("while cancelling") from None

    with cohort.move_on_after(1) as outer:
        with pytest.raises(ExceptionGroup):
            async with cohort.TaskGroup() as g:
                start(g, how, fails_when_cancelled)
                try:
                    with cohort.CancelScope(shield=True):
                        await asyncio.sleep(2)
                except asyncio.CancelledError:
                    pass
        await asyncio.sleep(1)
    assert statuses(g) == [S.FAILED]
    assert not outer.cancelled_caught
    assert now() == 3


@vc
async def test_deadlines_reach_children(how: str) -> None:
    seen: list[float] = []

    async def child() -> None:
        seen.append(cohort.current_deadline())

    with cohort.move_on_after(10):
        async with cohort.TaskGroup(timeout=4) as g:
            start(g, how, child)
        async with cohort.TaskGroup() as g:
            start(g, how, child)
    assert seen == [4, 10]


@vc
async def test_current_deadline_in_a_groups_body_follows_an_enclosing_scope_that_changes() -> None:
    with cohort.move_on_after(10) as outer:
        async with cohort.TaskGroup():
            assert cohort.current_deadline() == 10
            outer.deadline = 20
            assert cohort.current_deadline() == 20
            outer.deadline = 3
            assert cohort.current_deadline() == 3
            async with cohort.TaskGroup(timeout=5):
                assert cohort.current_deadline() == 3
                outer.deadline = 30
                assert cohort.current_deadline() == 5


class _KeepGoing(cohort.Gather):
    def on_timeout(self, group: cohort.GroupView) -> cohort.Decision | None:
        return cohort.Decision.CONTINUE


@vc
async def test_current_deadline_drops_a_group_timeout_its_policy_ignored() -> None:
    with cohort.move_on_after(10):
        async with cohort.TaskGroup(join=_KeepGoing(), timeout=2):
            assert cohort.current_deadline() == 2
            await asyncio.sleep(3)
            assert cohort.current_deadline() == 10


@vc
async def test_current_deadline_in_nested_groups_is_the_nearest_of_every_level() -> None:
    seen: list[tuple[float, float]] = []

    async def child(expected: float) -> None:
        seen.append((cohort.current_deadline(), expected))

    async def level(depth: int, expected: float) -> None:
        timeout = 100.0 - (depth % 5) * 7
        expected = min(expected, timeout)
        async with cohort.TaskGroup(timeout=timeout) as g:
            g.spawn(child, expected)
            assert cohort.current_deadline() == expected
            if depth:
                await level(depth - 1, expected)

    with cohort.move_on_after(90):
        await level(40, 90)
    assert len(seen) == 41
    assert all(got == expected for got, expected in seen)


@vc
async def test_shielded_child_finishes_its_block_before_cancellation(how: str) -> None:
    finished_shielded_part = False

    async def careful() -> None:
        nonlocal finished_shielded_part
        with cohort.CancelScope(shield=True):
            await asyncio.sleep(2)
            finished_shielded_part = True
        await asyncio.sleep(100)

    async with cohort.TaskGroup(timeout=1, on_timeout="partial") as g:
        start(g, how, careful)
    assert finished_shielded_part
    assert now() == 2
    assert statuses(g) == [S.TIMED_OUT]


@vc
async def test_cancel_counts_balanced_after_every_exit_path(how: str) -> None:
    task = asyncio.current_task()
    assert task is not None
    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        start(g, how, ok, 1, 1)
        await asyncio.sleep(5)
    assert task.cancelling() == 0
    with pytest.raises(TimeoutError):
        async with cohort.TaskGroup(timeout=1):
            await asyncio.sleep(5)
    assert task.cancelling() == 0
    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup() as g:
            start(g, how, bad, "x", 1)
            await asyncio.sleep(5)
    assert task.cancelling() == 0


@vc
async def test_outcome_records_times_and_values() -> None:
    async with cohort.TaskGroup() as g:
        g.spawn(ok, "v", 2, name="two")
    (o,) = g.outcomes
    assert (o.name, o.status, o.value, o.error, o.critical) == ("two", S.SUCCEEDED, "v", None, True)
    assert (o.started, o.ended) == (0, 2)


@vc
async def test_wait_all_tasks_blocked_orders_group_events(how: str) -> None:
    progress: list[str] = []

    async def step(name: str) -> None:
        progress.append(name)
        await asyncio.sleep(1)

    async with cohort.TaskGroup() as g:
        start(g, how, step, "a")
        start(g, how, step, "b")
        await wait_all_tasks_blocked()
        assert progress == ["a", "b"]
        assert now() == 0


def test_repr_names_the_group_and_policy() -> None:
    g = cohort.TaskGroup(join=cohort.Quorum(2), name="reads")
    assert "reads" in repr(g)
    assert "Quorum(2)" in repr(g)


async def _ok() -> int:
    return 1


async def _boom() -> int:
    raise ValueError("boom")


async def _sleep_forever() -> None:
    await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("join", "children"),
    [
        (cohort.Gather(), [_ok, _ok, _ok]),
        (cohort.Settle(), [_ok, _boom, _ok]),
        (cohort.FirstWins(), [_ok, _sleep_forever, _sleep_forever]),
        (cohort.Quorum(1), [_boom, _ok, _sleep_forever]),
    ],
)
async def test_a_finished_group_is_freed_by_reference_counting(
    join: cohort.JoinPolicy, children: list[Any], how: str
) -> None:
    # A finished handle refers to neither its group nor its task, and the group
    # drops its scope: no reference cycle is left for the collector, which would
    # otherwise hold every child's task and coroutine until a collection runs.
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for limit in (2, None):  # start_soon() runs children without handles only unqueued
            async with cohort.TaskGroup(join=join, limit=limit) as g:
                for child in children:
                    start(g, how, child)
            assert g.statistics().children == len(children)
        del g
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, cohort.TaskGroup | cohort.Handle)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert leaked == []


async def test_a_child_error_keeps_its_own_traceback(how: str) -> None:
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        start(g, how, _boom)
    frames = []
    tb = g.errors[0].__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames == ["_boom"]  # nothing of cohort's own machinery


# -- spawn(context=) ---------------------------------------------------------------

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")


async def _swap_request_id(new: str) -> str:
    await asyncio.sleep(0)
    old = _request_id.get()
    _request_id.set(new)
    return old


@pytest.mark.parametrize(
    "options",
    [{}, {"timeout": 10}, {"retry": cohort.Retry(attempts=2)}, {"limit": 1}],
    ids=["plain", "timeout", "retry", "queued"],
)
async def test_a_child_runs_in_the_context_given_to_spawn(
    how: str, options: dict[str, Any]
) -> None:
    options = dict(options)
    limit = options.pop("limit", None)
    ctx = contextvars.copy_context()
    ctx.run(_request_id.set, "given")
    _request_id.set("caller")
    async with cohort.TaskGroup(limit=limit) as g:
        if limit:
            g.spawn(asyncio.sleep, 0)  # holds the only slot: the next child is queued
        start(g, how, _swap_request_id, "from-child-1", context=ctx, **options)
    assert ctx[_request_id] == "from-child-1"  # what the child set is in the context
    assert _request_id.get() == "caller"  # and nowhere else
    async with cohort.TaskGroup() as g:
        h = g.spawn(_swap_request_id, "from-child-2", context=ctx, **options)
    assert h.result() == "from-child-1"  # the same context, as asyncio.TaskGroup does
    assert ctx[_request_id] == "from-child-2"


async def test_a_child_in_a_given_context_keeps_the_deadline_in_force(how: str) -> None:
    ctx = contextvars.copy_context()  # made outside the group: no deadline there
    seen: list[float] = []

    async def child() -> None:
        seen.append(cohort.current_deadline())

    async with cohort.TaskGroup(timeout=5) as g:
        start(g, how, child, context=ctx)
        start(g, how, child)
    assert seen[0] == seen[1] < math.inf


async def test_spawn_context_must_be_a_context(how: str) -> None:
    async with cohort.TaskGroup() as g:
        coro = ok(1, 0)
        with pytest.raises(TypeError, match=r"context= takes a contextvars.Context"):
            start(g, how, coro, context={"request_id": "x"})
        assert closed(coro)
    assert g.outcomes == []


async def test_a_child_may_share_the_callers_running_context(how: str) -> None:
    # As with asyncio.current_task().get_context() (Python 3.12+): the context the
    # caller runs in cannot be entered again, and needs nothing set in it.
    ctx = contextvars.copy_context()
    async with cohort.TaskGroup() as g:
        ctx.run(start, g, how, _swap_request_id, "from-child", context=ctx)
    assert ctx[_request_id] == "from-child"


async def test_a_queued_child_runs_in_a_copy_of_its_callers_context(how: str) -> None:
    seen: list[str] = []

    async def child() -> None:
        await asyncio.sleep(0)
        seen.append(_request_id.get())

    async with cohort.TaskGroup(limit=1) as g:
        for i in range(3):
            _request_id.set(f"request-{i}")
            start(g, how, child)  # the last two wait for the slot
    assert seen == ["request-0", "request-1", "request-2"]


# -- the group's own scope, entered only when something needs it --------------------


async def _fail_when(event: asyncio.Event, message: str) -> None:
    await event.wait()
    raise ValueError(message)


async def test_outer_decision_stops_the_body_of_a_nested_group() -> None:
    """Neither group has a timeout: the outer group's decision, made while the inner
    group's body awaits, cancels the outer body there; the inner group takes it for
    an outside cancellation (its children are cancelled) and the outer one raises."""
    inner_started = asyncio.Event()
    after_inner = False
    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup() as outer:
            outer.spawn(_fail_when, inner_started, "boom")
            async with cohort.TaskGroup() as inner:
                inner.spawn(asyncio.sleep, 3600)
                inner_started.set()
                await asyncio.sleep(3600)
            after_inner = True
    assert [str(e) for e in info.value.exceptions] == ["boom"]
    assert not after_inner
    assert statuses(inner) == [S.CANCELLED]
    assert statuses(outer) == [S.FAILED]


async def test_cancel_from_outside_the_body_task_stops_the_body() -> None:
    """g.cancel() from a loop callback (no task): the body stops at its await, the
    group exits normally."""
    reached = False
    async with cohort.TaskGroup() as g:
        asyncio.get_running_loop().call_soon(g.cancel)
        await asyncio.sleep(3600)
        reached = True
    assert not reached
    assert g.statistics().decision is Decision.DONE


async def test_decision_in_a_scope_entered_in_the_body_is_the_groups() -> None:
    """A scope entered in the body lies inside the group's scope: the group's
    cancellation passes through it (not caught there) and the group catches it."""
    reached = False
    async with cohort.TaskGroup() as g:
        with cohort.move_on_after(3600) as scope:
            asyncio.get_running_loop().call_soon(g.cancel)
            await asyncio.sleep(3600)
        reached = True
    assert not reached
    assert not scope.cancelled_caught


async def test_decision_while_the_body_is_shielded_waits_for_the_shield() -> None:
    """The group decides while its body sits in a shield entered in the body: the
    children are cancelled now, the body when the shield exits."""
    decided = asyncio.Event()
    shield_finished = reached = False

    async def stop() -> None:
        g.cancel()
        decided.set()

    async with cohort.TaskGroup() as g:
        with cohort.CancelScope(shield=True):
            g.spawn(stop)
            await decided.wait()
            shield_finished = True
        reached = True
    assert shield_finished
    assert not reached


async def test_current_deadline_in_a_group_body_is_the_enclosing_one() -> None:
    loop = asyncio.get_running_loop()
    with cohort.move_on_at(loop.time() + 3600) as outer:
        async with cohort.TaskGroup():
            assert cohort.current_deadline() == outer.deadline
            with cohort.move_on_at(math.inf):
                assert cohort.current_deadline() == outer.deadline
        async with cohort.TaskGroup() as g:
            g.spawn(ok, None, 0)
            outer.deadline = loop.time() + 7200  # changed while the group is open
            with cohort.move_on_at(math.inf):
                assert cohort.current_deadline() == outer.deadline


@pytest.mark.parametrize("timeout", [None, 60.0], ids=["no timeout", "timeout"])
async def test_a_group_left_in_another_task_says_so_with_or_without_a_timeout(
    timeout: float | None,
) -> None:
    """An async generator holding a group, closed by another task: the group's
    exit there is refused as a scope's is (a group without a timeout enters its
    scope only when something needs it; this needs it)."""

    async def numbers() -> Any:
        async with cohort.TaskGroup(timeout=timeout, name="in-gen") as g:
            g.spawn(asyncio.sleep, 100, name="sleeper")
            yield 1
            yield 2

    gen = numbers()
    assert await anext(gen) == 1
    with pytest.raises(RuntimeError, match="exited in 'closer'"):
        await asyncio.get_running_loop().create_task(gen.aclose(), name="closer")


async def test_a_group_ending_in_an_async_generator_inside_a_later_group_leaves_it_working() -> (
    None
):
    """Groups of one task need not exit in the reverse order of entry: one held by
    an async generator can be closed, in the same task, inside a group entered
    after it. The later group can still cancel its body, and a scope entered
    afterwards sees no trace of the closed group."""

    async def numbers() -> Any:
        async with cohort.TaskGroup(name="in-gen"):
            yield 1

    gen = numbers()
    assert await anext(gen) == 1
    async with cohort.TaskGroup(name="later") as later:
        with pytest.raises(StopAsyncIteration):  # "in-gen" exits here, inside "later"
            await anext(gen)
        later.cancel()
        await asyncio.sleep(0)
        pytest.fail("the later group's cancellation did not reach its body")
    with cohort.CancelScope() as scope:
        assert cohort.current_deadline() == math.inf
        scope.cancel()
        await asyncio.sleep(0)
    assert scope.cancelled_caught


async def test_a_spawn_hook_set_while_a_group_is_open_wraps_the_next_children() -> None:
    wrapped: list[str | None] = []

    def hook(group: object, fn: object, name: str | None) -> tuple[str, Any]:
        wrapped.append(name)
        return name or "hooked", lambda coro: coro

    async with cohort.TaskGroup() as g:
        g.start_soon(ok, 1, 0)  # no hook yet
        token = spawn_hook.set(hook)
        try:
            g.start_soon(ok, 2, 0, name="a")
            g.start_soon(ok, 3, 0)  # a plain child: the hook sees it too
            h = g.spawn(ok, 4, 0)
        finally:
            spawn_hook.reset(token)
        g.start_soon(ok, 5, 0)  # reset: not seen
    assert wrapped == ["a", None, None]
    assert h.name == "hooked"
    assert spawn_hook.get() is None


_where = contextvars.ContextVar("_where", default="unset")


class _SeesContext(cohort.Settle):
    """Settle that notes the context variable its hook runs with."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_child_done(self, group: cohort.GroupView, handle: cohort.ChildView) -> Decision:
        self.seen.append(_where.get())
        _where.set(f"set by the hook for {handle.name}")
        return super().on_child_done(group, handle)


@vc
@pytest.mark.parametrize("how", ["spawn", "start_soon"])
async def test_every_childs_end_is_recorded_in_one_copy_of_the_context_of_the_first_spawn(
    how: str,
) -> None:
    policy = _SeesContext()
    _where.set("body")
    async with cohort.TaskGroup(join=policy) as g:
        getattr(g, how)(bad, "x", 1, name="a")
        _where.set("after the first spawn")
        getattr(g, how)(bad, "y", 2, name="b")
        g.spawn(ok, "z", 3, name="c")
    assert policy.seen == ["body", "set by the hook for a", "set by the hook for b"]
    assert _where.get() == "after the first spawn"
