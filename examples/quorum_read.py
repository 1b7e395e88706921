"""The smallest example: a quorum read fanned out to replicas, under a deadline.

Five simulated replicas answer after different delays (one is down, one is
very slow). We need two agreeing answers within 0.5 s: cohort starts all
reads, returns as soon as two succeed, cancels the rest, and shows how every
child ended. Then the same replicas as mirrors (first answer wins, each
call limited to 0.2 s), and a deadline around a whole group.

    python examples/quorum_read.py
"""

from __future__ import annotations

import asyncio
import random

import cohort

REPLICAS = {
    "eu-1": 0.12,
    "eu-2": None,  # down: fails fast
    "us-1": 0.30,
    "us-2": 0.08,
    "ap-1": 2.00,  # very slow
}


async def read(replica: str, key: str) -> str:
    delay = REPLICAS[replica]
    if delay is None:
        await asyncio.sleep(0.01)
        raise ConnectionError(f"{replica} is down")
    await asyncio.sleep(delay * random.uniform(0.9, 1.1))
    return f"{key}=42 (from {replica})"


async def main() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with cohort.TaskGroup(join=cohort.Quorum(2), timeout=0.5, name="quorum-read") as g:
        for replica in REPLICAS:
            g.spawn(read, replica, "answer", name=f"read-{replica}")
    took = loop.time() - start
    print(f"quorum of 2 reached in {took * 1000:.0f} ms: {g.results}\n")
    print(f"{'child':<12} {'status':<10} {'ms':>6}  value / error")
    for o in g.outcomes:
        ms = "" if o.ended is None or o.started is None else f"{(o.ended - o.started) * 1000:.0f}"
        detail = o.value if o.error is None else f"{type(o.error).__name__}: {o.error}"
        print(f"{o.name:<12} {o.status.value:<10} {ms:>6}  {detail if detail is not None else ''}")

    print("\nFirstWins across mirrors, each call limited to 0.2 s:")
    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        for replica in REPLICAS:
            g.spawn(read, replica, "mirror", name=replica, timeout=0.2)
    print(f"  winner: {g.result}")

    print("\nA deadline around everything (move_on_after 0.05 s):")
    with cohort.move_on_after(0.05) as scope:
        async with cohort.TaskGroup(join=cohort.Settle()) as g:
            for replica in REPLICAS:
                g.spawn(read, replica, "late")
    statuses = [o.status.value for o in g.outcomes]
    print(f"  timed out: {scope.cancelled_caught}; statuses: {statuses}")


if __name__ == "__main__":
    random.seed(7)
    cohort.run(main)
