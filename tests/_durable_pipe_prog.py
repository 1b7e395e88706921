"""A 3-stage durable pipeline with a transactional sink (run by the crash tests); its
ledger and sink table: a SQLite path or a postgresql:// URL."""

from __future__ import annotations

import asyncio
import sys

import cohort
import cohort.durable as durable
from _ledger import Ledger
from cohort.pipeline import run_durable, sql_sink

N = int(sys.argv[2]) if len(sys.argv) > 2 else 300


@cohort.stage(workers=3)
async def parse(i: int) -> int:
    await asyncio.sleep(0)
    return i * 10


@cohort.stage(workers=2)
def enrich(v: int) -> int | cohort.DropType:
    return cohort.DROP if v % 70 == 0 else v + 1


async def main(db: str) -> None:
    ledger = Ledger.of(db)
    ledger.query("CREATE TABLE IF NOT EXISTS sink (v INTEGER NOT NULL)")
    sink = sql_sink(ledger.sql("INSERT INTO sink VALUES (?)"), lambda v: [(v,)], workers=2)
    async with durable.run("etl", store=db, wait=ledger.wait):
        report = await run_durable(parse | enrich | sink, range(N), name="etl")
    assert report.counts_add_up()
    [(rows, distinct)] = ledger.query("SELECT count(*), count(DISTINCT v) FROM sink")
    print(report.read, report.succeeded, report.dropped, sum(report.outputs or ()))
    print("sink", rows, distinct)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
