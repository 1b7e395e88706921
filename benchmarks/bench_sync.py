"""Synchronisation primitives against asyncio's (and anyio's) on the default loop and uvloop.

* Barrier: the cost of one generation (every party arrives, all are released)
  with 10, 100 and 1,000 parties, ``cohort.Barrier`` against ``asyncio.Barrier``.
* Wake: the time for one ``set`` to wake 1,000 blocked waiters until the last
  one has resumed, ``cohort.EventFlags`` and ``cohort.Latch`` against
  ``asyncio.Event`` (and ``anyio.Event``). The waiters are long-lived tasks
  that wait on a fresh primitive each round, so task creation is not timed.

Target: ratio <= 1.0 against the asyncio baseline of the same run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import cohort
from benchmarks._harness import CaseResult, compare, loops, table, versions

_WAITERS = 1000


# -- barrier ------------------------------------------------------------------


async def _barrier_cycles(barrier: Any, parties: int, cycles: int) -> None:
    async def party() -> None:
        for _ in range(cycles):
            await barrier.wait()

    await asyncio.gather(*(party() for _ in range(parties)))


def _barrier_case(
    runner: asyncio.Runner, make: Callable[[int], Any], parties: int, cycles: int
) -> Callable[[], object]:
    return lambda: runner.run(_barrier_cycles(make(parties), parties, cycles))


def _bench_barrier(loop_name: str, factory: Any, parties: int, quick: bool) -> str:
    cycles = max(3, (4_000 if quick else 20_000) // parties)
    with (
        asyncio.Runner(loop_factory=factory) as r_asyncio,
        asyncio.Runner(loop_factory=factory) as r_cohort,
    ):
        results = compare(
            [
                ("asyncio.Barrier", _barrier_case(r_asyncio, asyncio.Barrier, parties, cycles)),
                ("cohort.Barrier", _barrier_case(r_cohort, cohort.Barrier, parties, cycles)),
            ],
            rounds=3 if quick else 7,
            per=cycles,
        )
    title = f"Barrier, {parties} parties, {loop_name} loop ({cycles} generations per round)"
    return table(title, results, "per generation") + _rate_line(results, "generations")


def _rate_line(results: list[CaseResult], what: str) -> str:
    rates = ", ".join(f"{r.name} {1 / r.median:,.0f} {what}/s" for r in results)
    return f"\n{rates}\n"


# -- wake ---------------------------------------------------------------------


class _WakeRig:
    """Long-lived waiter tasks; each round they wait on a fresh primitive that one call opens.

    After waking, the waiters park on a plain future (the gate) until the round
    is timed; then they register on the next primitive, untimed.
    """

    def __init__(self, runner: asyncio.Runner, kind: str, rounds: int) -> None:
        self.runner = runner
        self.kind = kind
        self.round = 0
        self.wake_times: list[float] = []  # set() until the last waiter resumed
        runner.run(self._setup(rounds + 1))

    async def _setup(self, rounds: int) -> None:
        loop = asyncio.get_running_loop()
        self.prims = [self._make() for _ in range(rounds)]
        self.done = [loop.create_future() for _ in range(rounds)]
        self.gates = [loop.create_future() for _ in range(rounds)]
        self.woken = [0] * rounds
        waiter = self._flags_waiter if self.kind == "cohort.EventFlags" else self._waiter
        self.tasks = [asyncio.create_task(waiter()) for _ in range(_WAITERS)]
        await asyncio.sleep(0)  # every waiter blocks on round 0

    def _make(self) -> Any:
        if self.kind == "asyncio.Event":
            return asyncio.Event()
        if self.kind == "anyio.Event":
            import anyio

            return anyio.Event()
        if self.kind == "cohort.EventFlags":
            return cohort.EventFlags("go")
        return cohort.Latch(1)

    async def _waiter(self) -> None:
        for r, prim in enumerate(self.prims):
            await prim.wait()
            self._woke(r)
            await self.gates[r]

    async def _flags_waiter(self) -> None:
        for r, flags in enumerate(self.prims):
            await flags.wait_all("go")  # as user code would call it
            self._woke(r)
            await self.gates[r]

    def _woke(self, r: int) -> None:
        self.woken[r] += 1
        if self.woken[r] == _WAITERS:
            self.done[r].set_result(None)

    async def _fire(self) -> None:
        r = self.round
        self.round += 1
        prim = self.prims[r]
        t0 = time.perf_counter()
        if self.kind == "cohort.EventFlags":
            prim.set("go")
        elif self.kind == "cohort.Latch":
            prim.count_down()
        else:
            prim.set()
        await self.done[r]
        self.wake_times.append(time.perf_counter() - t0)
        self.gates[r].set_result(None)
        await asyncio.sleep(0)  # runs after every waiter registered on the next round

    def fire(self) -> None:
        self.runner.run(self._fire())

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.runner.run(asyncio.wait(self.tasks))


def _bench_wake(loop_name: str, factory: Any, quick: bool) -> str:
    rounds = 5 if quick else 15
    kinds = ["asyncio.Event", "cohort.EventFlags", "cohort.Latch", "anyio.Event"]
    runners = [asyncio.Runner(loop_factory=factory) for _ in kinds]
    try:
        rigs = [_WakeRig(runner, kind, rounds) for runner, kind in zip(runners, kinds, strict=True)]
        cycles = compare([(rig.kind, rig.fire) for rig in rigs], rounds=rounds)
        for rig in rigs:
            rig.close()
    finally:
        for runner in runners:
            runner.close()
    base = rigs[0].wake_times
    wakes = [
        CaseResult(
            rig.kind, rig.wake_times, [t / b for t, b in zip(rig.wake_times, base, strict=True)]
        )
        for rig in rigs
    ]
    return (
        table(
            f"Wake {_WAITERS} waiters with one set (until the last resumed), {loop_name} loop",
            wakes,
            "per set",
        )
        + "\n"
        + table(
            f"Full round, {loop_name} loop: {_WAITERS} wait() calls, one set, all resumed",
            cycles,
            "per round",
        )
    )


def main(quick: bool = False) -> str:
    out = [
        "# Synchronisation primitives\n",
        f"Peers: {versions('uvloop', 'anyio')}; cohort.Barrier/EventFlags/Latch "
        "against asyncio.Barrier/asyncio.Event (baseline) in the same run.\n",
    ]
    for loop_name, factory in loops():
        for parties in (10, 100, 1000):
            out.append(_bench_barrier(loop_name, factory, parties, quick))
        out.append(_bench_wake(loop_name, factory, quick))
    return "\n".join(out)


if __name__ == "__main__":
    print(main())
