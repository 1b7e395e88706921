"""A phased batch job as a cohort.Flow: parallel tasks, a barrier, a merge, the next phase.

Phase 1 loads three sources in parallel; the barrier waits for all of them
(``Gather``). Phase 2 fans out to four regional builds and proceeds as soon
as three succeeded (``Quorum(3)``: a partial-success threshold; the fourth is
cancelled), each build limited to 2 s so that a stuck region cannot hold the
job (a timeout-based proceed). Then a merge, and a publish step. The
simulated work sleeps; ``--seed`` picks which region is slow and which fails.

    python examples/flow_batch.py [--seed S]
"""

from __future__ import annotations

import argparse
import asyncio
import random

import cohort

JOB = cohort.Flow("nightly", inputs=["seed"])


def _load(name: str, seconds: float) -> object:
    async def load(seed: int) -> str:
        await asyncio.sleep(seconds)
        return f"{name} rows"

    return load


for _name, _seconds in (("orders", 0.3), ("customers", 0.2), ("stock", 0.4)):
    JOB.node(name=_name)(_load(_name, _seconds))


@JOB.node
async def snapshot(orders: str, customers: str, stock: str) -> list[str]:
    """The barrier: all three loads, or the job fails."""
    return [orders, customers, stock]


def _region(name: str) -> object:
    async def build(seed: int, snapshot: list[str]) -> str:
        rng = random.Random(f"{seed}/{name}")
        roll = rng.random()
        if roll < 0.1:
            raise RuntimeError(f"{name}: build failed")
        await asyncio.sleep(10.0 if roll > 0.85 else rng.uniform(0.2, 0.8))  # > 0.85: stuck
        return f"{name} report"

    return build


REGIONS = ("eu", "us", "ap", "sa")
for _region_name in REGIONS:
    JOB.node(name=_region_name, timeout=2.0)(_region(_region_name))


@JOB.node(join=cohort.Quorum(3))
async def merged(eu: str | None, us: str | None, ap: str | None, sa: str | None) -> list[str]:
    """Three regions are enough; the rest is cancelled."""
    return [r for r in (eu, us, ap, sa) if r is not None]


@JOB.node
async def publish(merged: list[str]) -> str:
    await asyncio.sleep(0.1)
    return f"published {len(merged)} regional reports"


async def main(seed: int) -> None:
    try:
        result = await JOB.run(seed=seed, timeout=30.0)
    except cohort.FlowError as exc:
        print(f"job failed: {exc}")
        result = exc.result
    else:
        print(result[publish])
    print(f"\n{'node':<10} {'status':<10} {'start':>6} {'end':>6}")
    for name, o in result.outcomes.items():
        times = [
            "" if t is None else f"{t - (result.outcome('orders').started or 0):.2f}"
            for t in (o.started, o.ended)
        ]
        print(f"{name:<10} {o.status.value:<10} {times[0]:>6} {times[1]:>6}")
    print("\n" + JOB.to_mermaid())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=3)
    cohort.run(main, parser.parse_args().seed)
