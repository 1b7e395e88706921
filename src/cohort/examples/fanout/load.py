"""A load generator for the fan-out service, and its latency summary.

``request`` sends one request, timed on the event loop's clock; ``run_load``
sends one per key with at most ``concurrency`` in flight (``cohort.map``);
``summarize`` turns the records into p50/p95/p99 latency and an error rate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

import cohort
from cohort.examples.fanout.service import Strategy

__all__ = ["Record", "Summary", "format_table", "percentile", "request", "run_load", "summarize"]


@dataclass(frozen=True, slots=True)
class Record:
    """One request of a load run."""

    key: str
    status: int
    latency: float
    """Seconds from sending the request to reading the whole response."""
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Summary:
    """Latency percentiles (seconds, failed requests included) and errors of a run."""

    label: str
    requests: int
    errors: int
    p50: float
    p95: float
    p99: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


async def request(session: aiohttp.ClientSession, url: str, key: str, strategy: Strategy) -> Record:
    """GET ``{url}/product/{key}`` with ``strategy``, timed on the event loop's clock."""
    start = cohort.current_time()
    async with session.get(f"{url}/product/{key}", params=strategy.params()) as response:
        body = await response.json()
    return Record(key, response.status, cohort.current_time() - start, body)


async def run_load(
    session: aiohttp.ClientSession,
    url: str,
    keys: Iterable[str],
    strategy: Strategy,
    *,
    concurrency: int,
    max_seconds: float = 60.0,
) -> list[Record]:
    """GET ``{url}/product/{key}`` for each key, ``concurrency`` at a time.

    Stops after ``max_seconds`` (the requests still running are cancelled)
    and returns the records of the requests that completed, in completion order.
    """

    async def get(key: str) -> Record:
        return await request(session, url, key, strategy)

    records: list[Record] = []
    with cohort.move_on_after(max_seconds):
        # ordered=False: with results in input order, one slow request would hold
        # the slots of the finished ones behind it until it is consumed.
        async with cohort.map(get, keys, limit=concurrency, ordered=False) as responses:
            async for record in responses:
                records.append(record)
    return records


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``; NaN if there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(label: str, records: Sequence[Record]) -> Summary:
    latencies = [r.latency for r in records]
    return Summary(
        label=label,
        requests=len(records),
        errors=sum(r.status != 200 for r in records),
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        p99=percentile(latencies, 99),
    )


def format_table(summaries: Iterable[Summary]) -> str:
    lines = [f"{'strategy':<30} {'requests':>8} {'errors':>7} {'p50':>7} {'p95':>7} {'p99':>7}"]
    for s in summaries:
        ms = [f"{v * 1000:.0f}ms" for v in (s.p50, s.p95, s.p99)]
        lines.append(
            f"{s.label:<30} {s.requests:>8} {s.error_rate:>7.1%} {ms[0]:>7} {ms[1]:>7} {ms[2]:>7}"
        )
    return "\n".join(lines)
