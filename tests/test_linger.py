"""cohort.Linger: a cancelled call finishes in the background, within its grace and limit.

On the virtual clock: every time below is exact, and no test sleeps to order events.
"""

from __future__ import annotations

import asyncio
import gc
import math
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cohort
import cohort.testing

virtual_clock = pytest.mark.virtual_clock


@dataclass
class Work:
    """A call that takes ``seconds``, recording how it ended and when."""

    seconds: float
    ended: str = "running"
    at: float = math.nan
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, value: int = 1, *, fail: bool = False) -> int:
        self.started.set()
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.ended, self.at = "cancelled", cohort.current_time()
            raise
        self.ended, self.at = "finished", cohort.current_time()
        if fail:
            raise ValueError("backend said no")
        return value


def assert_ended(work: Work, how: str, at: float) -> None:
    assert work.ended == how
    assert work.at == pytest.approx(at)


@virtual_clock
async def test_a_call_that_is_not_cancelled_is_just_awaited() -> None:
    async with cohort.Linger(grace=1) as linger:
        assert await linger.call(Work(0.5), 7) == 7
        with pytest.raises(ValueError, match="backend said no"):
            await linger.call(Work(0.5), fail=True)
        stats = linger.statistics()
    assert cohort.current_time() == pytest.approx(1.0)
    assert stats == cohort.LingerStatistics(
        running=0, lingering=0, calls=2, finished=0, cut_off=0, refused=0
    )


@virtual_clock
async def test_a_cancelled_call_finishes_in_the_background_and_the_caller_goes_on_at_once() -> None:
    work = Work(0.3)
    async with cohort.Linger(grace=1) as linger:
        with cohort.move_on_after(0.1) as scope:
            await linger.call(work)
        assert scope.cancelled_caught
        assert cohort.current_time() == pytest.approx(0.1)  # the caller did not wait
        assert linger.statistics().lingering == 1
    # Leaving the block waited for the lingering call, which ran to its end.
    assert_ended(work, "finished", 0.3)
    assert cohort.current_time() == pytest.approx(0.3)
    assert linger.statistics().finished == 1


@virtual_clock
async def test_a_call_still_running_when_its_grace_runs_out_is_cancelled_then() -> None:
    work = Work(5)
    async with cohort.Linger(grace=0.5) as linger:
        with cohort.move_on_after(0.1):
            await linger.call(work)
    assert_ended(work, "cancelled", 0.6)
    assert linger.statistics().cut_off == 1
    assert linger.statistics().lingering == 0


@virtual_clock
async def test_leaving_waits_for_a_cut_off_call_to_finish_its_cleanup() -> None:
    cleaned: list[float] = []

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(1)  # e.g. closing a connection politely
            cleaned.append(cohort.current_time())

    async with cohort.Linger(grace=0.5) as linger:
        with cohort.move_on_after(0.1):
            await linger.call(slow_to_stop)
    assert cleaned == [pytest.approx(1.6)]
    assert cohort.current_time() == pytest.approx(1.6)


@virtual_clock
async def test_past_the_limit_a_cancelled_call_is_cancelled_at_once() -> None:
    first, second = Work(1), Work(1)
    async with cohort.Linger(grace=2, limit=1) as linger:
        with cohort.move_on_after(0.1):
            async with cohort.TaskGroup() as g:
                g.spawn(linger.call, first)
                g.spawn(linger.call, second)
        assert cohort.current_time() == pytest.approx(0.1)
        await cohort.testing.wait_all_tasks_blocked()
        assert_ended(second, "cancelled", 0.1)
        assert linger.statistics().refused == 1
    assert_ended(first, "finished", 1)


@virtual_clock
async def test_first_wins_losers_linger_and_finish() -> None:
    mirrors = [Work(0.1), Work(0.2), Work(0.3)]
    async with cohort.Linger(grace=1) as linger:
        async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
            for value, mirror in enumerate(mirrors):
                g.spawn(linger.call, mirror, value)
        assert g.result == 0
        assert cohort.current_time() == pytest.approx(0.1)
    assert [m.ended for m in mirrors] == ["finished"] * 3
    assert linger.statistics().finished == 2


@virtual_clock
async def test_errors_of_lingering_calls_are_dropped_without_a_warning() -> None:
    errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    async with cohort.Linger(grace=1) as linger:
        for _ in range(3):
            with cohort.move_on_after(0.1):
                await linger.call(Work(0.2), fail=True)
    assert linger.statistics().finished == 3
    gc.collect()
    assert errors == []


@virtual_clock
async def test_a_cancelled_exit_cancels_the_lingering_calls_and_waits_for_them() -> None:
    work = Work(10)
    linger = cohort.Linger(grace=5)

    async def body() -> None:
        async with linger:
            with cohort.move_on_after(0.1):
                await linger.call(work)

    task = asyncio.create_task(body())
    await work.started.wait()
    await asyncio.sleep(1)  # the body is in __aexit__, waiting for the lingering call
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_ended(work, "cancelled", 1)


@virtual_clock
async def test_a_block_left_by_cancellation_cancels_the_lingering_calls_at_once() -> None:
    work = Work(10)
    linger = cohort.Linger(grace=5)

    async def body() -> None:
        async with linger:
            with cohort.move_on_after(0.1):
                await linger.call(work)
            await asyncio.sleep(100)

    task = asyncio.create_task(body())
    await work.started.wait()
    await asyncio.sleep(1)  # the body sleeps; the call lingers
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_ended(work, "cancelled", 1)
    assert cohort.current_time() == 1
    stats = linger.statistics()
    assert (stats.lingering, stats.cut_off, stats.finished) == (0, 1, 0)


@virtual_clock
async def test_an_exit_cancelled_twice_still_waits_for_the_calls_to_end() -> None:
    cleaned: list[float] = []

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(2)  # closing a connection politely
            cleaned.append(cohort.current_time())

    linger = cohort.Linger(grace=5)
    left: list[float] = []

    async def body() -> None:
        try:
            async with linger:
                with cohort.move_on_after(0.1):
                    await linger.call(slow_to_stop)
        finally:
            left.append(cohort.current_time())

    task = asyncio.create_task(body())
    await asyncio.sleep(1)  # the body is in __aexit__, waiting for the lingering call
    task.cancel()  # the call is cancelled; its cleanup ends at 3
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [3]
    assert left == [3]


@virtual_clock
async def test_the_call_runs_outside_the_callers_group_and_deadlines() -> None:
    seen: list[float] = []

    async def look() -> None:
        seen.append(cohort.current_deadline())

    async with cohort.Linger(grace=1) as linger, cohort.TaskGroup(timeout=5) as g:
        g.spawn(linger.call, look)
        with cohort.move_on_after(2):
            await linger.call(look)
    assert seen == [math.inf, math.inf]


@virtual_clock
async def test_keyword_arguments_and_awaitables_that_are_not_coroutines() -> None:
    async with cohort.Linger(grace=1) as linger:
        assert await linger.call(Work(0.1), value=3) == 3
        future = asyncio.get_running_loop().create_future()
        future.set_result("ready")
        assert await linger.call(lambda: future) == "ready"


async def test_call_outside_the_block_is_a_closed_error() -> None:
    linger = cohort.Linger(grace=1)
    with pytest.raises(cohort.ClosedError, match="not entered"):
        await linger.call(Work(0))
    async with linger:
        pass
    with pytest.raises(cohort.ClosedError, match="closed"):
        await linger.call(Work(0))
    with pytest.raises(RuntimeError, match="entered already"):
        async with linger:
            pass
    assert repr(linger).startswith("<cohort.Linger closed grace=1.0")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"grace": 0}, ValueError, "grace must be a number of seconds > 0"),
        ({"grace": -1}, ValueError, "grace must be"),
        ({"grace": math.inf}, ValueError, "finite"),
        ({"grace": "1"}, TypeError, "grace must be"),
        ({"grace": 1, "limit": -1}, ValueError, "limit must be an int >= 0"),
        ({"grace": 1, "limit": True}, TypeError, "limit must be an int"),
    ],
)
def test_bad_arguments_raise_at_construction(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        cohort.Linger(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    calls=st.lists(
        st.tuples(
            st.integers(1, 20),  # the call's duration, in tenths, plus half a tenth: no ties
            st.integers(1, 20),  # when its caller is cancelled, in tenths
        ),
        min_size=1,
        max_size=8,
    ),
    grace=st.integers(1, 10),
    limit=st.integers(0, 8),
)
def test_every_call_is_returned_finished_cut_off_or_refused(
    calls: list[tuple[int, int]], grace: int, limit: int
) -> None:
    """Each call ends exactly one way, at the time its duration, grace and limit say."""

    async def main() -> tuple[list[Work], cohort.LingerStatistics]:
        works = [Work((d + 0.5) / 10) for d, _ in calls]
        async with cohort.Linger(grace=grace / 10, limit=limit) as linger:

            async def caller(work: Work, cancel_at: float) -> None:
                with cohort.move_on_at(cancel_at):
                    await linger.call(work)

            async with cohort.TaskGroup() as g:
                for work, (_, cancel) in zip(works, calls, strict=True):
                    g.spawn(caller, work, cancel / 10)
        return works, linger.statistics()

    works, stats = cohort.testing.run(main)
    returned = finished = cut_off = refused = 0
    for work, (duration, cancel) in zip(works, calls, strict=True):
        if duration + 0.5 < cancel:
            returned += 1
            assert_ended(work, "finished", (duration + 0.5) / 10)
        elif work.ended == "finished":
            finished += 1
            assert duration <= cancel + grace
        elif work.at == pytest.approx(cancel / 10):
            refused += 1
        else:
            cut_off += 1
            assert work.at == pytest.approx((cancel + grace) / 10)
    assert stats.calls == len(calls)
    assert (stats.finished, stats.cut_off, stats.refused) == (finished, cut_off, refused)
    assert stats.running == stats.lingering == 0
