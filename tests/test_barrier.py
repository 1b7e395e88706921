"""cohort.Barrier: cyclic generations, the action, breaking, dynamic parties."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest
import structlog

import cohort
from _util import until
from cohort.testing import VirtualClockLoop, wait_all_tasks_blocked


async def _spawn_waiters(barrier: cohort.Barrier, n: int) -> list[asyncio.Task[int]]:
    """Start ``n`` tasks in ``barrier.wait()`` and return once they all block there."""
    target = barrier.n_waiting + n
    tasks = [asyncio.create_task(barrier.wait()) for _ in range(n)]
    await until(lambda: barrier.n_waiting >= target)
    return tasks


async def test_wait_returns_arrival_indices_generation_after_generation() -> None:
    barrier = cohort.Barrier(3)
    for generation in range(4):
        tasks = await _spawn_waiters(barrier, 2)
        assert barrier.n_waiting == 2
        assert await barrier.wait() == 2
        assert sorted(await asyncio.gather(*tasks)) == [0, 1]
        assert barrier.statistics().generation == generation + 1
        assert barrier.n_waiting == 0


async def test_single_party_barrier_never_blocks() -> None:
    barrier = cohort.Barrier(1)
    assert [await barrier.wait() for _ in range(3)] == [0, 0, 0]


async def test_sync_action_runs_once_in_last_arriver_before_release() -> None:
    seen: list[tuple[asyncio.Task[object] | None, int]] = []
    barrier = cohort.Barrier(3, action=lambda: seen.append((asyncio.current_task(), done[0])))
    done = [0]

    async def party() -> int:
        index = await barrier.wait()
        done[0] += 1
        return index

    tasks = [asyncio.create_task(party()) for _ in range(3)]
    await asyncio.gather(*tasks)
    assert len(seen) == 1
    last = next(t for t in tasks if t.result() == 2)
    assert seen == [(last, 0)]


@pytest.mark.virtual_clock
async def test_async_action_arrivals_meanwhile_belong_to_next_generation() -> None:
    action_started = asyncio.Event()
    finish_action = asyncio.Event()
    runs: list[int] = []

    async def action() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            action_started.set()
            await finish_action.wait()

    barrier = cohort.Barrier(2, action=action)
    first = await _spawn_waiters(barrier, 1)
    last = asyncio.create_task(barrier.wait())
    await action_started.wait()
    assert barrier.statistics().action_running
    early = asyncio.create_task(barrier.wait())  # arrives while the action runs
    await wait_all_tasks_blocked()
    assert barrier.n_waiting == 1
    assert not first[0].done()
    finish_action.set()
    assert await first[0] == 0
    assert await last == 1
    assert not early.done()  # waits for a partner of generation 2
    assert await barrier.wait() == 1
    assert await early == 0
    assert runs == [0, 1]


async def test_failing_action_breaks_barrier_last_arriver_gets_its_error() -> None:
    def action() -> None:
        raise LookupError("merge failed")

    barrier = cohort.Barrier(3, action=action)
    tasks = await _spawn_waiters(barrier, 2)
    with pytest.raises(LookupError, match="merge failed"):
        await barrier.wait()
    for task in tasks:
        with pytest.raises(cohort.BrokenBarrierError, match="action raised"):
            await task
    assert barrier.broken
    with pytest.raises(cohort.BrokenBarrierError, match="reset"):
        await barrier.wait()


@pytest.mark.virtual_clock
async def test_failing_async_action_also_breaks_next_generation_waiters() -> None:
    proceed = asyncio.Event()

    async def action() -> None:
        await proceed.wait()
        raise LookupError("late failure")

    barrier = cohort.Barrier(2, action=action)
    first = await _spawn_waiters(barrier, 1)
    last = asyncio.create_task(barrier.wait())
    await wait_all_tasks_blocked()
    next_gen = asyncio.create_task(barrier.wait())
    await wait_all_tasks_blocked()
    proceed.set()
    with pytest.raises(LookupError):
        await last
    for task in (first[0], next_gen):
        with pytest.raises(cohort.BrokenBarrierError):
            await task


@pytest.mark.virtual_clock
async def test_cancelled_last_arriver_during_action_breaks_barrier() -> None:
    barrier = cohort.Barrier(2, action=lambda: asyncio.sleep(10))
    first = await _spawn_waiters(barrier, 1)
    last = asyncio.create_task(barrier.wait())
    await wait_all_tasks_blocked()
    last.cancel()
    with pytest.raises(asyncio.CancelledError):
        await last
    with pytest.raises(cohort.BrokenBarrierError):
        await first[0]
    assert barrier.broken


async def test_cancelled_waiter_breaks_the_others() -> None:
    barrier = cohort.Barrier(3)
    victim, other = await _spawn_waiters(barrier, 2)
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    with pytest.raises(cohort.BrokenBarrierError, match="cancelled"):
        await other
    assert barrier.broken
    assert barrier.n_waiting == 0


async def test_waiter_cancelled_just_before_last_arrival_breaks_generation() -> None:
    """The cancelled task has not run its handler yet when the last party arrives."""
    barrier = cohort.Barrier(3)
    victim, other = await _spawn_waiters(barrier, 2)
    victim.cancel()
    with pytest.raises(cohort.BrokenBarrierError, match="cancelled"):
        await barrier.wait()
    with pytest.raises(asyncio.CancelledError):
        await victim
    with pytest.raises(cohort.BrokenBarrierError):
        await other
    assert barrier.broken


async def test_waiter_cancelled_after_release_breaks_nothing() -> None:
    barrier = cohort.Barrier(2)
    (waiter,) = await _spawn_waiters(barrier, 1)
    assert await barrier.wait() == 1  # releases waiter; it has not resumed yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not barrier.broken
    assert barrier.statistics().generation == 1


@pytest.mark.virtual_clock
async def test_waiter_cancelled_while_action_runs_breaks_nothing() -> None:
    gate = asyncio.Event()
    barrier = cohort.Barrier(3, action=gate.wait)
    victim, other = await _spawn_waiters(barrier, 2)
    last = asyncio.create_task(barrier.wait())
    await wait_all_tasks_blocked()
    victim.cancel()
    await wait_all_tasks_blocked()
    gate.set()
    assert await last == 2
    assert await other == 1
    assert victim.cancelled()
    assert not barrier.broken


@pytest.mark.virtual_clock
async def test_asyncio_timeout_breaks_barrier_after_exact_delay() -> None:
    loop = asyncio.get_running_loop()
    barrier = cohort.Barrier(3)
    (other,) = await _spawn_waiters(barrier, 1)
    start = loop.time()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2.5):
            await barrier.wait()
    assert loop.time() - start == 2.5
    with pytest.raises(cohort.BrokenBarrierError):
        await other


@pytest.mark.virtual_clock
async def test_cohort_scopes_break_barrier() -> None:
    loop = asyncio.get_running_loop()
    barrier = cohort.Barrier(3)
    (other,) = await _spawn_waiters(barrier, 1)
    with pytest.raises(TimeoutError), cohort.fail_after(4):
        await barrier.wait()
    assert loop.time() == 4
    with pytest.raises(cohort.BrokenBarrierError):
        await other
    barrier.reset()
    (other,) = await _spawn_waiters(barrier, 1)
    with cohort.move_on_after(1) as scope:
        await barrier.wait()
    assert scope.cancelled_caught
    assert loop.time() == 5
    with pytest.raises(cohort.BrokenBarrierError):
        await other


async def test_abort_breaks_waiters_until_reset() -> None:
    barrier = cohort.Barrier(3)
    tasks = await _spawn_waiters(barrier, 2)
    barrier.abort()
    for task in tasks:
        with pytest.raises(cohort.BrokenBarrierError, match="abort"):
            await task
    assert barrier.broken
    with pytest.raises(cohort.BrokenBarrierError, match=r"call reset\(\)"):
        await barrier.wait()
    barrier.reset()
    assert not barrier.broken
    tasks = await _spawn_waiters(barrier, 2)
    assert await barrier.wait() == 2
    assert sorted(await asyncio.gather(*tasks)) == [0, 1]


async def test_reset_breaks_current_generation_and_leaves_fresh_barrier() -> None:
    barrier = cohort.Barrier(2)
    (waiter,) = await _spawn_waiters(barrier, 1)
    barrier.reset()
    with pytest.raises(cohort.BrokenBarrierError, match="reset"):
        await waiter
    assert not barrier.broken
    assert barrier.n_waiting == 0
    (waiter,) = await _spawn_waiters(barrier, 1)
    assert await barrier.wait() == 1
    assert await waiter == 0


@pytest.mark.virtual_clock
async def test_abort_during_async_action_releases_tripping_generation() -> None:
    gate = asyncio.Event()
    barrier = cohort.Barrier(2, action=gate.wait)
    (first,) = await _spawn_waiters(barrier, 1)
    last = asyncio.create_task(barrier.wait())
    await wait_all_tasks_blocked()
    nxt = asyncio.create_task(barrier.wait())
    await wait_all_tasks_blocked()
    barrier.abort()
    with pytest.raises(cohort.BrokenBarrierError):
        await nxt
    gate.set()
    assert await first == 0
    assert await last == 1
    assert barrier.broken


async def test_add_parties_makes_current_generation_wait_for_more() -> None:
    barrier = cohort.Barrier(2)
    (first,) = await _spawn_waiters(barrier, 1)
    barrier.add_parties(2)
    assert barrier.parties == 4
    second = await _spawn_waiters(barrier, 2)
    assert not first.done()
    assert await barrier.wait() == 3
    assert sorted(await asyncio.gather(first, *second)) == [0, 1, 2]


async def test_arrive_and_leave_completes_generation_and_shrinks_parties() -> None:
    actions: list[int] = []
    barrier = cohort.Barrier(3, action=lambda: actions.append(barrier.parties))
    tasks = await _spawn_waiters(barrier, 2)
    assert await barrier.arrive_and_leave() == 2  # last arriver: trips
    assert sorted(await asyncio.gather(*tasks)) == [0, 1]
    assert barrier.parties == 2
    assert actions == [2]
    # Next generation: one leaves first without waiting, the last one alone trips it.
    assert await barrier.arrive_and_leave() == 0
    assert barrier.parties == 1
    assert await barrier.wait() == 1
    assert actions == [2, 1]


async def test_leaving_lets_waiting_parties_through_without_deadlock() -> None:
    barrier = cohort.Barrier(3)
    tasks = await _spawn_waiters(barrier, 2)
    assert await barrier.arrive_and_leave() == 2
    await asyncio.gather(*tasks)
    # Two parties remain, each can go on generation after generation.
    for _ in range(3):
        (a,) = await _spawn_waiters(barrier, 1)
        assert await barrier.wait() == 1
        assert await a == 0


async def test_last_party_leaving_empties_barrier() -> None:
    barrier = cohort.Barrier(1)
    assert await barrier.arrive_and_leave() == 0
    assert barrier.parties == 0
    with pytest.raises(RuntimeError, match=r"add_parties\(\)"):
        await barrier.wait()
    with pytest.raises(RuntimeError, match="no parties left"):
        await barrier.arrive_and_leave()
    barrier.add_parties()
    assert await barrier.wait() == 0


async def test_leaving_a_broken_barrier_raises_but_still_leaves() -> None:
    barrier = cohort.Barrier(3)
    barrier.abort()
    with pytest.raises(cohort.BrokenBarrierError):
        await barrier.arrive_and_leave()
    assert barrier.parties == 2


def test_bad_arguments_raise_value_error_at_call_site() -> None:
    with pytest.raises(ValueError, match="parties must be an int >= 1, got 0"):
        cohort.Barrier(0)
    barrier = cohort.Barrier(2)
    with pytest.raises(ValueError, match=r"add_parties\(n\) must be an int >= 1"):
        barrier.add_parties(0)


async def test_repr_and_statistics_describe_state() -> None:
    barrier = cohort.Barrier(3)
    (waiter,) = await _spawn_waiters(barrier, 1)
    assert repr(barrier) == "<cohort.Barrier parties=3 n_waiting=1 generation=0>"
    assert barrier.statistics() == cohort.BarrierStatistics(
        parties=3, n_waiting=1, generation=0, broken=False, action_running=False
    )
    barrier.abort()
    assert repr(barrier) == "<cohort.Barrier broken parties=3 n_waiting=0 generation=0>"
    with pytest.raises(AttributeError):
        barrier.statistics().parties = 4  # type: ignore[misc]
    with pytest.raises(cohort.BrokenBarrierError):
        await waiter


async def test_no_events_while_events_are_off() -> None:
    barrier = cohort.Barrier(1)
    with structlog.testing.capture_logs() as logs:
        await barrier.wait()
        barrier.abort()
    assert logs == []


async def test_debug_events_for_trip_and_break(events: list[MutableMapping[str, Any]]) -> None:
    barrier = cohort.Barrier(2)
    (waiter,) = await _spawn_waiters(barrier, 1)
    await barrier.wait()
    await waiter
    barrier.abort()
    logs = events
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("barrier generation tripped", "debug"),
        ("barrier broken", "debug"),
    ]
    assert logs[0]["woken"] == 1


# anyio's asyncio backend on the virtual clock: its timeouts take no real time.
_VIRTUAL = {"loop_factory": VirtualClockLoop}


def test_works_inside_anyio_on_asyncio_backend() -> None:
    async def main() -> list[int]:
        barrier = cohort.Barrier(3)
        results: list[int] = []

        async def party() -> None:
            results.append(await barrier.wait())

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(party)
        # An anyio cancel scope breaks the barrier like any timeout.
        other = asyncio.create_task(barrier.wait())
        with anyio.move_on_after(0.01):
            await barrier.wait()
        with pytest.raises(cohort.BrokenBarrierError):
            await other
        return sorted(results)

    assert anyio.run(main, backend="asyncio", backend_options=_VIRTUAL) == [0, 1, 2]
