"""gather, race, quorum and hedge (cohort._core._combinators)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, assert_type

import pytest

import cohort
from _util import Calls, bad, closed, now, ok

vc = pytest.mark.virtual_clock


# -- gather ----------------------------------------------------------------------


async def test_gather_returns_values_in_argument_order() -> None:
    fut = asyncio.get_running_loop().create_future()
    fut.set_result("f")
    task = asyncio.create_task(ok("t", 0))
    assert await cohort.gather(ok(1, 0.02), ok(2, 0), fut, task) == (1, 2, "f", "t")
    assert await cohort.gather() == ()


@vc
async def test_gather_first_failure_cancels_the_rest_and_raises_a_group() -> None:
    calls = Calls()
    with pytest.raises(ExceptionGroup) as info:
        await cohort.gather(calls("a", 1, fail=True), calls("b", 5), calls("c", 5))
    assert now() == 1
    assert [str(e) for e in info.value.exceptions] == ["call a failed"]
    assert set(calls.finalized) == {"a", "b", "c"}


@vc
async def test_gather_limit_caps_concurrency() -> None:
    calls = Calls()
    assert await cohort.gather(*(calls(i) for i in range(10)), limit=3) == tuple(range(10))
    assert calls.peak == 3
    assert now() == 4  # ceil(10 / 3) rounds of 1 s


@vc
async def test_gather_timeout_raises_timeout_error_at_the_deadline() -> None:
    calls = Calls()
    with pytest.raises(TimeoutError):
        await cohort.gather(calls("fast", 1), calls("slow", 10), timeout=2.5)
    assert now() == 2.5
    assert calls.finalized == {"fast": 1, "slow": 2.5}


async def test_gather_bad_input_closes_every_coroutine_given() -> None:
    first, last = ok(1), ok(2)
    with pytest.raises(TypeError, match=r"argument 1 is 42"):
        await cohort.gather(first, 42, last)  # type: ignore[call-overload]
    assert closed(first)
    assert closed(last)
    coro = ok(1)
    with pytest.raises(ValueError, match="limit"):
        await cohort.gather(coro, limit=0)
    assert closed(coro)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a coroutine left never awaited fails
async def test_gather_return_exceptions_points_to_settle_and_closes_the_coroutines() -> None:
    first, second = ok(1), ok(2)
    with pytest.raises(TypeError, match=r"no return_exceptions=.*`await cohort\.settle\(\.\.\.\)`"):
        await cohort.gather(first, second, return_exceptions=True)  # type: ignore[call-overload]
    assert closed(first)
    assert closed(second)
    coro = ok(1)
    with pytest.raises(TypeError, match=r"'timout'; its options are limit= and timeout="):
        await cohort.gather(coro, timout=1)  # type: ignore[call-overload]
    assert closed(coro)


# -- settle -------------------------------------------------------------------------


@vc
async def test_settle_returns_every_value_and_exception_in_argument_order() -> None:
    calls = Calls()
    fut = asyncio.get_running_loop().create_future()
    fut.set_exception(KeyError("f"))
    task = asyncio.create_task(ok("t", 3))
    outcomes = await cohort.settle(
        calls("a", 2), calls("b", 1, fail=True), fut, task, bad("late", 4)
    )
    a, b, f, t, late = outcomes
    assert (a, t) == ("a", "t")
    assert isinstance(b, Exception)
    assert str(b) == "call b failed"
    assert isinstance(f, KeyError)
    assert isinstance(late, ValueError)
    assert str(late) == "late"
    assert now() == 4  # a failure cancels nothing: every awaitable ran to its end
    assert calls.finalized == {"a": 2, "b": 1}
    assert await cohort.settle() == ()


@vc
async def test_settle_limit_and_timeout_work_as_in_gather() -> None:
    calls = Calls()
    assert await cohort.settle(*(calls(i) for i in range(5)), limit=2) == tuple(range(5))
    assert calls.peak == 2
    calls = Calls()
    with pytest.raises(TimeoutError):
        await cohort.settle(calls("fast", 1, fail=True), calls("slow", 10), timeout=2.5)
    assert now() == 3 + 2.5
    assert calls.finalized == {"fast": 1 + 3, "slow": 2.5 + 3}


async def test_settle_shows_a_child_cancelled_elsewhere_as_a_runtime_error() -> None:
    victim: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    victim.cancel()
    outcomes = await cohort.settle(asyncio.sleep(0, 1), victim)
    value, cancelled = outcomes
    assert value == 1
    assert isinstance(cancelled, RuntimeError)  # an Exception: `isinstance(x, Exception)` finds it
    assert "without being cancelled" in str(cancelled)
    assert isinstance(cancelled.__cause__, asyncio.CancelledError)


async def test_settle_bad_input_closes_every_coroutine_given() -> None:
    first, last = ok(1), ok(2)
    with pytest.raises(TypeError, match=r"settle\(\) takes awaitables.*argument 1 is 42"):
        await cohort.settle(first, 42, last)  # type: ignore[call-overload]
    assert closed(first)
    assert closed(last)


# -- race --------------------------------------------------------------------------


@vc
async def test_race_awaits_the_losers_before_returning() -> None:
    calls = Calls(cleanup=2)
    assert await cohort.race(calls("slow", 5), calls("fast", 1), calls("slower", 9)) == "fast"
    # The losers' cleanup (2 s of awaiting in their finally blocks) ran before race returned.
    assert now() == 3
    assert calls.finalized == {"fast": 1, "slow": 3, "slower": 3}


@vc
async def test_race_a_failure_does_not_end_the_race() -> None:
    assert await cohort.race(bad("early", 1), ok("late", 2)) == "late"
    assert now() == 2


@vc
async def test_race_raises_quorum_error_when_every_awaitable_failed() -> None:
    with pytest.raises(cohort.QuorumError) as info:
        await cohort.race(bad("a", 1), bad("b", 2))
    assert sorted(str(e) for e in info.value.exceptions) == ["a", "b"]
    assert now() == 2


async def test_race_needs_an_awaitable() -> None:
    with pytest.raises(ValueError, match="at least one"):
        await cohort.race()


# -- quorum ------------------------------------------------------------------------


@vc
async def test_quorum_returns_the_first_k_values_in_completion_order() -> None:
    calls = Calls()
    assert await cohort.quorum(2, calls("a", 3), calls("b", 1), calls("c", 2)) == ["b", "c"]
    assert now() == 2
    assert calls.finalized["a"] == 2


@vc
async def test_quorum_raises_as_soon_as_it_is_out_of_reach() -> None:
    with pytest.raises(cohort.QuorumError) as info:
        await cohort.quorum(2, bad("a", 1), bad("b", 2), ok("c", 10))
    assert now() == 2
    assert info.value.needed == 2


async def test_quorum_validates_k_and_closes_the_coroutines() -> None:
    coros = [ok(1), ok(2)]
    with pytest.raises(ValueError, match="between 1 and the 2"):
        await cohort.quorum(3, *coros)
    assert all(closed(c) for c in coros)
    with pytest.raises(ValueError, match="k=0"):
        await cohort.quorum(0)
    coros = [ok(1)]
    with pytest.raises(TypeError, match=r"quorum\(k, \*aws\): k must be an int"):
        await cohort.quorum(True, *coros)
    assert all(closed(c) for c in coros)


# -- hedge -------------------------------------------------------------------------


@vc
async def test_hedge_starts_a_second_attempt_after_delay_when_the_first_is_slow() -> None:
    durations = iter([10.0, 1.0])
    calls = Calls()

    async def read(key: str) -> int:
        return await calls(len(calls.started), next(durations))  # type: ignore[no-any-return]

    assert await cohort.hedge(read, "k", delay=0.5) == 1
    assert calls.started == {0: 0, 1: 0.5}  # the second attempt started exactly at the delay
    assert now() == 1.5
    assert calls.finalized == {0: 1.5, 1: 1.5}  # the slow one was cancelled and awaited


@vc
async def test_hedge_fast_first_attempt_starts_nothing_else() -> None:
    calls = Calls()
    assert await cohort.hedge(calls, "only", 0.2, delay=1, attempts=3) == "only"
    assert list(calls.started) == ["only"]
    assert now() == 0.2


@vc
async def test_hedge_a_failed_attempt_starts_the_next_at_once() -> None:
    plan = iter([(2.0, True), (5.0, False), (1.0, False)])
    calls = Calls()

    async def attempt() -> Any:
        delay, fail = next(plan)
        return await calls(len(calls.started), delay, fail)

    assert await cohort.hedge(attempt, delay=3, attempts=3) == 2
    # 0 fails at 2 -> 1 starts at 2; 1 is slow -> 2 starts at 2 + 3; 2 wins at 6.
    assert calls.started == {0: 0, 1: 2, 2: 5}
    assert now() == 6


@vc
async def test_hedge_raises_quorum_error_when_every_attempt_failed() -> None:
    calls = Calls()
    with pytest.raises(cohort.QuorumError) as info:
        await cohort.hedge(calls, "x", 1, True, delay=10, attempts=3)
    assert len(info.value.exceptions) == 3
    assert now() == 3  # each failure started the next attempt immediately


@vc
async def test_hedge_over_callables_asks_the_next_replica_each_attempt() -> None:
    asked: list[tuple[str, float]] = []

    async def read(replica: str, seconds: float) -> str:
        asked.append((replica, now()))
        await asyncio.sleep(seconds)
        return replica

    attempts = [
        functools.partial(read, "eu-1", 10),
        functools.partial(read, "us-1", 10),
        functools.partial(read, "ap-1", 0.1),
    ]
    assert await cohort.hedge(attempts, delay=0.5) == "ap-1"
    assert asked == [("eu-1", 0), ("us-1", 0.5), ("ap-1", 1.0)]
    assert now() == pytest.approx(1.1)


async def test_hedge_over_callables_refuses_arguments_and_empty_lists() -> None:
    async def one() -> int:
        return 1

    with pytest.raises(TypeError, match="no arguments and no attempts="):
        await cohort.hedge([one], 1, delay=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="no arguments and no attempts="):
        await cohort.hedge([one], delay=1, attempts=2)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="at least one callable"):
        await cohort.hedge([], delay=1)
    with pytest.raises(TypeError, match="async callables, got 3"):
        await cohort.hedge([one, 3], delay=1)  # type: ignore[arg-type]
    assert await cohort.hedge([one], delay=1) == 1


async def test_hedge_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="async callable"):
        await cohort.hedge(42, delay=1)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="attempts"):
        await cohort.hedge(ok, 1, delay=1, attempts=0)
    with pytest.raises(ValueError, match="delay"):
        await cohort.hedge(ok, 1, delay=-1)


# -- every one-shot helper: cancellation from outside, and a deadline around it --------

ONE_SHOTS: dict[str, Callable[[Calls], Awaitable[Any]]] = {
    "gather": lambda c: cohort.gather(c(1, 5), c(2, 9)),
    "settle": lambda c: cohort.settle(c(1, 5), c(2, 9)),
    "race": lambda c: cohort.race(c(1, 5), c(2, 9)),
    "quorum": lambda c: cohort.quorum(2, c(1, 5), c(2, 9), c(3, 9)),
    "hedge": lambda c: cohort.hedge(c, "h", 9, delay=1, attempts=2),
}


@vc
@pytest.mark.parametrize("helper", ONE_SHOTS)
async def test_cancelled_from_outside_cancels_and_awaits_everything(helper: str) -> None:
    calls = Calls(cleanup=1)
    task = asyncio.ensure_future(ONE_SHOTS[helper](calls))
    await asyncio.sleep(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert now() == 3  # cancelled at 2, cleanup took 1
    assert calls.running == 0
    assert len(calls.finalized) == len(calls.started) >= 1


@vc
@pytest.mark.parametrize("helper", ONE_SHOTS)
async def test_a_deadline_around_a_helper_stops_it(helper: str) -> None:
    calls = Calls()
    with pytest.raises(TimeoutError), cohort.fail_after(2):
        await ONE_SHOTS[helper](calls)
    assert now() == 2
    assert calls.running == 0
    assert len(calls.finalized) == len(calls.started)


# -- types (checked by mypy --strict; run as an ordinary test too) ---------------------


async def test_result_types_follow_the_awaitables() -> None:
    async def num(i: int) -> int:
        return i

    async def read(replica: str, key: int) -> bytes:
        return replica.encode() + bytes([key])

    assert_type(await cohort.gather(num(1), num(2), limit=2), tuple[int, int])
    assert_type(await cohort.gather(num(1), read("a", 1)), tuple[int, bytes])
    assert_type(await cohort.gather(*(num(i) for i in range(8))), tuple[int, ...])
    assert_type(
        await cohort.settle(num(1), read("a", 1)), tuple[int | Exception, bytes | Exception]
    )
    assert_type(await cohort.settle(*(num(i) for i in range(8))), tuple[int | Exception, ...])
    assert_type(await cohort.race(read("a", 1), read("b", 1)), bytes)
    assert_type(await cohort.race(num(1), read("a", 1)), int | bytes)
    assert_type(await cohort.quorum(1, num(1), num(2)), list[int])
    assert_type(await cohort.hedge(read, "a", 1, delay=0.1), bytes)
    async with cohort.map(num, range(3), limit=2) as results:
        assert_type(results, cohort.ResultStream[int])
        assert [assert_type(v, int) async for v in results] == [0, 1, 2]
    assert [assert_type(b, bytes) async for b in cohort.as_completed([read("a", 1)])] == [b"a\x01"]


# -- each helper is a one-shot group with its policy -------------------------------------------


def _inputs() -> list[Any]:
    return [ok("a", 3), bad("b", 1), ok("c", 2), ok("d", 5)]


async def _as_group(policy: cohort.JoinPolicy, shape: str) -> Any:
    async with cohort.TaskGroup(join=policy) as g:
        for aw in _inputs():
            g.spawn(aw)
    if shape == "outcomes":  # settle's: every outcome in spawn order, a value or the exception
        return tuple(o.error if o.error is not None else o.value for o in g.outcomes)
    if shape == "first":  # race's: the winner's value
        return g.results[0]
    return tuple(g.results) if shape == "tuple" else g.results


async def _ended(run: Callable[[], Awaitable[Any]]) -> tuple[str, float]:
    """What ``run`` returned or raised (as text), and when, from its start."""
    start = now()
    try:
        got = repr(await run())
    except Exception as exc:  # an ExceptionGroup or QuorumError: its type and errors
        inner = getattr(exc, "exceptions", ())
        got = f"{type(exc).__name__}{sorted(map(repr, inner))}"
    return got, now() - start


@vc
@pytest.mark.parametrize("helper", ["gather", "settle", "quorum", "race"])
async def test_each_helper_is_a_task_group_with_the_policy_of_its_name(helper: str) -> None:
    """gather/Gather, settle/Settle, quorum/Quorum, race/FirstWins: same inputs, same
    values or errors, at the same time (docs/semantics.md, Helpers)."""
    by_function: dict[str, Callable[[], Awaitable[Any]]] = {
        "gather": lambda: cohort.gather(*_inputs()),
        "settle": lambda: cohort.settle(*_inputs()),
        "quorum": lambda: cohort.quorum(2, *_inputs()),
        "race": lambda: cohort.race(*_inputs()),
    }
    by_group: dict[str, Callable[[], Awaitable[Any]]] = {
        "gather": lambda: _as_group(cohort.Gather(), "tuple"),
        "settle": lambda: _as_group(cohort.Settle(), "outcomes"),
        "quorum": lambda: _as_group(cohort.Quorum(2), "list"),
        "race": lambda: _as_group(cohort.FirstWins(), "first"),
    }
    function, group = await _ended(by_function[helper]), await _ended(by_group[helper])
    assert function == group


def test_race_closes_its_awaitables_when_its_group_cannot_open() -> None:
    async def value(v: int) -> int:
        return v

    first, second = value(1), value(2)
    racing = cohort.race(first, second)
    with pytest.raises(RuntimeError, match="inside an asyncio task"):
        racing.send(None)  # no running loop: the group cannot be entered
    assert closed(first)  # never awaited, and no warning of it
    assert closed(second)
