"""The running loop's clock and the done futures that the guards' ``async with`` returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from cohort._core._group import clock_of

__all__ = ["LoopClock", "resolved"]

T = TypeVar("T")


class LoopClock:
    """The running loop's clock, read without looking the loop up on every reading.

    ``asyncio.get_running_loop()`` makes a ``getpid()`` system call per lookup on
    Python 3.11. A guard serves one loop at a time, so while the loop it found
    last still runs, that is the loop calling; once it has stopped, the next
    reading looks the running loop up again.
    """

    __slots__ = ("loop", "time")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.time: Callable[[], float] = time.monotonic

    def now(self) -> float:
        loop = self.loop
        if loop is None or not loop.is_running():
            self.loop = loop = asyncio.get_running_loop()
            self.time = clock_of(loop)
        return self.time()


def resolved(value: T) -> asyncio.Future[T]:
    """A future done with ``value``: what the guards' ``async with`` awaits.

    No guard waits on leaving its block, so each ``__aexit__`` is a plain method
    that returns one future done with None, made on its first exit: awaiting a
    done future gives its result at once, on any loop, without the coroutine an
    ``async def`` would make and run on every call. The guards enter the same
    way in the common case, with a future done with the guard itself (that
    future and the guard refer to each other, so a dropped one is freed by the
    cycle collector), except a bulkhead of ``Bulkhead.per_key``, dropped as soon
    as nothing refers to it: it makes that future afresh on every entry.
    """
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future
