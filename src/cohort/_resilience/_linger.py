"""``Linger``: let a cancelled call finish its I/O in the background, within a budget.

Fan-out cancels losers all the time: quorum reads, hedges, first-wins races,
per-call timeouts. Cancelling an HTTP/1.1 request half-way leaves its
connection in an unknown state, so clients close it; under load the service
then spends its time opening connections instead of serving. Letting a
cancelled call run to its end for a little longer, with its result thrown
away, keeps the connection in the pool. ``Linger`` does that with bounds, like
``SO_LINGER`` for a socket: each cancelled call gets ``grace`` seconds more, at
most ``limit`` linger at once (the rest are cancelled at once), and leaving
the ``async with`` block waits for the lingering calls, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from cohort._core._group import detached_context
from cohort._exceptions import ClosedError
from cohort._validate import check_count, check_seconds

__all__ = ["Linger", "LingerStatistics"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LingerStatistics:
    """A point-in-time view of a :class:`Linger` (counts since it was made)."""

    running: int
    """Calls whose caller still waits for them."""
    lingering: int
    """Calls whose caller was cancelled, finishing within their grace."""
    calls: int
    """Calls started."""
    finished: int
    """Cancelled calls that finished (succeeded or failed) within their grace."""
    cut_off: int
    """Cancelled calls still running when their grace ran out (then cancelled)."""
    refused: int
    """Cancelled calls cancelled at once because ``limit`` calls were lingering already."""


class Linger:
    """Runs calls so that cancelling the caller lets the call finish in the background.

    ``await linger.call(fn, *args, **kwargs)`` runs ``fn(*args, **kwargs)`` in a
    task of its own and returns its result (or raises its error). If the
    caller is cancelled first, the caller's cancellation goes on at once, and
    the call keeps running for at most ``grace`` seconds more; its result or
    error is then dropped (counted in :meth:`statistics`). When ``limit``
    calls are lingering already, a newly cancelled call is cancelled at once.

    Open it once for the life of the program part that makes the calls (a web
    app's lifespan); leaving the block waits for the calls still running, so
    at most ``grace`` seconds for the lingering ones. Leaving it because of a
    cancellation, or cancelling the exit while it waits, cancels them all at
    once and waits for them to end (however often the exit is cancelled).

    Use it for calls that are cheap to finish and expensive to abandon: an
    HTTP request whose connection would otherwise be closed, a database query
    whose connection would be reset. Give the remote side a deadline too (an
    ``x-timeout`` header from ``current_deadline()``), so that ``grace`` only
    needs to cover the trip back.

    Args:
        grace: seconds a cancelled call may still run (``> 0``).
        limit: at most this many calls linger at once.

    Example:
        ```python
        async with cohort.Linger(grace=0.25) as linger, httpx.AsyncClient() as client:
            async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
                for mirror in mirrors:
                    g.spawn(linger.call, client.get, mirror)
            # the losers were cancelled; their requests complete in the
            # background and their connections go back to the pool
        ```
    """

    __slots__ = (
        "_calls",
        "_closed",
        "_cut_off",
        "_ending",
        "_finished",
        "_grace",
        "_limit",
        "_lingering",
        "_loop",
        "_refused",
        "_running",
    )

    def __init__(self, *, grace: float, limit: int = 1000) -> None:
        self._grace = check_seconds("grace", grace, zero=False, inf=False)
        self._limit = check_count("limit", limit, least=0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._running: set[asyncio.Task[Any]] = set()
        # Lingering task -> the timer that cancels it when its grace runs out.
        self._lingering: dict[asyncio.Task[Any], asyncio.TimerHandle] = {}
        # Cut off or refused: cancelled, not yet ended (exit waits for them too).
        self._ending: set[asyncio.Task[Any]] = set()
        self._calls = self._finished = self._cut_off = self._refused = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._loop else "new"
        return (
            f"<cohort.Linger {state} grace={self._grace} running={len(self._running)} "
            f"lingering={len(self._lingering)}>"
        )

    @property
    def grace(self) -> float:
        """Seconds a cancelled call may still run."""
        return self._grace

    @property
    def limit(self) -> int:
        """At most this many calls linger at once."""
        return self._limit

    def statistics(self) -> LingerStatistics:
        """The counters now, as a frozen record."""
        return LingerStatistics(
            running=len(self._running),
            lingering=len(self._lingering),
            calls=self._calls,
            finished=self._finished,
            cut_off=self._cut_off,
            refused=self._refused,
        )

    async def __aenter__(self) -> Linger:
        if self._loop is not None:
            raise RuntimeError(f"{self!r} was entered already; make one Linger per block")
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._closed = True
        # Left by a cancellation, or cancelled while waiting: cancel the calls at once,
        # then wait for every one of them to end, however often the exit is cancelled.
        cancelled = exc if isinstance(exc, asyncio.CancelledError) else None
        if cancelled is not None:
            self._cancel_all()
        while pending := self._unfinished():
            try:
                await asyncio.wait(pending)
            except asyncio.CancelledError as again:
                if cancelled is None:
                    cancelled = again
                self._cancel_all()
        if cancelled is not None and cancelled is not exc:
            raise cancelled

    def _cancel_all(self) -> None:
        for task, timer in list(self._lingering.items()):
            timer.cancel()
            self._cut(task)
        for task in self._running:
            task.cancel()

    def _unfinished(self) -> list[asyncio.Task[Any]]:
        return [t for t in (*self._running, *self._lingering, *self._ending) if not t.done()]

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)``; a cancelled caller lets it finish for ``grace``."""
        loop = self._loop
        if loop is None or self._closed:
            what = "closed" if self._closed else "not entered"
            raise ClosedError(f"{self!r} is {what}: call() works inside `async with Linger(...)`")
        if loop is not asyncio.get_running_loop():
            raise RuntimeError(f"{self!r} belongs to another event loop")
        awaitable = fn(*args, **kwargs)
        if type(awaitable) is not types.CoroutineType:
            awaitable = _await(awaitable)
        # Not in the caller's group or under its deadlines: it may outlive them.
        task = loop.create_task(awaitable, context=detached_context())
        self._calls += 1
        self._running.add(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                self._linger(task)
            raise
        finally:
            self._running.discard(task)

    def _linger(self, task: asyncio.Task[Any]) -> None:
        if len(self._lingering) >= self._limit:
            self._refused += 1
            self._end_now(task)
            return
        assert self._loop is not None
        self._lingering[task] = self._loop.call_later(self._grace, self._cut, task)
        task.add_done_callback(self._ended)

    def _cut(self, task: asyncio.Task[Any]) -> None:
        # A task that has just finished is counted by _ended, its done callback.
        if not task.done() and self._lingering.pop(task, None) is not None:
            self._cut_off += 1
            task.remove_done_callback(self._ended)
            self._end_now(task)

    def _end_now(self, task: asyncio.Task[Any]) -> None:
        self._ending.add(task)
        task.add_done_callback(self._gone)
        task.cancel()

    def _gone(self, task: asyncio.Task[Any]) -> None:
        self._ending.discard(task)
        _retrieve(task)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        timer = self._lingering.pop(task, None)
        if timer is not None:
            timer.cancel()
            self._finished += 1
        _retrieve(task)


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _retrieve(task: asyncio.Task[Any]) -> None:
    # The caller has gone: its result or error is dropped on purpose, without
    # asyncio's "exception was never retrieved" warning.
    if not task.cancelled():
        task.exception()
