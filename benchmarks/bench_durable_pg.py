"""Durable runs (cohort.durable) on Postgres: takeover, worker throughput, DBOS.

Every case runs on one throw-away PostgreSQL cluster the benchmark starts
(``tests/_pg_server.py``: ``initdb`` in a temp dir, ``fsync`` on).

* Takeover after SIGKILL: an owner process steps through a run (a step every
  millisecond, each committed); it is SIGKILLed, and a standby owner (this
  process, its store open, ``cohort.durable.run(..., wait=60)``) takes the run
  over: the time from the kill to the standby's first committed step, median
  and spread over 12 repetitions. Target <= 1 s.
* Takeover of a partitioned owner: the same, the owner connected through a TCP
  proxy that black-holes its connection (every byte held, both ways) instead
  of a kill; lease 1 s (the server ends the silent session after it). Time
  from the partition to the standby's first committed step, 10 repetitions.
  Target <= 2x the lease.
* Throughput: 8 worker processes (``cohort runs worker --until-idle``) drain
  10,000 submitted runs (quick: 2,000) of a program of 3 steps and one row in a
  user table through the transactional sink (``write_rows``). Checked: every
  run done at epoch 1 (claimed once), the workers' counts add up to the runs,
  the user table has each run's row exactly once. Runs/s over the drain (first
  step to last finish, from the ledger) and over the wall time (process starts
  included).
* DBOS Transact on the same cluster, same run: a workflow of N sequential
  steps, per step, against cohort's ``run.step`` (group commit; and
  ``sync="step"``, a commit per step as DBOS does) and the floor: the same rows
  inserted raw through psycopg, one ``INSERT ... SELECT FROM unnest(...)`` per
  512. Target: cohort (group commit) <= DBOS. Runs if ``dbos`` imports with
  ``/work/venvs/dbos`` (``COHORT_DBOS_VENV``); else the table says it did not.

Usage: ``python -m benchmarks durable_pg`` (``--quick``: fewer runs).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cohort
import cohort.durable as durable
from benchmarks.bench_durable import DBOS_PYTHON, dbos_per_step

ROOT = Path(__file__).resolve().parents[1]
LEASE = 1.0


def _pg_server() -> Any:
    """tests/_pg_server.py: the throw-away cluster (and TCP proxy) the tests use."""
    sys.path.insert(0, str(ROOT / "tests"))
    import _pg_server

    return _pg_server


def _env() -> dict[str, str]:
    """The environment of the child processes: this cohort and the benchmarks importable."""
    src = str(Path(cohort.__file__).resolve().parents[1])
    return dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(ROOT)]))


def _ident(i: int) -> int:
    return i


def _spread(seconds: list[float]) -> str:
    q = statistics.quantiles(seconds, n=4)
    return (
        f"median {statistics.median(seconds) * 1e3:.0f} ms, IQR {q[0] * 1e3:.0f}-{q[2] * 1e3:.0f}"
        f" ms, min {min(seconds) * 1e3:.0f} ms, max {max(seconds) * 1e3:.0f} ms"
    )


# -- takeover ---------------------------------------------------------------------------

_OWNER = textwrap.dedent(
    """
    import asyncio, sys
    import cohort.durable as durable

    def ident(i):
        return i

    async def main(dsn, run_id, lease):
        store = durable.PostgresStore(dsn, lease=lease)
        async with durable.run(run_id, store=store) as run:
            i = 0
            while True:
                await run.step(ident, i, name=f"s{i}")
                if i == 0:
                    run.flush()
                    print("owned", flush=True)
                i += 1
                await asyncio.sleep(0.001)

    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
    """
)


async def _first_step(store: durable.PostgresStore, run_id: str) -> float:
    """Take ``run_id`` over (waiting for its owner to go) and commit one step: when.
    (The owner's steps are not replayed: they are dropped when the run ends.)"""
    async with durable.run(run_id, store=store, wait=60, on_divergence="discard") as run:
        await run.step(_ident, -1, name="taken")
        run.flush()
        return time.monotonic()


def _takeover(
    store: durable.PostgresStore, owner_dsn: str, run_id: str, cut: Callable[[int], None]
) -> float:
    """Start an owner of ``run_id`` on ``owner_dsn``, let it step, ``cut(pid)`` it off;
    seconds from the cut to the standby's first committed step."""
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER, owner_dsn, run_id, str(LEASE)],
        stdout=subprocess.PIPE,
        env=_env(),
        text=True,
    ) as owner:
        try:
            assert owner.stdout is not None
            line = owner.stdout.readline()
            if line != "owned\n":
                raise RuntimeError(f"the owner did not start: {line!r}")
            time.sleep(0.2)  # a few hundred steps: the standby finds a live ledger
            t0 = time.monotonic()
            cut(owner.pid)
            took = asyncio.run(_first_step(store, run_id)) - t0
        finally:
            owner.kill()
    return took


def _blocker(proxy: Any) -> Callable[[int], None]:
    """A cut that partitions the owner: its proxy holds every byte from now on."""
    return lambda pid: proxy.block()


def _bench_takeover(pg: Any, quick: bool) -> str:
    proxy_cls = _pg_server().TcpProxy
    dsn = pg.new_schema()
    store = durable.PostgresStore(dsn)
    killed: list[float] = []
    partitioned: list[float] = []
    try:
        for k in range(12):
            killed.append(
                _takeover(store, dsn, f"kill{k}", lambda pid: os.kill(pid, signal.SIGKILL))
            )
        for k in range(10):
            proxy = proxy_cls(pg.port)
            try:
                via_proxy = dsn.replace(f":{pg.port}/", f":{proxy.port}/")
                partitioned.append(_takeover(store, via_proxy, f"cut{k}", _blocker(proxy)))
            finally:
                proxy.close()
    finally:
        store.close()
    k_med, p_med = statistics.median(killed), statistics.median(partitioned)
    return (
        "## Takeover on Postgres: from the owner's loss to the new owner's first committed step\n\n"
        f"| owner | reps | time to the first committed step of the new owner |\n|---|---|---|\n"
        f"| SIGKILLed | {len(killed)} | {_spread(killed)} |\n"
        f"| partitioned (proxy black-holes it), lease {LEASE:g} s | {len(partitioned)} | "
        f"{_spread(partitioned)} |\n\n"
        f"SIGKILL: median {k_med:.3f} s, target <= 1 s {'met' if k_med <= 1 else 'NOT met'} "
        f"(max {max(killed):.3f} s); partition: median {p_med / LEASE:.2f}x the lease, target "
        f"<= 2x {'met' if p_med <= 2 * LEASE else 'NOT met'} "
        f"(max {max(partitioned) / LEASE:.2f}x)\n"
    )


# -- throughput ---------------------------------------------------------------------------


def _bench_throughput(pg: Any, quick: bool) -> str:
    import psycopg

    from benchmarks._durable_pg_prog import SIDE_TABLE

    n, workers = (2_000 if quick else 10_000), 8
    dsn = pg.new_schema()
    store = durable.PostgresStore(dsn)
    conn = psycopg.connect(dsn, autocommit=True)
    try:
        conn.execute(SIDE_TABLE)
        for i in range(n):
            store.submit(f"job{i:05d}", "bench-small", {"id": f"job{i:05d}"})
        command = [sys.executable, "-m", "cohort.cli", "runs", "worker", "--db", dsn]
        command += ["--programs", "benchmarks._durable_pg_prog", "--poll", "0.05", "--until-idle"]
        t0 = time.monotonic()
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
            for _ in range(workers)
        ]
        ran = []
        for proc in procs:
            out, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed ({proc.returncode}): {err.decode()[-2000:]}")
            ran.append(int(out.decode().split("worker ran ")[1].split()[0]))
        wall = time.monotonic() - t0
        s = store.schema
        done, epochs = conn.execute(
            f"SELECT count(*) FILTER (WHERE state = 'done'), max(epoch) FROM {s}.cohort_runs"
        ).fetchone() or (0, 0)
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT run_id) FROM bench_done"
        ).fetchone() or (0, 0)
        first, last = conn.execute(
            f"SELECT (SELECT min(started) FROM {s}.cohort_steps), "
            f"(SELECT max(updated) FROM {s}.cohort_runs)"
        ).fetchone() or (0.0, 0.0)
    finally:
        conn.close()
        store.close()
    ok = done == n and epochs == 1 and sum(ran) == n and rows == distinct == n
    drain = last - first
    return (
        f"## Throughput: {workers} worker processes drain {n:,} runs "
        "(3 steps + 1 sink row each)\n\n"
        f"{n / drain:,.0f} runs/s over the drain ({drain:.1f} s, first step to last finish), "
        f"{n / wall:,.0f} runs/s over the wall time ({wall:.1f} s, process starts included); "
        f"runs per worker {sorted(ran)}\n"
        f"checks: {done:,} runs done, highest epoch {epochs} (each claimed once), workers ran "
        f"{sum(ran):,}, sink rows {rows:,} ({distinct:,} distinct runs): "
        f"{'no run executed twice, no row lost' if ok else 'FAILED'}\n"
    )


# -- DBOS Transact ------------------------------------------------------------------------

_UNNEST = (
    "INSERT INTO steps SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], "
    "%s::int8[], %s::int4[], %s::float8[], %s::float8[])"
)


def _floor(dsn: str, n: int) -> float:
    """The same rows raw: one unnest INSERT per 512 (autocommit); seconds per row."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE steps (run_id TEXT NOT NULL, path TEXT NOT NULL, status TEXT NOT NULL,"
            " value BYTEA, seq BIGINT NOT NULL, attempt INTEGER NOT NULL,"
            " started DOUBLE PRECISION NOT NULL, ended DOUBLE PRECISION,"
            " PRIMARY KEY (run_id, path))"
        )
        t0 = time.perf_counter()
        batch: list[tuple[object, ...]] = []
        for i in range(n):
            now = time.time()
            batch.append(("bench", f"s{i}", "ok", pickle.dumps(i), -1, 1, now, now))
            if len(batch) == 512 or i == n - 1:
                conn.execute(_UNNEST, [list(c) for c in zip(*batch, strict=True)])
                batch = []
        return (time.perf_counter() - t0) / n


async def _steps(dsn: str, n: int, sync: Literal["group", "step"]) -> float:
    """n sequential steps in a run on ``dsn``; seconds per step."""
    store = durable.PostgresStore(dsn, sync=sync)
    try:
        t0 = time.perf_counter()
        async with durable.run("bench", store=store, sync=sync) as run:
            for i in range(n):
                await run.step(_ident, i, name=f"s{i}")
        return (time.perf_counter() - t0) / n
    finally:
        store.close()


def _bench_dbos(pg: Any, quick: bool) -> str:
    n = 100 if quick else 300
    if not DBOS_PYTHON.exists():
        return f"## DBOS Transact on Postgres\n\nnot run: no {DBOS_PYTHON}\n"
    costs: dict[str, list[float]] = {"dbos": [], "group": [], "step": [], "floor": []}
    for r in range(3):
        cost = dbos_per_step(DBOS_PYTHON, n, pg.dsn(f"dbos_{os.getpid()}_{r}"))
        if isinstance(cost, str):
            return f"## DBOS Transact on Postgres\n\nnot run: {DBOS_PYTHON} failed ({cost})\n"
        costs["dbos"].append(cost)
        costs["group"].append(asyncio.run(_steps(pg.new_schema(), n, "group")))
        costs["step"].append(asyncio.run(_steps(pg.new_schema(), n, "step")))
        costs["floor"].append(_floor(pg.new_schema(), n))
    d, g, s, f = (statistics.median(costs[k]) for k in ("dbos", "group", "step", "floor"))
    return (
        f"## Sequential steps on Postgres (fsync on) against DBOS Transact, {n} steps, "
        "3 rounds interleaved\n\n"
        "| case | median per step |\n|---|---|\n"
        f"| DBOS Transact {_dbos_version()} (@DBOS.step in a @DBOS.workflow) "
        f"| {d * 1e6:,.0f} us |\n"
        f"| cohort.durable run.step (PostgresStore, group commit) | {g * 1e6:,.1f} us |\n"
        f'| cohort.durable run.step, sync="step" (a commit per step) | {s * 1e6:,.0f} us |\n'
        f"| raw psycopg unnest INSERT per 512 (floor) | {f * 1e6:,.1f} us |\n\n"
        f"cohort / DBOS {g / d:.4f}x (group commit), {s / d:.3f}x (a commit per step, as "
        f"DBOS commits each step): target <= 1 {'met' if g <= d else 'NOT met'}; "
        f"cohort / floor {g / f:.2f}x\n"
    )


def _dbos_version() -> str:
    done = subprocess.run(
        [str(DBOS_PYTHON), "-c", "import importlib.metadata as m; print(m.version('dbos'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip()


def main(quick: bool) -> str:
    server = _pg_server()
    bin_dir = server.find_bin_dir()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        bin_dir = None
    if bin_dir is None:
        return (
            "## Postgres\n\nnot run: no PostgreSQL binaries or no psycopg "
            "(scripts/ensure-postgres)\n"
        )
    with server.server(bin_dir, fsync=True) as pg:
        parts = [_bench_takeover(pg, quick), _bench_dbos(pg, quick), _bench_throughput(pg, quick)]
    return "\n".join(parts)


if __name__ == "__main__":
    print(main("--quick" in sys.argv))
