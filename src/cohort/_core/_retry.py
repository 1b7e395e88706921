"""``Retry``: retry anywhere, without outliving the deadline in force.

One policy object serves ``cohort.retry(fn, ...)``, ``@Retry(...)`` as a
decorator, ``TaskGroup.spawn(..., retry=)`` and pipeline stages. The loop
that runs the attempts knows about cohort's cancel scopes: before each
retry it reads ``current_deadline()`` and does not start an attempt (or a
backoff sleep) that could not finish in time; the caller gets the last
error, with a note saying why no further attempt was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Never, ParamSpec, TypeVar

from cohort._core import _scopes
from cohort._core._journal import active, journal_var
from cohort._exceptions import BulkheadFullError, CircuitOpenError
from cohort._observe._events import emit
from cohort._validate import (
    check_count,
    check_exception_filter,
    check_flag,
    check_seconds,
    keywords_refused,
)

__all__ = ["AttemptsFailed", "Retry", "RetryState", "own_chain", "retry"]

T = TypeVar("T")
P = ParamSpec("P")

Predicate = Callable[[BaseException], bool]


@dataclass(frozen=True, slots=True)
class RetryState:
    """What ``Retry(on_retry=...)`` hooks receive before each retry."""

    attempt: int  # the attempt that just failed (1 for the first)
    error: BaseException
    delay: float  # seconds of backoff before the next attempt
    elapsed: float  # seconds since the first attempt started, with or without a budget


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a failing call with exponential backoff and full jitter, within the deadline.

    ``attempts`` counts every try, the first included; the delay before retry
    n (n = 1, 2, ...) is ``backoff * 2**(n-1)``, capped by ``max_backoff``,
    and with ``jitter`` a uniform draw in ``[0, delay]``. ``on`` says what is
    retried: exception classes, or a predicate over the exception (retry a
    503 but not a 404). A guard's refusal (:class:`cohort.CircuitOpenError`,
    :class:`cohort.BulkheadFullError`) is not a failure of the backend and is
    retried only when ``on`` names its class (or the predicate accepts it).
    Retry only idempotent calls: an attempt that failed may have done its work.
    ``attempt_timeout`` bounds each attempt; ``budget``
    bounds the whole: no retry starts more than ``budget`` seconds after the
    first attempt did. ``on_retry`` is called with a :class:`RetryState`
    before each backoff.

    Durable: inside a ``cohort.durable`` run each retry decided is journaled
    at the caller's path; resumed after a crash, the loop goes on from the
    attempt after the last one recorded, when its backoff ends.

    Deadline-aware: no retry starts when the backoff plus ``attempt_timeout``
    (if set) would end past ``cohort.current_deadline()`` or the budget; the
    last error is raised at once instead, with a note saying so.

    Example:
        ```python
        async def fetch(url: str) -> bytes:
            return await http_get(url)

        data = await cohort.retry(fetch, url, policy=cohort.Retry(attempts=4, backoff=0.05))
        g.spawn(fetch, url, retry=cohort.Retry(attempts=3))

        @cohort.Retry(on=lambda e: isinstance(e, HTTPError) and e.status >= 500)
        async def fetch_page(url: str) -> bytes:  # every call retried
            return await http_get(url)
        ```
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float | None = None
    jitter: bool = True
    on: tuple[type[BaseException], ...] | type[BaseException] | Predicate = (Exception,)
    attempt_timeout: float | None = None
    budget: float | None = None
    on_retry: Callable[[RetryState], object] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_count("Retry(attempts=)", self.attempts)
        check_seconds("Retry(backoff=)", self.backoff, inf=False)
        check_seconds("Retry(max_backoff=)", self.max_backoff, none=True)
        check_flag("Retry(jitter=)", self.jitter)
        check_seconds("Retry(attempt_timeout=)", self.attempt_timeout, none=True, zero=False)
        check_seconds("Retry(budget=)", self.budget, none=True)
        if self.on_retry is not None and not callable(self.on_retry):
            raise TypeError(f"Retry(on_retry=) takes a callable, got {self.on_retry!r}")
        on = check_exception_filter("Retry(on=)", self.on)
        object.__setattr__(self, "on", on)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the second attempt)."""
        # 2.0 ** 1023 is the largest power a float holds: past it the delay is inf, not an error.
        delay = self.backoff * 2.0 ** min(retry - 1, 1023) if self.backoff else 0.0
        if self.max_backoff is not None:
            delay = min(delay, self.max_backoff)
        if not self.jitter:
            return delay
        import random  # not imported with cohort (it costs as much as a module of cohort's)

        return random.uniform(0, delay)

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth another attempt under this policy."""
        on = self.on
        if isinstance(on, tuple):
            if isinstance(exc, _REFUSALS):  # only if ``on`` names a refusal, not a base class
                return isinstance(exc, tuple(k for k in on if issubclass(k, _REFUSALS)))
            return isinstance(exc, on)
        return bool(on(exc))

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Use the policy as a decorator of an async function."""
        if not callable(fn):
            raise TypeError(f"@cohort.Retry(...) decorates an async function, got {fn!r}")
        policy = self

        @functools.wraps(fn)
        async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            return await attempt_all(policy, lambda: fn(*args, **kwargs), _name(fn))

        return retrying


# A guard refused the call: the backend was not called, so it did not fail.
_REFUSALS = (CircuitOpenError, BulkheadFullError)


class AttemptsFailed(Exception):
    """Internal: a call that failed for good, and after how many attempts."""

    def __init__(self, exc: Exception, attempts: int) -> None:
        super().__init__(exc)
        self.exc = exc
        self.attempts = attempts


async def retry(
    fn: Callable[..., Awaitable[T]], *args: Any, policy: Retry | None = None, **kwargs: Never
) -> T:
    """``await fn(*args)``, retried under ``policy`` (default ``Retry()``).

    Raises the last attempt's exception; keyword arguments go through
    ``functools.partial``.
    """
    if kwargs:
        raise keywords_refused("cohort.retry", fn, args, kwargs, ("policy",))
    if policy is None:
        policy = _DEFAULT
    elif not isinstance(policy, Retry):
        raise TypeError(f"policy must be a cohort.Retry, got {policy!r}")
    if not callable(fn):
        raise TypeError(f"cohort.retry() needs an async callable, got {fn!r}")
    return await attempt_all(policy, lambda: fn(*args), _name(fn))


_DEFAULT = Retry()


async def attempt_all(
    policy: Retry, invoke: Callable[[], Awaitable[T]], what: str, tally: list[int] | None = None
) -> T:
    """Run ``invoke()`` under ``policy``; raise the last error (the original exception).

    ``tally[0]``, if given, counts the attempts made.
    """
    try:
        return await run_attempts(policy, invoke, policy.attempt_timeout, what, tally=tally)
    except AttemptsFailed as failed:
        error = failed.exc
    with own_chain(error):
        raise error


@contextlib.contextmanager
def own_chain(error: BaseException) -> Iterator[None]:
    """Around ``raise error``: keep its own ``__cause__`` and ``__context__``.

    A ``raise`` while another exception is handled would set the error's
    context to that one, which is not where the error came from.
    """
    cause, context, suppress = error.__cause__, error.__context__, error.__suppress_context__
    try:
        yield
    finally:
        error.__cause__ = cause
        error.__context__ = context
        error.__suppress_context__ = suppress


async def run_attempts(
    policy: Retry | None,
    invoke: Callable[[], Awaitable[T]],
    timeout: float | None,
    what: str,
    on_retry: Callable[[Exception, int], None] | None = None,
    tally: list[int] | None = None,
) -> T:
    """``await invoke()`` with a per-attempt ``timeout`` and ``policy``'s retries.

    Raises :class:`AttemptsFailed` once no further attempt is made. A
    ``CancelledError`` that does not come from cancelling this task (it
    awaited something cancelled elsewhere) counts as a failure of the attempt.
    """
    attempt = 1
    # RetryState.elapsed and the budget count from the first attempt's start; the
    # clock is read only where one of them is used.
    started = 0.0
    if policy is not None and (policy.budget is not None or policy.on_retry is not None):
        started = asyncio.get_running_loop().time()
    # In a durable run, each retry decided is journaled (the attempt's error, when the
    # next may start): resumed, the loop goes on from the attempt after the last one
    # recorded, when its backoff ends, rather than with a fresh set of attempts.
    journal = journal_var.get() if active[0] and policy is not None else None
    if journal is not None:
        path, loop = journal.key("retry")
        first = time.time()
        earlier: list[str] = []
    while True:
        if journal is not None:
            past = journal.recorded((path, f"{loop}.{attempt}"))
            if past is not None:  # this attempt failed before the run resumed
                if not earlier:
                    first = past["first"]
                    started -= time.time() - first
                earlier.append(past["error"])
                await asyncio.sleep(max(0.0, past["next"] - time.time()))
                attempt += 1
                continue
        if tally is not None:
            tally[0] = attempt
        error: Exception
        timer: asyncio.Timeout | None = None
        try:
            if timeout is None:
                return await invoke()
            async with asyncio.timeout(timeout) as timer:
                return await invoke()
        except Exception as exc:
            error = exc
            if timer is not None and timer.expired() and isinstance(exc, TimeoutError):
                _name_the_timeout(exc, what, attempt, timeout)
        except asyncio.CancelledError as exc:
            stray = _scopes.stray(exc, what)
            if stray is None:
                raise  # we are being cancelled
            error = stray
        if policy is None or attempt >= policy.attempts or not policy.retries(error):
            if attempt > 1:
                error.add_note(f"cohort.Retry: {what} failed {attempt} attempts; this is the last")
            if journal is not None and earlier:
                error.add_note(
                    f"cohort.Retry: attempts 1-{len(earlier)} failed before the durable run "
                    f"resumed: {'; '.join(earlier)}"
                )
            raise AttemptsFailed(error, attempt) from None
        now = asyncio.get_running_loop().time()
        delay = policy.delay(attempt)
        why = _no_time(policy, now, started, delay, timeout)
        if why:
            error.add_note(f"cohort.Retry: no attempt {attempt + 1} of {what}: {why}")
            emit("info", "retry.gave_up", fn=what, attempts=attempt, reason=why)
            raise AttemptsFailed(error, attempt) from None
        emit("info", "retry.retrying", fn=what, attempt=attempt, delay=delay, error=repr(error))
        if on_retry is not None:
            on_retry(error, attempt)
        if policy.on_retry is not None:
            policy.on_retry(RetryState(attempt, error, delay, now - started))
        if journal is not None:
            wall = time.time()
            decided = {"error": repr(error)[:200], "next": wall + delay, "first": first}
            journal.record((path, f"{loop}.{attempt}"), decided)
        await asyncio.sleep(delay)
        attempt += 1


def _name_the_timeout(exc: TimeoutError, what: str, attempt: int, timeout: float | None) -> None:
    """Say which call and attempt a per-attempt timeout cut, and the limit."""
    if not exc.args:  # asyncio.timeout's own, bare error (a backend's keeps its message)
        exc.args = (f"attempt {attempt} of {what} did not finish within its {timeout:g} s limit",)


def _no_time(policy: Retry, now: float, started: float, delay: float, timeout: float | None) -> str:
    """Why the next attempt should not start, or ``""`` if it may."""
    ends = now + delay + (timeout or 0.0)
    deadline = _scopes.current_deadline()
    if deadline < math.inf and (ends > deadline or now + delay >= deadline):
        left = max(0.0, deadline - now)
        need = f"{delay:.3g} s backoff" + (f" + {timeout:.3g} s attempt" if timeout else "")
        return f"the deadline is {left:.3g} s away, it needs {need}"
    if policy.budget is not None and now + delay > started + policy.budget:
        return f"the retry budget of {policy.budget:.3g} s would be exceeded"
    return ""


def _name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
