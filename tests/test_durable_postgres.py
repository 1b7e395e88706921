"""cohort.durable on Postgres: migrations, one owner across machines (advisory lock +
epoch), a killed owner taken over at once, a partitioned owner fenced off."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cohort.durable as durable
from _ledger import Ledger
from _pg_server import TcpProxy
from _util import run_python


def _step(path: str) -> durable.StepRecord:
    return durable.StepRecord("r", path, "ok", b"v", 0, 1, 1.0, 2.0)


def test_migrate_creates_the_versioned_schema_and_upgrades_an_old_one(
    pg_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    from cohort.cli import main

    assert main(["runs", "migrate", "--db", pg_dsn]) == 0
    assert capsys.readouterr().out == "ledger schema at version 2 (was 0)\n"
    assert main(["runs", "migrate", "--db", pg_dsn]) == 0
    assert capsys.readouterr().out == "ledger schema at version 2 (was 2)\n"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # back to version 1
        conn.execute("ALTER TABLE cohort_runs DROP COLUMN program")
        conn.execute("UPDATE cohort_schema_version SET version = 1")
    assert durable.migrate(pg_dsn) == (1, 2)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("UPDATE cohort_schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="newer than this cohort's 2: upgrade cohort"):
        durable.PostgresStore(pg_dsn)
    assert main(["runs", "migrate", "--db", "runs.db"]) == 2
    assert "takes a postgresql:// URL" in capsys.readouterr().err


def test_a_postgres_owner_killed_with_sigkill_is_taken_over_at_once(pg_dsn: str) -> None:
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        from cohort.durable import PostgresStore
        store = PostgresStore({pg_dsn!r})
        store.acquire("r")
        print("owned", flush=True)
        sys.stdin.readline()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stdin is not None
        assert child.stdout.readline() == "owned\n"
        store = durable.PostgresStore(pg_dsn)
        with pytest.raises(durable.RunBusyError, match="advisory lock"):
            store.acquire("r")
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == -signal.SIGKILL
        # The server ends the dead session (its socket closed): no lease to wait for.
        assert store.acquire("r", wait=30) == 2
        store.close()


@pytest.fixture
def proxy(pg_server: Any) -> Iterator[TcpProxy]:
    proxy = TcpProxy(pg_server.port)
    yield proxy
    proxy.close()


def test_a_partitioned_owner_that_comes_back_cannot_commit(pg_dsn: str, proxy: TcpProxy) -> None:
    via_proxy = pg_dsn.replace(f":{proxy.upstream}/", f":{proxy.port}/")
    zombie = durable.PostgresStore(via_proxy, lease=1.0)
    epoch = zombie.acquire("r")
    zombie.put_step(_step("before"))
    zombie.flush("r", epoch)
    proxy.block()
    # Another process (another machine) asks for the run: the server ends the
    # silent owner's session after its lease, and with it its advisory lock.
    taker = textwrap.dedent(
        f"""
        from cohort.durable import PostgresStore, StepRecord
        store = PostgresStore({pg_dsn!r})
        epoch = store.acquire("r", wait=60)
        store.put_step(StepRecord("r", "taken", "ok", b"t", 0, 1, 1.0, 2.0))
        store.finish("r", epoch, "done")
        store.close()
        print(epoch)
        """
    )
    done = run_python("-c", taker, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "2\n", "")
    proxy.unblock()
    zombie.put_step(_step("late"))
    with pytest.raises(durable.FencedError, match="epoch 1 no longer owns it"):
        zombie.flush("r", epoch)
    zombie.close()
    check = durable.PostgresStore(pg_dsn)
    assert sorted(s.path for s in check.load("r")[0]) == ["before", "taken"]
    record = check.run("r")
    assert record is not None
    assert (record.epoch, record.state) == (2, "done")
    check.close()


async def test_one_line_switches_a_run_to_postgres(pg_dsn: str) -> None:
    calls: list[int] = []

    def once() -> int:
        calls.append(1)
        return 7

    for _ in range(2):
        async with durable.run("nightly", store=pg_dsn) as run:
            assert await run.step(once) == 7
    assert calls == [1]


def _statements_sent(
    store: durable.PostgresStore, tmp_path: Path, work: Callable[[], None]
) -> list[str]:
    """The statements the store's connection sends while ``work()`` runs (libpq's
    trace of the protocol: each Parse or simple Query message is one statement)."""
    from psycopg import pq

    trace = tmp_path / "trace"
    conn = store.connection
    with open(trace, "w") as out:
        conn.pgconn.trace(out.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            work()
        finally:
            conn.pgconn.untrace()
    sent: list[str] = []
    for line in trace.read_text().splitlines():
        fields = [*line.split("\t"), "", "", ""]
        if fields[0] == "F" and fields[2] in ("Parse", "Query"):
            sent.append(fields[3])
    return sent


def test_a_postgres_commit_of_many_steps_is_one_statement(pg_dsn: str, tmp_path: Path) -> None:
    store = durable.PostgresStore(pg_dsn)
    try:
        epoch = store.acquire("r")
        store.put_rows([tuple(_step(f"s{i}")) for i in range(300)])
        store.put_step(_step("s7")._replace(value=b"last"))  # the same path again: it wins
        sent = _statements_sent(store, tmp_path, lambda: store.flush("r", epoch))
        assert len(sent) == 1, sent
        steps, _ = store.load("r")
        assert len(steps) == 300
        assert {s.path: s.value for s in steps}["s7"] == b"last"
        store.put_step(_step("late"))
        with pytest.raises(durable.FencedError):  # an older epoch: nothing committed
            store.flush("r", epoch - 1)
        assert "late" not in {s.path for s in store.load("r")[0]}
        store.finish("r", epoch, "done")
        run = store.run("r")
        assert run is not None
        assert run.state == "done"
    finally:
        store.close()


def test_a_crash_loop_on_postgres_writes_every_sink_row_exactly_once(pg_server: Any) -> None:
    from cohort.testing import crash_loop

    sink = [sys.executable, str(Path(__file__).with_name("_durable_sink_prog.py"))]
    db = pg_server.new_schema()
    # Killed in its first commit (it always comes), restarted at once: the restart
    # waits for the server to end the dead session, then resumes (random kills:
    # the soak, python -m benchmarks.soak --durable-store postgres).
    result = crash_loop([*sink, db], random_kills=0, crash_point="in-commit", point_range=1, seed=5)
    assert (result.output, result.runs, result.kills, result.point_kills) == ("400\n", 2, 1, 1)
    rows = Ledger.of(db).query("SELECT batch, item, v FROM sink")
    assert len(rows) == 400  # 0 duplicates ...
    assert sorted(rows) == [(b, i, b * 100 + i) for b in range(40) for i in range(10)]  # 0 lost


async def test_a_run_given_a_store_opened_with_sync_step_commits_each_step(pg_dsn: str) -> None:
    store = durable.PostgresStore(pg_dsn, sync="step")
    try:
        async with durable.run("r", store=store) as run:
            assert run.sync == "step"
            assert await run.step(lambda: 1, name="one") == 1
            assert store.pending == 0  # committed before the step returned
        async with durable.run("g", store=store, sync="group") as run:  # said: it wins
            assert await run.step(lambda: 2, name="two") == 2
            assert store.pending == 1  # committed at the end of the loop's iteration
    finally:
        store.close()
