"""The embedded store: one SQLite file (standard library ``sqlite3``), WAL, group commit.

Ownership of a run is an OS file lock (``fcntl.flock``) on a file of its own
in the directory ``<database>.locks`` beside the database: the kernel
releases it the moment the owner dies, so a crashed owner is detected at
once, with no heartbeat. Every owner bumps the run's epoch, and every commit
checks it in its own transaction (``UPDATE runs ... WHERE epoch = ?``), so a
process that lost the run (stopped, then resumed after another one took it
over with ``steal=True``) can never commit again.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Literal

from cohort.durable._store import (
    BufferedStore,
    DecisionRecord,
    FencedError,
    RunBusyError,
    RunRecord,
    RunState,
    StepRecord,
    StepRow,
)

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    value BLOB,
    seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    PRIMARY KEY (run_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS decisions (
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (run_id, path, kind)
) WITHOUT ROWID;
"""

_PUT_STEP = "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_PUT_DECISION = "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?)"
_LOAD_VALUES = (
    "SELECT path, value FROM steps WHERE run_id = ? AND status = 'ok' AND seq < 0"
    " AND value IS NOT NULL"
)
_LOAD_ROWS = (
    "SELECT path, status, value, seq, attempt FROM steps WHERE run_id = ?"
    " AND NOT (status = 'ok' AND seq < 0 AND value IS NOT NULL)"
)
_DEL_STEP = "DELETE FROM steps WHERE run_id = ? AND path = ?"


class SQLiteStore(BufferedStore):
    """A ledger in one SQLite database file.

    Args:
        path: the database file (created if missing).
        sync: ``"group"`` (``synchronous=NORMAL``: a commit is durable against
            a crash of the process, and against power loss once the WAL is
            checkpointed) or ``"step"`` (``synchronous=FULL``: every commit
            is fsynced before it returns).

    Writes are buffered until ``flush``; a durable run flushes once per loop
    iteration (group commit), or at every step with ``sync="step"``.
    """

    def __init__(self, path: str | os.PathLike[str], *, sync: Literal["group", "step"] = "group"):
        if sync not in ("group", "step"):
            raise ValueError(f'sync must be "group" or "step", got {sync!r}')
        self.path = Path(path)
        self.sync = sync
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if sync == 'group' else 'FULL'}")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        super().__init__()
        self._locks: dict[str, int] = {}  # run id -> the fd of its held lock file

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, sync={self.sync!r})"

    # -- ownership ------------------------------------------------------------------

    def _lock_path(self, run_id: str) -> Path:
        digest = hashlib.sha256(run_id.encode()).hexdigest()[:32]
        return self.path.parent / f"{self.path.name}.locks" / f"{digest}.lock"

    def _try_lock(self, run_id: str) -> int | None:
        where = self._lock_path(run_id)
        where.parent.mkdir(exist_ok=True)
        fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def acquire(self, run_id: str, *, wait: float = 0.0, steal: bool = False) -> int:
        """Own ``run_id``; see :meth:`Store.acquire`. With ``steal=True`` a run whose
        owner still holds its lock after ``wait`` is taken over all the same (for an
        owner known to be hung): the old owner's epoch is fenced off."""
        if run_id in self._locks:
            raise RunBusyError(f"run {run_id!r} is already open in this store")
        deadline = time.monotonic() + wait
        fd = self._try_lock(run_id)
        while fd is None and time.monotonic() < deadline:
            time.sleep(0.005)
            fd = self._try_lock(run_id)
        if fd is None and not steal:
            raise RunBusyError(
                f"run {run_id!r} is owned by another live process (lock "
                f"{self._lock_path(run_id)} held); wait for it (wait=seconds), or "
                "take it over with steal=True if that process is hung"
            )
        now = time.time()
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, 'running', 0, ?, ?)", (run_id, now, now)
            )
            db.execute(
                "UPDATE runs SET epoch = epoch + 1, state = 'running', updated = ? WHERE id = ?",
                (now, run_id),
            )
            (epoch,) = db.execute("SELECT epoch FROM runs WHERE id = ?", (run_id,)).fetchone()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if fd is not None:
                os.close(fd)
            raise
        if fd is not None:
            self._locks[run_id] = fd
        else:
            self._locks[run_id] = -1  # stolen: no lock held
        return int(epoch)

    def release(self, run_id: str) -> None:
        fd = self._locks.pop(run_id, None)
        if fd is not None and fd >= 0:
            os.close(fd)  # closing the descriptor releases the flock

    # -- records --------------------------------------------------------------------

    def load(self, run_id: str) -> tuple[list[StepRecord], list[DecisionRecord]]:
        make = functools.partial(tuple.__new__, StepRecord)  # StepRecord._make, less a call
        steps = list(map(make, self._db.execute("SELECT * FROM steps WHERE run_id = ?", (run_id,))))
        decisions = [
            DecisionRecord(*row)
            for row in self._db.execute("SELECT * FROM decisions WHERE run_id = ?", (run_id,))
        ]
        return steps, decisions

    def load_index(
        self, run_id: str
    ) -> tuple[dict[str, bytes], dict[str, StepRow], list[DecisionRecord]]:
        db = self._db
        # Two columns, no Python code per row: the steps that replay as a value.
        values = dict(db.execute(_LOAD_VALUES, (run_id,)))
        rows = {row[0]: row for row in db.execute(_LOAD_ROWS, (run_id,))}
        decisions = [
            DecisionRecord(*row)
            for row in db.execute("SELECT * FROM decisions WHERE run_id = ?", (run_id,))
        ]
        return values, rows, decisions

    def execute_in_commit(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Buffer ``executemany(sql, rows)`` into the next commit: a sink's rows in
        this database are committed in the same transaction as the ledger's records.
        The statement is compiled now (``EXPLAIN``): a bad one raises ``ValueError``
        here rather than failing the commit."""
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, got {sql!r}")
        if rows:
            try:
                self._db.execute(f"EXPLAIN {sql}", rows[0])
            except sqlite3.Error as exc:
                raise ValueError(
                    f"cannot write rows with {sql!r} in {self.path}: {exc}; check the "
                    "statement, its table and its number of parameters"
                ) from exc
            self._statements.append((sql, rows))

    def _write(
        self,
        run_id: str,
        epoch: int,
        state: RunState | None,
        steps: list[tuple[Any, ...]],
        decisions: list[tuple[Any, ...]],
        deletes: list[tuple[str, str]],
        statements: list[tuple[str, list[tuple[Any, ...]]]],
    ) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if state is None:
                cursor = db.execute(
                    "UPDATE runs SET updated = ? WHERE id = ? AND epoch = ?",
                    (time.time(), run_id, epoch),
                )
            else:
                cursor = db.execute(
                    "UPDATE runs SET updated = ?, state = ? WHERE id = ? AND epoch = ?",
                    (time.time(), state, run_id, epoch),
                )
            _check_owner(cursor.rowcount, run_id, epoch)
            if deletes:
                db.executemany(_DEL_STEP, deletes)
            if steps:
                db.executemany(_PUT_STEP, steps)
            if decisions:
                db.executemany(_PUT_DECISION, decisions)
            for sql, rows in statements:
                db.executemany(sql, rows)
            if self.before_commit is not None:
                self.before_commit()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -- operations -----------------------------------------------------------------

    def runs(self) -> list[RunRecord]:
        rows = self._db.execute("SELECT * FROM runs ORDER BY created, id")
        return [RunRecord(*row) for row in rows]

    def run(self, run_id: str) -> RunRecord | None:
        row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else RunRecord(*row)

    def delete(self, run_id: str) -> bool:
        fd = self._locks.get(run_id)
        if fd is None:
            fd = self._try_lock(run_id)
            if fd is None:
                raise RunBusyError(f"run {run_id!r} is owned by a live process: not deleted")
            owned = False
        else:
            owned = True
        try:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
                db.execute("DELETE FROM decisions WHERE run_id = ?", (run_id,))
                found = db.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            if not owned and fd >= 0:
                os.close(fd)
        return bool(found)

    def expire(self, older_than: float) -> list[str]:
        if older_than < 0:
            raise ValueError(f"older_than is a number of seconds >= 0, got {older_than!r}")
        cutoff = time.time() - older_than
        rows = self._db.execute(
            "SELECT id FROM runs WHERE state IN ('done', 'failed') AND updated <= ? ORDER BY id",
            (cutoff,),
        ).fetchall()
        gone = []
        for (run_id,) in rows:
            try:
                if self.delete(run_id):
                    gone.append(run_id)
            except RunBusyError:
                continue  # resumed by a live process meanwhile
        return gone

    def close(self) -> None:
        for run_id in list(self._locks):
            self.release(run_id)
        self._db.close()


def _check_owner(updated: int, run_id: str, epoch: int) -> None:
    if updated != 1:
        raise FencedError(
            f"run {run_id!r}: epoch {epoch} no longer owns it (another process took "
            "it over); nothing of this process was committed"
        )
