"""Simulated backends: real HTTP servers with configurable latency and failures.

Each backend answers ``GET /items/{key}``. How it behaves for a key (how long
it takes, whether it fails) is drawn from a random generator seeded with
``(seed, backend name, key)``: the same seed gives the same behaviour, in
whatever order requests arrive, so runs can be compared request by request
and tests can predict every answer.

A caller may send its remaining time in an ``x-timeout`` header (seconds);
the backend stops working shortly after that, as a real service that honours
deadline propagation would, instead of finishing work nobody waits for.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import cohort

__all__ = [
    "CATALOG",
    "DEFAULT_BACKENDS",
    "GRACE",
    "MIRRORS",
    "PRICING",
    "REVIEWS",
    "Backend",
    "Outage",
    "Plan",
    "backend_app",
    "plan",
]

GRACE = 0.05
"""Seconds a backend keeps working past its caller's deadline before giving up."""


@dataclass(frozen=True, slots=True)
class Backend:
    """A simulated backend: how fast it usually is, how often it is slow or fails."""

    name: str
    latency: float
    """Typical service time in seconds (each key gets 0.7x to 1.3x of it)."""
    slow_rate: float = 0.0
    """Share of keys served on a slow path."""
    slow_latency: float = 0.0
    """Service time on the slow path, seconds (0.8x to 1.2x of it)."""
    failure_rate: float = 0.0
    """Share of keys answered with ``503 Service Unavailable`` (after the service time)."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What one backend does for one key."""

    delay: float
    fails: bool


def plan(backend: Backend, key: str, seed: int) -> Plan:
    """What ``backend`` does for ``key``: always the same for one seed."""
    rng = random.Random(f"{seed}/{backend.name}/{key}")
    delay = backend.latency * rng.uniform(0.7, 1.3)
    if rng.random() < backend.slow_rate:
        delay = backend.slow_latency * rng.uniform(0.8, 1.2)
    return Plan(delay=delay, fails=rng.random() < backend.failure_rate)


CATALOG = ("catalog-1", "catalog-2", "catalog-3")
PRICING = ("pricing-1", "pricing-2", "pricing-3")
MIRRORS = ("cdn-eu", "cdn-us", "cdn-ap")
REVIEWS = "reviews"

DEFAULT_BACKENDS = (
    *(
        Backend(name, 0.030, slow_rate=0.05, slow_latency=0.35, failure_rate=0.08)
        for name in CATALOG
    ),
    *(
        Backend(name, 0.020, slow_rate=0.10, slow_latency=0.7, failure_rate=0.02)
        for name in PRICING
    ),
    Backend("cdn-eu", 0.015, slow_rate=0.10, slow_latency=0.15, failure_rate=0.05),
    Backend("cdn-us", 0.040, failure_rate=0.05),
    Backend("cdn-ap", 0.080, failure_rate=0.05),
    Backend(REVIEWS, 0.035, failure_rate=0.20),
)
"""Three flaky catalog replicas, three pricing replicas with a slow tail, three
CDN mirrors (the nearest one sometimes slow), and a flaky review service."""


def _checksum(key: str) -> int:
    return zlib.crc32(key.encode())


# What each kind of backend returns, keyed by the start of its name.
_PAYLOADS: dict[str, Callable[[str, str], dict[str, Any]]] = {
    "catalog": lambda name, key: {"title": f"Product {key}"},
    "pricing": lambda name, key: {"price": round(5 + _checksum(key) % 9000 / 100, 2)},
    "cdn": lambda name, key: {"image": f"https://{name}.example/img/{key}.jpg"},
    "reviews": lambda name, key: {"stars": 1 + _checksum(key) % 5},
}


class Outage:
    """Backends to take down and bring back while they run: a down backend answers
    ``503`` at once, and counts the calls it got (the outage drill uses it)."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.hits: dict[str, int] = {}


def backend_app(backend: Backend, seed: int, outage: Outage | None = None) -> Starlette:
    """A Starlette app that serves ``GET /items/{key}`` as ``backend`` would."""
    payload = _PAYLOADS[backend.name.split("-")[0]]

    async def item(request: Request) -> JSONResponse:
        key = request.path_params["key"]
        if outage is not None and backend.name in outage.down:
            outage.hits[backend.name] = outage.hits.get(backend.name, 0) + 1
            return JSONResponse({"backend": backend.name, "error": "down"}, status_code=503)
        behaviour = plan(backend, key, seed)
        budget = float(request.headers.get("x-timeout", "inf"))
        with cohort.move_on_after(budget + GRACE) as work:
            await asyncio.sleep(behaviour.delay)  # the simulated work
        if work.cancelled_caught:
            return JSONResponse({"backend": backend.name, "error": "gave up"}, status_code=504)
        if behaviour.fails:
            return JSONResponse({"backend": backend.name, "error": "injected"}, status_code=503)
        return JSONResponse({"backend": backend.name, "key": key, **payload(backend.name, key)})

    return Starlette(routes=[Route("/items/{key}", item)])
