"""The process bridge against its peers: per-call cost, map throughput, speedup, cancel latency.

Peers: ``loop.run_in_executor(ProcessPoolExecutor)``, ``anyio.to_process.run_sync``,
``ProcessPoolExecutor.map`` at hand-picked chunksizes, ``pypeln.process.map``.
Every pool is started and warmed once, outside the timed region; each case
then runs on the same event loop (plain asyncio), rounds interleaved.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from benchmarks._harness import CaseResult, compare, table, versions

WORKERS = 2


def trivial(x: int) -> int:
    return x + 1


def spin(n: int) -> int:
    """Pure-Python CPU work: about ``n`` * 0.05 us."""
    total = 0
    for i in range(n):
        total += i & 7
    return total


def spin_forever(_: int) -> None:
    while True:
        pass


def _calibrate(seconds: float) -> int:
    n = 100_000
    t0 = time.perf_counter()
    spin(n)
    per = (time.perf_counter() - t0) / n
    return max(1, int(seconds / per))


class _Bench:
    """Holds one event loop and warm pools for every case."""

    def __init__(self) -> None:
        import cohort

        self.runner = asyncio.Runner()
        self.loop = self.runner.get_loop()
        self.ppe = ProcessPoolExecutor(WORKERS)
        self.pool = cohort.ProcessPool(WORKERS)
        self.pool1 = cohort.ProcessPool(1)
        self.runner.run(self._warm())

    async def _warm(self) -> None:
        import anyio.to_process

        await self.pool.__aenter__()
        await self.pool1.run(trivial, 0)
        await asyncio.gather(*(self.pool.run(trivial, i) for i in range(50)))
        await asyncio.gather(*(anyio.to_process.run_sync(trivial, i) for i in range(50)))
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.ppe, trivial, i) for i in range(50)))

    def close(self) -> None:
        self.runner.run(self.pool.aclose())
        self.runner.run(self.pool1.aclose())
        self.runner.close()
        self.ppe.shutdown()

    def run(self, coro_fn: Callable[[], Any]) -> Callable[[], object]:
        return lambda: self.runner.run(coro_fn())

    # -- per-call cases ------------------------------------------------------------

    async def cohort_seq(self, n: int) -> None:
        for i in range(n):
            await self.pool.run(trivial, i)

    async def anyio_seq(self, n: int) -> None:
        import anyio.to_process

        for i in range(n):
            await anyio.to_process.run_sync(trivial, i)

    async def ppe_seq(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        for i in range(n):
            await loop.run_in_executor(self.ppe, trivial, i)

    async def cohort_conc(self, n: int) -> None:
        await asyncio.gather(*(self.pool.run(trivial, i) for i in range(n)))

    async def anyio_conc(self, n: int) -> None:
        import anyio.to_process

        await asyncio.gather(*(anyio.to_process.run_sync(trivial, i) for i in range(n)))

    async def ppe_conc(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.ppe, trivial, i) for i in range(n)))

    async def cohort_map(self, data: list[int]) -> None:
        out = await self.pool.map(trivial, data)
        assert len(out) == len(data)

    async def cohort_heavy(self, n: int, calls: int) -> None:
        await asyncio.gather(*(self.pool.run(spin, n) for _ in range(calls)))

    async def ppe_heavy(self, n: int, calls: int) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.ppe, spin, n) for _ in range(calls)))

    async def cancel_once(self) -> float:
        """Seconds from cancel() to the replacement worker having answered a call."""
        pool = self.pool1  # one worker: the next call must wait for the replacement
        task = asyncio.create_task(pool.run(spin_forever, 0))
        await asyncio.sleep(0.01)  # the task submits; the idle worker starts spinning
        assert pool.statistics().busy == 1
        t0 = time.perf_counter()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pool.run(trivial, 0)
        return time.perf_counter() - t0


def _ppe_map(ppe: ProcessPoolExecutor, data: list[int], chunksize: int) -> Callable[[], object]:
    return lambda: list(ppe.map(trivial, data, chunksize=chunksize))


_PYPELN = """
import sys, time, pypeln
sys.path.insert(0, {root!r})
from benchmarks.bench_bridge import trivial
out = []
for _ in range({rounds}):
    t0 = time.perf_counter()
    assert len(list(pypeln.process.map(trivial, range({n}), workers={w}, maxsize=1000))) == {n}
    out.append((time.perf_counter() - t0) / {n})
print(repr(out))
"""


def _pypeln_map(n: int, rounds: int) -> list[float] | None:
    """Per-item seconds of ``pypeln.process.map``, measured in a fresh process.

    pypeln forks its workers; forking this process (threads of the executors,
    a running loop's pipes) can hang, so it gets an interpreter of its own.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = _PYPELN.format(root=root, rounds=rounds, n=n, w=WORKERS)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return list(ast.literal_eval(done.stdout.strip().splitlines()[-1]))


def _ratio(results: list[CaseResult], name: str, base: str) -> float:
    by = {r.name: r for r in results}
    return statistics.median(a / b for a, b in zip(by[name].seconds, by[base].seconds, strict=True))


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main(quick: bool) -> str:
    rounds = 2 if quick else 3
    calls = 2_000 if quick else 20_000
    items = 20_000
    heavy_calls = 8 if quick else 40
    out = [
        "# Process bridge",
        "",
        f"{WORKERS} workers each, {os.cpu_count()} CPUs; "
        + versions("anyio", "pypeln", "uvloop")
        + "; medians over interleaved rounds.",
        "",
    ]
    b = _Bench()
    try:
        out += _per_call(b, calls, rounds)
        out += _map(b, items, 1000 if quick else 5000, rounds)
        out += _heavy(b, heavy_calls, rounds)
        out += _cancel(b, 5 if quick else 15)
    finally:
        b.close()
    return "\n".join(out)


def _per_call(b: _Bench, calls: int, rounds: int) -> list[str]:
    seq = compare(
        [
            ("cohort pool.run", b.run(lambda: b.cohort_seq(calls))),
            ("anyio.to_process.run_sync", b.run(lambda: b.anyio_seq(calls))),
            ("run_in_executor(ProcessPoolExecutor)", b.run(lambda: b.ppe_seq(calls))),
        ],
        rounds=rounds,
        per=calls,
    )
    conc = compare(
        [
            ("cohort pool.run", b.run(lambda: b.cohort_conc(calls))),
            ("anyio.to_process.run_sync", b.run(lambda: b.anyio_conc(calls))),
            ("run_in_executor(ProcessPoolExecutor)", b.run(lambda: b.ppe_conc(calls))),
        ],
        rounds=rounds,
        per=calls,
    )
    s_anyio = _ratio(seq, "cohort pool.run", "anyio.to_process.run_sync")
    c_anyio = _ratio(conc, "cohort pool.run", "anyio.to_process.run_sync")
    c_ppe = _ratio(conc, "cohort pool.run", "run_in_executor(ProcessPoolExecutor)")
    return [
        table(f"Sequential round trip, trivial function ({calls:,} calls)", seq, "per call"),
        table(f"Concurrent calls, trivial function ({calls:,} at once)", conc, "per call"),
        f"- target sequential <= 0.5x anyio: **{s_anyio:.2f}x** ({_verdict(s_anyio <= 0.5)})",
        f"- target concurrent <= 0.5x both peers: **{c_anyio:.2f}x** anyio, "
        f"**{c_ppe:.2f}x** ProcessPoolExecutor ({_verdict(max(c_anyio, c_ppe) <= 0.5)})",
        "",
    ]


def _map(b: _Bench, items: int, pypeln_items: int, rounds: int) -> list[str]:
    chunks = (64, 512, 2500, 5000)
    # A list, not a range: ranges are sliced and pickle in O(1), which would flatter cohort.
    data = list(range(items))
    cases = [("cohort pool.map (auto chunks)", b.run(lambda: b.cohort_map(data)))]
    cases += [(f"ProcessPoolExecutor.map chunksize={c}", _ppe_map(b.ppe, data, c)) for c in chunks]
    res = compare(cases, rounds=rounds, per=items)
    pyp = _pypeln_map(pypeln_items, rounds)
    if pyp is not None:
        base = res[0].seconds
        name = f"pypeln.process.map ({pypeln_items:,} items, own process, starts workers)"
        res.append(CaseResult(name, pyp, [p / c for p, c in zip(pyp, base, strict=True)]))
    best = min(res[1 : 1 + len(chunks)], key=lambda r: r.median)
    speed = 1 / _ratio(res, res[0].name, best.name)
    return [
        table(f"map of {items:,} tiny calls", res, "per item"),
        f"- target >= 2x faster than ProcessPoolExecutor.map at its best chunksize "
        f"({best.name.split('=')[1]}): **{speed:.1f}x** ({_verdict(speed >= 2)})",
        "",
    ]


def _heavy(b: _Bench, calls: int, rounds: int) -> list[str]:
    n = _calibrate(0.05)
    res = compare(
        [
            ("serial, in this process", lambda: [spin(n) for _ in range(calls)]),
            ("cohort pool.run, concurrent", b.run(lambda: b.cohort_heavy(n, calls))),
            ("run_in_executor(ProcessPoolExecutor)", b.run(lambda: b.ppe_heavy(n, calls))),
        ],
        rounds=rounds,
        per=calls,
    )
    speedup = 1 / _ratio(res, "cohort pool.run, concurrent", "serial, in this process")
    target = 0.9 * WORKERS
    return [
        table(f"Speedup: {calls} calls of ~50 ms pure-Python work", res, "per call"),
        f"- target speedup >= 0.9 x {WORKERS} cores = {target:.1f}: **{speedup:.2f}x** "
        f"({_verdict(speedup >= target)})",
        "",
    ]


def _cancel(b: _Bench, trials: int) -> list[str]:
    lat = [b.runner.run(b.cancel_once()) for _ in range(trials)]
    med, worst = statistics.median(lat), max(lat)
    return [
        "## Cancel latency (cancel() to the worker killed and its replacement ready)",
        "",
        f"{trials} trials: median **{med * 1e3:.1f} ms**, max {worst * 1e3:.1f} ms "
        f"(target < 100 ms: {_verdict(worst < 0.1)})",
        "",
    ]
