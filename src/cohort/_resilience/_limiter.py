"""``RateLimiter``: a token bucket on the running loop's clock, waiters in FIFO order."""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable
from types import TracebackType
from typing import NoReturn

from cohort._resilience._loop import LoopClock, resolved
from cohort._validate import check_count, check_seconds

__all__ = ["RateLimiter"]


class RateLimiter:
    """A token bucket: at most ``max_per_second`` on average, bursts of up to ``burst``.

    ``await limiter.acquire()`` (or ``async with limiter:``) takes a token,
    waiting in FIFO order when there is none; a cancelled waiter leaves the
    queue and the tokens it waited for go to the next. Tokens are granted at
    exact times on the loop's clock. The bucket starts full.
    """

    def __init__(self, max_per_second: float, *, burst: int = 1) -> None:
        rate = check_seconds("max_per_second", max_per_second, zero=False, inf=False)
        self._rate = rate
        self._burst = check_count("burst", burst)
        self._full = self._tokens = float(self._burst)  # a float: compared on every entry
        self._stamp = -math.inf  # loop time of the last refill (none yet: the bucket is full)
        self._waiters: collections.deque[tuple[float, asyncio.Future[None]]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._clock = LoopClock()
        # What __aenter__ (in the common case) and __aexit__ return: see resolved.
        self._ready: asyncio.Future[RateLimiter] | None = None
        self._finished: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        waiting = len(self._waiters)
        return f"<cohort.RateLimiter {self._rate:g}/s burst={self._burst} waiting={waiting}>"

    def _refill(self, now: float) -> None:
        tokens = self._tokens + (now - self._stamp) * self._rate
        self._tokens = tokens if tokens < self._full else self._full
        self._stamp = now

    async def acquire(self, tokens: int = 1) -> None:
        """Take ``tokens`` (at most ``burst``), waiting for them if need be."""
        if type(tokens) is not int or tokens != 1:
            tokens = check_count("tokens", tokens)
            if tokens > self._burst:
                raise ValueError(f"cannot take {tokens} tokens at once: burst is {self._burst}")
        self._refill(self._clock.now())
        if not self._waiters and self._tokens >= tokens - 1e-9:
            self._tokens -= tokens
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        entry = (float(tokens), waiter)
        self._waiters.append(entry)
        if len(self._waiters) == 1:
            self._schedule(loop)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Granted as it was cancelled: the tokens go back, and on to the next waiter.
                self._refill(loop.time())
                self._tokens = min(self._burst, self._tokens + tokens)
                self._schedule(loop)
            elif entry in self._waiters:
                first = self._waiters[0] is entry
                self._waiters.remove(entry)
                if first:
                    self._schedule(loop)
            raise

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Set the timer for the head waiter's grant, counting the tokens accrued by now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiters:
            return
        self._refill(loop.time())
        need = self._waiters[0][0] - self._tokens
        self._timer = loop.call_later(max(0.0, need / self._rate), self._grant, loop)

    def _grant(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._refill(loop.time())
        waiters = self._waiters
        while waiters and self._tokens >= waiters[0][0] - 1e-9:
            tokens, waiter = waiters.popleft()
            if not waiter.done():
                self._tokens -= tokens
                waiter.set_result(None)
        self._schedule(loop)

    def __aenter__(self) -> Awaitable[RateLimiter]:
        if not self._waiters:
            # The common case, without a coroutine: _refill and a token, inline (as is
            # self._clock.now(), and a conditional, not min(): this runs once per call).
            clock = self._clock
            loop = clock.loop
            now = clock.now() if loop is None or not loop.is_running() else clock.time()
            tokens = self._tokens + (now - self._stamp) * self._rate
            if tokens > self._full:
                tokens = self._full
            if tokens >= 1.0 - 1e-9:
                self._tokens = tokens - 1.0
                self._stamp = now
                return self._ready or self._first_ready()
        return self._wait()

    def _first_ready(self) -> asyncio.Future[RateLimiter]:
        ready = self._ready = resolved(self)
        return ready

    def _first_exit(self) -> asyncio.Future[None]:
        finished = self._finished = resolved(None)
        return finished

    async def _wait(self) -> RateLimiter:
        await self.acquire()
        return self

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        return self._finished or self._first_exit()

    def __enter__(self) -> NoReturn:
        raise TypeError(f"{self!r} paces async calls: write `async with limiter:`, not `with`")

    def __exit__(self, *exc_info: object) -> None:
        return None
