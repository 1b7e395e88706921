"""Pipeline throughput, memory and task counts (cohort.pipeline).

* Throughput: a 3-stage async pipeline (trivial ``async def`` stages), 4
  workers per stage, over N items (100k; quick 10k): a hand-written
  per-item ``asyncio.Queue`` pipeline (the baseline: 4 long-lived workers
  per stage, queues of 8), cohort with defaults (ordered, buffer = 2 x
  workers), cohort with ``buffer=64``, cohort unordered, pypeln
  (``pl.task.map``), aiostream (``pipe.map(task_limit=4)``) and pyper
  (``task(workers=4)``), same run, interleaved rounds. The slow peers run in
  their own (fewer) rounds, against the same baseline. Then the asyncio
  cases again on uvloop.
* Awaiting: the same 3 stages, each awaiting ``asyncio.sleep(0)`` once per
  item (what async stages exist for), 50k items (quick 10k): hand-written,
  cohort ordered and unordered, and pypeln and aiostream on the asyncio loop.
* Loopback I/O: 3 stages, the middle one a TCP round trip to an echo server
  in another process through a pool of 4 connections (one per worker), 20k
  items (quick 5k): hand-written against cohort ordered and unordered.
* Mixed async + cpu: async -> cpu (about 0.3 ms of Python per item, 2
  processes) -> async, against the same pipeline hand-written with
  ``asyncio.Queue`` and ``loop.run_in_executor(ProcessPoolExecutor)``.
* Memory: peak RSS of a fresh process running the 3-stage pipeline (no
  outputs kept) over 100k and 1M items (quick: 10k and 100k), and the
  tracemalloc peak in that run.
* Tasks: the most tasks alive during a run, for 1k and 100k items.

Targets: >= 1.5x the hand-written pipeline's throughput (>= 10x pypeln and
aiostream) with ordering and per-item error handling on, and <= 0.5x its
time; <= 0.8x its time when stages await, <= 0.95x with the loopback I/O
stage (ordered and unordered, both loops); flat peak memory from 100k to 1M
items; a bounded number of tasks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any

import cohort
from benchmarks._harness import CaseResult, LoopFactory, compare, loops, table, versions

_Factory = LoopFactory
_STOP = object()


async def f1(x: int) -> int:
    return x + 1


async def f2(x: int) -> int:
    return x * 2


async def f3(x: int) -> int:
    return x - 1


async def a1(x: int) -> int:
    await asyncio.sleep(0)  # what async stages exist for: they suspend
    return x + 1


async def a2(x: int) -> int:
    await asyncio.sleep(0)
    return x * 2


async def a3(x: int) -> int:
    await asyncio.sleep(0)
    return x - 1


def cpu_work(x: int) -> int:
    """About 0.3 ms of pure Python."""
    total = 0
    for i in range(3000):
        total += (i * x) % 7
    return total


# -- the hand-written baseline ------------------------------------------------------------


async def _hand_stage(
    fn: Callable[[Any], Coroutine[Any, Any, Any]],
    qin: asyncio.Queue[Any],
    qout: asyncio.Queue[Any] | None,
    out: list[Any],
    workers: int,
) -> None:
    async def worker() -> None:
        while (x := await qin.get()) is not _STOP:
            y = await fn(x)
            if qout is None:
                out.append(y)
            else:
                await qout.put(y)

    async with asyncio.TaskGroup() as g:
        for _ in range(workers):
            g.create_task(worker())
    if qout is not None:
        for _ in range(workers):
            await qout.put(_STOP)


async def hand_written(n: int, fns: list[Callable[[Any], Coroutine[Any, Any, Any]]]) -> int:
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(8) for _ in fns]
    out: list[Any] = []

    async def source() -> None:
        for i in range(n):
            await queues[0].put(i)
        for _ in range(4):
            await queues[0].put(_STOP)

    async with asyncio.TaskGroup() as g:
        g.create_task(source())
        for i, fn in enumerate(fns):
            nxt = queues[i + 1] if i + 1 < len(fns) else None
            g.create_task(_hand_stage(fn, queues[i], nxt, out, 4))
    return len(out)


# -- cohort and the peers -------------------------------------------------------------------


def cohort_pipe(
    fns: tuple[Callable[[int], Coroutine[Any, Any, int]], ...] = (f1, f2, f3), **options: Any
) -> cohort.Pipeline[Any]:
    first, *rest = (cohort.stage(workers=4, **options)(fn) for fn in fns)
    pipe: cohort.Pipeline[Any] = first
    for st in rest:
        pipe = pipe | st
    return pipe


async def run_cohort(n: int, pipe: cohort.Pipeline[Any]) -> int:
    report = await pipe.run(range(n))
    assert report.outputs is not None
    return len(report.outputs)


_Stages = tuple[Callable[[int], Coroutine[Any, Any, int]], ...]


async def run_pypeln(n: int, fns: _Stages = (f1, f2, f3)) -> int:
    import pypeln as pl

    g1, g2, g3 = fns
    out = await (
        range(n)
        | pl.task.map(g1, workers=4)
        | pl.task.map(g2, workers=4)
        | pl.task.map(g3, workers=4)
    )
    return len(list(out))


async def run_aiostream(n: int, fns: _Stages = (f1, f2, f3)) -> int:
    from aiostream import pipe, stream

    g1, g2, g3 = fns
    xs = (
        stream.iterate(range(n))
        | pipe.map(g1, task_limit=4)
        | pipe.map(g2, task_limit=4)
        | pipe.map(g3, task_limit=4)
    )
    return len(await stream.list(xs))


async def _numbers(n: int) -> Any:
    for i in range(n):
        yield i


async def run_pyper(n: int) -> int:
    from pyper import task

    p = task(_numbers, branch=True) | task(f1, workers=4) | task(f2, workers=4)
    p = p | task(f3, workers=4)
    return len([x async for x in p(n)])


def _case(
    factory: _Factory, fn: Callable[..., Coroutine[Any, Any, int]], *args: Any
) -> Callable[[], object]:
    def run() -> object:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(fn(*args))

    return run


def _throughput(results: list[CaseResult], n: int) -> str:
    lines = ["", "| case | items/s (median) |", "|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {1 / r.median:,.0f} |")
    return "\n".join(lines) + "\n"


def throughput(quick: bool) -> str:
    n = 10_000 if quick else 100_000
    fns = [f1, f2, f3]
    out = []
    for loop_name, factory in loops():
        fast = [
            ("hand-written asyncio.Queue", _case(factory, hand_written, n, fns)),
            ("cohort (defaults: ordered)", _case(factory, run_cohort, n, cohort_pipe())),
            ("cohort (ordered, buffer=64)", _case(factory, run_cohort, n, cohort_pipe(buffer=64))),
            ("cohort (unordered)", _case(factory, run_cohort, n, cohort_pipe(ordered=False))),
        ]
        results = compare(fast, rounds=3 if quick else 5, per=n)
        out.append(
            table(f"3 async stages x 4 workers, {n:,} items, {loop_name}", results, "per item")
        )
        out.append(_throughput(results, n))
        if loop_name != "asyncio":
            continue
        slow = [
            fast[0],
            fast[1],
            ("pypeln pl.task", _case(factory, run_pypeln, n)),
            ("aiostream pipe.map", _case(factory, run_aiostream, n)),
            ("pyper", _case(factory, run_pyper, n)),
        ]
        results = compare(slow, rounds=2, per=n)
        out.append(table(f"against the peers, {n:,} items, {loop_name}", results, "per item"))
        out.append(_throughput(results, n))
    return "\n".join(out)


def awaiting(quick: bool) -> str:
    """The realistic shape: every stage suspends once per item."""
    n = 10_000 if quick else 50_000
    fns = (a1, a2, a3)
    out = []
    for loop_name, factory in loops():
        cases = [
            ("hand-written asyncio.Queue", _case(factory, hand_written, n, list(fns))),
            ("cohort (defaults: ordered)", _case(factory, run_cohort, n, cohort_pipe(fns))),
            (
                "cohort (unordered)",
                _case(factory, run_cohort, n, cohort_pipe(fns, ordered=False)),
            ),
        ]
        if loop_name == "asyncio":
            cases += [
                ("pypeln pl.task", _case(factory, run_pypeln, n, fns)),
                ("aiostream pipe.map", _case(factory, run_aiostream, n, fns)),
            ]
        results = compare(cases, rounds=3 if quick else 5, per=n)
        title = f"3 stages that await once per item x 4 workers, {n:,} items, {loop_name}"
        out.append(table(title, results, "per item"))
    return "\n".join(out)


# -- loopback I/O ----------------------------------------------------------------------------

_ECHO_SERVER = textwrap.dedent(
    """
    import asyncio, sys

    async def echo(reader, writer):
        while line := await reader.readline():
            writer.write(line)
        writer.close()

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
    """
)


class _Connections:
    """A pool of connections to the echo server, one per worker of the I/O stage."""

    def __init__(self) -> None:
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._all: list[asyncio.StreamWriter] = []

    @classmethod
    async def open(cls, port: int, n: int) -> _Connections:
        pool = cls()
        for _ in range(n):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            pool._all.append(writer)
            pool._idle.put_nowait((reader, writer))
        return pool

    async def round_trip(self, x: int) -> int:
        """Send ``x`` to the echo server and read it back: one loopback round trip."""
        reader, writer = await self._idle.get()
        try:
            writer.write(b"%d\n" % x)
            return int(await reader.readline())
        finally:
            self._idle.put_nowait((reader, writer))

    def close(self) -> None:
        for writer in self._all:
            writer.close()


async def io_hand(n: int, port: int) -> int:
    pool = await _Connections.open(port, 4)
    try:
        return await hand_written(n, [a1, pool.round_trip, a3])
    finally:
        pool.close()


async def io_cohort(n: int, port: int, ordered: bool) -> int:
    pool = await _Connections.open(port, 4)
    try:
        return await run_cohort(n, cohort_pipe((a1, pool.round_trip, a3), ordered=ordered))
    finally:
        pool.close()


def loopback_io(quick: bool) -> str:
    """One stage does a TCP round trip to an echo server in another process."""
    n = 5_000 if quick else 20_000
    server = subprocess.Popen(
        [sys.executable, "-c", _ECHO_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        out = []
        for loop_name, factory in loops():
            cases = [
                ("hand-written asyncio.Queue", _case(factory, io_hand, n, port)),
                ("cohort (defaults: ordered)", _case(factory, io_cohort, n, port, True)),
                ("cohort (unordered)", _case(factory, io_cohort, n, port, False)),
            ]
            results = compare(cases, rounds=3 if quick else 5, per=n)
            title = (
                f"3 stages x 4 workers, the middle one a loopback TCP round trip "
                f"(4 pooled connections to an echo server process), {n:,} items, {loop_name}"
            )
            out.append(table(title, results, "per item"))
        return "\n".join(out)
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


# -- mixed async + cpu ----------------------------------------------------------------------


async def mixed_cohort(n: int) -> int:
    async with cohort.ProcessPool(2) as pool:
        pipe = (
            cohort.stage(workers=4)(f1)
            | cohort.stage(workers=4, executor=pool)(cpu_work)
            | cohort.stage(workers=4)(f3)
        )
        return await run_cohort(n, pipe)


async def mixed_hand(n: int) -> int:
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(2) as ppe:

        async def in_process(x: int) -> int:
            return await loop.run_in_executor(ppe, cpu_work, x)

        return await hand_written(n, [f1, in_process, f3])


def mixed(quick: bool) -> str:
    n = 500 if quick else 3000
    factory = asyncio.new_event_loop
    cases = [
        ("asyncio.Queue + ProcessPoolExecutor", _case(factory, mixed_hand, n)),
        ("cohort cpu stage (ProcessPool)", _case(factory, mixed_cohort, n)),
    ]
    results = compare(cases, rounds=2 if quick else 3, per=n)
    title = f"async -> cpu (2 processes) -> async, {n:,} items, pool start included"
    return table(title, results, "per item")


# -- memory and tasks -----------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import asyncio, resource, sys, tracemalloc
    sys.path.insert(0, {root!r})
    from benchmarks.bench_pipeline import cohort_pipe
    n, trace = int(sys.argv[1]), sys.argv[2] == "1"
    if trace:
        tracemalloc.start()
    report = asyncio.run(cohort_pipe().run(iter(range(n)), collect=False))
    assert report.succeeded == n
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    try:  # this process's own peak (ru_maxrss may include the parent's, from before exec)
        with open("/proc/self/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM:"))
        rss = int(hwm.split()[1])
    except OSError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(rss, peak)
    """
)


def _measure(n: int, trace: bool) -> tuple[int, int]:
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = _MEMORY_SCRIPT.format(root=root)
    done = subprocess.run(
        [sys.executable, "-c", script, str(n), "1" if trace else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    rss, peak = done.stdout.split()
    return int(rss), int(peak)


def memory(quick: bool) -> str:
    sizes = [10_000, 100_000] if quick else [100_000, 1_000_000]
    lines = [
        "## Memory: 3 stages x 4 workers, outputs not kept, fresh process each",
        "",
        "| items | peak RSS | tracemalloc peak |",
        "|---|---|---|",
    ]
    for n in sizes:
        rss = _measure(n, False)[0]
        _, peak = _measure(n, True)
        lines.append(f"| {n:,} | {rss / 1024:.1f} MiB | {peak / 1024:.1f} KiB |")
    return "\n".join(lines) + "\n"


async def _max_tasks(n: int) -> int:
    peak = 0

    @cohort.stage(workers=4)
    async def probe(x: int) -> int:
        nonlocal peak
        if x % 97 == 0:
            peak = max(peak, len(asyncio.all_tasks()))
        return x

    await (probe | probe.with_options(name="probe2") | probe.with_options(name="probe3")).run(
        range(n), collect=False
    )
    return peak


def tasks() -> str:
    lines = ["## Tasks alive during a run (3 stages x 4 workers)", "", "| items | most tasks |"]
    lines.append("|---|---|")
    for n in (1_000, 100_000):
        lines.append(f"| {n:,} | {asyncio.run(_max_tasks(n))} |")
    return "\n".join(lines) + "\n"


def main(quick: bool) -> str:
    parts = [
        "# Pipelines",
        "",
        versions("pypeln", "aiostream", "python-pyper", "uvloop"),
        "",
        throughput(quick),
        awaiting(quick),
        loopback_io(quick),
        mixed(quick),
        memory(quick),
        tasks(),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(main("--quick" in sys.argv))
