"""A 3-stage durable pipeline with a transactional SQLite sink (run by the crash tests)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys

import cohort
import cohort.durable as durable
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
    with sqlite3.connect(db) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS sink (v INTEGER NOT NULL)")
    setup.close()
    sink = sql_sink("INSERT INTO sink VALUES (?)", lambda v: [(v,)], workers=2)
    async with durable.run("etl", store=db):
        report = await run_durable(parse | enrich | sink, range(N), name="etl")
    assert report.counts_add_up()
    with sqlite3.connect(db) as check:
        rows, distinct = check.execute("SELECT count(*), count(DISTINCT v) FROM sink").fetchone()
    check.close()
    print(report.read, report.succeeded, report.dropped, sum(report.outputs or ()))
    print("sink", rows, distinct)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
