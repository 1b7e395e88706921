"""Helpers shared by the test modules (imported as ``from _util import ...``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until ``predicate()`` holds: ordering by state, not by sleeping."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never became true")
