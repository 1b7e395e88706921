"""A durable program for the crash tests: fan-outs of 100 under Gather, Quorum and
FirstWins, children finishing in a seeded random order, a few of them through an
effect step; prints its outputs as JSON. Its ledger: a SQLite path or a postgresql:// URL."""

from __future__ import annotations

import asyncio
import json
import random
import sys

import cohort
import cohort.durable as durable
from _ledger import Ledger


async def main(db: str) -> None:
    """Run on ``db``: a SQLite path or a postgresql:// URL."""
    order = random.Random(7)
    delays = [order.randrange(0, 20) for _ in range(100)]

    async def work(i: int) -> int:
        for _ in range(delays[i]):
            await asyncio.sleep(0)
        if i % 25 == 0:  # an external effect (harmless to repeat): "started" first
            return await durable.step(lambda: i * i, name="publish", effect=True)
        return i * i

    async with durable.run(
        "fanout", store=db, on_ambiguous="rerun", wait=Ledger.of(db).wait
    ) as run:
        async with cohort.TaskGroup(name="gather") as g:
            for i in range(100):
                g.spawn(work, i, name=f"c{i}")
        async with cohort.TaskGroup(join=cohort.Quorum(10), name="quorum") as q:
            for i in range(100):
                q.spawn(work, i, name=f"c{i}")
        async with cohort.TaskGroup(join=cohort.FirstWins(), name="first") as f:
            for i in range(100):
                f.spawn(work, 99 - i, name=f"c{i}")
        total = await run.step(lambda: sum(g.results), name="total")
    print(json.dumps({"gather": g.results, "quorum": q.results, "first": f.result, "t": total}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
