"""Randomized trials of cohort.redis primitives with 8 parties, each with a coordinator (its
own connections) of its own, under faults (a waiter cancelled, one party's connection
black-holed through a TCP proxy); every history goes through the checker
(tests/_redis_history.py). A couple of trials per primitive run in the suite; the soak
(`make soak`, pytest -m soak) runs COHORT_REDIS_TRIALS (default 500) of each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import cohort
from _redis_history import (
    Record,
    check_barrier,
    check_bounds,
    check_fencing,
    check_latch,
    check_semaphore,
)
from cohort.redis import Coordinator, LeaseLost
from test_redis_proxy import Proxy

PARTIES = 8
FAST = {"lease": 0.3, "poll": 0.05, "unreachable": 0.5}
OP_BOUND = 5.0  # lease + unreachable + polls, with room for a loaded machine
TRIAL_BOUND = 30.0
Trial = Callable[[str, str, random.Random, Proxy, bool], Awaitable[list[str]]]


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@contextlib.asynccontextmanager
async def _coordinators(url: str, namespace: str, proxy: Proxy, victim: int) -> Any:
    async with contextlib.AsyncExitStack() as stack:
        coords = [
            await stack.enter_async_context(
                Coordinator(proxy.url if i == victim else url, namespace=namespace, **FAST)
            )
            for i in range(PARTIES)
        ]
        yield coords


def _record(history: list[Record], party: str, op: str, start: float, result: str,
            **more: Any) -> None:  # fmt: skip
    history.append({"party": party, "op": op, "start": start, "end": time.monotonic(),
                    "result": result, **more})  # fmt: skip


async def barrier_trial(
    url: str, namespace: str, rng: random.Random, proxy: Proxy, black_hole: bool
) -> list[str]:
    rounds = 3
    fault = rng.choice(["none", "cancel", "black-hole"] if black_hole else ["none", "cancel"])
    victim, at_gen = rng.randrange(PARTIES), rng.randrange(rounds)
    history: list[Record] = []
    async with _coordinators(url, namespace, proxy, victim if fault == "black-hole" else -1) as cs:

        async def party(i: int) -> None:
            b = cs[i].barrier("b", PARTIES, party=f"p{i}")
            with contextlib.suppress(cohort.BrokenBarrierError, cohort.CoordinatorLost):
                async with b:
                    for gen in range(rounds):
                        start = time.monotonic()
                        result = "broken"
                        try:
                            if i == victim and gen == at_gen and fault == "cancel":
                                async with asyncio.timeout(rng.uniform(0, 0.02)):
                                    await b.wait()
                            else:
                                if i == victim and gen == at_gen and fault == "black-hole":
                                    proxy.black_hole = True
                                await b.wait()
                            result = "passed"
                        except TimeoutError:
                            result = "cancelled"  # it broke the barrier; the party stops
                            return
                        except cohort.CoordinatorLost:
                            result = "lost"
                            raise
                        finally:
                            _record(history, f"p{i}", "wait", start, result, gen=gen)

        async with asyncio.TaskGroup() as tg:
            for i in range(PARTIES):
                tg.create_task(party(i))
    return check_barrier(history, PARTIES) + check_bounds(history, OP_BOUND)


async def lock_trial(
    url: str, namespace: str, rng: random.Random, proxy: Proxy, black_hole: bool
) -> list[str]:
    fault = rng.choice(["none", "black-hole"] if black_hole else ["none"])
    victim = rng.randrange(PARTIES)
    history: list[Record] = []
    accepted: list[int] = []
    highest = 0

    def write(token: int) -> None:  # the resource: refuses a token below the largest seen
        nonlocal highest
        if token >= highest:
            highest = token
            accepted.append(token)

    async with _coordinators(url, namespace, proxy, victim if fault == "black-hole" else -1) as cs:

        async def party(i: int) -> None:
            for _ in range(2):
                start = time.monotonic()
                try:
                    async with cs[i].lock("l") as lease:
                        write(lease.token)
                        if i == victim and fault == "black-hole":
                            proxy.black_hole = True
                            await asyncio.Event().wait()  # cancelled by the lost lease
                        await asyncio.sleep(0)
                        write(lease.token)
                except (LeaseLost, cohort.CoordinatorLost):
                    _record(history, f"p{i}", "hold", start, "lost")
                    return
                _record(history, f"p{i}", "hold", start, "held")

        async with asyncio.TaskGroup() as tg:
            for i in range(PARTIES):
                tg.create_task(party(i))
    return check_fencing(accepted) + check_bounds(history, OP_BOUND)


async def semaphore_trial(
    url: str, namespace: str, rng: random.Random, proxy: Proxy, black_hole: bool
) -> list[str]:
    permits = rng.randint(1, 4)
    history: list[Record] = []
    async with _coordinators(url, namespace, proxy, -1) as cs:

        async def party(i: int) -> None:
            for _ in range(2):
                async with cs[i].semaphore("s", permits):
                    start = time.monotonic()
                    for _ in range(rng.randint(0, 3)):
                        await asyncio.sleep(0)
                    _record(history, f"p{i}", "hold", start, "held")

        async with asyncio.TaskGroup() as tg:
            for i in range(PARTIES):
                tg.create_task(party(i))
    return check_semaphore(history, permits) + check_bounds(history, OP_BOUND)


async def latch_trial(
    url: str, namespace: str, rng: random.Random, proxy: Proxy, black_hole: bool
) -> list[str]:
    history: list[Record] = []
    async with _coordinators(url, namespace, proxy, -1) as cs:

        async def counter(i: int) -> None:
            for _ in range(rng.randint(1, 2)):  # a repeated token counts once
                start = time.monotonic()
                await cs[i].latch("c", PARTIES - 2).count_down(f"t{i % (PARTIES - 2)}")
                _record(history, f"p{i}", "count_down", start, "ok", token=f"t{i % (PARTIES - 2)}")

        async def waiter(i: int) -> None:
            start = time.monotonic()
            await cs[i].latch("c", PARTIES - 2).wait()
            _record(history, f"p{i}", "wait", start, "open")

        async with asyncio.TaskGroup() as tg:
            order = list(range(PARTIES))
            rng.shuffle(order)
            for i in order:
                tg.create_task(counter(i))  # the last two repeat the first two's tokens
                if i >= PARTIES - 2:
                    tg.create_task(waiter(i))
    return check_latch(history, PARTIES - 2) + check_bounds(history, OP_BOUND)


TRIALS: dict[str, Trial] = {
    "barrier": barrier_trial,
    "lock": lock_trial,
    "semaphore": semaphore_trial,
    "latch": latch_trial,
}


async def _run(kind: str, url: str, trials: int, seed: int, black_hole: bool) -> None:
    rng = random.Random(seed)
    for n in range(trials):
        async with Proxy(_port(url)) as proxy, asyncio.timeout(TRIAL_BOUND):
            bad = await TRIALS[kind](url, f"trial-{seed}-{kind}-{n}", rng, proxy, black_hole)
        assert not bad, f"{kind} trial {n} (seed {seed}): {bad}"


@pytest.mark.parametrize("kind", sorted(TRIALS))
async def test_a_few_randomized_trials_are_safe(redis_url: str, kind: str) -> None:
    await _run(kind, redis_url, trials=2, seed=random.randrange(1 << 30), black_hole=False)


@pytest.mark.soak
@pytest.mark.parametrize("kind", sorted(TRIALS))
async def test_many_randomized_trials_with_faults_are_safe(redis_url: str, kind: str) -> None:
    trials = int(os.environ.get("COHORT_REDIS_TRIALS", "500"))
    await _run(kind, redis_url, trials=trials, seed=1, black_hole=True)
