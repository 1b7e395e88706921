"""The fan-out service under load, each part in its own process.

The backends run in one process, each service (cohort's ``FanoutService``
and ``PlainService``, the same endpoint in plain asyncio + httpx) in its
own, and the load generator in the calling process: a service gets a core's
worth of CPU without sharing it with the load. Each strategy runs the same
requests in interleaved rounds over several key sets (``seeds``), and the
report gives each strategy's median over those runs, so that one noisy run
on a busy machine does not decide the comparison.

``python -m cohort.examples.fanout.loadtest serve ROLE`` is how the
processes are started; ``cohort demo --load`` runs the whole test.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import ssl
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

import cohort
from cohort.examples.fanout.backends import DEFAULT_BACKENDS, backend_app
from cohort.examples.fanout.load import Record, Summary, run_load, summarize
from cohort.examples.fanout.oracle import Oracle
from cohort.examples.fanout.service import FanoutService, Strategy
from cohort.examples.servers import serve

__all__ = [
    "LOAD_STRATEGIES",
    "Run",
    "format_runs",
    "interleave",
    "keys_of",
    "make_run",
    "load_test",
    "main",
    "medians",
]

LOAD_STRATEGIES: dict[str, tuple[str, Strategy]] = {
    "asyncio + httpx (no cohort)": ("httpx", Strategy()),
    "asyncio + aiohttp (no cohort)": ("aiohttp", Strategy()),
    "cohort, one replica each": ("cohort", Strategy(quorum=False, hedge=False, mirrors=False)),
    "cohort, all tactics, no Linger": ("cohort", Strategy(linger=False)),
    "cohort, all tactics": ("cohort", Strategy()),
}
"""label -> (which service, strategy). The plain services (``httpx``, ``aiohttp``)
always use every tactic."""

_SEED = 1  # the backends' seed; the key sets differ from run to run instead
_SERVICES = ("cohort", "httpx", "aiohttp")


@dataclass(frozen=True, slots=True)
class Run:
    """One strategy's run over one key set."""

    label: str
    keys: str
    summary: Summary
    seconds: float
    statuses: dict[int, int]
    """How many responses had each HTTP status."""
    unplanned: int
    """Responses whose status is not the one the backends' plan predicts
    (``Oracle``): errors that load caused, not the injected ones."""

    @property
    def unplanned_rate(self) -> float:
        return self.unplanned / self.summary.requests if self.summary.requests else 0.0

    @property
    def throughput(self) -> float:
        """Completed requests per second."""
        return self.summary.requests / self.seconds if self.seconds else 0.0


async def load_test(
    *,
    requests: int = 500,
    concurrency: int = 50,
    seeds: Sequence[int] = (1, 2, 3),
    rounds: int = 1,
    max_seconds: float = 30.0,
    tls: bool = False,
    on_run: Callable[[Run], None] | None = None,
) -> list[Run]:
    """Start the processes, run every strategy ``rounds`` times per key set; every run.

    With ``tls``, the backends serve HTTPS (a throw-away CA made with trustme),
    so every new connection from a service costs a TLS handshake, as between
    services in most deployments.
    """
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="cohort-loadtest-") as tmp:
        tls_dir = _make_certificates(Path(tmp)) if tls else "-"
        async with contextlib.AsyncExitStack() as stack:
            backends = await stack.enter_async_context(_process("backends", "{}", tls_dir))
            services: dict[str, str] = {}
            for role in _SERVICES:
                urls = await stack.enter_async_context(
                    _process(role, json.dumps(backends), tls_dir)
                )
                services[role] = urls["service"]
            connector = aiohttp.TCPConnector(limit=concurrency)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            for url in services.values():  # connections made, code paths warm
                await run_load(session, url, keys_of("warm", 50), Strategy(), concurrency=10)
            for keys, label in interleave(list(LOAD_STRATEGIES), seeds, rounds):
                service, strategy = LOAD_STRATEGIES[label]
                start = cohort.current_time()
                records = await run_load(
                    session,
                    services[service],
                    keys_of(keys, requests),
                    strategy,
                    concurrency=concurrency,
                    max_seconds=max_seconds,
                )
                took = cohort.current_time() - start
                runs.append(make_run(label, keys, strategy, records, took))
                if on_run is not None:
                    on_run(runs[-1])
    return runs


_ORACLE = Oracle(DEFAULT_BACKENDS, _SEED)


def make_run(
    label: str, keys: str, strategy: Strategy, records: Sequence[Record], seconds: float
) -> Run:
    """The run of ``records``, checked against the backends' plan."""
    return Run(
        label,
        keys,
        summarize(label, records),
        seconds,
        statuses=dict(collections.Counter(r.status for r in records)),
        unplanned=sum(r.status != _ORACLE.product(r.key, strategy).status for r in records),
    )


def interleave(
    labels: Sequence[str], seeds: Sequence[int], rounds: int
) -> Iterator[tuple[str, str]]:
    """``(key set, label)`` of each run: every label once per key set and round,
    each label going first in turn, so that a slow spell of the machine does
    not fall on one strategy."""
    for turn in range(rounds * len(seeds)):
        shift = turn % len(labels)
        for label in [*labels[shift:], *labels[:shift]]:
            yield f"s{seeds[turn % len(seeds)]}", label


def keys_of(key_set: str, n: int) -> list[str]:
    """The ``n`` product keys of a key set."""
    return [f"{key_set}-sku-{i}" for i in range(n)]


def _make_certificates(directory: Path) -> str:
    """A throw-away CA and a certificate for 127.0.0.1 in ``directory``; its path."""
    import trustme

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    return str(directory)


def medians(runs: Sequence[Run]) -> dict[str, dict[str, float]]:
    """Per strategy: the median over its runs of each figure, and the spread of req/s."""
    table: dict[str, dict[str, float]] = {}
    for label in dict.fromkeys(r.label for r in runs):
        mine = [r for r in runs if r.label == label]
        rates = [r.throughput for r in mine]
        table[label] = {
            "runs": len(mine),
            "requests": statistics.median(r.summary.requests for r in mine),
            "errors": statistics.median(r.summary.error_rate for r in mine),
            "unplanned": statistics.median(r.unplanned_rate for r in mine),
            "p50": statistics.median(r.summary.p50 for r in mine),
            "p95": statistics.median(r.summary.p95 for r in mine),
            "p99": statistics.median(r.summary.p99 for r in mine),
            "rate": statistics.median(rates),
            "rate_min": min(rates),
            "rate_max": max(rates),
        }
    return table


def format_runs(runs: Sequence[Run]) -> str:
    """The medians as a table: requests completed per run, errors (all; and
    unplanned: not injected by the backends' plan), latencies in ms,
    throughput with its min-max spread."""
    header = (
        f"{'strategy':<32} {'runs':>4} {'requests':>8} {'errors':>7} {'unplanned':>9} "
        f"{'p50':>7} {'p95':>7} {'p99':>7} {'req/s (min-max)':>18}"
    )
    lines = [header]
    for label, m in medians(runs).items():
        ms = [f"{m[q] * 1000:.0f}ms" for q in ("p50", "p95", "p99")]
        spread = f"{m['rate']:.0f} ({m['rate_min']:.0f}-{m['rate_max']:.0f})"
        lines.append(
            f"{label:<32} {m['runs']:>4.0f} {m['requests']:>8.0f} {m['errors']:>7.1%} "
            f"{m['unplanned']:>9.1%} "
            f"{ms[0]:>7} {ms[1]:>7} {ms[2]:>7} "
            f"{spread:>18}"
        )
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def _process(role: str, urls: str, tls_dir: str) -> AsyncIterator[dict[str, str]]:
    """Run ``serve ROLE`` in a child process; yield the URLs it prints.

    The child serves until its standard input closes, so it also stops when
    this process dies. It runs in a session of its own: Ctrl-C here does not
    reach it, leaving the block does. With TLS it runs on the asyncio loop:
    uvloop logs a "Fatal error on SSL protocol" for many connections closed
    mid-write (MagicStack/uvloop#506).
    """
    env = {**os.environ, "COHORT_LOOP": "asyncio"} if tls_dir != "-" else None
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cohort.examples.fanout.loadtest",
        "serve",
        role,
        urls,
        tls_dir,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
        env=env,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {role} process exited before serving")
        yield json.loads(line)
    finally:
        process.stdin.close()
        try:
            with cohort.fail_after(10):
                await asyncio.shield(process.wait())
        except (TimeoutError, asyncio.CancelledError):
            process.kill()
            await asyncio.shield(process.wait())
            raise


async def _serve(role: str, backend_urls: dict[str, str], tls_dir: str) -> None:
    apps: dict[str, Any]
    tls = None if tls_dir == "-" else Path(tls_dir)
    context = None if tls is None else ssl.create_default_context(cafile=tls / "ca.pem")
    if role == "backends":
        apps = {b.name: backend_app(b, _SEED) for b in DEFAULT_BACKENDS}
    elif role == "cohort":
        apps = {"service": FanoutService(backend_urls, tls=context).app}
    else:
        from cohort.examples.fanout.plain import PlainService

        client: Literal["httpx", "aiohttp"] = "httpx" if role == "httpx" else "aiohttp"
        apps = {"service": PlainService(backend_urls, client=client, tls=context).app}
    files = None
    if tls is not None and role == "backends":
        files = (str(tls / "cert.pem"), str(tls / "key.pem"))
    async with serve(apps, tls=files) as urls:
        print(json.dumps(urls), flush=True)
        # Serve until the parent closes our standard input (or dies).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)


def main(argv: Sequence[str]) -> None:
    """``serve ROLE BACKEND_URLS_JSON TLS_DIR_OR_-``: run one process of the load test."""
    if len(argv) != 4 or argv[0] != "serve" or argv[1] not in ("backends", *_SERVICES):
        raise SystemExit(
            "usage: python -m cohort.examples.fanout.loadtest serve ROLE URLS_JSON TLS_DIR|-"
        )
    cohort.run(_serve, argv[1], json.loads(argv[2]), argv[3])


if __name__ == "__main__":
    main(sys.argv[1:])
