"""map, as_completed and their ResultStream (cohort._core._stream)."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import cohort
from _util import Calls, closed, now, ok
from cohort.testing import wait_all_tasks_blocked

vc = pytest.mark.virtual_clock


# -- map ---------------------------------------------------------------------------


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def test_map_yields_in_input_order_from_sync_and_async_sources() -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(20):
            yield i

    async with cohort.map(double, range(20), limit=4) as results:
        assert [r async for r in results] == [2 * i for i in range(20)]
    assert [r async for r in cohort.map(double, numbers(), limit=3)] == [2 * i for i in range(20)]
    assert [r async for r in cohort.map(double, [], limit=3)] == []


@vc
async def test_map_unordered_yields_in_completion_order_and_respects_limit() -> None:
    calls = Calls()

    async def sleepy(i: int) -> int:
        return await calls(i, [3, 1, 1.5, 1][i])  # type: ignore[no-any-return]

    got = [r async for r in cohort.map(sleepy, range(4), limit=2, ordered=False)]
    assert got == [1, 2, 0, 3]
    assert calls.started == {0: 0, 1: 0, 2: 1, 3: 2.5}
    assert calls.peak == 2


@vc
async def test_map_pulls_only_when_a_slot_is_free() -> None:
    pulled = 0

    def items() -> Iterator[int]:
        nonlocal pulled
        for i in range(1_000_000):
            pulled += 1
            yield i

    stream = cohort.map(ok, items(), limit=3)
    assert pulled == 0  # nothing happens before iteration starts
    async with stream as results:
        await wait_all_tasks_blocked()
        assert pulled == 3
        await asyncio.sleep(10)  # the calls finish, but nobody consumes: no more pulls
        assert pulled == 3
        assert await anext(results) == 0
        await wait_all_tasks_blocked()
        assert pulled == 4  # one slot was freed by consuming
        seen = [0]
        async for value in results:
            seen.append(value)
            assert pulled <= len(seen) + 3
            if len(seen) == 10:
                break
    assert seen == list(range(10))
    assert pulled <= 13


def map_peak_bytes(n: int) -> int:
    """The peak memory, traced, of ``cohort.map`` over ``n`` items, ``limit=8``."""

    async def same(x: int) -> int:
        return x

    async def main() -> int:
        tracemalloc.start()
        try:
            count = 0
            async with cohort.map(same, (i for i in range(n)), limit=8) as results:
                async for _ in results:
                    count += 1
            assert count == n
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    return cohort.run(main, uvloop=False)


def map_most_tasks(n: int) -> int:
    """The most tasks alive, sampled 10 times, while ``cohort.map`` goes over ``n`` items."""

    async def same(x: int) -> int:
        return x

    async def main() -> int:
        most = count = 0
        async with cohort.map(same, (i for i in range(n)), limit=8) as results:
            async for _ in results:
                count += 1
                if count % (n // 10) == 0:
                    most = max(most, len(asyncio.all_tasks()))
        assert count == n
        return most

    return cohort.run(main)


# Ten times the items, the same peak memory and task count; `make soak` runs
# ten times as many (100,000 against 10,000 items, and a million).
def test_map_memory_stays_flat_for_many_items() -> None:
    small, large = map_peak_bytes(5_000), map_peak_bytes(50_000)
    assert large < 2 * small + 64 * 1024, (small, large)


def test_map_over_many_items_keeps_a_bounded_number_of_tasks() -> None:
    assert map_most_tasks(100_000) <= 8 + 2  # the workers, the driver, the consumer


@pytest.mark.soak
def test_map_memory_stays_flat_for_ten_times_more_items() -> None:
    small, large = map_peak_bytes(10_000), map_peak_bytes(100_000)
    assert large < 2 * small + 64 * 1024, (small, large)


@pytest.mark.soak
def test_map_over_a_million_items_keeps_a_bounded_number_of_tasks() -> None:
    assert map_most_tasks(1_000_000) <= 8 + 2


@vc
@pytest.mark.parametrize("ordered", [True, False])
async def test_map_first_failure_cancels_the_rest_and_is_raised_in_place(ordered: bool) -> None:
    calls = Calls()
    plan = {0: (0.5, False), 1: (0.7, False), 2: (1.0, True), 3: (5.0, False)}

    async def work(i: int) -> Any:
        delay, fail = plan[i]
        return await calls(i, delay, fail)

    seen = []
    with pytest.raises(ValueError, match="call 2 failed"):
        async for value in cohort.map(work, range(4), limit=4, ordered=ordered):
            seen.append(value)
    assert seen == [0, 1]
    assert now() == 1
    assert calls.finalized[3] == 1  # cancelled and awaited before the error was raised


@vc
async def test_map_an_error_from_the_iterable_is_raised_at_its_position() -> None:
    def items() -> Iterator[int]:
        yield 0
        yield 1
        raise LookupError("source broke")

    seen = []
    with pytest.raises(LookupError, match="source broke"):
        async for value in cohort.map(ok, items(), limit=2):
            seen.append(value)
    assert seen == [0, 1]


async def test_map_a_call_raising_cancelled_error_by_itself_fails_instead_of_losing_items() -> None:
    async def odd(i: int) -> int:
        if i == 2:
            raise asyncio.CancelledError
        await asyncio.sleep(0)
        return i

    seen = []
    with pytest.raises(RuntimeError, match="item 2 raised CancelledError without being cancelled"):
        async for value in cohort.map(odd, range(5), limit=2):
            seen.append(value)
    assert seen == [0, 1]


@vc
async def test_map_break_inside_async_with_cancels_and_awaits_the_running_calls() -> None:
    calls = Calls(cleanup=1)

    async def work(i: int) -> Any:
        return await calls(i, i + 1)

    async with cohort.map(work, range(100), limit=3) as results:
        async for value in results:
            assert value == 0
            break
        assert calls.running >= 2  # still running inside the block
    assert calls.running == 0
    assert now() == 2  # first result at 1, cleanup of the others took 1
    assert set(calls.finalized) == set(calls.started)


@vc
async def test_map_aclose_cancels_and_awaits() -> None:
    calls = Calls()
    results = cohort.map(calls, range(100), limit=3)
    assert await anext(results) == 0
    await results.aclose()
    assert calls.running == 0
    assert set(calls.finalized) == set(calls.started)
    with pytest.raises(StopAsyncIteration):
        await anext(results)


@vc
async def test_map_bare_async_for_break_cancels_when_the_stream_is_dropped() -> None:
    calls = Calls()
    async for value in cohort.map(calls, range(100), limit=3):
        assert value == 0
        break
    gc.collect()
    await wait_all_tasks_blocked()
    assert calls.running == 0
    assert set(calls.finalized) == set(calls.started)
    assert now() == 1


@vc
async def test_map_cancelled_from_outside_cancels_and_awaits_the_calls() -> None:
    calls = Calls(cleanup=1)
    seen: list[int] = []

    async def consume() -> None:
        async with cohort.map(calls, range(100), limit=3) as results:
            async for value in results:
                seen.append(value)

    task = asyncio.create_task(consume())
    await asyncio.sleep(2.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [0, 1, 2, 3, 4, 5]
    assert now() == 3.5
    assert calls.running == 0
    assert set(calls.finalized) == set(calls.started)


@vc
async def test_map_under_a_deadline() -> None:
    calls = Calls()
    seen: list[int] = []
    with cohort.move_on_after(2.5) as scope:
        async with cohort.map(calls, range(100), limit=2) as results:
            async for value in results:
                seen.append(value)
    assert scope.cancelled_caught
    assert seen == [0, 1, 2, 3]
    assert now() == 2.5
    assert calls.running == 0


async def test_map_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="limit"):
        cohort.map(double, range(3))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="limit"):
        cohort.map(double, range(3), limit=0)
    with pytest.raises(TypeError, match="async callable"):
        cohort.map(42, range(3), limit=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="iterable"):
        cohort.map(double, 42, limit=1)  # type: ignore[arg-type]
    stream = cohort.map(double, range(3), limit=1)
    async with stream:
        with pytest.raises(RuntimeError, match="only once"):
            await stream.__aenter__()


# -- as_completed --------------------------------------------------------------------


@vc
async def test_as_completed_yields_values_in_completion_order() -> None:
    got = []
    async with cohort.as_completed([ok("c", 3), ok("a", 1), ok("b", 2)]) as results:
        async for value in results:
            got.append((value, now()))
    assert got == [("a", 1), ("b", 2), ("c", 3)]


@vc
async def test_as_completed_limit_and_early_exit_close_unstarted_coroutines() -> None:
    calls = Calls()
    coros = [calls(i, 1) for i in range(5)]
    async with cohort.as_completed(coros, limit=2) as results:
        async for value in results:
            assert value == 0
            break
    assert calls.peak == 2
    assert all(closed(c) for c in coros)
    assert calls.running == 0


@vc
async def test_as_completed_failure_is_raised_where_it_would_be_yielded() -> None:
    calls = Calls()
    got = []
    with pytest.raises(ValueError, match="call 2 failed"):
        async for value in cohort.as_completed([calls(1, 1), calls(2, 2, True), calls(3, 9)]):
            got.append(value)
    assert got == [1]
    assert now() == 2
    assert calls.finalized[3] == 2


@vc
async def test_as_completed_cancelled_from_outside_and_under_a_deadline() -> None:
    calls = Calls()
    with cohort.move_on_after(1.5):
        async with cohort.as_completed([calls(i, i + 1) for i in range(4)]) as results:
            async for _ in results:
                pass
    assert now() == 1.5
    assert calls.running == 0

    async def consume() -> None:
        async with cohort.as_completed([calls(i, 5) for i in range(10, 13)]) as results:
            async for _ in results:
                pass

    task = asyncio.create_task(consume())
    await wait_all_tasks_blocked()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls.running == 0
    assert set(calls.finalized) == set(calls.started)


async def test_as_completed_bad_input_and_dropped_streams_leave_nothing_unawaited() -> None:
    single = ok(1)
    with pytest.raises(TypeError, match="iterable of awaitables"):
        cohort.as_completed(single)  # type: ignore[arg-type]
    assert closed(single)
    good = ok(1)
    with pytest.raises(TypeError, match="argument 1"):
        cohort.as_completed([good, 42])  # type: ignore[arg-type]
    assert closed(good)
    never = [ok(1), ok(2)]
    stream = cohort.as_completed(never)
    del stream
    gc.collect()
    assert all(closed(c) for c in never)
    closing = [ok(1)]
    await cohort.as_completed(closing).aclose()
    assert closed(closing[0])


async def test_a_spent_stream_refuses_a_second_iteration() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    stream = cohort.map(double, range(3), limit=2)
    assert [x async for x in stream] == [0, 2, 4]
    with pytest.raises(
        RuntimeError, match=r"already iterated to its end or closed; call cohort\.map\(\)"
    ):
        async for _ in stream:
            pass
    closed = cohort.as_completed([double(1), double(2)])
    async with closed:
        async for _ in closed:
            break
    with pytest.raises(RuntimeError, match=r"call cohort\.as_completed\(\) again"):
        async for _ in closed:
            pass
    # a bare `async for` left by `break` resumes where it stopped, like a generator
    resumed = cohort.map(double, range(3), limit=1)
    first = await anext(resumed)
    async for _ in resumed:
        break
    assert [first, *[x async for x in resumed]] == [0, 4]
