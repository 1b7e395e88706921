"""Soak: groups, helpers, sync primitives, pool calls and pipelines, mixed, for minutes.

Each round runs a random mix of the workloads users bring (fan-out under
deadlines, cancellation churn, failing children, CPU calls that are cancelled
or crash their worker, large payloads and shared objects through shared
memory, pipelines that are cancelled or left early) on uvloop, and checks
what every round must leave behind: nothing. At the end it compares resident
memory after warm-up with the end, file descriptors and child processes with
the start, the pool's shared-memory segments with what its workers may keep
(two scratch segments each) and, after it closed, with none, and counts the
tasks still alive.

Flows: rounds also run random flows (failures, optional nodes, stray
cancellations) in real time, and before the timed part ``--flows`` random
flows run on the virtual clock, each checked for a hang, a lost error, a
wrong error or a task left (the property test's checker).

Durable runs: first, the durable test programs (a fan-out of 100 under
Gather, Quorum and FirstWins with effect steps; 40 batches written by a
transactional sink; a Flow with a map_over and a Quorum fan-in; a 3-stage
pipeline into a transactional SQLite sink) are SIGKILLed ``--durable-kills``
times at random moments and ``--durable-point-kills`` times at each injected
crash point reached (a point a program never reaches is skipped), through
``cohort.testing.crash_loop``: every loop must end with the crash-free
output, with no hang, and the sink with each row exactly once. With
``--durable-store postgres`` the same programs run on a PostgreSQL cluster the
soak starts (``tests/_pg_server.py``: ``initdb`` in a temp dir), a fresh schema
per crash loop, the sinks' tables beside the ledger in that schema.

Usage: ``python -m benchmarks.soak [--minutes 3] [--seed 1] [--flows 2000]
[--durable-kills 1000] [--durable-point-kills 200] [--durable-store postgres]``
(``make soak``). Exit status 0 when clean, 1 with the reasons otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import cohort
import cohort.testing
from cohort.bridge._shm import segment_names

# The random flows and their checker are the property test's (tests/test_flow_properties.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_flow_properties as flow_fuzz

WARMUP_ROUNDS = 50
RSS_GROWTH_LIMIT = 1.25  # end RSS over RSS after warm-up


def crunch(n: int) -> int:
    """CPU work in a worker process."""
    return sum(i * i for i in range(n))


def crash(code: int) -> None:
    os._exit(code)


def fail(message: str) -> None:
    raise ValueError(message)


def echo(x: Any) -> Any:
    return x


def total(a: Any) -> float:
    return float(a.sum())


def shared_part(handle: cohort.Shared[Any], i: int) -> float:
    return float(handle.value[i::4].sum())


def shared_len(handle: cohort.Shared[Any]) -> int:
    return len(handle.value)


def hold_and_spin(data: bytes) -> None:
    while data:  # until cancelled: the worker is killed holding a large argument
        pass


def segments(prefix: str) -> int:
    """How many shared-memory segments of the pool with this prefix exist now."""
    return len(segment_names(prefix))


class Soak:
    """One soak run: the workloads, the pool they share and the counters."""

    def __init__(self, rng: random.Random, pool: cohort.ProcessPool) -> None:
        self.rng = rng
        self.pool = pool
        self.counts: dict[str, int] = {}
        self.problems: list[str] = []

    async def nap(self, most: float = 0.003) -> None:
        await asyncio.sleep(self.rng.random() * most)

    async def maybe_fail(self, p: float) -> int:
        await self.nap()
        if self.rng.random() < p:
            raise ValueError("child failed")
        return 1

    async def group_tree(self, depth: int = 0) -> None:
        rng = self.rng
        policy = rng.choice(
            [cohort.Gather(), cohort.Settle(), cohort.Quorum(2), cohort.FirstWins()]
        )
        with cohort.move_on_after(rng.choice([0.001, 0.005, 0.05])):
            try:
                async with cohort.TaskGroup(policy, limit=rng.choice([None, 2, 5])) as g:
                    for _ in range(rng.randint(2, 6)):
                        if depth < 2 and rng.random() < 0.3:
                            g.spawn(self.group_tree, depth + 1)
                        else:
                            g.spawn(self.maybe_fail, 0.2, timeout=rng.choice([None, 0.002]))
                    if rng.random() < 0.2:
                        await self.nap()
                        g.cancel()
            except ExceptionGroup as eg:
                _only_expected(eg)

    async def helpers(self) -> None:
        rng = self.rng
        with cohort.move_on_after(0.02):
            try:
                await cohort.gather(*(self.maybe_fail(0.05) for _ in range(10)), limit=4)
            except ExceptionGroup as eg:
                _only_expected(eg)
        async with cohort.map(self.maybe_fail, [0.0] * 20, limit=5) as stream:
            async for _ in stream:
                if rng.random() < 0.1:
                    break
        with cohort.move_on_after(0.01), contextlib.suppress(cohort.QuorumError):
            await cohort.hedge(self.maybe_fail, 0.3, delay=0.001, attempts=3)

    async def sync(self) -> None:
        barrier = cohort.Barrier(3)
        latch = cohort.Latch(3)
        flags = cohort.EventFlags("go", "done")

        async def party() -> None:
            await barrier.wait()
            latch.count_down()
            await flags.wait_all("go")

        with cohort.move_on_after(0.05):
            async with cohort.TaskGroup() as g:
                for _ in range(3):
                    g.spawn(party)
                await latch.wait()
                flags.set("go")

    async def pool_calls(self) -> None:
        rng = self.rng
        pool = self.pool
        kind = rng.random()
        if kind < 0.4:
            assert await pool.run(crunch, 1000) == crunch(1000)
        elif kind < 0.7:
            with cohort.move_on_after(0.002):
                await pool.run(crunch, 10**8)  # cancelled: the worker is killed
        elif kind < 0.73:
            try:
                await pool.run(crash, 3)
            except cohort.WorkerCrashedError:
                self.count("worker crashed (expected)")
        elif kind < 0.9:
            with contextlib.suppress(ValueError):
                await pool.run(fail, "remote")
        else:
            async with cohort.TaskGroup(cohort.FirstWins()) as g:
                g.spawn(pool.run, crunch, 10**8)
                g.spawn(pool.run, crunch, 10)

    async def large_payloads(self) -> None:
        rng = self.rng
        pool = self.pool
        size = rng.choice([1 << 18, 1 << 20, 1 << 22])
        kind = rng.random()
        if kind < 0.3:
            blob = rng.randbytes(size)
            assert await pool.run(echo, blob if rng.random() < 0.5 else bytearray(blob)) == blob
        elif kind < 0.5:
            a = np.full(size // 8, 3.0)
            assert await pool.run(total, a) == 3.0 * a.size
            assert (await pool.run(echo, a) == a).all()
        elif kind < 0.7:
            with await pool.share(np.ones(size // 8)) as data:
                parts = await pool.map(functools.partial(shared_part, data), range(4))
                assert sum(parts) == data.value.size
        elif kind < 0.85:
            with cohort.move_on_after(0.002):
                await pool.run(hold_and_spin, b"x" * size)  # cancelled: the worker is killed
        else:
            handle = await pool.share(rng.randbytes(size))
            assert await pool.run(shared_len, handle) == size
            del handle  # dropped, not released: its collection releases it

    async def pipelines(self) -> None:
        rng = self.rng

        @cohort.stage(workers=4, on_error="skip", ordered=rng.random() < 0.5)
        async def first(x: int) -> int:
            await self.nap(0.001)
            if x % 17 == 0:
                raise ValueError("bad item")
            return x

        @cohort.stage(workers=2)
        async def second(x: int) -> int | object:
            await asyncio.sleep(0)
            return cohort.DROP if x % 5 == 0 else x * 2

        pipe = first | second
        n = rng.randint(10, 200)
        if rng.random() < 0.5:
            with cohort.move_on_after(rng.choice([0.002, 1.0])):
                report = await pipe.run(range(n))
                assert report.read == n
        else:
            async with pipe.stream(range(n)) as out:
                async for _ in out:
                    if rng.random() < 0.05:
                        break

    guards: Guards | None = None

    async def resilience(self) -> None:
        """Calls through long-lived guards, retried, lingering, cancelled at random."""
        if self.guards is None:
            self.guards = Guards()
        await self.guards.round(self.rng, self)

    async def flows(self) -> None:
        """A random flow in real time (milliseconds), with failures and stray cancellations."""
        rng = self.rng
        for _ in range(rng.randint(1, 5)):
            specs = flow_fuzz.generate(rng.randint, faults=True, strays=True)
            problem = await flow_fuzz.check_random_flow(specs, scale=0.001, alone=False)
            if problem:
                self.problems.append(f"flow {specs}: {problem}")

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    async def round(self) -> None:
        work: list[Callable[[], Awaitable[None]]] = [
            self.group_tree,
            self.helpers,
            self.sync,
            self.pool_calls,
            self.large_payloads,
            self.pipelines,
            self.resilience,
            self.flows,
        ]
        async with cohort.TaskGroup() as g:
            for fn in self.rng.sample(work, k=self.rng.randint(1, len(work))):
                g.spawn(fn)
                self.count(fn.__name__)


class Guards:
    """A breaker, per-key bulkheads and a rate limiter shared by every round, as in a
    service; after each round nothing may be held or waited for."""

    REFUSED = (ValueError, TimeoutError, cohort.CircuitOpenError, cohort.BulkheadFullError)

    def __init__(self) -> None:
        self.breaker = cohort.CircuitBreaker(failures=4, window=10, recovery_timeout=0.002)
        self.bulkheads = cohort.Bulkhead.per_key(2, max_queue=3)
        self.limiter = cohort.RateLimiter(20_000.0, burst=20)
        self.retry = cohort.Retry(attempts=3, backoff=0.0002, attempt_timeout=0.004)

    async def backend(self, rng: random.Random, soak: Soak) -> int:
        await soak.nap(0.002)
        if rng.random() < 0.3:
            raise ValueError("backend failed")
        return 1

    async def guarded(self, rng: random.Random, soak: Soak, key: int) -> int:
        async with self.bulkheads(key), self.limiter:
            if rng.random() < 0.5:
                return await self.breaker.call(self.backend, rng, soak)
            async with self.breaker:
                return await self.backend(rng, soak)

    async def one(self, rng: random.Random, soak: Soak, linger: cohort.Linger) -> None:
        key = rng.randrange(3)
        with cohort.move_on_after(rng.choice([0.001, 0.003, 0.02])):
            try:
                if rng.random() < 0.3:
                    await linger.call(self.guarded, rng, soak, key)
                else:
                    await cohort.retry(self.guarded, rng, soak, key, policy=self.retry)
            except self.REFUSED as exc:
                soak.count(f"guards: {type(exc).__name__}")

    async def round(self, rng: random.Random, soak: Soak) -> None:
        async with cohort.Linger(grace=0.002) as linger, cohort.TaskGroup(cohort.Settle()) as g:
            handles = [g.spawn(self.one, rng, soak, linger) for _ in range(rng.randint(5, 30))]
            await soak.nap()
            for handle in rng.sample(handles, k=len(handles) // 4):
                handle.cancel()
        held = (len(self.bulkheads), self.limiter)
        if held[0] or "waiting=0" not in repr(self.limiter):
            raise AssertionError(f"guards hold places after a round: {held}")


def _only_expected(eg: BaseExceptionGroup[Any]) -> None:
    """Re-raise a group holding anything but the failures the soak provokes."""
    _, rest = eg.split((ValueError, TimeoutError))
    if rest is not None:
        raise rest


def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


async def soak(minutes: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    me = psutil.Process()
    # The first pool starts multiprocessing's forkserver (and its fds), which
    # lives as long as the program: part of the baseline, not a leak.
    async with cohort.ProcessPool(workers=1) as first:
        await first.run(crunch, 1)
    fds_start = _fds()
    baseline = {p.pid for p in me.children(recursive=True)}
    rss_warm = 0
    rounds = 0
    end = time.monotonic() + minutes * 60
    # Crashes are provoked on purpose: the pool must heal every time, never give up.
    async with cohort.ProcessPool(workers=2, max_crashes=10**9) as pool:
        state = Soak(rng, pool)
        while time.monotonic() < end:
            await state.round()
            rounds += 1
            if rounds == WARMUP_ROUNDS:
                gc.collect()
                rss_warm = me.memory_info().rss
        stats = pool.statistics()
        gc.collect()
        segments_open = segments(pool.segment_prefix)
    gc.collect()
    await asyncio.sleep(0)
    segments_left = segments(pool.segment_prefix)
    problems = list(state.problems[:10])
    if segments_open > 2 * stats.workers:
        problems.append(f"{segments_open} shared-memory segments at the end (scratch: 2 a worker)")
    if segments_left:
        problems.append(f"{segments_left} shared-memory segments left after the pool closed")
    rss_end = me.memory_info().rss
    if rss_warm and rss_end > rss_warm * RSS_GROWTH_LIMIT:
        problems.append(f"RSS grew from {rss_warm >> 20} MiB to {rss_end >> 20} MiB")
    fds_end = _fds()
    if fds_end > fds_start:
        problems.append(f"file descriptors: {fds_start} at start, {fds_end} at the end")
    children = [p for p in me.children(recursive=True) if p.pid not in baseline]
    if children:
        problems.append(f"child processes left: {[c.pid for c in children]}")
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    if tasks:
        problems.append(f"tasks left: {sorted(t.get_name() for t in tasks)}")
    print(
        f"soak: {rounds} rounds in {minutes:g} min (seed {seed}); "
        f"RSS {rss_warm >> 20} MiB after warm-up, {rss_end >> 20} MiB at the end; "
        f"fds {fds_start} -> {fds_end}; child processes {len(children)}; tasks {len(tasks)}; "
        f"segments {segments_open} at the end, {segments_left} after close"
    )
    print(f"  pool: {stats}")
    print("  work: " + ", ".join(f"{k} x{v}" for k, v in sorted(state.counts.items())))
    return problems


def random_flows(n: int, seed: int) -> list[str]:
    """``n`` random flows with failures, optional nodes and stray cancellations, on the
    virtual clock: count hangs, lost errors and other problems (all must be 0)."""
    rng = random.Random(seed)
    found: Counter[str] = Counter()
    examples: list[str] = []

    async def main() -> None:
        for _ in range(n):
            specs = flow_fuzz.generate(rng.randint, faults=True, strays=True)
            problem = await flow_fuzz.check_random_flow(specs)
            kind = problem.split(":")[0] if problem else "ok"
            found[kind] += 1
            if problem and len(examples) < 5:
                examples.append(f"{problem} in {specs}")

    started = time.monotonic()
    cohort.testing.run(main)
    print(
        f"flows: {n} random flows with stray cancellations (seed {seed}) in "
        f"{time.monotonic() - started:.1f} s: {found['hang']} hangs, "
        f"{found['lost error']} lost errors, {n - found['ok']} problems in all"
    )
    return [f"random flow: {example}" for example in examples]


# -- durable runs killed for real ---------------------------------------------------------

TESTS = Path(__file__).resolve().parents[1] / "tests"
DURABLE_PROGRAMS = {
    "fan-out (Gather, Quorum, FirstWins, effect steps)": TESTS / "_durable_prog.py",
    "transactional sink": TESTS / "_durable_sink_prog.py",
    "flow (Quorum fan-in, map_over)": TESTS / "_durable_flow_prog.py",
    "3-stage pipeline, transactional sink": TESTS / "_durable_pipe_prog.py",
}
HAS_SINK = {TESTS / "_durable_sink_prog.py", TESTS / "_durable_pipe_prog.py"}


def _sink_rows(db: str) -> tuple[int, int]:
    from _ledger import Ledger

    [(rows, distinct)] = Ledger.of(db).query("SELECT count(*), count(DISTINCT v) FROM sink")
    return int(rows), int(distinct)


@contextlib.contextmanager
def _ledgers(store: str, tmp: Path) -> Iterator[Callable[[str], str]]:
    """A maker of fresh ledgers (name -> what the programs take): SQLite files in
    ``tmp``, or schemas on a PostgreSQL cluster started for the soak."""
    if store == "sqlite":
        yield lambda name: str(tmp / f"{name}.db")
        return
    import _pg_server

    bin_dir = _pg_server.find_bin_dir()
    if bin_dir is None:
        raise SystemExit(
            "--durable-store postgres: no PostgreSQL binaries (scripts/ensure-postgres)"
        )
    with _pg_server.server(bin_dir) as pg:
        yield lambda name: pg.new_schema()


def durable_crash_loops(
    random_kills: int, point_kills: int, seed: int, store: str = "sqlite"
) -> list[str]:
    """SIGKILL the durable programs ``random_kills`` times at random moments and
    ``point_kills`` times at each crash point (cohort.testing.crash_loop, 10 kills per
    ledger); each must finish with the crash-free output, its sink with every row
    once. ``store``: "sqlite" or "postgres" (the ledgers and sinks). Returns the
    problems."""
    import tempfile

    from cohort.testing import CRASH_POINTS, CrashLoopError, crash_loop

    problems = []
    rng = random.Random(seed)
    for label, program in DURABLE_PROGRAMS.items():
        started = time.monotonic()
        tally: Counter[str] = Counter()
        plans = [("random", None)] + [(point, point) for point in CRASH_POINTS]
        with (
            tempfile.TemporaryDirectory(prefix="cohort-soak-durable-") as where,
            _ledgers(store, Path(where)) as fresh,
        ):
            clean = fresh("clean")
            reference = [sys.executable, str(program), clean]
            for kind, point in plans:
                wanted = random_kills if point is None else point_kills
                done = tries = idle = 0
                # The n-th time the point is reached, n drawn up to `reach`: halved after
                # a loop without a kill there (a program that reaches it fewer times); a
                # point never reached (3 loops without a kill at n = 1) ends the plan.
                reach = 60 if point == "after-effect" else 5
                while done < wanted and tries < 3 * wanted and idle < 3:
                    db = fresh(f"run-{tally['loops']}")
                    tally["loops"] += 1
                    chunk = min(10, wanted - done)
                    tries += chunk
                    try:
                        result = crash_loop(
                            [sys.executable, str(program), db],
                            reference=reference,
                            random_kills=chunk if point is None else 0,
                            crash_point=point,
                            point_kills=chunk,
                            point_range=reach,
                            seed=rng.randrange(2**32),
                            timeout=120,
                        )
                    except CrashLoopError as exc:
                        problems.append(f"{label}, {kind}: {exc}")
                        print(f"durable {label}, {kind}: FAILED: {exc}", flush=True)
                        tally["failed loops"] += 1
                        continue
                    got = result.point_kills if point is not None else result.kills
                    tally[f"{kind} kills"] += got
                    done += got
                    if got:
                        idle = 0
                    elif reach > 1:
                        reach //= 2
                    else:
                        idle += 1
                    if program in HAS_SINK:  # the crash-free run's rows, each once
                        rows, distinct = _sink_rows(db)
                        tally["duplicate rows"] += rows - distinct
                        tally["lost rows"] += _sink_rows(clean)[1] - distinct
        kills = ", ".join(f"{tally[f'{k} kills']} {k}" for k, _ in plans)
        print(
            f"durable {label} ({store}): {tally['loops']} crash loops in "
            f"{time.monotonic() - started:.0f} s, SIGKILLs: {kills}; "
            f"{tally['failed loops']} failed (wrong output, divergence, hang), "
            f"{tally['lost rows']} lost rows, {tally['duplicate rows']} duplicate rows",
            flush=True,
        )
        if tally["duplicate rows"] or tally["lost rows"]:
            problems.append(
                f"{label}: {tally['duplicate rows']} duplicate, {tally['lost rows']} lost rows"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=3.0, help="how long (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--flows", type=int, default=2000, help="random flows on the virtual clock (default 2000)"
    )
    parser.add_argument(
        "--durable-kills", type=int, default=1000, help="random SIGKILLs per durable program"
    )
    parser.add_argument(
        "--durable-point-kills", type=int, default=200, help="SIGKILLs per crash point"
    )
    parser.add_argument(
        "--durable-store",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the durable programs' ledger and sink (postgres: a cluster the soak starts)",
    )
    args = parser.parse_args(argv)
    problems: Any = durable_crash_loops(
        args.durable_kills, args.durable_point_kills, args.seed, args.durable_store
    )
    problems += random_flows(args.flows, args.seed)
    problems += cohort.run(soak, args.minutes, args.seed, uvloop=True)
    for problem in problems:
        print(f"soak: FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
