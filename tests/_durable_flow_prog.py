"""A Flow with a map_over and a Quorum fan-in, run durably (by the crash tests) on a
SQLite path or a postgresql:// URL."""

from __future__ import annotations

import asyncio
import sys

import cohort
import cohort.durable as durable
from _ledger import Ledger

flow = cohort.Flow("report", inputs=["n"])


@flow.node
async def days(n: int) -> list[int]:
    return list(range(n))


@flow.node(map_over="days", limit=4)
async def totals(days: int) -> int:
    for _ in range(days * 7 % 3):
        await asyncio.sleep(0)
    return days * days


def _mirror(k: int) -> object:
    async def mirror(totals: list[int]) -> int:
        for _ in range(k):
            await asyncio.sleep(0)
        return sum(totals) + k

    mirror.__name__ = f"mirror{k}"
    return mirror


for _k in range(4):
    flow.node(_mirror(_k), name=f"mirror{_k}")  # type: ignore[call-overload]


@flow.node(join=cohort.Quorum(2))
async def agree(
    mirror0: int | None, mirror1: int | None, mirror2: int | None, mirror3: int | None
) -> list[int]:
    return sorted(v for v in (mirror0, mirror1, mirror2, mirror3) if v is not None)


async def main(db: str, n: int) -> None:
    result = await durable.run_flow(flow, run_id="nightly", store=db, wait=Ledger.of(db).wait, n=n)
    print(result[totals])
    print(result[agree])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30))
