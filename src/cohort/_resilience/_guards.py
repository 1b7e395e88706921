"""Guards for calls to backends: circuit breaker, rate limiter, bulkhead, hedging budget.

All of them read the running loop's clock (so the virtual clock drives them
in tests), are shared by many concurrent requests, and treat cancellation
as nobody's failure: a call cancelled by its own scope or group frees what
it held and counts neither as a success nor as a failure of the backend.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import functools
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, TypeVar

from cohort._core import _scopes
from cohort._core._group import clock_of, close_coroutines
from cohort._exceptions import BulkheadFullError, CircuitOpenError
from cohort._observe._events import emit
from cohort._validate import (
    check_callable,
    check_count,
    check_exception_filter,
    check_fraction,
    check_name,
    check_seconds,
)

__all__ = [
    "Bulkhead",
    "BulkheadStatistics",
    "CircuitBreaker",
    "CircuitState",
    "BreakerStatistics",
    "HedgeBudget",
    "RateLimiter",
]

T = TypeVar("T")
Predicate = Callable[[BaseException], bool]


def _now() -> float:
    return asyncio.get_running_loop().time()


class _LoopClock:
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


def _resolved(value: T) -> asyncio.Future[T]:
    """A future done with ``value``: what the guards' ``async with`` awaits.

    No guard waits on leaving its block, so each ``__aexit__`` is a plain method
    that returns one future done with None, made on its first exit: awaiting a
    done future gives its result at once, on any loop, without the coroutine an
    ``async def`` would make and run on every call. A breaker and a rate limiter
    enter the same way in the common case, with a future done with the guard
    itself (that future and the guard refer to each other, so a dropped one is
    freed by the cycle collector). A bulkhead keeps an ``async def __aenter__``:
    ``Bulkhead.per_key`` drops an idle one as soon as nothing refers to it.
    """
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _failure_test(on: object) -> Callable[[BaseException], bool]:
    kinds = check_exception_filter("on=", on)
    if isinstance(kinds, tuple):
        return lambda exc: isinstance(exc, kinds)
    return kinds


# -- circuit breaker ------------------------------------------------------------------------


class CircuitState(enum.Enum):
    """Where a :class:`CircuitBreaker` is."""

    CLOSED = "closed"  # calls go through; outcomes are counted
    OPEN = "open"  # calls fail fast until the recovery timeout has passed
    HALF_OPEN = "half_open"  # a few probe calls go through; the rest fail fast


_CLOSED, _OPEN, _HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    """A snapshot of a breaker, from :meth:`CircuitBreaker.statistics`."""

    state: CircuitState
    calls: int  # admitted calls that ended (success or failure)
    successes: int
    failures: int
    rejected: int  # calls that failed fast with CircuitOpenError
    times_opened: int
    window_calls: int  # outcomes in the sliding window now
    window_failures: int
    retry_after: float  # seconds until an open breaker lets a probe through (0 otherwise)


class CircuitBreaker:
    """Stop calling a backend that keeps failing; let it recover; probe; resume.

    Args:
        failures: open when this many of the last ``window`` calls failed
            (``None``: only ``failure_rate`` applies).
        failure_rate: also open when at least ``min_calls`` of the last ``window``
            calls ended and this fraction of them failed (0 < rate <= 1).
        window: how many recent outcomes are counted.
        min_calls: outcomes needed before ``failure_rate`` applies.
        recovery_timeout: seconds an open breaker fails fast before it lets probes
            through (half-open).
        half_open_max: probe calls let through at once while half-open; that many
            successes in a row close the breaker, one failure opens it again.
        on: what counts as a failure: exception classes or a predicate (default:
            any ``Exception``). Other exceptions count as successes (the backend
            answered); a cancellation counts as nothing.
        name: for messages, events and statistics.
        on_state_change: called with ``(breaker, old, new)`` on each transition.

    Use it around a call (``async with breaker:``) or as a wrapper
    (``await breaker.call(fn, *args)``); one breaker is shared by every request
    to its backend. An open breaker raises :class:`cohort.CircuitOpenError`.
    Both ways keep the same books: every admitted call that ends is counted;
    only calls admitted since the last transition move the state.

    With retries, put the retry outside the breaker,
    ``await cohort.retry(breaker.call, fetch, url)``: each attempt is one
    outcome, and a default ``Retry`` does not retry ``CircuitOpenError``, so
    an open breaker ends the retrying at once.
    """

    def __init__(
        self,
        *,
        failures: int | None = 5,
        failure_rate: float | None = None,
        window: int = 20,
        min_calls: int = 10,
        recovery_timeout: float = 30.0,
        half_open_max: int = 1,
        on: type[BaseException] | tuple[type[BaseException], ...] | Predicate = Exception,
        name: str | None = None,
        on_state_change: Callable[[CircuitBreaker, CircuitState, CircuitState], object]
        | None = None,
    ) -> None:
        self._failures = check_count("failures", failures, none=True)
        self._rate = check_fraction("failure_rate", failure_rate, none=True)
        self._window = check_count("window", window)
        self._min_calls = check_count("min_calls", min_calls)
        if failure_rate is None and self._failures is None:
            raise ValueError("a breaker needs failures= or failure_rate= (or both) to open")
        if self._failures is not None and self._failures > self._window:
            raise ValueError(
                f"failures={failures} can never be reached in a window of {window} calls; "
                "raise window= or lower failures="
            )
        if self._rate is not None and self._min_calls > self._window:
            raise ValueError(
                f"min_calls={min_calls} can never be reached in a window of {window} calls, "
                "so failure_rate= would never open the breaker; raise window= or lower min_calls="
            )
        self._recovery = check_seconds("recovery_timeout", recovery_timeout, inf=False)
        self._half_open_max = check_count("half_open_max", half_open_max)
        self._is_failure = _failure_test(on)
        self.name = check_name("name", name) or f"breaker-{id(self):x}"
        self.on_state_change = check_callable("on_state_change", on_state_change, none=True)
        """Called with ``(breaker, old, new)`` on each transition (may be set later)."""
        self._state = _CLOSED
        self._recent: collections.deque[bool] = collections.deque(maxlen=self._window)
        self._recent_failures = 0
        # The clock of the loop it last opened on: state and statistics read it from anywhere.
        self._clock: Callable[[], float] = time.monotonic
        self._opened_at = 0.0
        self._probes = 0  # probe calls in flight (half-open)
        self._probe_successes = 0
        self._generation = 0  # bumped on every transition: outcomes of older calls are ignored
        # A call's ticket: the generation it was admitted in, times 2, plus 1 for a probe.
        # ``async with`` keeps it per task (a task inside the block twice: the outer ones
        # wait in _nested), except in the common case: entered while closed, with no
        # ticket kept and no call of an older generation in flight, it keeps nothing
        # and is counted in _inflight. A transition makes those _stale: until they have
        # all ended, every entry keeps its ticket, so an exit without one is stale if
        # any are (and current otherwise).
        self._entered: dict[asyncio.Task[Any], int] = {}
        self._nested: dict[asyncio.Task[Any], list[int]] = {}
        self._inflight = self._stale = 0
        self._plain = True  # closed, nothing _stale, no ticket kept: the common case
        # What __aenter__ (in the common case) and __aexit__ return: see _resolved.
        self._ready: asyncio.Future[CircuitBreaker] | None = None
        self._finished: asyncio.Future[None] | None = None
        # Ended calls are the successes plus the failures: no third counter to keep.
        self._successes = self._n_failures = self._rejected = self._opened = 0

    def __repr__(self) -> str:
        return f"<cohort.CircuitBreaker {self.name!r} {self.state.value}>"

    @property
    def state(self) -> CircuitState:
        """The state now (an open breaker whose recovery timeout passed reads half-open)."""
        if self._state is _OPEN and self._clock() >= self._opened_at + self._recovery:
            return _HALF_OPEN
        return self._state

    # -- admission and outcomes: one path for both ways to use it ------------------------

    def _admit(self) -> int:
        """Let a call through (returning its ticket) or raise ``CircuitOpenError``."""
        state = self._state
        if state is _CLOSED:
            return self._generation << 1
        if state is _OPEN:
            now = _now()
            if now < self._opened_at + self._recovery:
                self._reject(self._opened_at + self._recovery - now)
            self._move(_HALF_OPEN)
        if self._probes >= self._half_open_max:
            self._reject(0.0)
        self._probes += 1
        return self._generation << 1 | 1

    def _reject(self, retry_after: float) -> None:
        self._rejected += 1
        when = f"; it lets a probe through in {retry_after:.3g} s" if retry_after else ""
        raise CircuitOpenError(
            f"circuit breaker {self.name!r} is {self._state.value}{when}",
            breaker=self.name,
            retry_after=retry_after,
        )

    def _done(self, ticket: int, exc: BaseException | None) -> None:
        """Record how an admitted call ended (``exc`` None: success).

        Every admitted call that ends counts in the statistics, whatever the
        state then; only calls admitted since the last transition move it.
        """
        current = ticket >> 1 == self._generation
        if ticket & 1 and current:
            self._probes -= 1
        if exc is None:
            failed = False
            self._successes += 1
        elif isinstance(exc, asyncio.CancelledError):
            return  # cancelled by its own scope or group: not the backend's doing
        else:
            failed = self._is_failure(exc)
            if failed:
                self._n_failures += 1
            else:
                self._successes += 1
        if not current:
            return  # it began before the last transition: its outcome is old news
        if self._state is _HALF_OPEN:
            if failed:
                self._open()
            else:
                self._probe_successes += 1
                if self._probe_successes >= self._half_open_max:
                    self._move(_CLOSED)
            return
        recent = self._recent
        if len(recent) == self._window and recent[0]:
            self._recent_failures -= 1
        recent.append(failed)
        if failed:
            self._recent_failures += 1
            if (self._failures is not None and self._recent_failures >= self._failures) or (
                self._rate is not None
                and len(recent) >= self._min_calls
                and self._recent_failures >= self._rate * len(recent)
            ):
                self._open()

    def _open(self) -> None:
        self._clock = clock_of(asyncio.get_running_loop())
        self._opened_at = self._clock()
        self._opened += 1
        self._move(_OPEN)

    def _next_generation(self) -> None:
        self._generation += 1
        self._stale += self._inflight
        self._inflight = 0
        self._set_plain()

    def _set_plain(self) -> None:
        """After a change of state, of _stale or of _entered: is it the common case?"""
        self._plain = self._state is _CLOSED and not self._stale and not self._entered

    def _move(self, new: CircuitState) -> None:
        old = self._state
        self._state = new
        self._next_generation()
        self._probes = 0
        self._probe_successes = 0
        if new is _CLOSED:
            self._recent.clear()
            self._recent_failures = 0
        emit(
            "warning" if new is _OPEN else "info",
            "breaker.state",
            breaker=self.name,
            old=old.value,
            new=new.value,
        )
        if self.on_state_change is not None:
            self.on_state_change(self, old, new)

    # -- the two ways to use it ----------------------------------------------------------

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` through the breaker."""
        if not callable(fn):
            close_coroutines([fn])
            raise TypeError(
                f"breaker.call() takes the async function and its arguments, got {fn!r}: "
                "write `await breaker.call(fetch, url)`, not `breaker.call(fetch(url))`"
            )
        ticket = self._admit()
        try:
            result = await fn(*args)
        except BaseException as exc:
            self._done(ticket, exc)
            raise
        self._done(ticket, None)
        return result

    def __aenter__(self) -> Awaitable[CircuitBreaker]:
        if self._plain:
            self._inflight += 1  # the common case: no ticket to keep
        else:
            self._enter()
        return self._ready or self._first_ready()

    def _enter(self) -> None:
        """Admit a call that enters other than in the common case, and keep its ticket."""
        ticket = self._admit()
        task = asyncio.current_task()
        if task is None:
            self._done(ticket, asyncio.CancelledError())  # frees a probe's place
            raise RuntimeError(f"{self!r}: `async with breaker:` works inside a task")
        entered = self._entered
        if task in entered:
            self._nested.setdefault(task, []).append(entered[task])
        entered[task] = ticket
        self._plain = False

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        if exc is None and self._plain:
            # The common case, inline: a ticketless call of a closed breaker succeeded.
            self._inflight -= 1
            self._successes += 1
            recent = self._recent
            if self._recent_failures and len(recent) == self._window and recent[0]:
                self._recent_failures -= 1
            recent.append(False)
        else:
            self._exit(exc)
        return self._finished or self._first_exit()

    def _first_ready(self) -> asyncio.Future[CircuitBreaker]:
        ready = self._ready = _resolved(self)
        return ready

    def _first_exit(self) -> asyncio.Future[None]:
        finished = self._finished = _resolved(None)
        return finished

    def _exit(self, exc: BaseException | None) -> None:
        """The outcome of a call that leaves ``async with`` other than in the common case."""
        if self._entered:
            task = asyncio.current_task()
            ticket = self._entered.pop(task, None) if task is not None else None
            if task is not None and ticket is not None:
                outer = self._nested.get(task) if self._nested else None
                if outer:
                    self._entered[task] = outer.pop()
                    if not outer:
                        del self._nested[task]
                self._set_plain()
                self._done(ticket, exc)
                return
        if self._stale:  # entered without a ticket before the last transition
            self._stale -= 1
            self._set_plain()
            self._done(-2, exc)  # generation -1: counted, moves nothing
            return
        self._inflight -= 1
        self._done(self._generation << 1, exc)

    def __enter__(self) -> NoReturn:
        raise TypeError(f"{self!r} guards async calls: write `async with breaker:`, not `with`")

    def __exit__(self, *exc_info: object) -> None:
        return None

    def reset(self) -> None:
        """Close the breaker now and forget the recent outcomes (and calls in flight)."""
        if self._state is not _CLOSED:
            self._move(_CLOSED)
        else:
            self._next_generation()
        self._recent.clear()
        self._recent_failures = 0

    def statistics(self) -> BreakerStatistics:
        """Counters and the current state (readable from any thread)."""
        state = self.state
        retry_after = 0.0
        if state is _OPEN:
            retry_after = max(0.0, self._opened_at + self._recovery - self._clock())
        return BreakerStatistics(
            state=state,
            calls=self._successes + self._n_failures,
            successes=self._successes,
            failures=self._n_failures,
            rejected=self._rejected,
            times_opened=self._opened,
            window_calls=len(self._recent),
            window_failures=self._recent_failures,
            retry_after=retry_after,
        )


# -- rate limiter -------------------------------------------------------------------------


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
        self._clock = _LoopClock()
        # What __aenter__ (in the common case) and __aexit__ return: see _resolved.
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
        ready = self._ready = _resolved(self)
        return ready

    def _first_exit(self) -> asyncio.Future[None]:
        finished = self._finished = _resolved(None)
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


# -- bulkhead -----------------------------------------------------------------------------


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
        self._clock = _LoopClock()  # read only with a queue, for the mean hold
        self._finished: asyncio.Future[None] | None = None  # what __aexit__ returns: _resolved

    def __repr__(self) -> str:
        return (
            f"<cohort.Bulkhead {self.name!r} {self._active}/{self._max} queued={len(self._queue)}>"
        )

    @staticmethod
    def per_key(max_concurrent: int, *, max_queue: int = 0) -> KeyedBulkhead:
        """Bulkheads made on demand, one per key, each with these limits."""
        return KeyedBulkhead(max_concurrent, max_queue=max_queue)

    async def __aenter__(self) -> Bulkhead:
        if self._active < self._max and not self._queue:
            if self._max_queue:
                self._account(self._clock.now())
            self._active += 1
        else:
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
        finished = self._finished = _resolved(None)
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


# -- hedging budget -----------------------------------------------------------------------


class HedgeBudget:
    """Caps the extra attempts of ``hedge`` to a fraction of the calls.

    Each call deposits ``ratio`` of an attempt; each extra attempt (a hedge
    or a retry after a failure) withdraws one; the balance starts at, and is
    capped by, ``reserve``. Over any stretch, extra attempts are at most
    ``ratio`` x calls + ``reserve``: with ``ratio=0.1``, at most 10 % extra
    load on a backend, so that hedging cannot amplify an overload.
    """

    def __init__(self, ratio: float = 0.1, *, reserve: int = 10) -> None:
        self.ratio = check_fraction("ratio", ratio, zero=True)
        self.reserve = check_count("reserve", reserve, least=0)
        self._balance = float(self.reserve)
        self.calls = self.extra = self.denied = 0

    def __repr__(self) -> str:
        return f"<cohort.HedgeBudget ratio={self.ratio:g} balance={self._balance:.2f}>"

    def deposit(self) -> None:
        """One call: credit ``ratio`` of an extra attempt."""
        self.calls += 1
        self._balance = min(max(float(self.reserve), 1.0), self._balance + self.ratio)

    def withdraw(self) -> bool:
        """Take one extra attempt if the budget allows it."""
        if self._balance >= 1.0 - 1e-9:
            self._balance -= 1.0
            self.extra += 1
            return True
        self.denied += 1
        return False
