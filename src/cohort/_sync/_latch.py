"""``Latch``: a one-shot countdown that lets waiters through once it reaches zero."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cohort._observe._events import EVENTS
from cohort._validate import check_count

__all__ = ["Latch", "LatchStatistics"]

_get_running_loop = asyncio.get_running_loop  # one global lookup on hot paths


@dataclass(frozen=True, slots=True)
class LatchStatistics:
    """A point-in-time view of a :class:`Latch`."""

    count: int
    """Count-downs still needed before the latch opens (0: open)."""
    n_waiting: int
    """Tasks blocked in :meth:`Latch.wait`."""


class Latch:
    """A countdown latch: ``wait()`` blocks until ``count_down()`` brought the count to zero.

    One-shot, like Java's ``CountDownLatch`` and C++'s ``std::latch``: once
    open it stays open. Typical use: the children of a task group each count
    down when they reach a point, and a coordinator continues once N did, while
    the children go on running.

    Args:
        count: count-downs needed to open; ``Latch(0)`` is open from the start.

    Raises:
        ValueError: ``count`` is negative.

    Example:
        ```python
        ready = cohort.Latch(3)

        async def worker() -> None:
            await connect()
            ready.count_down()
            await serve()

        async with asyncio.TaskGroup() as tg:
            for _ in range(3):
                tg.create_task(worker())
            await ready.wait()  # all three connected; they keep serving
        ```
    """

    __slots__ = ("_count", "_waiters")

    def __init__(self, count: int) -> None:
        self._count = check_count("Latch count", count, least=0)
        # Insertion-ordered (FIFO wake-up) and O(1) removal for cancelled waiters.
        self._waiters: dict[asyncio.Future[None], None] = {}

    def __repr__(self) -> str:
        state = "open" if self._count == 0 else f"count={self._count}"
        return f"<cohort.Latch {state} n_waiting={len(self._waiters)}>"

    @property
    def count(self) -> int:
        """Count-downs still needed before the latch opens (0 once open)."""
        return self._count

    def count_down(self, n: int = 1) -> None:
        """Lower the count by ``n``; at zero every waiter is released.

        Raises:
            ValueError: ``n < 1``, or the count would go below zero; the count
                is left unchanged.
        """
        n = check_count(f"{self!r}: count_down(n)", n)
        if n > self._count:
            raise ValueError(
                f"{self!r}: count_down({n}) would go below zero; "
                "create the latch with the number of count-downs it should expect"
            )
        self._count -= n
        if self._count == 0:
            waiters, self._waiters = self._waiters, {}
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            if EVENTS.on:
                EVENTS.log.debug("latch opened", latch=repr(self), woken=len(waiters))

    async def wait(self) -> None:
        """Wait until the count reaches zero (returns at once if it already has).

        A cancelled or timed-out waiter leaves nothing behind.
        """
        if self._count == 0:
            return
        fut: asyncio.Future[None] = _get_running_loop().create_future()
        self._waiters[fut] = None
        try:
            await fut
        except asyncio.CancelledError:
            # Released waiters are gone already (the opening swapped the dict).
            self._waiters.pop(fut, None)
            raise

    def statistics(self) -> LatchStatistics:
        """Return the count and how many tasks are waiting."""
        return LatchStatistics(count=self._count, n_waiting=len(self._waiters))
