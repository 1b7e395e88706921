"""Large payloads through the process bridge, against its peers.

Round trips of ``bytes`` and numpy arrays (100 B, 100 KB, 10 MB, 100 MB) through
``ProcessPool.run``, ``anyio.to_process.run_sync`` and
``loop.run_in_executor(ProcessPoolExecutor)``, sequential, rounds interleaved
on one loop, summarised against the targets as ratios, median and [min-max]
(100 B and 100 KB in several fresh interpreters); a map over 16 partitions
of one 400 MB array passed by shared reference against the pure compute
time; peak memory per process of a 100 MB round trip, measured in a fresh
interpreter; and the crossover between the pipe and shared memory, each size
forced both ways in one run. ``python -m benchmarks payloads`` runs it all.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from benchmarks._harness import CaseResult, compare, table, versions

WORKERS = 2
MB = 1_000_000


def echo(x: object) -> object:
    return x


def partition_work(data: Any, i: int, parts: int) -> float:
    """A CPU-heavy step over one partition: sort it, sum every 1000th value."""
    a = data.value if hasattr(data, "value") else data
    n = len(a) // parts
    return float(np.sort(a[i * n : (i + 1) * n])[::1000].sum())


_LOCAL: dict[int, Any] = {}


def local_partition_work(i: int, parts: int, size: int) -> float:
    """The same step on a copy of the array that the worker made itself: no transfer."""
    if size not in _LOCAL:
        _LOCAL.clear()
        _LOCAL[size] = np.random.default_rng(1).random(size // 8)
    return partition_work(_LOCAL[size], i, parts)


def partition_by_value(part: Any) -> float:
    return float(np.sort(part)[::1000].sum())


class _Bench:
    def __init__(self) -> None:
        import cohort

        self.runner = asyncio.Runner()
        self.ppe = ProcessPoolExecutor(WORKERS)
        self.pool = cohort.ProcessPool(WORKERS)
        self.runner.run(self._warm())

    async def _warm(self) -> None:
        import anyio.to_process

        await self.pool.__aenter__()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(self.pool.run(echo, i) for i in range(20)))
        await asyncio.gather(*(anyio.to_process.run_sync(echo, i) for i in range(20)))
        await asyncio.gather(*(loop.run_in_executor(self.ppe, echo, i) for i in range(20)))

    def close(self) -> None:
        self.runner.run(self.pool.aclose())
        self.runner.close()
        self.ppe.shutdown()

    def timed(self, fn: Any, payload: object, calls: int) -> Any:
        async def go() -> None:
            for _ in range(calls):
                back = await fn(payload)
            assert len(back) == len(payload)  # type: ignore[arg-type]

        return lambda: self.runner.run(go())

    async def cohort(self, x: object) -> Any:
        return await self.pool.run(echo, x)

    async def anyio(self, x: object) -> Any:
        import anyio.to_process

        return await anyio.to_process.run_sync(echo, x)

    async def ppe_run(self, x: object) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.ppe, echo, x)


def _ratio(results: list[CaseResult], name: str) -> float:
    base = results[0].seconds
    return statistics.median(a / b for a, b in zip(base, _by(results, name).seconds, strict=True))


def _by(results: list[CaseResult], name: str) -> CaseResult:
    return next(r for r in results if r.name == name)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


PEERS = ("anyio.to_process.run_sync", "run_in_executor(ProcessPoolExecutor)")
ANYIO, PPE = 0, 1
# (payload kind, size, {peer: the most cohort may cost, as a fraction of that peer's time})
TARGETS: list[tuple[str, int, dict[int, float]]] = [
    ("bytes", 100, {ANYIO: 0.4, PPE: 0.25}),
    ("numpy", 100, {ANYIO: 0.5}),
    ("bytes", 100_000, {PPE: 0.5}),
    ("numpy", 100_000, {PPE: 0.5}),
    ("bytes", 10 * MB, {ANYIO: 0.5, PPE: 0.5}),
    ("numpy", 10 * MB, {ANYIO: 0.5, PPE: 0.5}),
    ("bytes", 100 * MB, {ANYIO: 0.33, PPE: 0.33}),
    ("numpy", 100 * MB, {ANYIO: 0.33, PPE: 0.33}),
]
FRESH_MAX = 100_000  # sizes up to this are measured in fresh interpreters, several times


def _label(size: int) -> str:
    return f"{size:,} B" if size < MB else f"{size // MB} MB"


def _payload(kind: str, size: int) -> object:
    raw = os.urandom(size)
    return raw if kind == "bytes" else np.frombuffer(raw, np.uint8).copy()


def _calls(size: int) -> int:
    return 2000 if size < 1000 else 200 if size < MB else 5 if size < 100 * MB else 1


def _compare_sizes(b: _Bench, rounds: int, sizes: list[tuple[str, int]]) -> list[list[CaseResult]]:
    out = []
    for kind, size in sizes:
        payload, calls = _payload(kind, size), _calls(size)
        out.append(
            compare(
                [
                    ("cohort pool.run", b.timed(b.cohort, payload, calls)),
                    (PEERS[0], b.timed(b.anyio, payload, calls)),
                    (PEERS[1], b.timed(b.ppe_run, payload, calls)),
                ],
                rounds=rounds,
                per=calls,
            )
        )
    return out


def fresh_times(rounds: int) -> list[list[list[float]]]:
    """In this (fresh) interpreter: per small target, per case (cohort, then each
    peer), the seconds per call of each of ``rounds`` interleaved rounds."""
    sizes = [(kind, size) for kind, size, _ in TARGETS if size <= FRESH_MAX]
    b = _Bench()
    try:
        results = _compare_sizes(b, rounds, sizes)
    finally:
        b.close()
    return [[list(r.seconds) for r in res] for res in results]


_FRESH = """
import sys
sys.path.insert(0, {root!r})
from benchmarks.bench_payloads import fresh_times
if __name__ == "__main__":
    print(repr(fresh_times({rounds})))
"""


def _spread(values: list[float]) -> str:
    return f"**{statistics.median(values):.2f}x** [{min(values):.2f}-{max(values):.2f}]"


class _Ratios:
    """cohort's time over one peer's: per round, per interpreter, and best over best."""

    def __init__(self) -> None:
        self.rounds: list[float] = []
        self.medians: list[float] = []  # one per interpreter
        self.best = (float("inf"), float("inf"))  # cohort's best time, the peer's

    def add(self, cohort: list[float], peer: list[float]) -> None:
        ratios = [c / p for c, p in zip(cohort, peer, strict=True)]
        self.rounds += ratios
        self.medians.append(statistics.median(ratios))
        self.best = (min(self.best[0], *cohort), min(self.best[1], *peer))


def _targets(b: _Bench, rounds: int, interpreters: int) -> tuple[list[str], list[str]]:
    """The summary of every target, and the tables of the large sizes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _FRESH.format(root=root, rounds=rounds)
    found: dict[tuple[str, int, int], _Ratios] = {}
    small_sizes = [(kind, size) for kind, size, _ in TARGETS if size <= FRESH_MAX]
    for _ in range(interpreters):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True
        )
        got = ast.literal_eval(done.stdout.strip().splitlines()[-1])
        for (kind, size), (cohort, *peers) in zip(small_sizes, got, strict=True):
            for peer, times in enumerate(peers):
                found.setdefault((kind, size, peer), _Ratios()).add(cohort, times)
    large_sizes = [(kind, size) for kind, size, _ in TARGETS if size > FRESH_MAX]
    large = _compare_sizes(b, rounds, large_sizes)
    for (kind, size), res in zip(large_sizes, large, strict=True):
        for peer, name in enumerate(PEERS):
            found.setdefault((kind, size, peer), _Ratios()).add(
                res[0].seconds, _by(res, name).seconds
            )
    tables = [
        table(f"Round trip of {_label(size)} `{kind}` (echo)", res, "per call")
        for (kind, size), res in zip(large_sizes, large, strict=True)
    ]
    lines = [
        "## Targets (sequential `await pool.run(echo, payload)` against each peer)",
        "",
        f"cohort's time over the peer's, paired by round: median [min-max] over every "
        f"round; sizes up to {FRESH_MAX:,} B in {interpreters} fresh interpreters x {rounds} "
        f"interleaved rounds (then also the median [min-max] of the interpreters' "
        f"medians), larger sizes {rounds} interleaved rounds in this interpreter. Best over "
        "best: cohort's fastest round over the peer's fastest, the least disturbed by "
        "other load. The verdict is on the median of all rounds.",
        "",
        "| payload | peer | all rounds | per interpreter | best / best | target | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, size, limits in TARGETS:
        for peer, limit in limits.items():
            r = found[(kind, size, peer)]
            per = _spread(r.medians) if size <= FRESH_MAX else "-"
            ok = statistics.median(r.rounds) <= limit
            lines.append(
                f"| {_label(size)} `{kind}` | {PEERS[peer]} | {_spread(r.rounds)} | {per} | "
                f"{r.best[0] / r.best[1]:.2f}x | <= {limit}x | {_verdict(ok)} |"
            )
    for (kind, size), res in zip(large_sizes, large, strict=True):
        if size >= 100 * MB:
            rate = 2 * size / res[0].median / 1e9
            best = 2 * size / min(res[0].seconds) / 1e9
            lines.append(
                f"| {_label(size)} `{kind}` | throughput both ways | {rate:.2f} GB/s | - | "
                f"{best:.2f} GB/s | >= 1 GB/s | {_verdict(rate >= 1.0)} |"
            )
    return [*lines, ""], tables


def set_oob_min(n: int) -> int:
    """Set this process's shared-memory threshold (for the crossover sweep)."""
    from cohort.bridge import _shm

    _shm.OOB_MIN = n
    return n


def _crossover(rounds: int, quick: bool) -> list[str]:
    """Pipe against shared memory at each size, forced both ways in the same run:
    where the threshold (``_shm.OOB_MIN``) should be on this machine."""
    import cohort
    from cohort.bridge import _shm

    sizes = [8 << 10, 16 << 10, 32 << 10, 64 << 10, 100_000, 256 << 10, 1 << 20, 4 << 20, 8 << 20]
    if quick:
        sizes = sizes[1::2]
    default = _shm.OOB_MIN
    out = [
        "## Pipe or shared memory: the crossover (1 worker, each size forced both ways)",
        "",
        f"Threshold in use: {default:,} B. Cost per round trip, best and median over "
        f"{rounds} interleaved rounds.",
        "",
        "| payload | size | pipe best / median | shared memory best / median | faster |",
        "|---|---|---|---|---|",
    ]
    runner = asyncio.Runner()
    pool = cohort.ProcessPool(1)

    async def measure(payload: object, threshold: int, calls: int) -> float:
        _shm.OOB_MIN = threshold
        await pool.run(set_oob_min, threshold)
        await pool.run(echo, payload)
        t0 = time.perf_counter()
        for _ in range(calls):
            await pool.run(echo, payload)
        return (time.perf_counter() - t0) / calls

    try:
        for kind in ("bytes", "numpy"):
            for size in sizes:
                raw = os.urandom(size)
                payload: object = raw if kind == "bytes" else np.frombuffer(raw, np.uint8).copy()
                calls = max(10, 4 * MB // size)
                pipe: list[float] = []
                shm: list[float] = []
                for _ in range(rounds):
                    pipe.append(runner.run(measure(payload, 1 << 62, calls)))
                    shm.append(runner.run(measure(payload, 1, calls)))
                p, m = statistics.median(pipe), statistics.median(shm)
                out.append(
                    f"| {kind} | {size:,} B | {min(pipe) * 1e6:.0f} / {p * 1e6:.0f} us | "
                    f"{min(shm) * 1e6:.0f} / {m * 1e6:.0f} us | "
                    f"{'pipe' if p <= m else 'shared memory'} |"
                )
    finally:
        _shm.OOB_MIN = default
        runner.run(pool.aclose())
        runner.close()
    return [*out, ""]


def _shared_map(b: _Bench, rounds: int, quick: bool) -> list[str]:
    parts = 16
    size = (100 if quick else 400) * MB
    data = np.random.default_rng(1).random(size // 8)
    n = len(data) // parts
    pieces = [data[i * n : (i + 1) * n] for i in range(parts)]

    def serial() -> None:
        for i in range(parts):
            partition_work(data, i, parts)

    async def over(handle: Any) -> None:
        work = functools.partial(partition_work, handle, parts=parts)
        await b.pool.map(work, range(parts), chunksize=1)

    async def share_and_map() -> None:
        with await b.pool.share(data) as handle:
            await over(handle)

    async def ppe_map() -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(b.ppe, partition_by_value, p) for p in pieces))

    async def local() -> None:
        work = functools.partial(local_partition_work, parts=parts, size=size)
        await b.pool.map(work, range(parts), chunksize=1)

    kept = b.runner.run(b.pool.share(data))
    for _ in range(2):  # each worker makes its local copy, and loads the shared one
        b.runner.run(local())
        b.runner.run(over(kept))
    try:
        res = compare(
            [
                (f"pure compute on {WORKERS} workers (no transfer)", lambda: b.runner.run(local())),
                ("compute only, serial in this process", serial),
                ("cohort pool.map over a handle shared before", lambda: b.runner.run(over(kept))),
                ("cohort share + pool.map + release", lambda: b.runner.run(share_and_map())),
                ("ProcessPoolExecutor, each partition by value", lambda: b.runner.run(ppe_map())),
            ],
            rounds=rounds,
        )
    finally:
        kept.release()
    ideal = res[0].median
    mapped = _by(res, "cohort pool.map over a handle shared before").median / ideal
    whole = _by(res, "cohort share + pool.map + release").median / ideal
    return [
        table(f"map over {parts} partitions of one {size // MB} MB array", res, "per map"),
        f"Each partition: sort {n:,} float64 values.",
        "",
        f"- cohort map over a shared handle / pure compute: **{mapped:.2f}x** "
        f"(target <= 1.2x: {_verdict(mapped <= 1.2)}); with the one-time share and release "
        f"included: {whole:.2f}x",
        "",
    ]


_MEMORY = """
import asyncio, os, sys
sys.path.insert(0, {root!r})
import numpy as np
import cohort
from benchmarks.bench_payloads import echo, shm_entries, worker_peak, worker_rss
peak = lambda: worker_peak(None)

async def main():
    make = os.urandom if {kind!r} == "bytes" else (lambda n: np.ones(n // 8))
    data = make({size})
    async with cohort.ProcessPool(1) as pool:
        await pool.run(echo, 0)
        before = (peak(), await pool.run(worker_peak, 0))
        back = await pool.run(echo, data)
        after = (peak(), await pool.run(worker_peak, 0))
        del back
        rss0 = await pool.run(worker_rss, 0)
        small = make({small})
        for _ in range({calls}):
            await pool.run(echo, small)
        rss1 = await pool.run(worker_rss, 0)
        during = shm_entries(pool.segment_prefix)
    print(repr((before, after, rss0, rss1, during, shm_entries(pool.segment_prefix))))

if __name__ == "__main__":
    asyncio.run(main())
"""


def worker_peak(_: object) -> int:
    """This process's peak RSS (VmHWM: unlike ``ru_maxrss``, not inherited across exec)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def worker_rss(_: object) -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def shm_entries(prefix: str) -> int:
    """The segments of the pool with this prefix (others may belong to other programs)."""
    from cohort.bridge._shm import segment_names

    return len(segment_names(prefix))


def _memory(calls: int) -> list[str]:
    if not sys.platform.startswith("linux"):
        return []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    lines = [
        "## Memory of a 100 MB round trip (fresh interpreter, 1 worker)",
        "",
        "| payload | parent peak growth | worker peak growth | "
        f"worker RSS before / after {calls:,} more 1 MB calls | cohort segments while open "
        "/ after close |",
        "|---|---|---|---|---|",
    ]
    for kind in ("bytes", "numpy"):
        code = _MEMORY.format(root=root, size=100 * MB, kind=kind, small=MB, calls=calls)
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
        )
        last = done.stdout.strip().splitlines()[-1]
        before, after, rss0, rss1, during, left = ast.literal_eval(last)
        grow = [(a - b) / (100 * MB) for a, b in zip(after, before, strict=True)]
        lines.append(
            f"| {kind} | {grow[0]:.2f} copies | {grow[1]:.2f} copies | "
            f"{rss0 / MB:.0f} MB / {rss1 / MB:.0f} MB | {during} / {left} |"
        )
    return [
        *lines,
        "",
        "Peak growth in payload sizes (VmHWM): the parent keeps its own object and "
        "receives the result; the worker receives the argument and returns it. The "
        "segments while open are the two scratch segments of the worker (one each way).",
        "",
    ]


def main(quick: bool) -> str:
    rounds = 3 if quick else 5
    interpreters = 3 if quick else 5
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = [
        "# Large payloads through the process bridge",
        "",
        f"{WORKERS} workers each, {os.cpu_count()} CPUs; " + versions("anyio", "numpy") + "; "
        "sequential echo round trips, rounds interleaved. Ratios below 1 "
        "mean cohort is faster." + (f" Load average at start: {load[0]:.2f}." if load else ""),
        "",
    ]
    t0 = time.perf_counter()
    b = _Bench()
    try:
        summary, tables = _targets(b, rounds, interpreters)
        out += summary + tables
        out += _shared_map(b, rounds, quick)
    finally:
        b.close()
    out += _crossover(rounds, quick)
    out += _memory(100 if quick else 1000)
    if load:
        out.append(f"_(load average at the end: {os.getloadavg()[0]:.2f})_")
    out.append(f"_(suite ran {time.perf_counter() - t0:.0f} s)_")
    return "\n".join(out)
