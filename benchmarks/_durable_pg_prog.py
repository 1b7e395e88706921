"""The program the Postgres throughput benchmark's workers run (``cohort runs worker
--programs benchmarks._durable_pg_prog``): three small steps, then one row in the
user table ``bench_done`` through the transactional sink (the ledger's commit)."""

from __future__ import annotations

import os
from typing import Any

import cohort.durable as durable

SIDE_TABLE = "CREATE TABLE bench_done (run_id TEXT NOT NULL, pid INTEGER NOT NULL, total INTEGER)"


def _ident(i: int) -> int:
    return i


@durable.program("bench-small")
async def small(args: Any) -> int:
    total = 0
    for i in range(3):
        total += await durable.step(_ident, i, name=f"s{i}")
    await durable.write_rows(
        "INSERT INTO bench_done VALUES (%s, %s, %s)",
        [(args["id"], os.getpid(), total)],
        name="done",
    )
    return total
