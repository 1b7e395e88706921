"""Helpers shared by the test modules (imported as ``from _util import ...``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psutil


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until ``predicate()`` holds: ordering by state, not by sleeping."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never became true")


def live_children() -> set[int]:
    """Our descendant processes that still run (a forkserver's workers included)."""
    alive = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return alive
