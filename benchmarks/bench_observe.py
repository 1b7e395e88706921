"""What the watchdog costs: CPU time it adds, idle and under a busy loop.

* Idle: a loop that only sleeps for a while, with and without a watchdog
  (threshold 0.1 s: a heartbeat on the loop and a thread wake-up every 25 ms).
  The figure is the extra process CPU time (every thread, ``time.process_time``)
  as a percentage of the wall time watched.
* Busy: the same, while the loop runs a steady stream of tiny tasks; the extra
  CPU time is measured against the same work without a watchdog.

Target: watchdog on costs <= 0.5 % CPU. Rounds alternate off and on, medians.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import cohort
from benchmarks._harness import loops, versions

THRESHOLD = 0.1


async def _idle(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _busy(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def tiny() -> None:
        await asyncio.sleep(0)

    while loop.time() < end:
        await asyncio.gather(*(tiny() for _ in range(50)))
        await asyncio.sleep(0.001)


def _cpu(
    runner: asyncio.Runner, work: Callable[[float], Awaitable[None]], seconds: float, on: bool
) -> tuple[float, float]:
    async def main() -> None:
        if on:
            async with cohort.Watchdog(THRESHOLD, log=False):
                await work(seconds)
        else:
            await work(seconds)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    runner.run(main())
    return time.process_time() - cpu0, time.perf_counter() - wall0


def main(quick: bool) -> str:
    seconds = 0.5 if quick else 2.0
    rounds = 3 if quick else 5
    lines = [
        "## Watchdog: CPU cost (target <= 0.5 %)",
        "",
        versions("uvloop"),
        "",
        f"threshold {THRESHOLD} s, {rounds} rounds of {seconds} s each, off and on alternating",
        "",
        "| loop | workload | CPU off (% of wall) | CPU on (% of wall) | added CPU (% of wall) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for loop_name, factory in loops():
        for work_name, work in (("idle", _idle), ("busy", _busy)):
            off: list[float] = []
            on: list[float] = []
            added: list[float] = []
            with asyncio.Runner(loop_factory=factory) as runner:
                for _ in range(rounds):
                    cpu_off, wall_off = _cpu(runner, work, seconds, False)
                    cpu_on, wall_on = _cpu(runner, work, seconds, True)
                    off.append(100 * cpu_off / wall_off)
                    on.append(100 * cpu_on / wall_on)
                    added.append(on[-1] - off[-1])
            lines.append(
                f"| {loop_name} | {work_name} | {statistics.median(off):.3f} | "
                f"{statistics.median(on):.3f} | {statistics.median(added):.3f} |"
            )
    return "\n".join(lines) + "\n"
