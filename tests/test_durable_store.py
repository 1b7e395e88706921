"""cohort.durable's stores (SQLite; Postgres too where a test is about the interface):
buffered records, group commit, ownership and fencing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _ledger import Ledger
from cohort.durable import (
    DecisionRecord,
    FencedError,
    RunBusyError,
    SQLiteStore,
    StepRecord,
    Store,
)


def _step(run_id: str, path: str, value: bytes = b"v") -> StepRecord:
    return StepRecord(run_id, path, "ok", value, 0, 1, 1.0, 2.0)


def test_records_are_buffered_until_flush_then_committed_together(ledger: Ledger) -> None:
    store = ledger.open()
    epoch = store.acquire("r")
    store.put_step(_step("r", "a"))
    store.put_step(_step("r", "g/b"))
    store.put_decision(DecisionRecord("r", "g", "winners", '["g/b"]', 1))
    assert store.pending == 3
    other = ledger.open()  # a reader in another connection
    assert other.load("r") == ([], [])
    store.flush("r", epoch)
    assert store.pending == 0
    steps, decisions = other.load("r")
    assert sorted(s.path for s in steps) == ["a", "g/b"]
    assert decisions == [DecisionRecord("r", "g", "winners", '["g/b"]', 1)]
    store.close()
    other.close()


def test_the_resume_index_splits_plain_values_from_ordered_rows_as_load_does(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    epoch = store.acquire("r")
    store.put_step(StepRecord("r", "s", "ok", b"1", -1, 1, 1.0, 2.0))  # a plain step
    store.put_step(StepRecord("r", "g/c", "ok", b"2", 0, 1, 1.0, 2.0))  # a child, ordered
    store.put_step(StepRecord("r", "e", "error", b"3", -1, 2, 1.0, 2.0))
    store.put_step(StepRecord("r", "x", "started", None, 0, 1, 1.0, None))
    store.put_step(StepRecord("r", "other", "ok", b"4", -1, 1, 1.0, 2.0))
    store.put_decision(DecisionRecord("r", "g", "end", "{}", -1))
    store.flush("r", epoch)
    other = store.acquire("q")
    store.put_step(StepRecord("q", "other", "ok", b"5", -1, 1, 1.0, 2.0))  # another run's
    store.flush("q", other)
    values, rows, decisions = store.load_index("r")
    assert values == {"s": b"1", "other": b"4"}
    assert rows == {
        "g/c": ("g/c", "ok", b"2", 0, 1),
        "e": ("e", "error", b"3", -1, 2),
        "x": ("x", "started", None, 0, 1),
    }
    assert decisions == [DecisionRecord("r", "g", "end", "{}", -1)]
    # The interface's default, built from load(), answers the same (another store's).
    assert Store.load_index(store, "r") == (values, rows, decisions)
    store.close()


def test_store_uses_wal_and_the_sync_mode_asked_for(tmp_path: Path) -> None:
    group = SQLiteStore(tmp_path / "a.db")
    step = SQLiteStore(tmp_path / "b.db", sync="step")
    # sqlite3 numbers: synchronous NORMAL = 1, FULL = 2
    assert group._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert group._db.execute("PRAGMA synchronous").fetchone() == (1,)
    assert step._db.execute("PRAGMA synchronous").fetchone() == (2,)
    with pytest.raises(ValueError, match='sync must be "group" or "step"'):
        SQLiteStore(tmp_path / "c.db", sync="always")  # type: ignore[arg-type]
    group.close()
    step.close()


def test_a_second_owner_of_a_live_run_is_refused_with_what_to_do(ledger: Ledger) -> None:
    first = ledger.open()
    second = ledger.open()
    first.acquire("r")
    with pytest.raises(RunBusyError, match=r"owned by another live process.*wait=.*steal=True"):
        second.acquire("r", wait=0.05)
    second.acquire("other-run")  # one lock per run, not per database
    first.release("r")
    assert second.acquire("r") == 2  # the epoch grows with every owner
    first.close()
    second.close()


def test_a_stale_owner_commits_nothing_after_a_takeover(ledger: Ledger) -> None:
    old = ledger.open()
    new = ledger.open()
    old_epoch = old.acquire("r")
    new_epoch = new.acquire("r", steal=True)  # the old owner is hung: fenced off
    assert new_epoch == old_epoch + 1
    old.put_step(_step("r", "late"))
    with pytest.raises(FencedError, match="no longer owns it"):
        old.flush("r", old_epoch)
    new.put_step(_step("r", "fresh"))
    new.flush("r", new_epoch)
    assert [s.path for s in new.load("r")[0]] == ["fresh"]
    old.close()
    new.close()


def test_the_lock_of_a_killed_owner_is_released_at_once(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        from cohort.durable import SQLiteStore
        store = SQLiteStore({str(db)!r})
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
        store = SQLiteStore(db)
        with pytest.raises(RunBusyError):
            store.acquire("r")
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=30) == -9
        assert store.acquire("r") == 2  # no heartbeat timeout to wait for
        store.close()


def test_runs_are_listed_and_deleted_but_not_while_owned(ledger: Ledger) -> None:
    store = ledger.open()
    other = ledger.open()
    for run_id in ("a", "b"):
        epoch = store.acquire(run_id)
        store.put_step(_step(run_id, "x"))
        store.finish(run_id, epoch, "done")
    assert [(r.run_id, r.state, r.epoch) for r in store.runs()] == [
        ("a", "done", 1),
        ("b", "done", 1),
    ]
    with pytest.raises(RunBusyError, match="not deleted"):
        other.delete("a")
    store.release("a")
    assert other.delete("a") is True
    assert other.delete("a") is False
    assert [r.run_id for r in other.runs()] == ["b"]
    assert other.load("a") == ([], [])
    store.close()
    other.close()


def test_expire_deletes_finished_old_runs_only(ledger: Ledger) -> None:
    store = ledger.open()
    for run_id, state in (("done", "done"), ("failed", "failed")):
        epoch = store.acquire(run_id)
        store.finish(run_id, epoch, state)  # type: ignore[arg-type]
        store.release(run_id)
    store.acquire("running")
    assert store.expire(3600.0) == []  # not old enough
    assert store.expire(0.0) == ["done", "failed"]
    assert [r.run_id for r in store.runs()] == ["running"]
    with pytest.raises(ValueError, match="seconds >= 0"):
        store.expire(-1)
    store.close()


def test_the_runs_command_lists_shows_and_deletes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cohort.cli import main

    db = tmp_path / "runs.db"
    store = SQLiteStore(db)
    epoch = store.acquire("nightly")
    store.put_step(_step("nightly", "export/day-1"))
    store.put_decision(DecisionRecord("nightly", "race", "winners", '["race/b"]', 1))
    store.finish("nightly", epoch, "done")
    store.close()
    assert main(["runs", "ls", "--db", str(db)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split()[:4] == ["nightly", "done", "1", "1"]
    assert main(["runs", "show", "nightly", "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert "step export/day-1: ok seq=0 attempt=1 1 bytes" in shown
    assert "decision race winners: ['race/b'] seq=1" in shown
    assert main(["runs", "show", "nope", "--db", str(db)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["runs", "rm", "nightly", "--db", str(db)]) == 0
    assert capsys.readouterr().out == "deleted nightly\n"
    assert main(["runs", "ls", "--db", str(tmp_path / "missing.db")]) == 2
