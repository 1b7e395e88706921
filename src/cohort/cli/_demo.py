"""``cohort demo``: a few seconds of cohort, offline, from an installed package.

Two parts: a quorum read fanned out to simulated replicas under a deadline
(the first two answers win, the rest are cancelled, every child's fate is
shown), then a small pipeline over generated orders with retries, a skipped
bad record and live progress. Everything is simulated in-process, so it needs
no network and nothing from ``examples/``.

The fuller demo of issue 7 (the local backends and the HTTP fan-out service
under load, then an ETL pipeline) is for a later session.
"""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

import cohort
from cohort.cli import EXIT_INTERRUPTED, EXIT_OK

__all__ = ["demo_command"]

# Simulated replicas: seconds to answer, or None for one that is down.
REPLICAS: dict[str, float | None] = {
    "eu-1": 0.12,
    "eu-2": None,
    "us-1": 0.30,
    "us-2": 0.08,
    "ap-1": 2.00,
}
ORDERS = 600


async def _read(rng: random.Random, replica: str, key: str) -> str:
    delay = REPLICAS[replica]
    if delay is None:
        await asyncio.sleep(0.01)
        raise ConnectionError(f"{replica} is down")
    await asyncio.sleep(delay * rng.uniform(0.9, 1.1))
    return f"{key}=42 via {replica}"


async def quorum_part(rng: random.Random) -> None:
    print("1. Quorum read: 5 replicas, 2 answers needed, 0.5 s deadline")
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with cohort.TaskGroup(join=cohort.Quorum(2), timeout=0.5, name="quorum") as g:
        for replica in REPLICAS:
            g.spawn(_read, rng, replica, "answer", name=replica)
    took = (loop.time() - start) * 1e3
    print(f"   quorum reached in {took:.0f} ms: {g.results}")
    for o in g.outcomes:
        ms = "" if o.ended is None or o.started is None else f"{(o.ended - o.started) * 1e3:.0f}"
        detail = o.value if o.error is None else f"{type(o.error).__name__}: {o.error}"
        print(f"   {o.name:<6} {o.status.value:<10} {ms:>5} ms  {detail or ''}")


def _orders_pipeline(rng: random.Random) -> cohort.Pipeline[dict[str, Any]]:
    hiccups: set[int] = set()

    @cohort.stage(workers=16, retry=cohort.Retry(attempts=3, backoff=0.01))
    async def fetch(order_id: int) -> dict[str, Any]:
        await asyncio.sleep(rng.uniform(0.02, 0.08))
        if order_id % 19 == 0 and order_id not in hiccups:
            hiccups.add(order_id)
            raise ConnectionError(f"order {order_id}: backend hiccup")  # retried once
        return {"id": order_id, "amount": round(rng.uniform(5, 500), 2)}

    @cohort.stage(on_error="skip")
    async def validate(order: dict[str, Any]) -> dict[str, Any]:
        if order["id"] % 97 == 0:
            raise ValueError(f"order {order['id']}: malformed record")  # skipped, reported
        return order

    @cohort.stage(workers=4)
    async def price(order: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.002)
        return {**order, "total": round(order["amount"] * 1.2, 2)}

    return fetch | validate | price


async def pipeline_part(rng: random.Random) -> None:
    print(
        f"\n2. Pipeline fetch | validate | price over {ORDERS} orders (progress on stderr)",
        flush=True,
    )
    report = await _orders_pipeline(rng).run(range(1, ORDERS + 1), progress=True)
    total = sum(o["total"] for o in report.outputs or [])
    print("\n".join(f"   {line}" for line in str(report).splitlines()))
    print(f"   skipped: {[f'{e.stage}: {e.exception}' for e in report.errors][:3]}")
    print(f"   revenue {total:,.2f} over {report.succeeded} orders")


async def _main() -> None:
    rng = random.Random(7)
    await quorum_part(rng)
    await pipeline_part(rng)
    print("\ndemo done: every child ended exactly once, nothing left running.")


def demo_command() -> int:
    """Run the demo; return its exit status."""
    try:
        cohort.run(_main)
    except KeyboardInterrupt:
        print("cohort: demo interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK
