"""``cohort demo``: the fan-out service under load, then an ETL pipeline, offline.

Part 1 starts ten simulated backends and the web fan-out service
(``cohort.examples.fanout``: Starlette on uvicorn, 127.0.0.1 only) and sends
the same short load three times, from one replica of everything to quorum
reads, hedging and mirror races, with live progress; a latency table shows
what each tactic buys. Part 2 is an outage drill: a catalog replica goes
down under steady traffic and comes back, once without and once with the
service's circuit breakers, and the breaker's timeline is shown. Part 3 runs
the ETL pipeline (``cohort.examples.etl``: fetch over HTTP with retries,
parse in worker processes, store in SQLite in batches, dead letters) with
live progress. A summary ends it; on Ctrl-C the
summary says what had finished, and every server and worker process stops.

It needs the web extras (``pip install 'cohort[cli]'``) and no network.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cohort
from cohort.cli._common import EXIT_INTERRUPTED, EXIT_OK, UsageError

__all__ = ["LoadReading", "add_demo_arguments", "busy_reasons", "demo_command", "read_load"]


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, with small defaults: the whole demo takes about 20 seconds."""
    parser.add_argument(
        "--requests",
        type=int,
        metavar="N",
        help="requests per strategy and run (default 60; with --load 500)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="requests in flight (default 8; with --load 50)",
    )
    parser.add_argument(
        "--load",
        action="store_true",
        help="instead: the fan-out service under load, backends, services and load generator "
        "in separate processes, cohort against plain asyncio (about a minute)",
    )
    parser.add_argument("--tls", action="store_true", help="with --load: the backends serve HTTPS")
    parser.add_argument(
        "--docs", type=int, default=120, metavar="N", help="documents for the ETL (default 120)"
    )
    parser.add_argument(
        "--drill-seconds",
        type=float,
        default=3.5,
        metavar="S",
        help="length of each outage-drill run; the replica is down from 1/7 to 4/7 of it "
        "(default 3.5)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, metavar="S", help="seed of the backends' behaviour"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="show live progress on stderr (default: on)",
    )


@dataclass
class _Summary:
    """What the demo has shown so far, printed at the end and on Ctrl-C."""

    lines: list[str] = field(default_factory=list)
    part: str = "starting"
    progress: str | None = None
    """What the part under way has finished so far (shown if it is interrupted)."""

    def print(self, *, interrupted: bool) -> None:
        title = f"summary (interrupted during {self.part})" if interrupted else "summary"
        print(f"\n{title}")
        lines = [*self.lines, *([self.progress] if interrupted and self.progress else [])]
        for line in lines or ["nothing finished"]:
            print(f"  {line}")
        print("  every request, child task, server and worker process has ended.", flush=True)


_KEY_SETS = (1, 2, 3)
"""The fan-out comparison runs each strategy over these key sets and reports medians."""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def _fanout(args: argparse.Namespace, summary: _Summary) -> None:
    import aiohttp

    from cohort.examples.fanout.backends import DEFAULT_BACKENDS
    from cohort.examples.fanout.load import Record, request
    from cohort.examples.fanout.loadtest import (
        Run,
        format_runs,
        interleave,
        keys_of,
        make_run,
        medians,
    )
    from cohort.examples.fanout.stack import STRATEGIES, local_stack

    async def load(
        session: aiohttp.ClientSession, url: str, label: str, keys: list[str]
    ) -> list[Record]:
        strategy = STRATEGIES[label]

        @cohort.stage(workers=args.concurrency, name=label)
        async def get(key: str) -> Record:
            return await request(session, url, key, strategy)

        report = await get.run(keys, progress=args.progress)
        return report.outputs or []

    summary.part = "the fan-out load"
    runs: list[Run] = []
    async with local_stack(args.seed) as url:
        print(
            f"1. Web fan-out: a Starlette service on {url} asks {len(DEFAULT_BACKENDS)} "
            "backends (127.0.0.1) per request:\n"
            "   quorum of 2 catalog replicas, hedged pricing, first-wins image mirrors,\n"
            "   optional reviews, one deadline per request. Same load, three strategies,\n"
            f"   interleaved over {len(_KEY_SETS)} key sets (medians):",
            flush=True,
        )
        order = list(interleave(list(STRATEGIES), _KEY_SETS, rounds=1))
        async with aiohttp.ClientSession() as session:
            for key_set, label in order:
                start = cohort.current_time()
                records = await load(session, url, label, keys_of(key_set, args.requests))
                took = cohort.current_time() - start
                runs.append(make_run(label, key_set, STRATEGIES[label], records, took))
                summary.progress = f"fan-out: {len(runs)} of {len(order)} runs finished"
    summary.progress = None
    table = format_runs(runs)
    print("\n".join(f"   {line}" for line in table.splitlines()), flush=True)
    figures = medians(runs)
    plain, best = figures[next(iter(STRATEGIES))], figures[list(STRATEGIES)[-1]]
    summary.lines.append(
        f"fan-out: {args.requests} requests per strategy and key set; with all tactics "
        f"p99 {_ms(best['p99'])} (plain {_ms(plain['p99'])}), errors {best['errors']:.1%} "
        f"(plain {plain['errors']:.1%}), medians"
    )


async def _outage(args: argparse.Namespace, summary: _Summary) -> None:
    from cohort.examples.fanout.drill import drill
    from cohort.examples.fanout.service import BREAKER_RECOVERY

    summary.part = "the outage drill"
    until = args.drill_seconds
    down_at, up_at = until / 7, until * 4 / 7
    print(
        f"\n2. Outage drill: catalog-1 answers 503 from {down_at:.1f} s to {up_at:.1f} s of "
        f"{until:g} s while\n   requests arrive at 50 per second; the same traffic without, "
        "then with the service's\n   circuit breakers (open after 5 failures in 20 calls, "
        f"a probe every {BREAKER_RECOVERY:g} s when open):",
        flush=True,
    )
    runs = []
    for guard in (False, True):
        runs.append(await drill(args.seed, guard=guard, down_at=down_at, up_at=up_at, until=until))
        summary.progress = f"outage drill: {len(runs)} of 2 runs finished"
    summary.progress = None
    plain, guarded = runs
    print(f"   {'':18} {'requests':>8} {'errors':>7} {'calls to catalog-1 while down':>30}")
    for label, r in (("without breakers", plain), ("with breakers", guarded)):
        print(f"   {label:18} {len(r.records):>8} {r.errors:>7} {r.calls_while_down:>30}")
    print("   with breakers:")
    print("\n".join(f"     {line}" for line in guarded.timeline()), flush=True)
    summary.lines.append(
        f"outage: catalog-1 got {guarded.calls_while_down} calls while down with breakers "
        f"({guarded.failed_fast} failed fast), {plain.calls_while_down} without; errors "
        f"{guarded.errors} vs {plain.errors} of {len(guarded.records)} requests"
    )


@dataclass(frozen=True)
class LoadReading:
    """How busy the machine is at one moment."""

    load1: float | None
    """The 1-minute load average (``os.getloadavg``); None where there is none."""
    cores: int
    steal: int | None = None
    """CPU time the hypervisor gave other machines so far, in ticks (``/proc/stat``)."""
    total: int | None = None
    """All CPU time so far, in ticks, steal included."""


STEAL_SHARE = 0.01
"""CPU steal above this share of the CPU time during the run makes its figures unreliable."""


def read_load() -> LoadReading:
    """The machine's load now: load average, core count, CPU steal (Linux)."""
    try:
        load1: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        load1 = None
    steal = total = None
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
        if fields[0] == "cpu" and len(fields) > 8:
            # user nice system idle iowait irq softirq steal (guest time is in user)
            ticks = [int(f) for f in fields[1:9]]
            steal, total = ticks[7], sum(ticks)
    except (OSError, ValueError, IndexError):
        pass
    return LoadReading(load1, os.cpu_count() or 1, steal, total)


def busy_reasons(before: LoadReading, after: LoadReading) -> list[str]:
    """Why figures measured between the two readings are not reliable (empty: they are).

    The load average counts the machine's other work only before the run (the
    run's own processes raise it); CPU steal comes from other machines, so it
    counts during the run.
    """
    reasons: list[str] = []
    if before.load1 is not None and before.load1 > before.cores:
        reasons.append(
            f"1-minute load average {before.load1:.1f} on {before.cores} cores before the run"
        )
    steal, total = before.steal, before.total
    if steal is not None and total is not None and after.steal is not None and after.total:
        stolen, elapsed = after.steal - steal, after.total - total
        if elapsed > 0 and stolen > STEAL_SHARE * elapsed:
            reasons.append(f"CPU steal {stolen / elapsed:.1%} during the run")
    return reasons


async def _load(args: argparse.Namespace, summary: _Summary) -> None:
    from cohort.examples.fanout.loadtest import (
        LOAD_STRATEGIES,
        Run,
        format_runs,
        load_test,
        medians,
    )

    summary.part = "the load test"
    transport = "HTTPS" if args.tls else "HTTP"
    print(
        f"The fan-out service under load: {args.requests} requests per run, "
        f"{args.concurrency} in flight;\n"
        f"backends ({transport}), each service and this load generator in separate processes.\n"
        f"{len(LOAD_STRATEGIES)} strategies x {len(_KEY_SETS)} key sets, interleaved:",
        flush=True,
    )

    def show(run: Run) -> None:
        s = run.summary
        print(
            f"  {run.label:<32} keys {run.keys}: {s.requests} requests, "
            f"{s.error_rate:.1%} errors ({run.unplanned_rate:.1%} unplanned), p99 {_ms(s.p99)}, "
            f"{run.throughput:.0f} req/s",
            flush=True,
        )

    before = read_load()
    runs = await load_test(
        requests=args.requests,
        concurrency=args.concurrency,
        seeds=_KEY_SETS,
        tls=args.tls,
        on_run=show if args.progress else None,
    )
    reasons = busy_reasons(before, read_load())
    busy = f"warning: the machine was busy ({'; '.join(reasons)})" if reasons else ""
    if busy:
        print(f"\n{busy}: the figures below are not reliable; rerun on an idle machine")
    print("\nmedians over the key sets:")
    print(format_runs(runs), flush=True)
    if busy:
        print(f"{busy}: the figures above are not reliable; rerun on an idle machine", flush=True)
    figures = medians(runs)
    ours, baseline = figures["cohort, all tactics"], figures["asyncio + httpx (no cohort)"]
    summary.lines.append(
        f"load: cohort with all tactics {ours['rate']:.0f} req/s, {ours['errors']:.1%} errors "
        f"({ours['unplanned']:.1%} unplanned), p99 {_ms(ours['p99'])}; asyncio + httpx "
        f"{baseline['rate']:.0f} req/s, {baseline['errors']:.1%} errors "
        f"({baseline['unplanned']:.1%} unplanned)"
    )


async def _etl(args: argparse.Namespace, summary: _Summary) -> None:
    from cohort.examples.etl.pipeline import run_etl

    summary.part = "the ETL pipeline"
    print(
        f"\n3. ETL: fetch {args.docs} documents from a local server (async, retried), "
        "parse them in 2 worker processes,\n"
        "   store them in SQLite in batches; what fails for good goes to a dead-letter file:",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="cohort-demo-") as tmp:
        result = await run_etl(
            args.docs,
            args.seed,
            Path(tmp) / "etl.sqlite",
            Path(tmp) / "dead.jsonl",
            progress=args.progress,
        )
    print("\n".join(f"   {line}" for line in str(result.report).splitlines()))
    kinds = ", ".join(f"{what} x{n}" for what, n in result.errors_by_kind().items())
    retried = sum(s.retried for s in result.report.stages)
    summary.lines.append(
        f"etl: {args.docs} documents -> {result.rows} SQLite rows, "
        f"{result.dead_letters} dead letters ({kinds or 'none'}), {retried} retries"
    )


async def _demo(args: argparse.Namespace, summary: _Summary) -> None:
    if args.load:
        await _load(args, summary)
        summary.part = "the end"
        return
    await _fanout(args, summary)
    await _outage(args, summary)
    await _etl(args, summary)
    summary.part = "the end"


def _check(args: argparse.Namespace) -> None:
    if args.tls and not args.load:
        raise UsageError("--tls goes with --load")
    if args.requests is None:
        args.requests = 500 if args.load else 60
    if args.concurrency is None:
        args.concurrency = 50 if args.load else 8
    for name in ("requests", "concurrency", "docs"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1")
    if not (math.isfinite(args.drill_seconds) and args.drill_seconds > 0):
        raise UsageError("--drill-seconds must be a number of seconds above 0")
    missing: list[str] = []
    modules = ["starlette", "uvicorn", "httpx", "aiohttp"] + (["trustme"] if args.tls else [])
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UsageError(f"the demo needs {', '.join(missing)}: pip install 'cohort[cli]'")


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo; return its exit status."""
    _check(args)
    summary = _Summary()
    try:
        cohort.run(_demo, args, summary, on_interrupt="raise")
    except KeyboardInterrupt:
        summary.print(interrupted=True)
        print("cohort: demo interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    summary.print(interrupted=False)
    return EXIT_OK
