"""What the resilience guards cost per call, against the libraries a user would pick.

A call through a closed circuit breaker, a bulkhead and a rate limiter with
room (cohort; pybreaker + aiolimiter + a semaphore), and a retry wrapper on
a call that succeeds the first time (cohort; tenacity; stamina). The call
itself is an ``async def`` that returns at once, so the figures are the
guards' own cost: (case - bare call) / calls, on one event loop per round.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

from benchmarks._harness import CaseResult, compare, loops, table, versions

CALLS = 20_000


async def backend(x: int) -> int:
    return x


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


def _cases(calls: int) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    import aiolimiter
    import pybreaker
    import stamina
    import tenacity

    import cohort

    async def bare() -> None:
        for i in range(calls):
            await backend(i)

    async def cohort_guards() -> None:
        breaker = cohort.CircuitBreaker()
        bulkhead = cohort.Bulkhead(1000)
        limiter = cohort.RateLimiter(1e9, burst=1_000_000)
        for i in range(calls):
            async with breaker, bulkhead, limiter:
                await backend(i)

    async def cohort_breaker_call() -> None:
        breaker = cohort.CircuitBreaker()
        for i in range(calls):
            await breaker.call(backend, i)

    async def peers_guards() -> None:
        breaker = pybreaker.CircuitBreaker()
        bulkhead = asyncio.Semaphore(1000)
        limiter = aiolimiter.AsyncLimiter(1e9, 1)
        for i in range(calls):
            with breaker.calling():
                async with bulkhead, limiter:
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

    guards = [
        ("bare call", bare),
        ("cohort: breaker + bulkhead + rate limiter (async with)", cohort_guards),
        ("cohort: breaker.call only", cohort_breaker_call),
        ("pybreaker + asyncio.Semaphore + aiolimiter", peers_guards),
    ]
    retries = [
        ("bare call", bare),
        ("cohort.retry(fn, policy=)", cohort_retry),
        ("@cohort.Retry(...)", cohort_decorated),
        ("tenacity @retry", with_tenacity),
        ("stamina @retry", with_stamina),
    ]
    return guards, retries


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
        + f"; {calls:,} calls per round, medians over {rounds} interleaved rounds.",
        "",
    ]
    for loop_name, new_loop in loops():
        guards, retries = _cases(calls)
        for title, cases, target in (
            ("closed breaker + bulkhead + rate limiter with room", guards, 2.0),
            ("retry wrapper, success at the first attempt", retries, 1.0),
        ):
            res = compare(
                [(name, _timed(fn, new_loop)) for name, fn in cases], rounds=rounds, per=calls
            )
            out.append(table(f"{title} ({loop_name})", res, "per call"))
            lines = _overheads(res)
            first = res[1].seconds
            over = sorted(c - b for c, b in zip(first, res[0].seconds, strict=True))
            median = over[len(over) // 2] * 1e6
            verdict = "met" if median <= target else "MISSED"
            out += lines
            out += [f"- target <= {target:g} us for {res[1].name}: {verdict}", ""]
    return "\n".join(out)
