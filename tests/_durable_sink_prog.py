"""A durable program with a transactional sink for the crash tests: 40 batches of 10
rows written with write_rows by children finishing in a seeded random order. Its
ledger, and the sink table beside it: a SQLite path or a postgresql:// URL."""

from __future__ import annotations

import asyncio
import json
import random
import sys

import cohort
import cohort.durable as durable
from _ledger import Ledger


async def main(db: str) -> None:
    ledger = Ledger.of(db)
    ledger.query("CREATE TABLE IF NOT EXISTS sink (batch INTEGER, item INTEGER, v INTEGER)")
    insert = ledger.sql("INSERT INTO sink VALUES (?, ?, ?)")
    order = random.Random(11)
    delays = [order.randrange(0, 10) for _ in range(40)]

    async def batch(b: int) -> int:
        for _ in range(delays[b]):
            await asyncio.sleep(0)
        rows = [(b, i, b * 100 + i) for i in range(10)]
        return await durable.write_rows(insert, rows, name="rows")

    async with (
        durable.run("sink", store=db, wait=ledger.wait),
        cohort.TaskGroup(name="batches") as g,
    ):
        for b in range(40):
            g.spawn(batch, b, name=f"b{b}")
    print(json.dumps(sum(g.results)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
