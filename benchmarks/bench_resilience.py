"""What the resilience guards cost per call, against the libraries a user would pick.

Guards, measured the way a service uses them: each request is a task of its
own (a web handler) that makes one call through a closed circuit breaker, a
bulkhead and a rate limiter, each entered afresh (``async with``), and the
limiter has a real rate (1M/s, bursts of 1 ms worth: its refill arithmetic
runs on every call on the loop's clock, and it never makes a request wait).
The bare call runs in the same kind of task, so the figures are the guards'
own cost: (case - bare call) / calls. The floor is the same ``async with``
of three guards that do nothing (plain methods returning a done future, as
cohort's do): what the statement itself costs. Each loop is measured in several fresh
interpreters, run one after the other; in each, every case runs once per
round, rounds interleaved, timed in CPU time (``time.process_time``: on a
shared machine wall time also counts other programs' turns). Per run, the
median over its rounds; over the runs, the median and the min-max spread.

Also shown, as it was measured before: every call made in sequence by one
task, through a limiter that never runs short (``RateLimiter(1e9,
burst=1_000_000)``), against a bare call in sequence. That form leaves out
the task per request, which costs the guards more per call (the difference
between the two cohort rows); the limiter's settings matter less (either way
its common case computes the refill and never waits).

Retry wrappers on a call that succeeds the first time (cohort; tenacity;
stamina) are measured in this process as before: (case - bare call) / calls,
on one event loop per round.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from benchmarks._harness import CaseResult, compare, loops, table, versions

CALLS = 20_000
RUNS = 5  # fresh interpreters per loop (3 with --quick)
BATCH = 100  # requests in flight at once
RATE = 1_000_000.0  # the limiters' rate, per second
BURST = 1_000  # one millisecond's worth (uvloop's clock ticks in milliseconds)
GUARDS_TARGET_US = 2.0


async def backend(x: int) -> int:
    return x


# -- guards: a task per request, in fresh interpreters ----------------------------------------


class _Empty:
    """A guard that does nothing, entered the way cohort's guards are: the floor.

    Its ``__aenter__`` and ``__aexit__`` are plain methods that return one done
    future, made on first use: what ``async with`` itself costs, three times,
    with the least a guard can do.
    """

    def __init__(self) -> None:
        self.done: asyncio.Future[None] | None = None

    def __aenter__(self) -> asyncio.Future[None]:
        return self.done or self._first()

    def __aexit__(self, *exc_info: object) -> asyncio.Future[None]:
        return self.done or self._first()

    def _first(self) -> asyncio.Future[None]:
        done = self.done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


Handler = Callable[[int], Coroutine[Any, Any, None]]


def _guard_cases() -> list[tuple[str, Callable[[], Handler], bool]]:
    """(name, make the handler with its guards, a task per request) for each case."""
    import aiolimiter
    import pybreaker

    import cohort

    def bare() -> Handler:
        async def handle(i: int) -> None:
            await backend(i)

        return handle

    def cohort_guards() -> Handler:
        breaker = cohort.CircuitBreaker()
        bulkhead = cohort.Bulkhead(1000)
        limiter = cohort.RateLimiter(RATE, burst=BURST)

        async def handle(i: int) -> None:
            async with breaker, bulkhead, limiter:
                await backend(i)

        return handle

    def floor() -> Handler:
        first, second, third = _Empty(), _Empty(), _Empty()

        async def handle(i: int) -> None:
            async with first, second, third:
                await backend(i)

        return handle

    def cohort_limiter() -> Handler:
        limiter = cohort.RateLimiter(RATE, burst=BURST)

        async def handle(i: int) -> None:
            async with limiter:
                await backend(i)

        return handle

    def cohort_bulkhead_queue() -> Handler:
        bulkhead = cohort.Bulkhead(1000, max_queue=1000)  # it keeps the mean hold: clock reads

        async def handle(i: int) -> None:
            async with bulkhead:
                await backend(i)

        return handle

    def cohort_breaker_call() -> Handler:
        breaker = cohort.CircuitBreaker()

        async def handle(i: int) -> None:
            await breaker.call(backend, i)

        return handle

    def peers() -> Handler:
        breaker = pybreaker.CircuitBreaker()
        bulkhead = asyncio.Semaphore(1000)
        limiter = aiolimiter.AsyncLimiter(BURST, BURST / RATE)

        async def handle(i: int) -> None:
            with breaker.calling():
                async with bulkhead, limiter:
                    await backend(i)

        return handle

    def aiolimiter_alone() -> Handler:
        limiter = aiolimiter.AsyncLimiter(BURST, BURST / RATE)

        async def handle(i: int) -> None:
            async with limiter:
                await backend(i)

        return handle

    def cohort_guards_one_task() -> Handler:
        breaker = cohort.CircuitBreaker()
        bulkhead = cohort.Bulkhead(1000)
        limiter = cohort.RateLimiter(1e9, burst=1_000_000)

        async def handle(i: int) -> None:
            async with breaker, bulkhead, limiter:
                await backend(i)

        return handle

    return [
        ("bare call", bare, True),
        ("cohort: breaker + bulkhead + rate limiter (async with)", cohort_guards, True),
        ("floor: three guards that do nothing (async with)", floor, True),
        ("cohort: rate limiter alone (async with)", cohort_limiter, True),
        ("cohort: bulkhead with a queue alone (async with)", cohort_bulkhead_queue, True),
        ("cohort: breaker.call only", cohort_breaker_call, True),
        ("pybreaker + asyncio.Semaphore + aiolimiter", peers, True),
        ("aiolimiter alone", aiolimiter_alone, True),
        ("bare call, in sequence in one task", bare, False),
        (
            "cohort guards, in sequence in one task, limiter never short",
            cohort_guards_one_task,
            False,
        ),
    ]


async def _serve(handle: Handler, calls: int, per_task: bool) -> None:
    if not per_task:
        for i in range(calls):
            await handle(i)
        return
    loop = asyncio.get_running_loop()
    for start in range(0, calls, BATCH):
        tasks = [loop.create_task(handle(i)) for i in range(start, min(start + BATCH, calls))]
        for task in tasks:
            await task


def _child(loop_name: str, calls: int, rounds: int) -> dict[str, list[float]]:
    """One fresh interpreter's rounds: CPU seconds per call, per case, per round."""
    new_loop = dict(loops())[loop_name]
    cases = _guard_cases()
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(rounds):
        for name, make, per_task in cases:
            loop = new_loop()
            try:
                handle = make()
                gc.collect()
                t0 = time.process_time()
                loop.run_until_complete(_serve(handle, calls, per_task))
                seconds[name].append((time.process_time() - t0) / calls)
            finally:
                loop.close()
    return seconds


def _fresh_runs(
    loop_name: str, calls: int, rounds: int, src: str | None = None
) -> dict[str, list[float]]:
    """Run ``_child`` in a new interpreter, with the cohort in ``src`` (default: this one's).

    Measuring two source trees, their runs interleaved: ``_fresh_runs(..., src=tree)``
    for each tree in turn, then ``_guards_tables`` for each.
    """
    import cohort

    env = dict(os.environ)
    src = src or str(Path(cohort.__file__).resolve().parents[1])
    paths = [src, str(Path(__file__).parents[1])]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_resilience", loop_name, str(calls), str(rounds)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[1],
    ).stdout
    result: dict[str, list[float]] = json.loads(out)
    return result


def _us(s: float) -> str:
    return f"{s * 1e6:.2f} us"


def _guards_section(quick: bool) -> list[str]:
    runs = 3 if quick else RUNS
    rounds = 3 if quick else 5
    calls = CALLS // 4 if quick else CALLS
    loop_names = [name for name, _ in loops()]
    per_run: dict[str, list[dict[str, list[float]]]] = {name: [] for name in loop_names}
    for _ in range(runs):  # the loops' runs interleaved
        for name in loop_names:
            per_run[name].append(_fresh_runs(name, calls, rounds))
    return [
        "## Guards around a call, a task per request",
        "",
        f"{calls:,} requests per round ({BATCH} in flight), {rounds} interleaved rounds per "
        f"run, {runs} fresh interpreters per loop; CPU time. Overhead: the case minus the bare "
        "call of the same round (the in-sequence case: minus the bare call in sequence), "
        "median over a run's rounds; then the median and min-max over the runs.",
        "",
        *_guards_tables(per_run),
    ]


def _guards_tables(per_run: dict[str, list[dict[str, list[float]]]]) -> list[str]:
    """One table per loop from the fresh runs' results (``_child``'s, per run)."""
    out = []
    for name, results in per_run.items():
        out += [
            f"### {name}",
            "",
            "| case | median per call | overhead: median of runs | min-max over runs |",
            "|---|---|---|---|",
        ]
        verdict = ""
        for case, _, per_task in _guard_cases():
            base = "bare call" if per_task else "bare call, in sequence in one task"
            costs = [statistics.median(r[case]) for r in results]
            overs = [
                statistics.median(c - b for c, b in zip(r[case], r[base], strict=True))
                for r in results
            ]
            over = "-" if case == base else _us(statistics.median(overs))
            spread = "-" if case == base else f"{_us(min(overs))}-{_us(max(overs))}"
            out.append(f"| {case} | {_us(statistics.median(costs))} | {over} | {spread} |")
            if case.startswith("cohort: breaker + bulkhead"):
                met = statistics.median(overs) * 1e6 <= GUARDS_TARGET_US
                verdict = (
                    f"- target <= {GUARDS_TARGET_US:g} us over the bare call for {case}: "
                    f"{'met' if met else 'MISSED'} (median of runs; max {_us(max(overs))})"
                )
        out += ["", verdict, ""]
    return out


# -- retry wrappers: in this process ----------------------------------------------------------


def _timed(
    factory: Callable[[], Coroutine[Any, Any, None]],
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> Callable[[], object]:
    def run() -> None:
        loop = new_loop()
        try:
            loop.run_until_complete(factory())
        finally:
            loop.close()

    return run


def _retry_cases(calls: int) -> list[tuple[str, Any]]:
    import stamina
    import tenacity

    import cohort

    async def bare() -> None:
        for i in range(calls):
            await backend(i)

    policy = cohort.Retry(attempts=3)
    decorated = policy(backend)
    tenacious = tenacity.retry(stop=tenacity.stop_after_attempt(3))(backend)
    stamina.set_testing(False)
    stamina_retry = stamina.retry(on=Exception, attempts=3)(backend)

    async def cohort_retry() -> None:
        for i in range(calls):
            await cohort.retry(backend, i, policy=policy)

    async def cohort_decorated() -> None:
        for i in range(calls):
            await decorated(i)

    async def with_tenacity() -> None:
        for i in range(calls):
            await tenacious(i)

    async def with_stamina() -> None:
        for i in range(calls):
            await stamina_retry(i)

    return [
        ("bare call", bare),
        ("cohort.retry(fn, policy=)", cohort_retry),
        ("@cohort.Retry(...)", cohort_decorated),
        ("tenacity @retry", with_tenacity),
        ("stamina @retry", with_stamina),
    ]


def _overheads(results: list[CaseResult]) -> list[str]:
    base = results[0].seconds
    lines = []
    for r in results[1:]:
        per = sorted(c - b for c, b in zip(r.seconds, base, strict=True))
        lines.append(
            f"- {r.name}: **{per[len(per) // 2] * 1e6:.2f} us** per call over the bare call"
        )
    return lines


def main(quick: bool) -> str:
    rounds = 3 if quick else 7
    calls = CALLS // 4 if quick else CALLS
    out = [
        "# Resilience guards: cost per call",
        "",
        f"{os.cpu_count()} CPUs; "
        + versions("pybreaker", "aiolimiter", "tenacity", "stamina")
        + f"; Python {sys.version.split()[0]}.",
        "",
    ]
    out += _guards_section(quick)
    target = 1.0
    for loop_name, new_loop in loops():
        res = compare(
            [(name, _timed(fn, new_loop)) for name, fn in _retry_cases(calls)],
            rounds=rounds,
            per=calls,
        )
        title = "retry wrapper, success at the first attempt"
        out.append(
            table(f"{title} ({loop_name}; {calls:,} calls, {rounds} rounds)", res, "per call")
        )
        out += _overheads(res)
        over = sorted(c - b for c, b in zip(res[1].seconds, res[0].seconds, strict=True))
        verdict = "met" if over[len(over) // 2] * 1e6 <= target else "MISSED"
        out += [f"- target <= {target:g} us for {res[1].name}: {verdict}", ""]
    return "\n".join(out)


if __name__ == "__main__":  # one fresh interpreter's run: LOOP CALLS ROUNDS, JSON out
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
