"""Cancel scopes, deadlines and shields (cohort._core._scopes)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator

import pytest

import cohort
from _util import now
from cohort.testing import wait_all_tasks_blocked

pytestmark = pytest.mark.virtual_clock


async def test_move_on_after_leaves_silently_at_the_deadline() -> None:
    start = now()
    with cohort.move_on_after(1.5) as scope:
        await asyncio.sleep(10)
    assert scope.cancelled_caught
    assert scope.cancel_called
    assert now() - start == 1.5


async def test_move_on_after_not_expired_is_not_caught() -> None:
    with cohort.move_on_after(5) as scope:
        await asyncio.sleep(1)
    assert not scope.cancelled_caught
    assert not scope.cancel_called


async def test_fail_after_raises_builtin_timeout_error() -> None:
    start = now()
    with pytest.raises(TimeoutError), cohort.fail_after(2):
        await asyncio.sleep(10)
    assert now() - start == 2


async def test_fail_at_and_move_on_at_use_absolute_deadlines() -> None:
    with cohort.move_on_at(now() + 3) as scope:
        await asyncio.sleep(10)
    assert scope.cancelled_caught
    assert now() == 3
    with pytest.raises(TimeoutError), cohort.fail_at(now() + 1):
        await asyncio.sleep(10)
    assert now() == 4


async def test_deadline_already_passed_cancels_at_first_await() -> None:
    with pytest.raises(TimeoutError), cohort.fail_after(0) as scope:
        await asyncio.sleep(1)
    assert scope.cancel_called
    assert now() == 0


async def test_deadline_passed_but_no_await_leaves_nothing_behind() -> None:
    task = asyncio.current_task()
    assert task is not None
    with cohort.move_on_after(0) as scope:
        pass
    assert not scope.cancelled_caught
    await asyncio.sleep(1)  # a stray cancellation would land here
    assert task.cancelling() == 0


async def test_cancel_without_await_does_not_leak_cancellation() -> None:
    with cohort.CancelScope() as scope:
        scope.cancel()
    assert not scope.cancelled_caught
    await asyncio.sleep(0.5)
    assert now() == 0.5


async def test_cancel_before_enter_cancels_at_first_await() -> None:
    scope = cohort.CancelScope()
    scope.cancel()
    with scope:
        await asyncio.sleep(1)
    assert scope.cancelled_caught
    assert now() == 0


async def test_cancel_from_another_task() -> None:
    entered = asyncio.Event()
    scope = cohort.CancelScope()

    async def worker() -> None:
        with scope:
            entered.set()
            await asyncio.sleep(100)

    task = asyncio.create_task(worker())
    await entered.wait()
    scope.cancel()
    await task
    assert scope.cancelled_caught
    assert now() == 0


async def test_nested_outer_deadline_first_is_caught_by_outer() -> None:
    with cohort.move_on_after(1) as outer:
        with cohort.move_on_after(5) as inner:
            await asyncio.sleep(10)
        pytest.fail("outer cancellation must go past the inner scope")
    assert outer.cancelled_caught
    assert not inner.cancelled_caught
    assert now() == 1


async def test_nested_inner_deadline_first_is_caught_by_inner() -> None:
    with cohort.move_on_after(5) as outer:
        with cohort.move_on_after(1) as inner:
            await asyncio.sleep(10)
        assert now() == 1
        await asyncio.sleep(10)
    assert inner.cancelled_caught
    assert outer.cancelled_caught
    assert now() == 5


async def test_same_deadline_both_cancelled_outer_catches() -> None:
    with cohort.move_on_after(1) as outer, cohort.move_on_after(1) as inner:
        await asyncio.sleep(10)
    assert outer.cancelled_caught
    assert not inner.cancelled_caught


async def test_cancellation_is_edge_triggered() -> None:
    """A cancelled scope delivers one CancelledError; later awaits in it run."""
    with cohort.move_on_after(1) as scope:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(2)  # cleanup that awaits is not cancelled again
            raise
    assert scope.cancelled_caught
    assert now() == 3


async def test_cancel_counts_balanced_after_each_block() -> None:
    task = asyncio.current_task()
    assert task is not None
    for delay in (0, 1, 100):
        with cohort.move_on_after(delay):
            await asyncio.sleep(2)
        assert task.cancelling() == 0


async def test_asyncio_timeout_outside_still_raises_timeout_error() -> None:
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1):
            with cohort.move_on_after(5) as scope:
                await asyncio.sleep(10)
    assert not scope.cancelled_caught
    assert task.cancelling() == 0


async def test_cohort_scope_inside_asyncio_timeout_catches_its_own() -> None:
    async with asyncio.timeout(5):
        with cohort.move_on_after(1) as scope:
            await asyncio.sleep(10)
    assert scope.cancelled_caught
    assert now() == 1


@pytest.mark.parametrize("shield", [False, True])
async def test_raw_task_cancel_goes_through_scopes_and_shields(shield: bool) -> None:
    """Shields hold back cohort's own cancellation, not a raw task.cancel()."""
    entered = asyncio.Event()

    async def victim() -> None:
        with cohort.move_on_after(10, shield=shield):
            entered.set()
            await asyncio.sleep(100)

    task = asyncio.create_task(victim())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_shield_holds_back_outer_deadline_and_delivers_on_exit() -> None:
    with cohort.move_on_after(1) as outer:
        with cohort.CancelScope(shield=True):
            await asyncio.sleep(2)  # the outer deadline passes here
            assert now() == 2
            await asyncio.sleep(1)  # awaits after the deadline still run
        pytest.fail("the held cancellation is delivered when the shield exits")
    assert outer.cancelled_caught
    assert now() == 3


async def test_shield_own_deadline_still_applies() -> None:
    with cohort.move_on_after(10) as outer, cohort.move_on_after(1, shield=True) as inner:
        await asyncio.sleep(5)
    assert inner.cancelled_caught
    assert not outer.cancel_called
    assert now() == 1


async def test_shield_exiting_with_error_keeps_error_and_delivers_later() -> None:
    with cohort.move_on_after(1) as outer:
        try:
            with cohort.CancelScope(shield=True):
                await asyncio.sleep(2)
                raise KeyError("boom")
        except KeyError:
            pass
        await asyncio.sleep(5)  # the held cancellation arrives here
    assert outer.cancelled_caught
    assert now() == 2


async def test_current_deadline_and_time() -> None:
    assert cohort.current_deadline() == math.inf
    assert cohort.current_time() == now()
    with cohort.move_on_after(5):
        assert cohort.current_deadline() == 5
        with cohort.move_on_after(2):
            assert cohort.current_deadline() == 2
        with cohort.CancelScope(shield=True):
            assert cohort.current_deadline() == math.inf
            with cohort.move_on_after(7):
                assert cohort.current_deadline() == 7
    assert cohort.current_deadline() == math.inf


async def test_current_deadline_follows_an_outer_scope_whose_deadline_changes() -> None:
    with cohort.move_on_after(5) as outer:
        with cohort.move_on_after(3), cohort.CancelScope():
            assert cohort.current_deadline() == 3
            outer.deadline = 1
            assert cohort.current_deadline() == 1
            outer.deadline = 8
            assert cohort.current_deadline() == 3
            outer.deadline = math.inf
            assert cohort.current_deadline() == 3
        assert cohort.current_deadline() == math.inf
        outer.deadline = 4
        assert cohort.current_deadline() == 4


async def test_current_deadline_inside_a_shield_ignores_outer_changes_but_not_the_shields() -> None:
    with cohort.move_on_after(5) as outer:
        with cohort.CancelScope(shield=True) as shield, cohort.CancelScope():
            assert cohort.current_deadline() == math.inf
            outer.deadline = 1
            assert cohort.current_deadline() == math.inf
            shield.deadline = 2
            assert cohort.current_deadline() == 2
            with cohort.move_on_after(7), cohort.CancelScope(shield=True) as inner:
                assert cohort.current_deadline() == math.inf
                shield.deadline = 0.5
                assert cohort.current_deadline() == math.inf
                inner.deadline = 9
                assert cohort.current_deadline() == 9
            assert cohort.current_deadline() == 0.5
        assert cohort.current_deadline() == 1


async def test_current_deadline_at_depth_is_the_nearest_of_every_level() -> None:
    deadlines = [50.0 - (i % 7) * 3 - i / 100 for i in range(300)]
    scopes = [cohort.CancelScope(deadline=d) for d in deadlines]
    for depth, scope in enumerate(scopes, 1):
        scope.__enter__()
        assert cohort.current_deadline() == min(deadlines[:depth])
    scopes[0].deadline = 1
    assert cohort.current_deadline() == 1
    for depth in range(len(scopes), 0, -1):
        scopes[depth - 1].__exit__(None, None, None)
        expected = min([1.0, *deadlines[1 : depth - 1]]) if depth > 1 else math.inf
        assert cohort.current_deadline() == expected


async def test_deadline_is_settable_while_active() -> None:
    with cohort.CancelScope() as scope:
        scope.deadline = now() + 2
        await asyncio.sleep(10)
    assert scope.cancelled_caught
    assert now() == 2
    with cohort.move_on_after(1) as scope:
        scope.deadline = now() + 4
        await asyncio.sleep(10)
    assert now() == 6


async def test_deadline_is_computed_at_entry() -> None:
    scope = cohort.move_on_after(1)
    await asyncio.sleep(5)
    with scope:
        assert scope.deadline == 6
        await asyncio.sleep(10)
    assert now() == 6


async def test_scope_cannot_be_entered_twice() -> None:
    scope = cohort.CancelScope()
    with scope:
        pass
    with pytest.raises(RuntimeError, match="already been entered"), scope:
        pass


async def test_scopes_exited_out_of_order_raise() -> None:
    a = cohort.CancelScope()
    b = cohort.CancelScope()
    a.__enter__()
    b.__enter__()
    with pytest.raises(RuntimeError, match="out of order"):
        a.__exit__(None, None, None)
    b.__exit__(None, None, None)
    a.__exit__(None, None, None)


def test_scope_outside_a_task_raises() -> None:
    with pytest.raises(RuntimeError, match="inside an asyncio task"), cohort.CancelScope():
        pass


def test_nan_is_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        cohort.CancelScope(deadline=math.nan)
    with pytest.raises(ValueError, match="NaN"):
        cohort.move_on_after(math.nan)


async def test_many_sequential_scopes_reuse_one_timer() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(100):
        with cohort.move_on_after(60):
            await asyncio.sleep(0)
    scheduled = getattr(loop, "_scheduled", [])
    assert len([h for h in scheduled if not h.cancelled()]) <= 1


async def test_scope_in_child_task_is_independent() -> None:
    ready = asyncio.Event()

    async def child() -> bool:
        with cohort.move_on_after(1) as scope:
            ready.set()
            await asyncio.sleep(10)
        return scope.cancelled_caught

    with cohort.move_on_after(5) as outer:
        task = asyncio.create_task(child())
        await ready.wait()
        await wait_all_tasks_blocked()
        assert await task
        assert now() == 1
    assert not outer.cancel_called


async def test_repr_mentions_state() -> None:
    scope = cohort.move_on_after(1)
    assert "idle" in repr(scope)
    with scope:
        assert "active" in repr(scope)
    assert "exited" in repr(scope)


async def test_a_scope_exited_by_another_task_raises_and_stays_intact_for_its_owner() -> None:
    async def intruder(scope: cohort.CancelScope) -> None:
        scope.__exit__(None, None, None)

    loop = asyncio.get_running_loop()
    with cohort.move_on_after(1) as scope:
        with pytest.raises(RuntimeError, match="exited in 'intruder'"):
            await loop.create_task(intruder(scope), name="intruder")
        # Still the owner's active scope: its deadline applies, and a scope
        # entered now nests inside it.
        assert "active" in repr(scope)
        assert cohort.current_deadline() == 1
        with cohort.move_on_after(5) as inner:
            await asyncio.sleep(10)
    assert scope.cancelled_caught
    assert not inner.cancelled_caught
    assert now() == 1
    assert cohort.current_deadline() == math.inf


async def test_a_scope_exited_outside_any_task_stays_intact_for_its_owner() -> None:
    loop = asyncio.get_running_loop()
    errors: list[RuntimeError] = []
    called = asyncio.Event()

    def from_a_callback(scope: cohort.CancelScope) -> None:
        try:
            scope.__exit__(None, None, None)
        except RuntimeError as exc:
            errors.append(exc)
        called.set()

    with cohort.move_on_after(1) as scope:
        loop.call_soon(from_a_callback, scope)
        await called.wait()
        await asyncio.sleep(10)
    assert "exited in no task" in str(errors[0])
    assert scope.cancelled_caught
    assert now() == 1


async def test_a_scope_in_an_async_generator_closed_by_another_task_leaves_its_owner_clean() -> (
    None
):
    async def numbers() -> AsyncGenerator[int]:
        with cohort.move_on_after(1):
            yield 1
            yield 2

    gen = numbers()
    loop = asyncio.get_running_loop()
    with cohort.move_on_after(5) as outer:
        assert await anext(gen) == 1
        # The generator's block ends for good: its scope is taken off the owner.
        with pytest.raises(RuntimeError, match="exited in 'closer'"):
            await loop.create_task(gen.aclose(), name="closer")
        assert cohort.current_deadline() == 5
        await asyncio.sleep(2)  # the abandoned deadline cancels nothing
    assert not outer.cancel_called
    assert now() == 2


async def test_current_deadline_drops_an_abandoned_generator_scope_below_open_ones() -> None:
    async def numbers() -> AsyncGenerator[int]:
        with cohort.move_on_after(1):
            yield 1
            yield 2

    gen = numbers()
    loop = asyncio.get_running_loop()
    with cohort.move_on_after(5):
        assert await anext(gen) == 1
        with cohort.CancelScope():
            assert cohort.current_deadline() == 1  # the generator's scope is below this one
            with pytest.raises(RuntimeError, match="exited in 'closer'"):
                await loop.create_task(gen.aclose(), name="closer")
            assert cohort.current_deadline() == 5


async def test_a_deadline_cannot_change_after_exit_or_expiry() -> None:
    with cohort.move_on_after(1) as scope:
        await asyncio.sleep(2)
        with pytest.raises(RuntimeError, match="already expired"):
            scope.deadline = now() + 10
    assert scope.cancelled_caught
    with pytest.raises(RuntimeError, match="has exited"):
        scope.deadline = math.inf
    with cohort.CancelScope() as live:
        live.deadline = now() + 3  # before expiry it moves freely
        await asyncio.sleep(10)
    assert live.cancelled_caught


async def test_broken_barrier_error_is_also_asyncios() -> None:
    barrier = cohort.Barrier(2)
    barrier.abort()
    with pytest.raises(asyncio.BrokenBarrierError):
        await barrier.wait()
    assert issubclass(cohort.BrokenBarrierError, cohort.CohortError)


async def test_fail_after_message_names_each_uses_own_delay() -> None:
    """The TimeoutError names the delay of the scope that expired, use after use."""
    messages = []
    for delay in (0.5, 2, 0.5, 0.25, 2):
        with pytest.raises(TimeoutError) as info, cohort.fail_after(delay):
            await asyncio.sleep(10)
        messages.append(str(info.value))
    assert messages == [
        f"cohort.fail_after({d:g}): the deadline passed" for d in (0.5, 2, 0.5, 0.25, 2)
    ]
    loop = asyncio.get_running_loop()
    with (
        pytest.raises(TimeoutError, match=r"cohort\.fail_at\(\d+(\.\d+)?\)"),
        cohort.fail_at(loop.time() + 1),
    ):
        await asyncio.sleep(10)
