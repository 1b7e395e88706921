"""An outage drill: a backend goes down under steady traffic and comes back.

Requests arrive at a fixed rate; ``down`` answers ``503`` from ``down_at``
to ``up_at``. With the guards on (``Strategy(guard=True)``) its circuit
breaker opens after a few failures, and from then on the service fails its
calls to that backend fast instead of sending them, the quorum answering
from the other replicas; every ``BREAKER_RECOVERY`` seconds one probe call
goes through, and once the backend is back a probe succeeds and the breaker
closes. ``drill`` returns what happened, with times on the loop's clock, so
the demo prints it and the tests check it on the virtual clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

import cohort
from cohort.examples.fanout.backends import DEFAULT_BACKENDS, Backend, Outage
from cohort.examples.fanout.load import Record, request
from cohort.examples.fanout.service import FanoutService, Strategy
from cohort.examples.fanout.stack import local_service

__all__ = ["DrillResult", "drill"]


@dataclass
class DrillResult:
    """What a drill saw: the requests, the breaker's transitions, the calls the backend got."""

    down: str
    down_at: float
    up_at: float
    records: list[Record] = field(default_factory=list)
    transitions: list[tuple[float, str]] = field(default_factory=list)
    """``(seconds since the start, new state)`` of the down backend's breaker."""
    calls_while_down: int = 0
    """Calls that reached the backend while it was down."""
    failed_fast: int = 0
    """Calls the breaker refused without sending them."""

    @property
    def errors(self) -> int:
        return sum(r.status != 200 for r in self.records)

    def timeline(self) -> list[str]:
        """The drill as lines of text, for the demo."""
        lines = [f"{self.down_at:5.2f} s  {self.down} goes down (answers 503)"]
        events = [(t, f"breaker {state.replace('_', '-')}") for t, state in self.transitions]
        events.append((self.up_at, f"{self.down} is back"))
        lines += [f"{t:5.2f} s  {what}" for t, what in sorted(events)]
        return lines


async def drill(
    seed: int,
    *,
    guard: bool = True,
    down: str = "catalog-1",
    down_at: float = 0.5,
    up_at: float = 2.0,
    until: float = 3.5,
    rate: float = 50.0,
    backends: Sequence[Backend] = DEFAULT_BACKENDS,
) -> DrillResult:
    """Send ``rate`` requests per second for ``until`` seconds while ``down`` fails for a while."""
    outage = Outage()
    result = DrillResult(down, down_at, up_at)
    strategy = Strategy(guard=guard)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with local_service(seed, backends, outage) as (url, service):
        watch(service, down, result, start)
        async with aiohttp.ClientSession() as session, cohort.TaskGroup() as g:

            async def one(key: str) -> None:
                result.records.append(await request(session, url, key, strategy))

            async def switch() -> None:
                await asyncio.sleep(down_at)
                outage.down.add(down)
                await asyncio.sleep(up_at - down_at)
                outage.down.discard(down)

            g.start_soon(switch)
            for n in range(round(until * rate)):
                await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
                g.start_soon(one, f"sku-{n}")
        result.calls_while_down = outage.hits.get(down, 0)
        result.failed_fast = service.breakers[down].statistics().rejected
    return result


def watch(service: FanoutService, name: str, result: DrillResult, start: float) -> None:
    """Record the transitions of ``name``'s breaker, in seconds since ``start``."""

    def changed(breaker: cohort.CircuitBreaker, old: object, new: cohort.CircuitState) -> None:
        result.transitions.append((cohort.current_time() - start, new.value))

    service.breakers[name].on_state_change = changed
