"""``CircuitBreaker``: stop calling a backend that keeps failing; let it recover; probe.

Shared by every request to its backend; reads the running loop's clock (so
the virtual clock drives it in tests); a call cancelled by its own scope or
group counts neither as a success nor as a failure of the backend.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NoReturn, TypeVar

from cohort._core._group import clock_of, close_coroutines
from cohort._core._journal import Journal, active, journal_var
from cohort._exceptions import CircuitOpenError
from cohort._observe._events import emit
from cohort._resilience._loop import resolved
from cohort._validate import (
    check_callable,
    check_count,
    check_exception_filter,
    check_fraction,
    check_name,
    check_seconds,
)

__all__ = ["BreakerStatistics", "CircuitBreaker", "CircuitState"]

T = TypeVar("T")
Predicate = Callable[[BaseException], bool]


def _now() -> float:
    return asyncio.get_running_loop().time()


def _failure_test(on: object) -> Callable[[BaseException], bool]:
    kinds = check_exception_filter("on=", on)
    if isinstance(kinds, tuple):
        return lambda exc: isinstance(exc, kinds)
    return kinds


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

    In a durable run (``cohort.durable``) each admission is journaled at the
    caller's path: resumed, the same call is rejected or let through as it was
    before the crash, whatever the breaker (rebuilt in memory) says now.

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
        # What __aenter__ (in the common case) and __aexit__ return: see resolved.
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

        The books, for both ways to use the breaker (``call`` runs the path of
        ``async with``): every admitted call that ends counts in the statistics,
        whatever the state then; only calls admitted since the last transition
        move it. ``__aexit__`` inlines the common case: a success of a call
        admitted while closed, in this generation.
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
        if self._recent_failures and len(recent) == self._window and recent[0]:
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
        # The very path of `async with breaker:`, fast path included: its methods are
        # plain ones that return done futures, which a call has no need to await.
        self.__aenter__()
        try:
            result = await fn(*args)
        except BaseException as exc:
            self.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        self.__aexit__(None, None, None)
        return result

    def __aenter__(self) -> Awaitable[CircuitBreaker]:
        if active[0] and (journal := journal_var.get()) is not None:
            self._enter_journaled(journal)
        elif self._plain:
            self._inflight += 1  # the common case: no ticket to keep
        else:
            self._enter()
        return self._ready or self._first_ready()

    def _enter_journaled(self, journal: Journal) -> None:
        """Admit a call in a durable run: as journaled before a crash, else as the
        breaker says now (and journal that). A call let through before the crash
        that the breaker would refuse now enters as one of an older generation:
        counted, moving nothing."""
        key = journal.key("breaker")
        admitted = journal.recorded(key)
        if admitted is None:
            try:
                self._enter()
            except CircuitOpenError:
                journal.record(key, False)
                raise
            journal.record(key, True)
        elif admitted:
            try:
                self._enter()
            except CircuitOpenError:
                self._rejected -= 1
                self._enter(-2)
        else:
            self._rejected += 1
            raise CircuitOpenError(
                f"circuit breaker {self.name!r} rejected this call before the durable run "
                "resumed (journaled): it is rejected again",
                breaker=self.name,
                retry_after=0.0,
            )

    def _enter(self, ticket: int | None = None) -> None:
        """Admit a call that enters other than in the common case, and keep its ticket
        (``ticket``: one given, not asked of the state)."""
        if ticket is None:
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
            # The common case: a ticketless call of a closed breaker succeeded. This is
            # _done(current ticket, None) inlined: a method call would add a third to its cost.
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
        ready = self._ready = resolved(self)
        return ready

    def _first_exit(self) -> asyncio.Future[None]:
        finished = self._finished = resolved(None)
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
