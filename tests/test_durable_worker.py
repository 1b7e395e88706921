"""cohort runs worker: several worker processes drain pending runs from one Postgres
ledger, each run executed by one worker at a time; a SIGKILLed worker's run is
taken over by another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cohort
import cohort.durable as durable

TESTS = Path(__file__).resolve().parent


def _worker(dsn: str, *flags: str) -> subprocess.Popen[str]:
    env = dict(os.environ, COHORT_WORKER_LOG_DSN=dsn)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(cohort.__file__).resolve().parents[1]), str(TESTS)]
    )
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "cohort.cli", "runs", "worker", "--db", dsn),
            *("--programs", "_durable_worker_prog", "--poll", "0.05", *flags),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _setup(dsn: str) -> Any:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute("CREATE TABLE worker_log (run_id TEXT, pid INT, what TEXT, at TIMESTAMPTZ)")
    conn.execute("CREATE TABLE hang_once (run_id TEXT)")
    return conn


def _log(conn: Any) -> list[tuple[str, int, str]]:
    rows = conn.execute("SELECT run_id, pid, what FROM worker_log ORDER BY at").fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def test_workers_drain_pending_runs_each_run_by_one_worker(pg_dsn: str) -> None:
    conn = _setup(pg_dsn)
    store = durable.PostgresStore(pg_dsn)
    runs = [f"job{i}" for i in range(24)]
    for i, run_id in enumerate(runs):
        assert store.submit(run_id, "double", {"id": run_id, "n": i})
    assert not store.submit("job0", "double", {})  # exists already
    workers = [_worker(pg_dsn, "--until-idle") for _ in range(3)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    log = _log(conn)
    for run_id in runs:
        assert [what for r, _, what in log if r == run_id] == ["start", "end"], log
        record = store.run(run_id)
        assert record is not None
        assert record.state == "done"
    store.close()
    conn.close()


def test_a_sigkilled_workers_run_is_taken_over_by_another(pg_dsn: str) -> None:
    conn = _setup(pg_dsn)
    conn.execute("INSERT INTO hang_once VALUES ('slow')")
    store = durable.PostgresStore(pg_dsn)
    store.submit("slow", "double", {"id": "slow", "n": 21})
    first = _worker(pg_dsn)
    try:
        while ("slow", first.pid, "hung") not in _log(conn):
            assert first.poll() is None, first.communicate()
            conn.execute("SELECT pg_sleep(0.02)")  # the server's clock: no local sleep
        second = _worker(pg_dsn, "--until-idle")  # nothing to take: the owner is alive
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, err
        assert "worker ran 0 runs" in out
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    third = _worker(pg_dsn, "--until-idle")
    out, err = third.communicate(timeout=60)
    assert third.returncode == 0, err
    assert "worker ran 1 runs" in out
    assert [(pid, what) for r, pid, what in _log(conn) if r == "slow"] == [
        (first.pid, "start"),
        (first.pid, "hung"),
        (third.pid, "start"),
        (third.pid, "end"),
    ]
    record = store.run("slow")
    assert record is not None
    assert (record.state, record.epoch) == ("done", 2)
    steps, _ = store.load("slow")
    assert [(s.path, s.attempt) for s in steps] == [("double", 1)]  # replayed, not rerun
    store.close()
    conn.close()


def test_a_worker_refuses_a_sqlite_ledger_and_a_store_without_programs(pg_dsn: str) -> None:
    from cohort.cli import main

    assert main(["runs", "worker", "--db", "runs.db", "--programs", "x"]) == 2
    store = durable.PostgresStore(pg_dsn)
    try:
        with pytest.raises(TypeError, match="async function"):
            durable.program("sync")(lambda args: args)
    finally:
        store.close()
