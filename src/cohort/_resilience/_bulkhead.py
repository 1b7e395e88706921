"""``Bulkhead`` and ``KeyedBulkhead``: at most so many calls at once, a bounded queue.

A cancelled waiter leaves the queue and a cancelled call frees its place;
the mean hold time, read on the running loop's clock, lets a waiter with a
deadline be refused at once when its wait would pass the deadline.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import weakref
from collections.abc import Awaitable, Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

from cohort._core import _scopes
from cohort._exceptions import BulkheadFullError
from cohort._observe._events import emit
from cohort._resilience._loop import LoopClock, resolved
from cohort._validate import check_count, check_name

__all__ = ["Bulkhead", "BulkheadStatistics", "KeyedBulkhead"]


@dataclass(frozen=True, slots=True)
class BulkheadStatistics:
    """A snapshot of a bulkhead, from :meth:`Bulkhead.statistics`."""

    active: int
    queued: int
    admitted: int
    rejected: int
    mean_hold: float  # seconds a call holds its place (moving average)


class Bulkhead:
    """At most ``max_concurrent`` calls at once, ``max_queue`` more waiting, the rest rejected.

    A slow dependency then takes only its own places, not every worker of the
    service. ``async with bulkhead:`` waits in FIFO order for a place; it
    raises :class:`cohort.BulkheadFullError` at once when the queue is full,
    or when a deadline is in force (``cohort.current_deadline()``) and the
    expected wait, from the moving average of how long calls hold a place,
    would pass it. A cancelled waiter leaves the queue; a cancelled call frees
    its place. ``Bulkhead.per_key(...)`` gives one per key (per backend host).
    """

    def __init__(self, max_concurrent: int, *, max_queue: int = 0, name: str | None = None) -> None:
        self._max = check_count("max_concurrent", max_concurrent)
        self._max_queue = check_count("max_queue", max_queue, least=0)
        self.name = check_name("name", name) or f"bulkhead-{id(self):x}"
        self._active = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        # Mean hold time by Little's law: place-seconds used / calls done, both
        # halved every 256 calls so that the mean follows recent calls.
        self._busy = 0.0
        self._done = 0
        self._stamp = 0.0
        self._admitted = self._rejected = 0
        self._clock = LoopClock()  # read only with a queue, for the mean hold
        # What __aenter__ (in the common case) and __aexit__ return: see resolved.
        self._ready: asyncio.Future[Bulkhead] | None = None
        self._finished: asyncio.Future[None] | None = None
        self._keyed = False  # made by a KeyedBulkhead: keeps no future that refers to it

    def __repr__(self) -> str:
        return (
            f"<cohort.Bulkhead {self.name!r} {self._active}/{self._max} queued={len(self._queue)}>"
        )

    @staticmethod
    def per_key(max_concurrent: int, *, max_queue: int = 0) -> KeyedBulkhead:
        """Bulkheads made on demand, one per key, each with these limits."""
        return KeyedBulkhead(max_concurrent, max_queue=max_queue)

    def __aenter__(self) -> Awaitable[Bulkhead]:
        if self._active < self._max and not self._queue:
            # The common case, without a coroutine: a place is free and nobody waits.
            if self._max_queue:
                self._account(self._clock.now())
            self._active += 1
            self._admitted += 1
            return self._ready or self._first_ready()
        return self._wait()

    async def _wait(self) -> Bulkhead:
        """Wait in the queue for a place (or be refused one at once)."""
        loop = asyncio.get_running_loop()
        self._wait_or_reject(loop)
        waiter = loop.create_future()
        self._queue.append(waiter)
        try:
            await waiter  # the releaser hands its place over: _active unchanged
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a place as it was cancelled: pass it on
            elif waiter in self._queue:  # (a release may have passed over it already)
                self._queue.remove(waiter)
            raise
        self._admitted += 1
        return self

    def _first_ready(self) -> asyncio.Future[Bulkhead]:
        ready = resolved(self)
        if not self._keyed:  # a keyed one is dropped once nothing refers to it: no cycle
            self._ready = ready
        return ready

    def _account(self, now: float) -> None:
        """Add the place-seconds used since the last change of ``_active``."""
        self._busy += self._active * (now - self._stamp)
        self._stamp = now

    @property
    def _mean_hold(self) -> float:
        return self._busy / self._done if self._done else 0.0

    def _wait_or_reject(self, loop: asyncio.AbstractEventLoop) -> None:
        if len(self._queue) >= self._max_queue:
            self._rejected += 1
            emit("warning", "bulkhead.rejected", bulkhead=self.name, reason="full")
            raise BulkheadFullError(
                f"bulkhead {self.name!r} is full: {self._active} running, "
                f"{len(self._queue)} waiting (max_queue={self._max_queue})"
            )
        deadline = _scopes.current_deadline()
        if deadline < math.inf:
            expected = (len(self._queue) + 1) * self._mean_hold / self._max
            if loop.time() + expected > deadline:
                self._rejected += 1
                emit("warning", "bulkhead.rejected", bulkhead=self.name, reason="deadline")
                raise BulkheadFullError(
                    f"bulkhead {self.name!r}: the expected wait ({expected:.3g} s) would pass "
                    f"the deadline ({max(0.0, deadline - loop.time()):.3g} s away)"
                )

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        if not self._max_queue:  # the common case, inline: no waiters, no estimate to keep
            self._active -= 1
        else:
            self._done += 1
            if self._done >= 256:
                self._done //= 2
                self._busy /= 2
            self._release()
        return self._finished or self._first_exit()

    def _first_exit(self) -> asyncio.Future[None]:
        finished = self._finished = resolved(None)
        return finished

    def _release(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place goes to the next waiter
                return
        if self._max_queue:  # without a queue there is no wait to estimate
            self._account(self._clock.now())
        self._active -= 1

    def __enter__(self) -> NoReturn:
        raise TypeError(f"{self!r} guards async calls: write `async with bulkhead:`, not `with`")

    def __exit__(self, *exc_info: object) -> None:
        return None

    def statistics(self) -> BulkheadStatistics:
        """Places in use, waiters, counters and the mean hold time."""
        return BulkheadStatistics(
            self._active, len(self._queue), self._admitted, self._rejected, self._mean_hold
        )


class KeyedBulkhead:
    """One :class:`Bulkhead` per key, made on first use and dropped once nothing refers to it.

    A bulkhead looked up earlier (``b = bulkheads(host)``, entered later) is
    the one every lookup of its key finds while it lives, so the limits hold
    for every interleaving of lookups, entries and exits.
    """

    def __init__(self, max_concurrent: int, *, max_queue: int = 0) -> None:
        self._max = check_count("max_concurrent", max_concurrent)
        self._max_queue = check_count("max_queue", max_queue, least=0)
        self._by_key: dict[Hashable, weakref.ref[Bulkhead]] = {}

    def __call__(self, key: Hashable) -> Bulkhead:
        """The bulkhead of ``key``: ``async with bulkheads(host): ...``."""
        ref = self._by_key.get(key)
        bulkhead = ref() if ref is not None else None
        if bulkhead is None:
            bulkhead = Bulkhead(self._max, max_queue=self._max_queue, name=f"{key!r}")
            bulkhead._keyed = True
            self._by_key[key] = weakref.ref(bulkhead, functools.partial(self._forget, key))
        return bulkhead

    def _forget(self, key: Hashable, ref: weakref.ref[Bulkhead]) -> None:
        if self._by_key.get(key) is ref:
            del self._by_key[key]

    def __len__(self) -> int:
        """Keys with a bulkhead in use now (held or waited for)."""
        in_use = 0
        for ref in self._by_key.values():
            bulkhead = ref()
            if bulkhead is not None:
                stats = bulkhead.statistics()
                in_use += bool(stats.active or stats.queued)
        return in_use

    async def __aenter__(self) -> NoReturn:
        raise TypeError(
            "Bulkhead.per_key(...) makes one bulkhead per key: call it with the key, "
            "`async with bulkheads(host):`, where `bulkheads = Bulkhead.per_key(...)`"
        )

    async def __aexit__(self, *exc_info: object) -> None:
        return None
