"""What the watchdog costs: CPU time it adds, idle and under a busy loop.

* Idle: a loop that only sleeps for a while, with and without a watchdog
  (threshold 0.1 s: a heartbeat on the loop and a thread wake-up every 25 ms).
  The figure is the extra process CPU time (every thread, ``time.process_time``)
  as a percentage of the wall time watched.
* Busy: the same, while the loop runs a steady stream of tiny tasks; the extra
  CPU time is measured against the same work without a watchdog.

Target: watchdog on costs <= 0.5 % CPU. Rounds alternate off and on, medians.

OpenTelemetry (``cohort.instrument()``):

* Off: the group fan-out (one ``TaskGroup``, ``spawn`` of N no-op children)
  with instrumentation off, against the same benchmark run on the source
  tree without the feature (``COHORT_BENCH_BASELINE``, a git revision,
  default the merge base with ``main``; exported with ``git archive``). Each
  side runs in its own process, alternating; the figure is the median of
  the paired ratios. Target <= 1 %. On a loaded machine the times vary by
  more than that; the Python function calls one group makes (cProfile's
  count, exact) say whether the path does any more work.
* On: 10,000 children in one group with the SDK (a ``TracerProvider`` with
  a ``BatchSpanProcessor`` into an ``InMemorySpanExporter``, queue large
  enough to drop nothing, and a ``MeterProvider`` with an in-memory reader),
  against the same group with instrumentation off, rounds alternating; the
  children's bodies empty, ``asyncio.sleep(0.001)``, or a 64-byte echo over
  loopback (64 shared connections to an asyncio echo server). The figures:
  the added wall and CPU time (every thread's: the exporter's too) per child
  span, and in percent. Targets <= 10 us per child span, <= 5 % wall. The
  batch processor exports in its own thread: its flush after each round is
  not counted. The SDK's own CPU cost of one span under a parent (no
  cohort), measured in the same run, is the floor of any span per child:
  what is added above it is cohort's part. On a loaded machine wall time
  swings with the load; CPU time is the steadier figure.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cohort
from benchmarks._harness import loops, versions

THRESHOLD = 0.1


async def _idle(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def _busy(seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def tiny() -> None:
        await asyncio.sleep(0)

    while loop.time() < end:
        await asyncio.gather(*(tiny() for _ in range(50)))
        await asyncio.sleep(0.001)


def _cpu(
    runner: asyncio.Runner, work: Callable[[float], Awaitable[None]], seconds: float, on: bool
) -> tuple[float, float]:
    async def main() -> None:
        if on:
            async with cohort.Watchdog(THRESHOLD, log=False):
                await work(seconds)
        else:
            await work(seconds)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    runner.run(main())
    return time.process_time() - cpu0, time.perf_counter() - wall0


def main(quick: bool) -> str:
    seconds = 0.5 if quick else 2.0
    rounds = 3 if quick else 5
    lines = [
        "## Watchdog: CPU cost (target <= 0.5 %)",
        "",
        versions("uvloop"),
        "",
        f"threshold {THRESHOLD} s, {rounds} rounds of {seconds} s each, off and on alternating",
        "",
        "| loop | workload | CPU off (% of wall) | CPU on (% of wall) | added CPU (% of wall) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for loop_name, factory in loops():
        for work_name, work in (("idle", _idle), ("busy", _busy)):
            off: list[float] = []
            on: list[float] = []
            added: list[float] = []
            with asyncio.Runner(loop_factory=factory) as runner:
                for _ in range(rounds):
                    cpu_off, wall_off = _cpu(runner, work, seconds, False)
                    cpu_on, wall_on = _cpu(runner, work, seconds, True)
                    off.append(100 * cpu_off / wall_off)
                    on.append(100 * cpu_on / wall_on)
                    added.append(on[-1] - off[-1])
            lines.append(
                f"| {loop_name} | {work_name} | {statistics.median(off):.3f} | "
                f"{statistics.median(on):.3f} | {statistics.median(added):.3f} |"
            )
    lines.extend(["", *_otel_off(quick), "", *_otel_on(quick)])
    return "\n".join(lines) + "\n"


# -- OpenTelemetry ----------------------------------------------------------------------

_FANOUT = """
import asyncio, cProfile, pstats, sys, time
import cohort

async def noop():
    pass

async def fan(n):
    async with cohort.TaskGroup() as g:
        for _ in range(n):
            g.spawn(noop)

n, rounds, loop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if loop == "uvloop":
    import uvloop
    factory = uvloop.new_event_loop
else:
    factory = asyncio.new_event_loop
best = float("inf")
with asyncio.Runner(loop_factory=factory) as runner:
    for _ in range(rounds):
        t = time.perf_counter()
        runner.run(fan(n))
        best = min(best, time.perf_counter() - t)
    profile = cProfile.Profile()
    profile.enable()
    runner.run(fan(n))
    profile.disable()
print(best, pstats.Stats(profile).total_calls)
"""


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _baseline_src(folder: str) -> tuple[str, str] | None:
    """The source tree without the feature, exported into ``folder``: (path, revision)."""
    try:
        rev = os.environ.get("COHORT_BENCH_BASELINE") or _git("merge-base", "HEAD", "main")
        archive = Path(folder) / "src.tar"
        _git("archive", "-o", str(archive), rev, "src")
    except (OSError, subprocess.CalledProcessError):
        return None
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return str(Path(folder) / "src"), rev[:10]


def _fanout(src: str, n: int, rounds: int, loop: str) -> tuple[float, int]:
    """The best time of a group of ``n`` children, and the Python calls one group makes."""
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, "-c", _FANOUT, str(n), str(rounds), loop],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds, calls = out.stdout.split()
    return float(seconds), int(calls)


def _otel_off(quick: bool) -> list[str]:
    n, rounds, pairs = (1000, 10, 3) if quick else (1000, 30, 9)
    lines = [
        "## OpenTelemetry off: group fan-out against the code without it (target <= 1 %)",
        "",
    ]
    here = str(Path(cohort.__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as folder:
        baseline = _baseline_src(folder)
        if baseline is None:
            return [*lines, "(no git revision to compare with: skipped)"]
        base_src, rev = baseline
        lines += [
            f"{n} no-op children per group, best of {rounds} groups per process, "
            f"{pairs} process pairs alternating; baseline {rev}",
            "",
            "| loop | without (us/child) | off (us/child) | off vs without (median of pairs) "
            "| Python calls per group, without / off |",
            "| --- | --- | --- | --- | --- |",
        ]
        for loop_name, _ in loops():
            without: list[float] = []
            off: list[float] = []
            calls: set[tuple[int, int]] = set()
            for _ in range(pairs):
                base_s, base_calls = _fanout(base_src, n, rounds, loop_name)
                off_s, off_calls = _fanout(here, n, rounds, loop_name)
                without.append(base_s)
                off.append(off_s)
                calls.add((base_calls, off_calls))
            ratios = sorted(o / w for o, w in zip(off, without, strict=True))
            lines.append(
                f"| {loop_name} | {1e6 * min(without) / n:.3f} | {1e6 * min(off) / n:.3f} | "
                f"{100 * (statistics.median(ratios) - 1):+.2f} % | "
                + ", ".join(f"{a} / {b}" for a, b in sorted(calls))
                + " |"
            )
    return lines


async def _noop() -> None:
    pass


async def _fan(n: int, body: Callable[[], Awaitable[None]] = _noop) -> None:
    async with cohort.TaskGroup() as g:
        for _ in range(n):
            g.spawn(body)


async def _sleep_1ms() -> None:
    await asyncio.sleep(0.001)


class _Echo:
    """A loopback echo server and a few open connections the children share: each
    child takes one, sends 64 bytes, reads them back and gives it back."""

    def __init__(self, connections: int = 64) -> None:
        self.connections = connections
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.handlers.add(task)
            try:
                while data := await reader.read(65536):
                    writer.write(data)
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.free = asyncio.Queue()
        for _ in range(self.connections):
            self.free.put_nowait(await asyncio.open_connection("127.0.0.1", port))

    async def stop(self) -> None:
        assert self.free is not None
        assert self.server is not None
        while not self.free.empty():
            _, writer = self.free.get_nowait()
            writer.close()
            await writer.wait_closed()
        await asyncio.gather(*self.handlers)  # each ends on its connection's EOF
        self.server.close()
        await self.server.wait_closed()

    async def child(self) -> None:
        assert self.free is not None
        reader, writer = conn = await self.free.get()
        try:
            writer.write(b"x" * 64)
            await reader.readexactly(64)
        finally:
            self.free.put_nowait(conn)


def _otel_on(quick: bool) -> list[str]:
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError:
        return ["(opentelemetry-sdk not installed: OpenTelemetry on not measured)"]

    n, rounds = (10_000, 3) if quick else (10_000, 9)
    exporter = InMemorySpanExporter()
    processor = BatchSpanProcessor(exporter, max_queue_size=4 * n, max_export_batch_size=512)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    meters = MeterProvider([InMemoryMetricReader()])
    lines = [
        "## OpenTelemetry on: 10,000 children, SDK with a batch processor "
        "(targets <= 10 us per child span, <= 5 % wall)",
        "",
        versions("opentelemetry-api", "opentelemetry-sdk"),
        "",
        f"{n} children in one group, {rounds} rounds off and on alternating, medians; "
        "wall time (perf_counter) and CPU time of every thread (process_time, the "
        "exporter's thread included)",
        "",
        "| loop | children's body | wall off / on (ms) | CPU off / on (ms) "
        "| added per child span, wall / CPU (us) | added wall | added CPU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    floor_min, floor = _bare_span_us(provider, processor, exporter, n)
    echo = _Echo()
    bodies: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("empty", _noop),
        ("asyncio.sleep(0.001)", _sleep_1ms),
        ("loopback echo, 64 B, 64 connections", echo.child),
    ]
    for loop_name, factory in loops():
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(echo.start())
            for body_name, body in bodies:
                runner.run(_fan(n, body))  # warm up
                off: list[tuple[float, float]] = []
                on: list[tuple[float, float]] = []
                for _ in range(rounds):
                    off.append(_timed(runner, n, body))
                    cohort.instrument(tracer_provider=provider, meter_provider=meters)
                    try:
                        on.append(_timed(runner, n, body))
                    finally:
                        cohort.uninstrument()
                    processor.force_flush()
                    exporter.clear()
                off_s = statistics.median(w for w, _ in off)
                on_s = statistics.median(w for w, _ in on)
                off_cpu = statistics.median(c for _, c in off)
                on_cpu = statistics.median(c for _, c in on)
                lines.append(
                    f"| {loop_name} | {body_name} | {1e3 * off_s:.1f} / {1e3 * on_s:.1f} | "
                    f"{1e3 * off_cpu:.1f} / {1e3 * on_cpu:.1f} | "
                    f"{1e6 * (on_s - off_s) / n:.1f} / {1e6 * (on_cpu - off_cpu) / n:.1f} | "
                    f"{100 * (on_s / off_s - 1):+.0f} % | {100 * (on_cpu / off_cpu - 1):+.0f} % |"
                )
            runner.run(echo.stop())
    lines += [
        "",
        f"The SDK alone, same provider, CPU per span (median of 5 x {n}): "
        f"{floor_min:.2f} us for the least span (`start_span` under a parent, `end`), "
        f"{floor:.2f} us for what cohort asks of it per child (the same with one "
        "`set_attributes` of three attributes): the floor of any span per child. "
        "Added CPU per child above that floor is cohort's part (its listener, and the "
        "collector's extra work while 10,000 spans are alive at once).",
    ]
    provider.shutdown()
    meters.shutdown()
    return lines


def _timed(
    runner: asyncio.Runner, n: int, body: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    """(wall, CPU) seconds of one group of ``n`` children."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    runner.run(_fan(n, body))
    return time.perf_counter() - wall, time.process_time() - cpu


def _bare_span_us(provider: Any, processor: Any, exporter: Any, n: int) -> tuple[float, float]:
    """What one span costs the SDK by itself, CPU: the least span, and cohort's."""
    from opentelemetry import trace

    tracer = provider.get_tracer("bench")
    parent = tracer.start_span("group")
    context = trace.set_span_in_context(parent)
    least: list[float] = []
    shaped: list[float] = []
    for _ in range(5):
        gc.collect()
        t = time.process_time()
        for _ in range(n):
            tracer.start_span("child c", context).end()
        least.append(time.process_time() - t)
        gc.collect()
        t = time.process_time()
        for _ in range(n):
            span = tracer.start_span("child c", context)
            span.set_attributes(
                {"cohort.child": "c", "cohort.critical": True, "cohort.outcome": "succeeded"}
            )
            span.end()
        shaped.append(time.process_time() - t)
        processor.force_flush()
        exporter.clear()
    parent.end()
    return 1e6 * statistics.median(least) / n, 1e6 * statistics.median(shaped) / n
