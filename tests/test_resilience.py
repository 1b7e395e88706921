"""Retry anywhere, circuit breaker, rate limiter, bulkhead and hedging budget.

Everything on the virtual clock: who runs when is asserted at exact times.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cohort
from _util import now
from cohort.testing import wait_all_tasks_blocked

vc = pytest.mark.virtual_clock


class Status(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code


def state(breaker: cohort.CircuitBreaker) -> cohort.CircuitState:
    """The breaker's state (a call, so type checkers do not narrow it between reads)."""
    return breaker.state


def flaky(failures: list[BaseException], log: list[float]) -> Any:
    """An async function that raises the given errors in turn, then returns "ok"."""

    async def call() -> str:
        log.append(now())
        await asyncio.sleep(0.1)
        if failures:
            raise failures.pop(0)
        return "ok"

    return call


# -- retry ----------------------------------------------------------------------------------


@vc
async def test_retry_backs_off_exponentially_and_returns_the_value() -> None:
    log: list[float] = []
    call = flaky([ValueError("a"), ValueError("b")], log)
    policy = cohort.Retry(attempts=3, backoff=1.0, jitter=False)
    assert await cohort.retry(call, policy=policy) == "ok"
    assert log == [0.0, 1.1, 3.2]  # 0.1 s per attempt; then 1 s and 2 s of backoff


@vc
async def test_retry_raises_the_last_error_when_attempts_run_out() -> None:
    log: list[float] = []
    call = flaky([ValueError("a"), ValueError("b"), ValueError("c")], log)
    with pytest.raises(ValueError, match="b"):
        await cohort.retry(call, policy=cohort.Retry(attempts=2, backoff=0.5, jitter=False))
    assert len(log) == 2


@vc
async def test_retry_on_a_predicate_retries_503_not_404() -> None:
    policy = cohort.Retry(on=lambda e: isinstance(e, Status) and e.code >= 500, jitter=False)
    log: list[float] = []
    assert await cohort.retry(flaky([Status(503)], log), policy=policy) == "ok"
    with pytest.raises(Status, match="404"):
        await cohort.retry(flaky([Status(404)], log), policy=policy)
    assert len(log) == 3


@vc
async def test_no_retry_starts_that_cannot_finish_before_the_deadline() -> None:
    log: list[float] = []
    call = flaky([ValueError("a"), ValueError("b"), ValueError("c")], log)
    policy = cohort.Retry(attempts=5, backoff=1.0, jitter=False, attempt_timeout=0.5)
    with cohort.move_on_after(2.0), pytest.raises(ValueError, match="b") as info:
        await cohort.retry(call, policy=policy)
    # attempt 1 at 0; attempt 2 at 1.1 (1 s backoff); attempt 3 would start at
    # 3.2, past the deadline of 2: raised at 1.2, without sleeping into the deadline.
    assert log == [0.0, 1.1]
    assert now() == pytest.approx(1.2)
    assert "deadline" in info.value.__notes__[-1]


@vc
async def test_a_retry_whose_attempt_timeout_passes_the_deadline_is_not_started() -> None:
    log: list[float] = []
    call = flaky([ValueError("a")], log)
    policy = cohort.Retry(backoff=0.1, jitter=False, attempt_timeout=5.0)
    with cohort.fail_after(3.0), pytest.raises(ValueError):
        await cohort.retry(call, policy=policy)  # 0.1 + 0.1 + 5 > 3
    assert log == [0.0]


@vc
async def test_retry_budget_limits_the_whole() -> None:
    log: list[float] = []
    call = flaky([ValueError(str(i)) for i in range(10)], log)
    policy = cohort.Retry(attempts=10, backoff=1.0, jitter=False, budget=2.5)
    with pytest.raises(ValueError):
        await cohort.retry(call, policy=policy)
    assert log == [0.0, 1.1]  # the third would start at 3.2 > 2.5


@vc
async def test_retry_hooks_and_events(events: list[Any]) -> None:
    seen: list[tuple[int, str, float]] = []
    policy = cohort.Retry(
        attempts=3,
        backoff=1.0,
        jitter=False,
        on_retry=lambda s: seen.append((s.attempt, str(s.error), s.delay)),
    )
    assert await cohort.retry(flaky([ValueError("x")], []), policy=policy) == "ok"
    assert seen == [(1, "x", 1.0)]
    assert [e["event"] for e in events if e["event"].startswith("retry.")] == ["retry.retrying"]


@vc
async def test_retry_as_a_decorator_and_cancellation_is_not_retried() -> None:
    calls = 0

    @cohort.Retry(attempts=5, backoff=0.0)
    async def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)
        return x

    assert await slow(3) == 3
    with cohort.move_on_after(1):
        await slow(4)
    assert calls == 2  # cancelled by its scope: not a failure, not retried


@vc
async def test_spawn_with_retry_counts_attempts_in_the_outcome() -> None:
    log: list[float] = []
    async with cohort.TaskGroup() as g:
        h = g.spawn(flaky([ValueError("a")], log), retry=cohort.Retry(backoff=0.5, jitter=False))
        g.start_soon(flaky([ValueError("b"), ValueError("c")], []), retry=cohort.Retry(attempts=3))
    assert h.result() == "ok"
    assert h.attempts == 2
    assert g.outcomes[0].attempts == 2


async def test_retry_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError, match="exception classes or a predicate"):
        cohort.Retry(on=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"cohort\.Retry"):
        await cohort.retry(flaky([], []), policy="3")  # type: ignore[arg-type]

    async def one() -> int:
        return 1

    async with cohort.TaskGroup() as g:
        with pytest.raises(TypeError, match="coroutine"):
            g.spawn(one(), retry=cohort.Retry())


@vc
async def test_retry_keeps_the_errors_cause_and_context_and_adds_a_note() -> None:
    root = OSError("connection reset")
    earlier = KeyError("cache miss")
    attempts = 0

    async def call() -> None:
        nonlocal attempts
        attempts += 1
        try:
            raise earlier
        except KeyError:
            raise ValueError(f"failed {attempts}") from root

    try:
        raise RuntimeError("the caller is handling this")
    except RuntimeError:
        with pytest.raises(ValueError, match="failed 3") as info:
            await cohort.retry(call, policy=cohort.Retry(attempts=3, backoff=0.0))
    error = info.value
    assert error.__cause__ is root
    assert error.__context__ is earlier
    assert error.__suppress_context__
    assert error.__notes__ == [
        f"cohort.Retry: {call.__qualname__} failed 3 attempts; this is the last"
    ]


@vc
@pytest.mark.parametrize("budget", [None, 100.0])
async def test_retry_state_elapsed_counts_from_the_first_attempts_start(
    budget: float | None,
) -> None:
    seen: list[float] = []
    policy = cohort.Retry(
        attempts=3,
        backoff=1.0,
        jitter=False,
        budget=budget,
        on_retry=lambda s: seen.append(s.elapsed),
    )
    log: list[float] = []
    assert await cohort.retry(flaky([ValueError("a"), ValueError("b")], log), policy=policy) == "ok"
    # failures at 0.1 (first attempt started at 0) and 1.2 (backoff 1 s, 0.1 s attempt)
    assert seen == [pytest.approx(0.1), pytest.approx(1.2)]


@vc
async def test_an_attempt_cut_by_attempt_timeout_names_the_call_the_attempt_and_the_limit() -> None:
    async def stuck() -> None:
        await asyncio.sleep(10)

    policy = cohort.Retry(attempts=2, backoff=0.0, attempt_timeout=0.5)
    with pytest.raises(TimeoutError) as info:
        await cohort.retry(stuck, policy=policy)
    assert (
        str(info.value)
        == f"attempt 2 of {stuck.__qualname__} did not finish within its 0.5 s limit"
    )
    assert now() == 1.0

    async def own_timeout() -> None:
        raise TimeoutError("the backend's own")

    with pytest.raises(TimeoutError, match="the backend's own"):
        await cohort.retry(own_timeout, policy=policy)


@vc
async def test_a_default_retry_does_not_retry_a_guards_refusal() -> None:
    breaker = cohort.CircuitBreaker(failures=1, window=1, recovery_timeout=60.0)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    bulkhead = cohort.Bulkhead(1)
    calls = 0

    async def through_bulkhead() -> None:
        nonlocal calls
        calls += 1
        async with bulkhead:
            pass

    policy = cohort.Retry(attempts=5, backoff=0.1, jitter=False)
    with pytest.raises(cohort.CircuitOpenError) as info:
        await cohort.retry(breaker.call, succeed, policy=policy)
    assert not hasattr(info.value, "__notes__")  # one attempt: nothing to say
    async with bulkhead:
        with pytest.raises(cohort.BulkheadFullError):
            await cohort.retry(through_bulkhead, policy=policy)
        assert calls == 1
        # Named in on=, a refusal is retried; a base class does not name it.
        with pytest.raises(cohort.BulkheadFullError):
            await cohort.retry(
                through_bulkhead,
                policy=cohort.Retry(
                    attempts=5, backoff=0.0, on=(Exception, cohort.BulkheadFullError)
                ),
            )
        assert calls == 6
        with pytest.raises(cohort.BulkheadFullError):
            await cohort.retry(
                through_bulkhead,
                policy=cohort.Retry(
                    attempts=5, backoff=0.0, on=(cohort.CohortError, cohort.CircuitOpenError)
                ),
            )
        assert calls == 7
        with pytest.raises(cohort.BulkheadFullError):
            await cohort.retry(
                through_bulkhead, policy=cohort.Retry(attempts=2, backoff=0.0, on=lambda e: True)
            )
        assert calls == 9
    assert breaker.statistics().rejected == 1


@vc
async def test_stage_retry_attempt_timeout_applies_per_attempt() -> None:
    calls: list[float] = []

    @cohort.stage(retry=cohort.Retry(attempts=2, backoff=0.0, attempt_timeout=1.0))
    async def slow_once(x: int) -> int:
        calls.append(now())
        if len(calls) == 1:
            await asyncio.sleep(5)
        return x

    report = await slow_once.run([7])
    assert report.outputs == [7]
    assert calls == [0.0, 1.0]
    assert report.stages[0].retried == 1


# -- circuit breaker -------------------------------------------------------------------------


async def fail() -> None:
    await asyncio.sleep(0.1)
    raise ConnectionError("down")


async def succeed() -> str:
    await asyncio.sleep(0.1)
    return "up"


@vc
async def test_breaker_opens_fails_fast_half_opens_and_closes() -> None:
    changes: list[tuple[float, str]] = []
    breaker = cohort.CircuitBreaker(
        failures=3,
        window=10,
        recovery_timeout=5.0,
        name="db",
        on_state_change=lambda b, old, new: changes.append((now(), new.value)),
    )
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    assert state(breaker) is cohort.CircuitState.OPEN
    assert [c[1] for c in changes] == ["open"]
    assert changes[0][0] == pytest.approx(0.3)
    with pytest.raises(cohort.CircuitOpenError, match="'db' is open") as info:
        await breaker.call(succeed)
    assert info.value.retry_after == pytest.approx(5.0)
    await asyncio.sleep(5.0)  # recovery timeout: the next call is a probe
    assert state(breaker) is cohort.CircuitState.HALF_OPEN
    assert await breaker.call(succeed) == "up"
    assert state(breaker) is cohort.CircuitState.CLOSED
    assert [c[1] for c in changes] == ["open", "half_open", "closed"]
    stats = breaker.statistics()
    assert (stats.failures, stats.successes, stats.rejected, stats.times_opened) == (3, 1, 1, 1)


@vc
async def test_half_open_admits_a_limited_number_of_probes_and_a_failure_reopens() -> None:
    breaker = cohort.CircuitBreaker(failures=1, window=1, recovery_timeout=1.0, half_open_max=2)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    await asyncio.sleep(1.0)
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        probes = [g.spawn(breaker.call, succeed) for _ in range(2)]
        third = g.spawn(breaker.call, succeed)
    assert [p.result() for p in probes] == ["up", "up"]
    assert isinstance(third.error, cohort.CircuitOpenError)
    assert state(breaker) is cohort.CircuitState.CLOSED  # two probes succeeded
    with pytest.raises(ConnectionError):
        await breaker.call(fail)
    await asyncio.sleep(1.0)
    with pytest.raises(ConnectionError):
        await breaker.call(fail)  # the probe failed
    assert state(breaker) is cohort.CircuitState.OPEN
    assert breaker.statistics().retry_after == pytest.approx(1.0)


@vc
async def test_failure_rate_over_the_window() -> None:
    breaker = cohort.CircuitBreaker(failures=None, failure_rate=0.5, window=4, min_calls=4)
    for fn in (succeed, fail, succeed):
        with contextlib.suppress(ConnectionError):
            await breaker.call(fn)
    assert state(breaker) is cohort.CircuitState.CLOSED  # 3 calls < min_calls
    with pytest.raises(ConnectionError):
        await breaker.call(fail)  # 2 of 4 failed
    assert state(breaker) is cohort.CircuitState.OPEN


@vc
async def test_cancellation_and_ignored_errors_are_not_failures() -> None:
    breaker = cohort.CircuitBreaker(
        failures=1, window=5, on=lambda e: not (isinstance(e, Status) and e.code < 500)
    )

    async def not_found() -> None:
        raise Status(404)

    with pytest.raises(Status):
        await breaker.call(not_found)
    with cohort.move_on_after(0.05):
        await breaker.call(fail)  # cancelled by our own scope

    async def slow_fail() -> None:
        await asyncio.sleep(1.0)
        raise ConnectionError("down")

    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        g.spawn(breaker.call, succeed)
        g.spawn(breaker.call, slow_fail)  # cancelled when the other wins
    assert state(breaker) is cohort.CircuitState.CLOSED
    stats = breaker.statistics()
    assert stats.failures == 0
    assert stats.successes == 2


@vc
async def test_breaker_as_a_context_manager() -> None:
    breaker = cohort.CircuitBreaker(failures=2, window=2, recovery_timeout=1.0)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            async with breaker:
                await fail()
    with pytest.raises(cohort.CircuitOpenError):
        async with breaker:
            pytest.fail("an open breaker does not run the body")
    await asyncio.sleep(1.0)
    async with breaker:
        await succeed()
    assert state(breaker) is cohort.CircuitState.CLOSED


def test_breaker_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="failure_rate"):
        cohort.CircuitBreaker(failure_rate=1.5)
    with pytest.raises(ValueError, match="window"):
        cohort.CircuitBreaker(failures=30, window=10)
    with pytest.raises(TypeError, match="predicate"):
        cohort.CircuitBreaker(on="ConnectionError")  # type: ignore[arg-type]


@vc
@pytest.mark.parametrize("form", ["call", "with"])
async def test_a_call_admitted_before_the_breaker_closed_again_cannot_reopen_it(form: str) -> None:
    breaker = cohort.CircuitBreaker(failures=1, window=1, recovery_timeout=1.0)

    async def slow_fail() -> None:
        await asyncio.sleep(5.0)
        raise ConnectionError("down")

    async def through_breaker(fn: Any) -> None:
        if form == "call":
            await breaker.call(fn)
        else:
            async with breaker:
                await fn()

    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        stale = g.spawn(through_breaker, slow_fail)  # admitted while closed, fails at 5
        await asyncio.sleep(0.5)
        with pytest.raises(ConnectionError):
            await through_breaker(fail)  # opens it at 0.6
        await asyncio.sleep(1.0)
        await through_breaker(succeed)  # the probe closes it at 1.7
        assert state(breaker) is cohort.CircuitState.CLOSED
    assert isinstance(stale.error, ConnectionError)
    assert state(breaker) is cohort.CircuitState.CLOSED  # old news: it began before
    stats = breaker.statistics()
    assert (stats.calls, stats.failures, stats.successes, stats.window_calls) == (3, 2, 1, 0)


@vc
async def test_a_task_inside_the_breaker_twice_gets_each_outcome_counted_once() -> None:
    breaker = cohort.CircuitBreaker(failures=1, window=1, recovery_timeout=1.0)

    async def nested_probe() -> None:
        async with breaker:
            await asyncio.sleep(2.0)
            async with breaker:  # the probe, at 2.0
                await asyncio.sleep(0.5)
            raise ConnectionError("late")  # at 2.5, after the probe closed it: old news

    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        late = g.spawn(nested_probe)
        with pytest.raises(ConnectionError):
            await breaker.call(fail)  # opens it at 0.1
    assert isinstance(late.error, ConnectionError)
    assert state(breaker) is cohort.CircuitState.CLOSED
    stats = breaker.statistics()
    assert (stats.calls, stats.failures, stats.successes, stats.window_calls) == (3, 2, 1, 0)


@vc
async def test_calls_ending_while_the_breaker_is_open_are_counted() -> None:
    breaker = cohort.CircuitBreaker(failures=1, window=1, recovery_timeout=60.0)
    async with cohort.TaskGroup() as g:
        for _ in range(3):
            g.spawn(breaker.call, succeed)

            async def entered() -> None:
                async with breaker:
                    await succeed()

            g.spawn(entered)
        await wait_all_tasks_blocked()
        async with breaker:
            breaker.reset()  # nothing admitted before the reset moves it
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
    assert state(breaker) is cohort.CircuitState.OPEN
    stats = breaker.statistics()
    assert (stats.calls, stats.successes, stats.failures, stats.window_calls) == (8, 7, 1, 1)


def test_breaker_statistics_are_readable_from_another_thread() -> None:
    breaker = cohort.CircuitBreaker(failures=1, window=1, recovery_timeout=10.0)

    async def main() -> cohort.BreakerStatistics:
        with pytest.raises(ConnectionError):
            await breaker.call(fail)
        await asyncio.sleep(4.0)
        return await asyncio.to_thread(breaker.statistics)

    stats = cohort.testing.run(main)
    assert stats.state is cohort.CircuitState.OPEN
    assert stats.retry_after == pytest.approx(6.0)
    assert breaker.state is cohort.CircuitState.OPEN  # no loop running now: from its clock


def test_a_breaker_that_could_never_open_by_rate_is_refused() -> None:
    with pytest.raises(ValueError, match=r"min_calls=30 can never be reached.*raise window="):
        cohort.CircuitBreaker(failures=None, failure_rate=0.5, window=20, min_calls=30)
    cohort.CircuitBreaker(failures=3, window=5)  # min_calls matters only with failure_rate
    with pytest.raises(TypeError, match="failure_rate must be a number in"):
        cohort.CircuitBreaker(failure_rate="0.5")  # type: ignore[arg-type]


async def test_breaker_misuse_says_what_to_write() -> None:
    breaker = cohort.CircuitBreaker()
    call: Any = breaker.call
    with pytest.raises(TypeError, match=r"write `await breaker.call\(fetch, url\)`"):
        await call(succeed())  # the coroutine is closed: no "never awaited" warning
    sync_with: Any = breaker
    with pytest.raises(TypeError, match="write `async with breaker:`"), sync_with:
        pass
    assert breaker.statistics().calls == 0


class BreakerModel:
    """The breaker's rules, written out directly: who is admitted, what moves the state."""

    def __init__(self, failures: int, window: int, recovery: float, half_open_max: int) -> None:
        self.failures, self.window, self.recovery = failures, window, recovery
        self.half_open_max = half_open_max
        self.state, self.opened_at, self.generation = "closed", 0.0, 0
        self.probes = self.probe_successes = 0
        self.recent: list[bool] = []
        self.calls = self.successes = self.failed = self.rejected = self.opened = 0
        self.changes: list[tuple[float, str]] = []

    def move(self, new: str, at: float) -> None:
        self.state, self.generation = new, self.generation + 1
        self.probes = self.probe_successes = 0
        if new == "closed":
            self.recent = []
        self.changes.append((at, new))

    def admit(self, at: float) -> tuple[int, bool] | None:
        """The call's (generation, probe), or None if it is rejected."""
        if self.state == "open":
            if at < self.opened_at + self.recovery:
                self.rejected += 1
                return None
            self.move("half_open", at)
        if self.state == "half_open":
            if self.probes >= self.half_open_max:
                self.rejected += 1
                return None
            self.probes += 1
            return self.generation, True
        return self.generation, False

    def end(self, ticket: tuple[int, bool], outcome: str, at: float) -> None:
        generation, probe = ticket
        current = generation == self.generation
        if probe and current:
            self.probes -= 1
        if outcome == "cancel":
            return
        failed = outcome == "fail"
        self.calls += 1
        self.failed += failed
        self.successes += not failed
        if not current:
            return
        if self.state == "half_open":
            if failed:
                self.open(at)
            else:
                self.probe_successes += 1
                if self.probe_successes >= self.half_open_max:
                    self.move("closed", at)
            return
        self.recent = [*self.recent, failed][-self.window :]
        if sum(self.recent) >= self.failures:
            self.open(at)

    def open(self, at: float) -> None:
        self.opened_at = at
        self.opened += 1
        self.move("open", at)

    def statistics(self, at: float) -> tuple[object, ...]:
        state = self.state
        if state == "open" and at >= self.opened_at + self.recovery:
            state = "half_open"
        return (state, self.calls, self.successes, self.failed, self.rejected, self.opened)


Call = tuple[str, str, int]  # outcome ("ok", "fail", "cancel"), form ("call", "with"), seconds

calls_or_waits = st.one_of(
    st.just("wait"),
    st.tuples(
        st.sampled_from(["ok", "fail", "fail", "cancel"]),
        st.sampled_from(["call", "with"]),
        st.sampled_from([0, 0, 1, 3]),
    ),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(calls_or_waits, max_size=40), st.sampled_from([1, 2]))
def test_breaker_state_machine_matches_a_model_through_both_forms(
    steps: list[Call | str], half_open_max: int
) -> None:
    """Calls that overlap, through `breaker.call()` or `async with breaker`, chosen per
    call: admissions, transitions and every counter agree with a direct model of the rules.

    Step i starts at i seconds; a call lasts its seconds plus (i + 1) ms, so that no
    two events share a time and the model's order of events is the loop's.
    """
    model = BreakerModel(failures=3, window=4, recovery=2.0, half_open_max=half_open_max)
    events: list[tuple[float, int, str]] = []  # (time, step, "start"/"end")
    for i, step in enumerate(steps):
        if isinstance(step, tuple):
            events.append((float(i), i, "start"))
            events.append((i + (step[2] + (i + 1) / 1000), i, "end"))
    expected: dict[int, str] = {}
    tickets: dict[int, tuple[int, bool]] = {}
    for at, i, kind in sorted(events):
        outcome = steps[i][0]
        if kind == "start":
            ticket = model.admit(at)
            if ticket is None:
                expected[i] = "rejected"
            else:
                tickets[i], expected[i] = ticket, outcome
        elif i in tickets:
            model.end(tickets[i], outcome, at)

    async def run() -> None:
        changes: list[tuple[float, str]] = []
        breaker = cohort.CircuitBreaker(
            failures=3,
            window=4,
            recovery_timeout=2.0,
            half_open_max=half_open_max,
            on_state_change=lambda b, old, new: changes.append((now(), new.value)),
        )
        results: dict[int, str] = {}
        invoked = 0

        async def one(i: int, outcome: str, form: str, seconds: int) -> None:
            lasts = seconds + (i + 1) / 1000

            async def backend() -> None:
                nonlocal invoked
                invoked += 1
                await asyncio.sleep(100 if outcome == "cancel" else lasts)
                if outcome == "fail":
                    raise ConnectionError("down")

            results[i] = outcome
            try:
                with (
                    cohort.move_on_after(lasts) if outcome == "cancel" else contextlib.nullcontext()
                ):
                    if form == "call":
                        await breaker.call(backend)
                    else:
                        async with breaker:
                            await backend()
            except cohort.CircuitOpenError:
                results[i] = "rejected"
            except ConnectionError:
                pass

        async with cohort.TaskGroup() as g:
            for i, step in enumerate(steps):
                if step != "wait":
                    g.start_soon(one, i, *step)
                await asyncio.sleep(1.0)
        assert results == expected
        assert [new for _, new in changes] == [new for _, new in model.changes]
        assert [t for t, _ in changes] == pytest.approx([t for t, _ in model.changes])
        stats = breaker.statistics()
        got = (stats.state.value, stats.calls, stats.successes, stats.failures)
        assert (*got, stats.rejected, stats.times_opened) == model.statistics(now())
        cancelled = sum(1 for r in results.values() if r == "cancel")
        assert invoked == stats.calls + cancelled  # every call that ran is counted

    cohort.testing.run(run)


Step = tuple[str, int]  # outcome ("ok", "fail", "ignored", "cancel", "reset"), seconds

steps_of_calls = st.lists(
    st.one_of(
        st.just(("wait", 0)),
        st.tuples(
            st.sampled_from(["ok", "ok", "fail", "fail", "ignored", "cancel", "reset"]),
            st.sampled_from([0, 0, 1, 3]),
        ),
    ),
    max_size=30,
)


Books = tuple[dict[int, str], list[tuple[float, str, str]], list[cohort.BreakerStatistics]]


def breaker_books(steps: list[Step], form: str, half_open_max: int) -> Books:
    """Run ``steps`` through a fresh breaker, every call in ``form``: what it counted.

    Step i starts at i seconds and lasts its seconds plus (i + 1) ms (no two events
    at one time); the result holds each call's end, the transitions with their
    times, and the statistics read after every step and at the end.
    """

    async def run() -> Books:
        changes: list[tuple[float, str, str]] = []
        breaker = cohort.CircuitBreaker(
            failures=3,
            window=4,
            recovery_timeout=2.0,
            half_open_max=half_open_max,
            on=lambda exc: not isinstance(exc, Status),
            on_state_change=lambda b, old, new: changes.append((now(), old.value, new.value)),
        )
        ends: dict[int, str] = {}
        snapshots: list[cohort.BreakerStatistics] = []

        async def one(i: int, outcome: str, seconds: int) -> None:
            lasts = seconds + (i + 1) / 1000

            async def backend() -> None:
                await asyncio.sleep(100 if outcome == "cancel" else lasts)
                if outcome == "fail":
                    raise ConnectionError("down")
                if outcome == "ignored":
                    raise Status(404)

            ends[i] = outcome
            try:
                with (
                    cohort.move_on_after(lasts) if outcome == "cancel" else contextlib.nullcontext()
                ):
                    if form == "call":
                        await breaker.call(backend)
                    else:
                        async with breaker:
                            await backend()
            except cohort.CircuitOpenError:
                ends[i] = "rejected"
            except (ConnectionError, Status):
                pass

        async with cohort.TaskGroup() as g:
            for i, (outcome, seconds) in enumerate(steps):
                if outcome == "reset":
                    breaker.reset()
                elif outcome != "wait":
                    g.start_soon(one, i, outcome, seconds)
                await asyncio.sleep(1.0)
                snapshots.append(breaker.statistics())
        snapshots.append(breaker.statistics())
        return ends, changes, snapshots

    return cohort.testing.run(run)


@settings(max_examples=60, deadline=None)
@given(steps_of_calls, st.sampled_from([1, 2]))
def test_breaker_call_and_async_with_keep_the_same_books(
    steps: list[Step], half_open_max: int
) -> None:
    """The same successes, failures, ignored errors, cancellations, rejections and resets,
    once through `breaker.call()` and once through `async with breaker` (its fast path
    while closed): the same calls end the same way, the same transitions happen at the
    same times, and every statistic (the window included) agrees after every step."""
    assert breaker_books(steps, "call", half_open_max) == breaker_books(
        steps, "with", half_open_max
    )


def test_breaker_forms_agree_on_a_run_that_opens_probes_and_closes() -> None:
    """One fixed run through every state, so the comparison above is never vacuous."""
    steps: list[Step] = [
        ("ok", 0), ("ignored", 0), ("fail", 3), ("fail", 0), ("ok", 0), ("fail", 0),
        ("ok", 0), ("fail", 0), ("wait", 0), ("wait", 0), ("ok", 1), ("ok", 0),
        ("cancel", 0), ("ok", 0), ("fail", 0), ("reset", 0), ("ok", 0),
    ]  # fmt: skip
    by_call = breaker_books(steps, "call", 1)
    assert by_call == breaker_books(steps, "with", 1)
    _, changes, snapshots = by_call
    assert [new for _, _, new in changes] == ["open", "half_open", "closed"]
    final = snapshots[-1]
    assert final.rejected > 0
    assert final.times_opened == 1


# -- rate limiter ------------------------------------------------------------------------------


@vc
async def test_rate_limiter_grants_at_exact_times() -> None:
    limiter = cohort.RateLimiter(2.0, burst=2)
    granted: list[float] = []

    async def take() -> None:
        async with limiter:
            granted.append(now())

    async with cohort.TaskGroup() as g:
        for _ in range(6):
            g.start_soon(take)
    assert granted == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]


@vc
async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    limiter = cohort.RateLimiter(1.0)
    await limiter.acquire()
    order: list[tuple[str, float]] = []

    async def take(name: str) -> None:
        await limiter.acquire()
        order.append((name, now()))

    async with cohort.TaskGroup() as g:
        first = g.spawn(take, "first")
        g.spawn(take, "second")
        await wait_all_tasks_blocked()
        first.cancel()
    assert order == [("second", 1.0)]


@vc
async def test_a_cancelled_head_waiter_keeps_the_time_accrued_for_the_next() -> None:
    limiter = cohort.RateLimiter(1.0)
    await limiter.acquire()
    granted: list[float] = []

    async def take() -> None:
        await limiter.acquire()
        granted.append(now())

    async with cohort.TaskGroup() as g:
        head = g.spawn(take)
        g.spawn(take)
        await asyncio.sleep(0.5)
        head.cancel()
    assert granted == [1.0]


@vc
async def test_a_grant_racing_its_waiters_cancellation_goes_to_the_next_waiter() -> None:
    limiter = cohort.RateLimiter(1.0)
    await limiter.acquire()
    granted: list[float] = []

    async def take() -> None:
        await limiter.acquire()
        granted.append(now())

    loop = asyncio.get_running_loop()
    handles: list[cohort.Handle[None]] = []
    # At 1.0, before the grant (this timer is older), ask for the head's cancellation,
    # delivered after the grant and before the head runs again: it hands the token on.
    loop.call_at(1.0, lambda: loop.call_soon(handles[0].cancel))
    async with cohort.TaskGroup() as g:
        handles.append(g.spawn(take))
        g.spawn(take)
    assert handles[0].status is cohort.ChildStatus.CANCELLED
    assert granted == [1.0]


@vc
async def test_rate_limiter_multi_token_and_bad_arguments() -> None:
    limiter = cohort.RateLimiter(10.0, burst=5)
    await limiter.acquire(5)
    await limiter.acquire(3)
    assert now() == pytest.approx(0.3)
    with pytest.raises(ValueError, match="burst"):
        await limiter.acquire(6)
    with pytest.raises(ValueError, match="max_per_second"):
        cohort.RateLimiter(0)


def entering(guard: Any) -> Any:
    """One call through ``guard``: ``async with guard: pass``."""

    async def call() -> None:
        async with guard:
            pass

    return call


@pytest.mark.parametrize(
    "make",
    [
        lambda: entering(cohort.RateLimiter(1e6, burst=1000)),
        lambda: cohort.RateLimiter(1e6, burst=1000).acquire,
        lambda: entering(cohort.Bulkhead(10, max_queue=10)),  # it keeps the mean hold
    ],
    ids=["rate_limiter", "rate_limiter_acquire", "bulkhead_with_a_queue"],
)
async def test_a_guard_with_room_does_not_look_up_the_running_loop_per_call(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On Python 3.11 each asyncio.get_running_loop() makes a getpid() system call:
    # the common case reads the clock of the loop it found on an earlier call.
    call = make()
    await call()  # the first call finds the loop
    lookups = 0
    real = asyncio.get_running_loop

    def counting() -> asyncio.AbstractEventLoop:
        nonlocal lookups
        lookups += 1
        return real()

    monkeypatch.setattr(asyncio, "get_running_loop", counting)
    for _ in range(50):
        await call()
    monkeypatch.undo()
    assert lookups == 0


def test_a_rate_limiter_entered_on_a_new_loop_reads_the_new_loops_clock() -> None:
    limiter = cohort.RateLimiter(1.0, burst=1)
    entered: list[float] = []

    async def take(then_sleep: float) -> None:
        async with limiter:
            entered.append(asyncio.get_running_loop().time())
        await asyncio.sleep(then_sleep)

    first = cohort.testing.VirtualClockLoop()
    try:
        first.run_until_complete(take(5.0))  # the bucket is empty at 0.0; this clock reads 5.0
    finally:
        first.close()
    second = cohort.testing.VirtualClockLoop(start=0.5)
    try:
        # Half a token on this loop's clock: the token comes at 1.0, not at once
        # (as the first loop's clock, left at 5.0, would have it).
        second.run_until_complete(take(0.0))
    finally:
        second.close()
    assert entered == [0.0, 1.0]


def test_guards_entered_on_a_new_loop_after_their_first_loop_closed() -> None:
    # Entering and leaving hand back futures made on the first loop (done ones).
    breaker = cohort.CircuitBreaker()
    limiter = cohort.RateLimiter(1000.0, burst=10)
    bulkhead = cohort.Bulkhead(2, max_queue=1)

    async def call() -> cohort.CircuitBreaker:
        async with breaker as b, limiter as lim, bulkhead as bh:
            assert lim is limiter
            assert bh is bulkhead
            return b

    for _ in range(2):
        loop = asyncio.new_event_loop()
        try:
            assert loop.run_until_complete(call()) is breaker
        finally:
            loop.close()
    assert breaker.statistics().successes == 2
    assert bulkhead.statistics().admitted == 2


# -- bulkhead ---------------------------------------------------------------------------------


@vc
async def test_bulkhead_rejects_exactly_when_full() -> None:
    bulkhead = cohort.Bulkhead(2, max_queue=1, name="search")
    started: list[tuple[int, float]] = []

    async def call(i: int) -> None:
        async with bulkhead:
            started.append((i, now()))
            await asyncio.sleep(1.0)

    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        handles = [g.spawn(call, i) for i in range(4)]
    assert started == [(0, 0.0), (1, 0.0), (2, 1.0)]
    assert isinstance(handles[3].error, cohort.BulkheadFullError)
    assert "full" in str(handles[3].error)
    stats = bulkhead.statistics()
    assert (stats.admitted, stats.rejected, stats.active) == (3, 1, 0)


@vc
async def test_bulkhead_rejects_a_wait_that_would_pass_the_deadline() -> None:
    bulkhead = cohort.Bulkhead(1, max_queue=10)
    async with bulkhead:
        await asyncio.sleep(2.0)  # teaches it: a call holds its place 2 s

    async def hold() -> None:
        async with bulkhead:
            await asyncio.sleep(2.0)

    async with cohort.TaskGroup() as g:
        g.spawn(hold)
        await wait_all_tasks_blocked()
        with cohort.fail_after(1.0), pytest.raises(cohort.BulkheadFullError, match="deadline"):
            async with bulkhead:
                pass
        assert now() == 0.0 + 2.0  # rejected at once, at the time it asked
    with cohort.fail_after(5.0):
        async with bulkhead:  # enough time: it waits its turn
            pass


@vc
async def test_bulkhead_cancelled_waiter_and_cancelled_holder_free_their_places() -> None:
    bulkhead = cohort.Bulkhead(1, max_queue=2)
    log: list[str] = []

    async def use(name: str, seconds: float) -> None:
        async with bulkhead:
            log.append(name)
            await asyncio.sleep(seconds)

    async with cohort.TaskGroup() as g:
        holder = g.spawn(use, "holder", 10.0)
        waiter = g.spawn(use, "waiter", 1.0)
        g.spawn(use, "last", 1.0)
        await wait_all_tasks_blocked()
        waiter.cancel()
        await wait_all_tasks_blocked()
        holder.cancel()
    assert log == ["holder", "last"]
    assert bulkhead.statistics().active == 0


@vc
async def test_a_bulkhead_waiter_cancelled_as_the_holder_leaves_raises_its_cancellation() -> None:
    bulkhead = cohort.Bulkhead(1, max_queue=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with bulkhead:
            await release.wait()

    async def wait() -> None:
        async with bulkhead:
            pass

    holder = asyncio.create_task(hold())
    waiter = asyncio.create_task(wait())
    await wait_all_tasks_blocked()
    release.set()  # the holder runs first: it leaves, passing over the cancelled waiter
    waiter.cancel()
    await holder
    with pytest.raises(asyncio.CancelledError):
        await waiter
    stats = bulkhead.statistics()
    assert (stats.active, stats.queued, stats.admitted) == (0, 0, 1)


@vc
async def test_bulkhead_per_key_is_made_on_demand_and_dropped_when_idle() -> None:
    per_host = cohort.Bulkhead.per_key(1)
    async with per_host("a"), per_host("b"):
        assert len(per_host) == 2
    assert len(per_host) == 0


@vc
async def test_bulkhead_enters_without_a_coroutine_and_a_keyed_one_is_freed_at_once() -> None:
    bulkhead = cohort.Bulkhead(1)
    entry = bulkhead.__aenter__()
    assert not asyncio.iscoroutine(entry)  # the common case: a done future, kept
    assert await entry is bulkhead
    await bulkhead.__aexit__(None, None, None)
    async with bulkhead as same:
        assert same is bulkhead
    per_host = cohort.Bulkhead.per_key(1)
    async with per_host("a") as held:
        ref = weakref.ref(held)
    del held
    gc.disable()  # freed by its count of references, not by the cycle collector
    try:
        assert ref() is None
    finally:
        gc.enable()


@vc
async def test_per_key_limits_hold_for_a_bulkhead_looked_up_before_it_went_idle() -> None:
    per_host = cohort.Bulkhead.per_key(1)
    inside = most = 0

    async def use(bulkhead: cohort.Bulkhead) -> None:
        nonlocal inside, most
        async with bulkhead:
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(1.0)
            inside -= 1

    async with per_host("a"):
        early = per_host("a")  # looked up while in use, entered after it went idle
    assert len(per_host) == 0
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        g.spawn(use, per_host("a"))
        late = g.spawn(use, early)
    assert most == 1
    assert isinstance(late.error, cohort.BulkheadFullError)
    del early
    assert per_host("a") is not per_host("b")


async def test_bulkhead_and_limiter_misuse_says_what_to_write() -> None:
    per_key: Any = cohort.Bulkhead.per_key(2)
    with pytest.raises(TypeError, match=r"`async with bulkheads\(host\):`"):
        async with per_key:
            pass
    bulkhead: Any = cohort.Bulkhead(1)
    with pytest.raises(TypeError, match="write `async with bulkhead:`"), bulkhead:
        pass
    limiter: Any = cohort.RateLimiter(1.0)
    with pytest.raises(TypeError, match="write `async with limiter:`"), limiter:
        pass
    assert bulkhead.statistics().active == 0


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: cohort.Bulkhead(1, name=5), TypeError, "name must be a str or None, got 5"),  # type: ignore[arg-type]
        (lambda: cohort.Bulkhead.per_key(True), TypeError, "max_concurrent must be an int"),
        (lambda: cohort.Bulkhead.per_key(1, max_queue=-1), ValueError, "max_queue"),
        (lambda: cohort.CircuitBreaker(name=5), TypeError, "name must be a str"),  # type: ignore[arg-type]
        (lambda: cohort.CircuitBreaker(on_state_change=5), TypeError, "must be callable"),  # type: ignore[arg-type]
        (lambda: cohort.CircuitBreaker(failure_rate=True), TypeError, "failure_rate"),
        (lambda: cohort.CircuitBreaker(failure_rate=0), ValueError, r"in \(0, 1\]"),
        (lambda: cohort.RateLimiter(True), TypeError, "max_per_second"),
        (lambda: cohort.RateLimiter(1.0, burst=1.5), TypeError, "burst"),  # type: ignore[arg-type]
        (lambda: cohort.HedgeBudget(True), TypeError, r"ratio must be a number in \[0, 1\]"),
        (lambda: cohort.HedgeBudget(0.1, reserve=-1), ValueError, "reserve"),
    ],
)
def test_guard_constructors_refuse_bad_arguments(
    make: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make()


async def test_acquire_refuses_a_bool_or_a_float_count() -> None:
    limiter = cohort.RateLimiter(10.0, burst=5)
    acquire: Any = limiter.acquire
    with pytest.raises(TypeError, match="tokens must be an int >= 1, got True"):
        await acquire(True)
    with pytest.raises(TypeError, match=r"tokens must be an int >= 1, got 1\.0"):
        await acquire(1.0)


# -- hedging budget ------------------------------------------------------------------------------


@vc
async def test_hedge_budget_caps_extra_attempts_to_a_fraction() -> None:
    budget = cohort.HedgeBudget(0.1, reserve=1)
    attempts = 0

    async def slow_replica() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(1.0)
        return "row"

    for _ in range(30):
        assert await cohort.hedge(slow_replica, delay=0.1, attempts=2, budget=budget) == "row"
    # The reserve pays for the first call's extra attempt; then 0.1 per call adds up
    # to one more at calls 11 and 21: at most ratio x calls + reserve.
    assert attempts == 30 + 3
    assert (budget.extra, budget.denied) == (3, 27)


async def test_hedge_budget_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ratio"):
        cohort.HedgeBudget(2.0)
    with pytest.raises(TypeError, match="HedgeBudget"):
        hedge: Any = cohort.hedge
        await hedge(succeed, delay=0.1, budget=0.1)


def test_partial_keeps_the_retry_name() -> None:
    from cohort._core._retry import _name

    assert _name(functools.partial(succeed)) == "succeed"


@vc
async def test_hedge_retries_each_attempt_under_its_policy() -> None:
    log: list[float] = []
    call = flaky([ValueError("a")], log)
    policy = cohort.Retry(attempts=2, backoff=0.5, jitter=False)
    assert await cohort.hedge([call], delay=10.0, retry=policy) == "ok"
    assert log == [0.0, 0.6]
    with pytest.raises(TypeError, match=r"cohort\.Retry"):
        await cohort.hedge([call], delay=1.0, retry=3)  # type: ignore[call-overload]
