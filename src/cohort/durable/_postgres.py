"""The server store: the same ledger in PostgreSQL (psycopg 3), for runs that move
between machines.

Driver: psycopg 3, through its synchronous API. The :class:`Store` interface is
synchronous (a durable run commits from a loop callback at the end of each
iteration, as with SQLite), so the async API would only add a thread hop; psycopg
3 also has pipeline mode (a batch of statements in one round trip) and ships
binary wheels. asyncpg has no synchronous API and would need a loop of its own.

Ownership of a run is a session-level advisory lock (``pg_try_advisory_lock``)
on the owner's connection: the server releases it when that connection ends,
so a killed owner is taken over at once. A partitioned owner's session is ended
by the server after ``lease`` seconds without traffic
(``idle_session_timeout``); a live owner keeps it with a heartbeat every
``lease / 4``. Every owner bumps the run's epoch, and every commit checks it in
its own transaction (``UPDATE runs ... WHERE epoch = %s``): an owner that comes
back after a takeover reconnects, and its commit is refused
(:class:`FencedError`).

The tables (``cohort_runs``, ``cohort_steps``, ``cohort_decisions``,
``cohort_schema_version``) live in the connection's current schema (the first
of its ``search_path``, normally ``public``) or in ``schema=``; they are created
and upgraded by :func:`migrate` (``cohort runs migrate --db postgresql://...``),
which every store runs when it opens (a no-op once at the current version).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from cohort.durable._store import (
    BufferedStore,
    DecisionRecord,
    FencedError,
    RunBusyError,
    RunRecord,
    RunState,
    StepRecord,
)

if TYPE_CHECKING:
    import psycopg

__all__ = ["SCHEMA_VERSION", "PostgresStore", "migrate"]

# Each migration takes the schema from version i to i + 1 ({s}: the schema's name).
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS {s}.cohort_runs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        epoch BIGINT NOT NULL,
        created DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS {s}.cohort_steps (
        run_id TEXT NOT NULL,
        path TEXT NOT NULL,
        status TEXT NOT NULL,
        value BYTEA,
        seq BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        ended DOUBLE PRECISION,
        PRIMARY KEY (run_id, path)
    );
    CREATE TABLE IF NOT EXISTS {s}.cohort_decisions (
        run_id TEXT NOT NULL,
        path TEXT NOT NULL,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        seq BIGINT NOT NULL,
        PRIMARY KEY (run_id, path, kind)
    );
    """,
    # 2: what a worker needs to pick runs up (cohort runs worker): the program
    # a run runs, and its pending/running state indexed.
    """
    ALTER TABLE {s}.cohort_runs ADD COLUMN IF NOT EXISTS program TEXT;
    ALTER TABLE {s}.cohort_runs ADD COLUMN IF NOT EXISTS args TEXT;
    CREATE INDEX IF NOT EXISTS cohort_runs_state ON {s}.cohort_runs (state)
        WHERE state IN ('pending', 'running');
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

# A batch of steps in one statement: one array per column (unnest), so a commit is
# one statement whatever its size (executemany would be one statement per row).
_UNNEST_STEPS = (
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], "
    "%s::int8[], %s::int4[], %s::float8[], %s::float8[])"
)
_UPSERT_STEPS = (
    " ON CONFLICT (run_id, path) DO UPDATE SET status = EXCLUDED.status, "
    "value = EXCLUDED.value, seq = EXCLUDED.seq, attempt = EXCLUDED.attempt, "
    "started = EXCLUDED.started, ended = EXCLUDED.ended"
)
# The epoch check and the steps in one statement (one round trip, its own
# transaction): the steps are inserted only if the fence's UPDATE found the run
# at this epoch, and the statement returns how many it found (0: fenced).
_FENCED_STEPS = (
    "WITH fence AS (UPDATE {s}.cohort_runs SET updated = %s, state = coalesce(%s, state) "
    "WHERE id = %s AND epoch = %s RETURNING 1), "
    "put AS (INSERT INTO {s}.cohort_steps SELECT u.* FROM (" + _UNNEST_STEPS + ") AS u "
    "WHERE EXISTS (SELECT FROM fence)" + _UPSERT_STEPS + ") "
    "SELECT count(*) FROM fence"
)
_PUT_DECISION = (
    "INSERT INTO {s}.cohort_decisions VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (run_id, path, kind) DO UPDATE SET value = EXCLUDED.value, seq = EXCLUDED.seq"
)
_DEL_STEP = "DELETE FROM {s}.cohort_steps WHERE run_id = %s AND path = %s"
_RUN_COLUMNS = "id, state, epoch, created, updated"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "PostgresStore needs psycopg 3: pip install 'cohort[postgres]' "
            "(or pip install 'psycopg[binary]>=3.1')"
        ) from exc
    return psycopg


def _check_schema(schema: str | None) -> str | None:
    if schema is None:
        return None
    if not isinstance(schema, str) or not schema.isidentifier() or schema.lower() != schema:
        raise ValueError(
            f"schema must be a lower-case SQL identifier (letters, digits, _), got {schema!r}"
        )
    return schema


def migrate(conninfo: str, *, schema: str | None = None) -> tuple[int, int]:
    """Create or upgrade the ledger's tables in ``schema`` (default: the connection's
    current schema); return the versions (before, after). Safe to run from several
    processes at once (a transaction-level advisory lock serialises them)."""
    schema = _check_schema(schema)
    pg = _psycopg()
    with pg.connect(conninfo, autocommit=True) as conn:
        return _migrate(conn, schema)[1:]


def _migrate(conn: psycopg.Connection[Any], schema: str | None) -> tuple[str, int, int]:
    """Migrate; (the schema, version before, version after)."""
    with conn.transaction():
        if schema is None:
            row = conn.execute("SELECT current_schema()").fetchone()
            if row is None or row[0] is None:
                raise ValueError(
                    "the connection has no current schema (no schema of its search_path "
                    "exists): pass schema=, or create one"
                )
            schema = str(row[0])
        else:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_key(schema, "\0migrate"),))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.cohort_schema_version (version INTEGER)")
        row = conn.execute(f"SELECT version FROM {schema}.cohort_schema_version").fetchone()
        before = 0 if row is None else int(row[0])
        if before > SCHEMA_VERSION:
            raise RuntimeError(
                f"the ledger in schema {schema!r} is at version {before}, newer than this "
                f"cohort's {SCHEMA_VERSION}: upgrade cohort"
            )
        for migration in _MIGRATIONS[before:]:
            conn.execute(migration.format(s=schema))
        if row is None:
            conn.execute(
                f"INSERT INTO {schema}.cohort_schema_version VALUES (%s)", (SCHEMA_VERSION,)
            )
        else:
            conn.execute(
                f"UPDATE {schema}.cohort_schema_version SET version = %s", (SCHEMA_VERSION,)
            )
    return schema, before, SCHEMA_VERSION


def _key(schema: str, run_id: str) -> int:
    """The advisory lock key of a run: 64 bits of a hash of schema and run id."""
    digest = hashlib.blake2b(f"{schema}\0{run_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresStore(BufferedStore):
    """A ledger in a PostgreSQL database (tables in ``schema``, created if missing).

    Args:
        conninfo: a libpq connection string or URL (``postgresql://user@host/db``).
        schema: the schema holding the ledger's tables (created if missing);
            default: the connection's current schema.
        lease: seconds after which the server ends the session of an owner it
            no longer hears from (a partitioned or frozen machine), releasing
            its runs; a live owner sends a heartbeat every ``lease / 4``.
        sync: ``"group"`` or ``"step"``: the run's commit cadence (every commit
            is durable on the server once it returns, ``synchronous_commit`` as
            the server is set).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        lease: float = 30.0,
        sync: str = "group",
    ) -> None:
        if not isinstance(conninfo, str):
            raise TypeError(f"conninfo must be a str, got {conninfo!r}")
        if sync not in ("group", "step"):
            raise ValueError(f'sync must be "group" or "step", got {sync!r}')
        if not isinstance(lease, int | float) or lease < 0.2:
            raise ValueError(f"lease is a number of seconds >= 0.2, got {lease!r}")
        self.conninfo = conninfo
        self.lease = float(lease)
        self.sync = sync
        self._pg = _psycopg()
        self._mutex = threading.RLock()  # the connection: this thread and the heartbeat
        self._conn = self._connect()
        try:
            self.schema = _migrate(self._conn, _check_schema(schema))[0]
        except BaseException:
            self._conn.close()
            raise
        s = self.schema
        self._sql_put_step = f"INSERT INTO {s}.cohort_steps {_UNNEST_STEPS}{_UPSERT_STEPS}"
        self._sql_fenced_steps = _FENCED_STEPS.format(s=s)
        self._sql_put_decision = _PUT_DECISION.format(s=s)
        self._sql_del_step = _DEL_STEP.format(s=s)
        super().__init__()
        # run id -> "held" (its advisory lock), "stolen" (steal=True: none), "lost"
        # (the session ended: the next commit takes it again or is fenced)
        self._locks: dict[str, str] = {}
        self._closed = threading.Event()
        self._claimed: dict[str, int] = {}  # run id -> epoch: claim()ed, not acquired yet
        self._heartbeat = threading.Thread(
            target=self._beat, name="cohort-pg-heartbeat", daemon=True
        )
        self._heartbeat.start()

    def __repr__(self) -> str:
        return f"PostgresStore({_redact(self.conninfo)!r}, schema={self.schema!r})"

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The store's connection (for reads; writes go through ``execute_in_commit``)."""
        return self._conn

    def _connect(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = self._pg.connect(
            self.conninfo, autocommit=True, prepare_threshold=None
        )
        # The server ends a session idle this long: the lease of its advisory locks.
        conn.execute(f"SET idle_session_timeout = {int(self.lease * 1000)}")
        conn.execute("SET idle_in_transaction_session_timeout = " + str(int(self.lease * 1000)))
        return conn

    def _beat(self) -> None:
        while not self._closed.wait(self.lease / 4):
            with self._mutex:
                if self._closed.is_set():
                    return
                # A broken connection is found, and replaced, by the next use.
                with contextlib.suppress(Exception):
                    self._conn.execute("SELECT 1")

    def _alive(self) -> psycopg.Connection[Any]:
        """The connection, reconnected if the server ended it (after a partition):
        the runs it owned lose their advisory locks, and the next commit of each
        takes its lock again or is fenced."""
        if self._conn.closed or self._conn.broken:
            self._conn = self._connect()
            for run_id, how in self._locks.items():
                if how == "held":
                    self._locks[run_id] = "lost"
        return self._conn

    # -- ownership ------------------------------------------------------------------

    def _try_lock(self, run_id: str) -> bool:
        row = (
            self._alive()
            .execute("SELECT pg_try_advisory_lock(%s)", (_key(self.schema, run_id),))
            .fetchone()
        )
        return bool(row and row[0])

    def acquire(self, run_id: str, *, wait: float = 0.0, steal: bool = False) -> int:
        """Own ``run_id``; see :meth:`Store.acquire`. A run whose owner's connection
        ended (killed, or partitioned for ``lease`` seconds) is free at once."""
        with self._mutex:
            if run_id in self._claimed:  # claim() took its lock and its epoch
                self._locks[run_id] = "held"
                return self._claimed.pop(run_id)
            if run_id in self._locks:
                raise RunBusyError(f"run {run_id!r} is already open in this store")
            deadline = time.monotonic() + wait
            locked = self._try_lock(run_id)
            while not locked and time.monotonic() < deadline:
                self._mutex.release()
                try:
                    time.sleep(0.01)
                finally:
                    self._mutex.acquire()
                locked = self._try_lock(run_id)
            if not locked and not steal:
                raise RunBusyError(
                    f"run {run_id!r} is owned by another live process (its advisory lock "
                    f"in {self.schema!r} is held); wait for it (wait=seconds), or take it "
                    "over with steal=True if that process is hung"
                )
            s = self.schema
            now = time.time()
            try:
                with self._conn.transaction():
                    row = self._conn.execute(
                        f"INSERT INTO {s}.cohort_runs ({_RUN_COLUMNS}) "
                        "VALUES (%s, 'running', 1, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET epoch = cohort_runs.epoch + 1, "
                        "state = 'running', updated = EXCLUDED.updated RETURNING epoch",
                        (run_id, now, now),
                    ).fetchone()
            except BaseException:
                if locked:
                    self._unlock(run_id)
                raise
            assert row is not None
            self._locks[run_id] = "held" if locked else "stolen"
            return int(row[0])

    def _unlock(self, run_id: str) -> None:
        conn = self._conn
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_key(self.schema, run_id),))

    def release(self, run_id: str) -> None:
        with self._mutex:
            if self._locks.pop(run_id, None) == "held":
                with contextlib.suppress(self._pg.OperationalError):
                    self._unlock(run_id)  # (a session that is gone took its lock along)

    # -- records --------------------------------------------------------------------

    def load(self, run_id: str) -> tuple[list[StepRecord], list[DecisionRecord]]:
        s = self.schema
        with self._mutex:
            conn = self._alive()
            steps = conn.execute(
                f"SELECT * FROM {s}.cohort_steps WHERE run_id = %s", (run_id,)
            ).fetchall()
            decisions = conn.execute(
                f"SELECT * FROM {s}.cohort_decisions WHERE run_id = %s", (run_id,)
            ).fetchall()
        return (
            [StepRecord(r[0], r[1], r[2], _bytes(r[3]), *r[4:]) for r in steps],
            [DecisionRecord(*row) for row in decisions],
        )

    def execute_in_commit(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Buffer ``executemany(sql, rows)`` (``%s`` placeholders) into the next commit:
        a sink's rows in this database are committed in the same transaction as the
        ledger's records. The statement is tried now on the first row, in a transaction
        rolled back: a bad one raises ``ValueError`` here rather than failing the commit."""
        if not isinstance(sql, str):
            raise TypeError(f"sql must be a str, got {sql!r}")
        if not rows:
            return
        pg = self._pg
        with self._mutex:
            conn = self._alive()
            try:
                with conn.transaction(force_rollback=True):
                    conn.cursor().execute(sql, rows[0], prepare=True)
            except pg.Error as exc:
                why = str(exc).splitlines()[0]
                raise ValueError(
                    f"cannot write rows with {sql!r} in {self!r}: {why}; check the "
                    "statement (%s placeholders), its table and its number of parameters"
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
        s = self.schema
        now = time.time()
        with self._mutex:
            conn = self._alive()
            if (
                not (deletes or decisions or statements)
                and self.before_commit is None
                and self._locks.get(run_id) != "lost"
            ):
                # The common commit: the epoch check and the steps, one statement in
                # its own transaction (autocommit): one round trip.
                row = conn.execute(
                    self._sql_fenced_steps, (now, state, run_id, epoch, *_columns(steps))
                ).fetchone()
                if not (row and row[0] == 1):
                    _fenced(run_id, epoch)
                return
            with conn.transaction():
                cur = conn.cursor()
                if self._locks.get(run_id) == "lost":
                    # The session was lost (a partition): its lock must be ours again.
                    cur.execute("SELECT pg_try_advisory_lock(%s)", (_key(s, run_id),))
                    got = cur.fetchone()
                    if not (got and got[0]):
                        _fenced(run_id, epoch)
                    self._locks[run_id] = "held"
                cur.execute(
                    f"UPDATE {s}.cohort_runs SET updated = %s, state = coalesce(%s, state) "
                    "WHERE id = %s AND epoch = %s",
                    (now, state, run_id, epoch),
                )
                if cur.rowcount != 1:
                    _fenced(run_id, epoch)
                if deletes:
                    cur.executemany(self._sql_del_step, deletes)
                if steps:
                    cur.execute(self._sql_put_step, _columns(steps))
                if decisions:
                    cur.executemany(self._sql_put_decision, decisions)
                for sql, rows in statements:
                    cur.executemany(sql, rows)
                if self.before_commit is not None:
                    self.before_commit()

    # -- work distribution ----------------------------------------------------------

    def submit(self, run_id: str, program: str, args: Any = None) -> bool:
        """Record a pending run of ``program`` (a name registered with
        :func:`cohort.durable.program`) with ``args`` (JSON), for a worker
        (``cohort runs worker``) to pick up; False if ``run_id`` exists already."""
        if not isinstance(run_id, str) or not isinstance(program, str):
            raise TypeError(f"run_id and program are str, got {run_id!r}, {program!r}")
        try:
            data = json.dumps(args)
        except TypeError as exc:
            raise TypeError(f"args of run {run_id!r} must be JSON-serialisable: {exc}") from None
        now = time.time()
        with self._mutex:
            found = (
                self._alive()
                .execute(
                    f"INSERT INTO {self.schema}.cohort_runs "
                    f"({_RUN_COLUMNS}, program, args) VALUES (%s, 'pending', 0, %s, %s, %s, %s) "
                    "ON CONFLICT (id) DO NOTHING",
                    (run_id, now, now, program, data),
                )
                .rowcount
            )
        return found == 1

    def claim(self, programs: list[str]) -> tuple[str, str, Any] | None:
        """Take a pending or abandoned run of one of ``programs`` (oldest first), or
        None: its advisory lock taken and its epoch bumped, so that the next
        ``acquire`` of it here owns it. The candidate rows are read ``FOR UPDATE
        SKIP LOCKED`` (two workers never examine the same run at once) and a run
        whose owner is alive (its advisory lock held) is skipped. (id, program, args)."""
        s = self.schema
        with self._mutex:
            conn = self._alive()
            with conn.transaction():
                rows = conn.execute(
                    f"SELECT id, program, args FROM {s}.cohort_runs "
                    "WHERE state IN ('pending', 'running') AND program = ANY(%s) "
                    "ORDER BY created, id LIMIT 64 FOR UPDATE SKIP LOCKED",
                    (programs,),
                ).fetchall()
                for run_id, program, args in rows:
                    if run_id in self._locks or run_id in self._claimed:
                        continue
                    if not self._try_lock(run_id):
                        continue  # owned by a live process
                    row = conn.execute(
                        f"UPDATE {s}.cohort_runs SET epoch = epoch + 1, state = 'running', "
                        "updated = %s WHERE id = %s RETURNING epoch",
                        (time.time(), run_id),
                    ).fetchone()
                    assert row is not None
                    self._claimed[run_id] = int(row[0])
                    return run_id, program, json.loads(args) if args is not None else None
        return None

    # -- operations -----------------------------------------------------------------

    def runs(self) -> list[RunRecord]:
        with self._mutex:
            rows = (
                self._alive()
                .execute(
                    f"SELECT {_RUN_COLUMNS} FROM {self.schema}.cohort_runs ORDER BY created, id"
                )
                .fetchall()
            )
        return [RunRecord(*row) for row in rows]

    def run(self, run_id: str) -> RunRecord | None:
        with self._mutex:
            row = (
                self._alive()
                .execute(
                    f"SELECT {_RUN_COLUMNS} FROM {self.schema}.cohort_runs WHERE id = %s", (run_id,)
                )
                .fetchone()
            )
        return None if row is None else RunRecord(*row)

    def delete(self, run_id: str) -> bool:
        s = self.schema
        with self._mutex:
            owned = run_id in self._locks
            if not owned and not self._try_lock(run_id):
                raise RunBusyError(f"run {run_id!r} is owned by a live process: not deleted")
            try:
                conn = self._conn
                with conn.transaction():
                    conn.execute(f"DELETE FROM {s}.cohort_steps WHERE run_id = %s", (run_id,))
                    conn.execute(f"DELETE FROM {s}.cohort_decisions WHERE run_id = %s", (run_id,))
                    found = conn.execute(
                        f"DELETE FROM {s}.cohort_runs WHERE id = %s", (run_id,)
                    ).rowcount
            finally:
                if not owned:
                    self._unlock(run_id)
        return bool(found)

    def expire(self, older_than: float) -> list[str]:
        if older_than < 0:
            raise ValueError(f"older_than is a number of seconds >= 0, got {older_than!r}")
        cutoff = time.time() - older_than
        with self._mutex:
            rows = (
                self._alive()
                .execute(
                    f"SELECT id FROM {self.schema}.cohort_runs WHERE state IN ('done', 'failed') "
                    "AND updated <= %s ORDER BY id",
                    (cutoff,),
                )
                .fetchall()
            )
        gone = []
        for (run_id,) in rows:
            try:
                if self.delete(run_id):
                    gone.append(run_id)
            except RunBusyError:
                continue  # resumed by a live process meanwhile
        return gone

    def close(self) -> None:
        self._closed.set()
        with self._mutex:
            for run_id in list(self._locks):
                self.release(run_id)
            self._claimed.clear()
            self._conn.close()
        self._heartbeat.join()


def _fenced(run_id: str, epoch: int) -> None:
    raise FencedError(
        f"run {run_id!r}: epoch {epoch} no longer owns it (another process took "
        "it over); nothing of this process was committed"
    )


def _columns(steps: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Step rows as one list per column, the last row of each path only (one
    statement cannot update a row twice; a later record of a path replaces it)."""
    last = {(row[0], row[1]): row for row in steps}
    return [list(column) for column in zip(*last.values(), strict=True)] if last else [[]] * 8


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _redact(conninfo: str) -> str:
    """A connection string without its password."""
    return re.sub(
        r"(://[^:/@]*:)[^@]*@", r"\1***@", re.sub(r"password=\S+", "password=***", conninfo)
    )
