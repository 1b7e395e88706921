"""Everything started together: the backends, the fan-out service, and the comparison."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import aiohttp

from cohort.examples.fanout.backends import DEFAULT_BACKENDS, Backend, Outage, backend_app
from cohort.examples.fanout.load import Record, run_load
from cohort.examples.fanout.service import FanoutService, Strategy
from cohort.examples.servers import serve

__all__ = ["STRATEGIES", "compare", "local_service", "local_stack"]

STRATEGIES = {
    "plain (one replica each)": Strategy(quorum=False, hedge=False, mirrors=False),
    "+ quorum reads": Strategy(quorum=True, hedge=False, mirrors=False),
    "+ hedging, mirror race": Strategy(quorum=True, hedge=True, mirrors=True),
}
"""The strategies ``compare`` runs, from the plain approach to all of cohort's tactics."""


@contextlib.asynccontextmanager
async def local_stack(
    seed: int, backends: Sequence[Backend] = DEFAULT_BACKENDS
) -> AsyncIterator[str]:
    """Start the backends, then the fan-out service over them; yield the service's URL."""
    async with local_service(seed, backends) as (url, _):
        yield url


@contextlib.asynccontextmanager
async def local_service(
    seed: int,
    backends: Sequence[Backend] = DEFAULT_BACKENDS,
    outage: Outage | None = None,
    *,
    metrics: bool = False,
) -> AsyncIterator[tuple[str, FanoutService]]:
    """As ``local_stack``, yielding the service object too (its breakers), with the
    backends taken down and brought back through ``outage``."""
    apps = {b.name: backend_app(b, seed, outage) for b in backends}
    async with serve(apps) as backend_urls:
        service = FanoutService(backend_urls, metrics=metrics)
        async with serve({"fanout": service.app}) as urls:
            yield urls["fanout"], service


async def compare(
    url: str, keys: Sequence[str], *, concurrency: int, max_seconds: float = 60.0
) -> dict[str, list[Record]]:
    """Send the same requests once per strategy of ``STRATEGIES``; the records by strategy."""
    runs: dict[str, list[Record]] = {}
    async with aiohttp.ClientSession() as session:
        for label, strategy in STRATEGIES.items():
            runs[label] = await run_load(
                session, url, keys, strategy, concurrency=concurrency, max_seconds=max_seconds
            )
    return runs
