"""Durable runs (cohort.durable) on the SQLite ledger.

* Step: a run of N sequential checkpointed steps (``run.step``), amortized
  per step, on SQLite WAL with ``synchronous=NORMAL`` and group commit,
  against the floor: the same rows (same table, same values) inserted with
  raw batched ``sqlite3`` ``executemany`` in transactions of 512, same run,
  interleaved rounds. Target <= 20 us per step.
* fsync: ``sync="step"`` (every step committed with ``synchronous=FULL``
  before it returns): p50 and p99 of one step, against the floor of an
  fsync'ed commit on the same disk (raw ``sqlite3``, WAL, ``synchronous=FULL``,
  one ``INSERT`` + ``COMMIT`` of the same row), interleaved rounds. Target
  p50 <= 2 ms.
* Resume: a run with 100,000 completed steps (quick 20,000) is reopened and
  its code run again: the time from opening the run to the start of the
  first new step (the ledger loaded, every recorded step replayed). Target
  <= 0.5 s.
* Pipeline: 3 stages of 4 workers over 400 items (quick 200), run with
  ``cohort.pipeline.run_durable`` (an item ledger: the stage each item
  reached, one row per item moved, group-committed) in a durable run,
  against the same pipeline run outside one: stages awaiting 1 ms
  per item (target <= 1.3x), and no-op stages (target >= 50,000
  checkpointed items/s).
* Postgres: the same sequential steps on a ``PostgresStore`` (a cluster started by
  the benchmark in a temp dir, as the tests do, with ``fsync`` on), against two
  floors through the same driver (psycopg 3), same rows, transactions of 512:
  ``executemany`` of the upsert, and one ``INSERT ... SELECT FROM unnest(...)``
  per batch (what the store sends). Target <= 2x the floor.
* DBOS Transact on SQLite, same machine, same run: a workflow of N
  sequential steps, per step, if ``dbos`` is importable in
  ``/work/venvs/dbos`` (or here); else the table says it did not run.

Usage: ``python -m benchmarks durable`` (``--quick`` for fewer rounds).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cohort
import cohort.durable as durable
from benchmarks._harness import compare, table
from cohort.pipeline import run_durable

DBOS_PYTHON = Path(os.environ.get("COHORT_DBOS_VENV", "/work/venvs/dbos")) / "bin" / "python"


def _fresh(tmp: Path, name: str) -> Path:
    db = tmp / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


def _ident(i: int) -> int:
    return i


# -- sequential steps ---------------------------------------------------------------


async def _steps(db: Path | str, n: int, sync: str = "group") -> list[float]:
    """n sequential steps; the duration of each."""
    each = []
    async with durable.run("bench", store=db, sync=sync) as run:  # type: ignore[arg-type]
        for i in range(n):
            t0 = time.perf_counter()
            await run.step(_ident, i, name=f"s{i}")
            each.append(time.perf_counter() - t0)
    return each


def _floor(db: Path, n: int) -> None:
    """The same rows, raw: batched executemany in transactions of 512, WAL, NORMAL."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE steps (run_id TEXT NOT NULL, path TEXT NOT NULL, status TEXT NOT NULL,"
        " value BLOB, seq INTEGER NOT NULL, attempt INTEGER NOT NULL, started REAL NOT NULL,"
        " ended REAL, PRIMARY KEY (run_id, path)) WITHOUT ROWID"
    )
    batch = []
    for i in range(n):
        now = time.time()
        batch.append(("bench", f"s{i}", "ok", pickle.dumps(i), -1, 1, now, now))
        if len(batch) == 512:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
            conn.execute("COMMIT")
            batch = []
    if batch:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
        conn.execute("COMMIT")
    conn.close()


def _bench_steps(tmp: Path, quick: bool) -> str:
    n = 5_000 if quick else 20_000
    results = compare(
        [
            ("raw sqlite3 executemany (floor)", lambda: _floor(_fresh(tmp, "floor.db"), n)),
            (
                "cohort.durable run.step",
                lambda: asyncio.run(_steps(_fresh(tmp, "steps.db"), n)),
            ),
        ],
        rounds=3 if quick else 5,
        per=n,
    )
    cohort_cost = results[1].median
    verdict = "met" if cohort_cost <= 20e-6 else "NOT met"
    return (
        table(f"Checkpointed sequential step, {n} per run (WAL, NORMAL)", results, "per step")
        + f"\ncohort {cohort_cost * 1e6:.1f} us/step: target <= 20 us {verdict}\n"
    )


def _fsync_floor(db: Path, n: int) -> list[float]:
    """The floor of one fsync'ed commit: raw sqlite3, WAL, ``synchronous=FULL``, the same
    row as a step's, one ``INSERT`` and ``COMMIT`` per row; the duration of each."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE steps (run_id TEXT NOT NULL, path TEXT NOT NULL, status TEXT NOT NULL,"
        " value BLOB, seq INTEGER NOT NULL, attempt INTEGER NOT NULL, started REAL NOT NULL,"
        " ended REAL, PRIMARY KEY (run_id, path)) WITHOUT ROWID"
    )
    each = []
    for i in range(n):
        t0 = time.perf_counter()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("bench", f"s{i}", "ok", pickle.dumps(i), -1, 1, now, now),
        )
        conn.execute("COMMIT")
        each.append(time.perf_counter() - t0)
    conn.close()
    return each


def _bench_fsync(tmp: Path, quick: bool) -> str:
    n = 200 if quick else 1_000
    floor: list[float] = []
    ours: list[float] = []
    for _ in range(3):  # interleaved rounds: the disk's mood is shared
        floor += _fsync_floor(_fresh(tmp, "fsync-floor.db"), n)
        ours += asyncio.run(_steps(_fresh(tmp, "fsync.db"), n, sync="step"))
    rows = []
    for label, each in (
        ("raw sqlite3 INSERT + COMMIT, synchronous=FULL (floor)", floor),
        ('cohort.durable run.step, sync="step"', ours),
    ):
        q = statistics.quantiles(each, n=100)
        rows.append((label, statistics.median(each), q[98]))
    p50 = rows[1][1]
    verdict = "met" if p50 <= 2e-3 else "NOT met"
    lines = "".join(f"| {label} | {a * 1e3:.3f} ms | {b * 1e3:.3f} ms |\n" for label, a, b in rows)
    return (
        f'## One step with sync="step" (fsync per commit), {n} steps x 3 rounds\n\n'
        "| case | p50 | p99 |\n|---|---|---|\n" + lines + "\n"
        f"p50 {p50 * 1e3:.3f} ms ({p50 / rows[0][1]:.2f}x the floor): target p50 <= 2 ms "
        f"{verdict}\n"
    )


# -- resume ---------------------------------------------------------------------------


async def _resume(db: Path, n: int) -> float:
    """Open the run and replay n recorded steps: seconds until the first new step runs."""
    started: list[float] = []

    def new() -> int:
        started.append(time.perf_counter())
        return -1

    t0 = time.perf_counter()
    async with durable.run("bench", store=db) as run:
        for i in range(n):
            await run.step(_ident, i, name=f"s{i}")
        await run.step(new, name="new")
    return started[0] - t0


def _bench_resume(tmp: Path, quick: bool) -> str:
    n = 20_000 if quick else 100_000
    db = _fresh(tmp, "resume.db")
    asyncio.run(_steps(db, n))
    times = []
    for _ in range(3):
        store = durable.SQLiteStore(db)  # forget the new step: each resume is the first
        epoch = store.acquire("bench")
        store.discard_steps("bench", ["new"])
        store.flush("bench", epoch)
        store.close()
        times.append(asyncio.run(_resume(db, n)))
    best = statistics.median(times)
    verdict = "met" if best <= 0.5 else "NOT met"
    return (
        f"## Resume with {n:,} completed steps\n\n"
        f"time to the first new step: median {best:.3f} s "
        f"({min(times):.3f}-{max(times):.3f}, 3 resumes): target <= 0.5 s {verdict}\n"
    )


# -- pipeline -------------------------------------------------------------------------


def _pipeline(delay: float, checkpoint: bool) -> cohort.Pipeline[int, int]:
    def make(tag: str) -> cohort.Stage[int, int]:
        async def body(x: int) -> int:
            if delay:
                await asyncio.sleep(delay)
            return x

        body.__name__ = tag
        return cohort.stage(workers=4)(body)

    return make("a") | make("b") | make("c")


async def _run_pipeline(db: Path | None, n: int, delay: float) -> None:
    if db is None:
        await _pipeline(delay, False).run(range(n))
        return
    async with durable.run("pipe", store=db):
        await run_durable(_pipeline(delay, True), range(n), name="pipe")


def _pipeline_case(tmp: Path | None, items: int, delay: float) -> Callable[[], object]:
    if tmp is None:
        return lambda: asyncio.run(_run_pipeline(None, items, delay))
    return lambda: asyncio.run(_run_pipeline(_fresh(tmp, "pipe.db"), items, delay))


def _bench_pipeline(tmp: Path, quick: bool) -> str:
    n = 200 if quick else 400
    out = []
    for delay, label in ((1e-3, "stages awaiting 1 ms per item"), (0.0, "no-op stages")):
        items = n if delay else n * 25
        results = compare(
            [
                ("pipeline, not durable", _pipeline_case(None, items, delay)),
                (
                    "run_durable, item ledger",
                    _pipeline_case(tmp, items, delay),
                ),
            ],
            rounds=3 if quick else 5,
            per=items,
        )
        out.append(
            table(f"Pipeline of 3 stages x 4 workers, {items} items, {label}", results, "per item")
        )
        ratio = statistics.median(results[1].ratios)
        if delay:
            verdict = "met" if ratio <= 1.3 else "NOT met"
            out.append(f"\ndurable / not durable {ratio:.2f}x: target <= 1.3x {verdict}\n")
        else:
            rate = 1 / results[1].median
            verdict = "met" if rate >= 50_000 else "NOT met"
            out.append(
                f"\n{rate:,.0f} checkpointed items/s ({3 * rate:,.0f} stage passes/s): "
                f"target >= 50,000 items/s {verdict}\n"
            )
    return "\n".join(out)


# -- Postgres -------------------------------------------------------------------------

_PG_TABLE = (
    "CREATE TABLE steps (run_id TEXT NOT NULL, path TEXT NOT NULL, status TEXT NOT NULL,"
    " value BYTEA, seq BIGINT NOT NULL, attempt INTEGER NOT NULL,"
    " started DOUBLE PRECISION NOT NULL, ended DOUBLE PRECISION, PRIMARY KEY (run_id, path))"
)
_PG_UPSERT = (
    " ON CONFLICT (run_id, path) DO UPDATE SET status = EXCLUDED.status,"
    " value = EXCLUDED.value, seq = EXCLUDED.seq, attempt = EXCLUDED.attempt,"
    " started = EXCLUDED.started, ended = EXCLUDED.ended"
)


def _pg_floor(dsn: str, n: int, unnest: bool) -> None:
    """The same rows, raw, in transactions of 512: executemany, or one unnest INSERT."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_PG_TABLE)
        batch: list[tuple[object, ...]] = []
        for i in range(n):
            now = time.time()
            batch.append(("bench", f"s{i}", "ok", pickle.dumps(i), -1, 1, now, now))
            if len(batch) == 512 or i == n - 1:
                if unnest:
                    conn.execute(
                        "INSERT INTO steps SELECT * FROM unnest(%s::text[], %s::text[], "
                        "%s::text[], %s::bytea[], %s::int8[], %s::int4[], %s::float8[], "
                        "%s::float8[])" + _PG_UPSERT,
                        [list(c) for c in zip(*batch, strict=True)],
                    )
                else:
                    with conn.transaction():
                        conn.cursor().executemany(
                            "INSERT INTO steps VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                            + _PG_UPSERT,
                            batch,
                        )
                batch = []


def _bench_postgres(quick: bool) -> str:
    bin_dir = _pg_server().find_bin_dir()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        bin_dir = None
    if bin_dir is None:
        return (
            "## Postgres\n\nnot run: "
            "no PostgreSQL binaries or no psycopg (scripts/ensure-postgres)\n"
        )
    n = 5_000 if quick else 20_000
    with _pg_server().server(bin_dir, fsync=True) as pg:
        results = compare(
            [
                ("raw psycopg executemany (floor)", lambda: _pg_floor(pg.new_schema(), n, False)),
                ("raw psycopg unnest INSERT (floor)", lambda: _pg_floor(pg.new_schema(), n, True)),
                (
                    "cohort.durable run.step (PostgresStore)",
                    lambda: asyncio.run(_steps(pg.new_schema(), n)),
                ),
            ],
            rounds=3 if quick else 5,
            per=n,
        )
    ratio = statistics.median(results[2].ratios)
    ratio2 = statistics.median(
        r / b for r, b in zip(results[2].seconds, results[1].seconds, strict=True)
    )
    verdict = "met" if ratio <= 2 else "NOT met"
    return (
        table(
            f"Checkpointed sequential step on Postgres (fsync on), {n} per run", results, "per step"
        )
        + f"\ncohort / executemany floor {ratio:.2f}x (target <= 2x {verdict}); "
        f"cohort / unnest floor {ratio2:.2f}x\n"
    )


def _pg_server() -> Any:
    """tests/_pg_server.py: the throw-away cluster the tests use."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import _pg_server

    return _pg_server


# -- DBOS Transact ------------------------------------------------------------------------

_DBOS_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from dbos import DBOS

    n, url = int(sys.argv[1]), sys.argv[2]  # a SQLite or a Postgres URL
    DBOS(config={"name": "bench", "system_database_url": url, "log_level": "WARNING"})

    @DBOS.step()
    def ident(i):
        return i

    @DBOS.workflow()
    def seq(n):
        t0 = time.perf_counter()
        for i in range(n):
            ident(i)
        return time.perf_counter() - t0

    DBOS.launch()
    print(seq(n) / n)
    DBOS.destroy()
    """
)


def dbos_per_step(python: Path, n: int, url: str) -> float | str:
    """DBOS Transact's seconds per step over ``n`` sequential steps on the database at
    ``url`` (SQLite or Postgres), run with ``python``; or why it did not run."""
    done = subprocess.run(
        [str(python), "-c", _DBOS_SCRIPT, str(n), url],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or ["no output"])[-1]
    return float(done.stdout.split()[-1])


def _bench_dbos(tmp: Path, quick: bool) -> str:
    n = 300 if quick else 1_000
    python = DBOS_PYTHON if DBOS_PYTHON.exists() else Path(sys.executable)
    dbos_costs, cohort_costs, fsync_costs = [], [], []
    for _ in range(3):
        cost = dbos_per_step(python, n, f"sqlite:///{_fresh(tmp, 'dbos.sqlite')}")
        if isinstance(cost, str):
            return f"## DBOS Transact\n\nnot run: dbos not importable with {python} ({cost})\n"
        dbos_costs.append(cost)
        each = asyncio.run(_steps(_fresh(tmp, "steps.db"), n))
        cohort_costs.append(sum(each) / n)
        each = asyncio.run(_steps(_fresh(tmp, "fsync.db"), n, sync="step"))
        fsync_costs.append(sum(each) / n)
    d, c = statistics.median(dbos_costs), statistics.median(cohort_costs)
    f = statistics.median(fsync_costs)
    verdict = "met" if max(c, f) <= d else "NOT met"
    return (
        f"## Sequential steps against DBOS Transact (SQLite), {n} steps, 3 rounds\n\n"
        f"| case | median per step |\n|---|---|\n"
        f"| DBOS Transact (@DBOS.step in a @DBOS.workflow) | {d * 1e6:.1f} us |\n"
        f"| cohort.durable run.step (group commit) | {c * 1e6:.1f} us |\n"
        f'| cohort.durable run.step, sync="step" (fsync each) | {f * 1e6:.1f} us |\n\n'
        f"cohort / DBOS {c / d:.4f}x (group commit), {f / d:.3f}x (fsync per step, as "
        f"DBOS commits each step): target <= 1 {verdict}\n"
    )


def main(quick: bool) -> str:
    with tempfile.TemporaryDirectory(prefix="cohort-bench-durable-") as where:
        tmp = Path(where)
        parts = [
            _bench_steps(tmp, quick),
            _bench_fsync(tmp, quick),
            _bench_resume(tmp, quick),
            _bench_pipeline(tmp, quick),
            _bench_postgres(quick),
            _bench_dbos(tmp, quick),
        ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(main("--quick" in sys.argv))
