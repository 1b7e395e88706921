"""A program that hangs on purpose, for test_dump.py: it enables dumps, prints
``ready`` once every task is blocked, then either idles or blocks its loop."""

from __future__ import annotations

import asyncio
import sys
import time

import cohort


async def worker(barrier: cohort.Barrier, gate: asyncio.Event, late: bool) -> None:
    if late:
        await gate.wait()
    await barrier.wait()


def block_in_sleep() -> None:
    time.sleep(60)


async def main(mode: str) -> None:
    cohort.enable_dump()
    barrier = cohort.Barrier(3)
    gate = asyncio.Event()
    async with cohort.TaskGroup(name="crew") as g:
        for i in range(3):
            g.spawn(worker, barrier, gate, i == 2, name=f"worker-{i}")
        for _ in range(5):  # each worker reaches its wait in its first step
            await asyncio.sleep(0)
        print("ready", flush=True)
        if mode == "stall":
            block_in_sleep()
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
