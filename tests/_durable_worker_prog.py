"""Programs for the worker tests (cohort runs worker --programs _durable_worker_prog):
each logs its start and end (run, worker pid) in ``worker_log``; a run listed in
``hang_once`` hangs the first time, until its worker is killed."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import psycopg

import cohort.durable as durable


def _log(run_id: str, what: str) -> None:
    with psycopg.connect(os.environ["COHORT_WORKER_LOG_DSN"], autocommit=True) as conn:
        conn.execute(
            "INSERT INTO worker_log VALUES (%s, %s, %s, clock_timestamp())",
            (run_id, os.getpid(), what),
        )


def _hang_once(run_id: str) -> bool:
    with psycopg.connect(os.environ["COHORT_WORKER_LOG_DSN"], autocommit=True) as conn:
        return conn.execute("DELETE FROM hang_once WHERE run_id = %s", (run_id,)).rowcount == 1


def _double(n: int) -> int:
    return 2 * n


@durable.program("double")
async def double(args: Any) -> int:
    run_id = args["id"]
    _log(run_id, "start")
    value = await durable.step(_double, args["n"], name="double")
    if _hang_once(run_id):
        durable.current_run().flush()  # the step is recorded: a takeover replays it
        _log(run_id, "hung")
        await asyncio.Event().wait()
    _log(run_id, "end")
    return value
