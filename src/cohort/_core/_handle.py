"""A task group's child: ``Handle``, its ``ChildStatus`` and its final ``Outcome``.

A handle owns its child's life: it makes the task (or closes the coroutine if
it never runs) and records how the child ended (``_settle``; ``_on_done``
inlines it for a success, the hot path). Its group makes it (``_queued``,
``_running``, or ``_adopt`` for a ``start_soon`` child that did not succeed,
which ``_raised`` then ends), drives it through ``_start``, ``_settle`` and
``_discard``, and is told of every end through ``TaskGroup._child_ended``
(``_child_succeeded`` for a success); everything else reads the public
properties.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import sys
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from cohort._core import _scopes
from cohort._core._scopes import cancel_task, stray_cancellation

__all__ = ["ChildStatus", "Handle", "Outcome"]

T = TypeVar("T")

_CancelledError = asyncio.CancelledError


if TYPE_CHECKING:

    class _Parent(Protocol):
        """What a handle needs of its group (``TaskGroup``)."""

        @property
        def timed_out(self) -> bool: ...

        def _child_ended(self, handle: Handle[Any], status: ChildStatus, started: bool) -> None: ...

        def _child_succeeded(self, handle: Handle[Any]) -> None: ...

        def _drop_queued(self, handle: Handle[Any]) -> None: ...


class ChildStatus(enum.Enum):
    """Where a child is in its life."""

    PENDING = "pending"  #: waiting for a ``limit`` slot
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed out"


_PENDING = ChildStatus.PENDING
_RUNNING = ChildStatus.RUNNING
_SUCCEEDED = ChildStatus.SUCCEEDED
_FAILED = ChildStatus.FAILED
_CANCELLED = ChildStatus.CANCELLED
_TIMED_OUT = ChildStatus.TIMED_OUT


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one child ended (``g.outcomes``, in spawn order)."""

    name: str
    status: ChildStatus
    value: Any
    error: BaseException | None
    critical: bool
    started: float | None
    ended: float | None
    attempts: int = 1  # calls made, with spawn(retry=)


class Handle(Generic[T]):
    """A child of a task group: awaitable, and a view of its state.

    ``await handle`` returns the value or raises what the child raised;
    awaiting never cancels the child.
    """

    __slots__ = (
        "_context",  # set only by _queued: the contextvars.Context to run in, or None
        "_coro",
        "_ended",
        "_error",
        "_group",
        "_loop",
        "_name",
        "_now",
        "_started",
        "_status",
        "_tally",  # set only by spawn(retry=): [attempts so far]
        "_task",
        "_timed_out",
        "_timeout",
        "_value",
        "_waiter",
        "critical",
    )

    # Made by its group through ``_queued`` or ``_running`` (no ``__init__``:
    # calling a class whose ``__init__`` is written in Python costs a spawn
    # more than the constructors' plain attribute stores).
    _group: _Parent | None
    _loop: asyncio.AbstractEventLoop
    _now: Callable[[], float]
    _coro: Coroutine[Any, Any, T]
    _context: contextvars.Context | None  # set only by _queued
    _name: str | None
    _timeout: float | None
    _timed_out: bool  # set only where there is a timeout
    _tally: list[int]  # set only by spawn(retry=)
    critical: bool
    _task: asyncio.Task[T] | None
    _status: ChildStatus
    _value: T | None
    _error: BaseException | None
    _started: float | None
    _ended: float | None
    _waiter: asyncio.Future[None] | None

    @classmethod
    def _queued(
        cls,
        group: _Parent,
        loop: asyncio.AbstractEventLoop,
        now: Callable[[], float],
        coro: Coroutine[Any, Any, T],
        name: str | None,
        timeout: float | None,
        critical: bool,
        context: contextvars.Context | None,
    ) -> Handle[T]:
        """A child whose task ``_start`` makes later (it has a timeout, or waits for a slot)."""
        self = cls()
        self._group = group
        self._loop = loop
        self._now = now
        self._coro = coro
        self._context = context
        self._name = name
        self._timeout = timeout
        if timeout is not None:
            self._timed_out = False
        self.critical = critical
        self._task = None
        self._status = _PENDING
        self._value = self._error = self._started = self._ended = self._waiter = None
        return self

    @classmethod
    def _running(
        cls,
        group: _Parent,
        loop: asyncio.AbstractEventLoop,
        now: Callable[[], float],
        coro: Coroutine[Any, Any, T],
        name: str | None,
        critical: bool,
        task: asyncio.Task[T],
    ) -> Handle[T]:
        """A child whose task the group has just made (no timeout, a free slot)."""
        # _group and _task are dropped when the child finishes: a finished handle
        # refers to neither, so a group and its children are freed by reference
        # counting when the last reference goes, not left for the cycle collector.
        self = cls()
        self._group = group
        self._loop = loop
        self._now = now
        self._coro = coro
        self._name = name
        self._timeout = None
        self.critical = critical
        self._task = task
        self._status = _RUNNING
        self._value = self._error = self._ended = self._waiter = None
        self._started = now()
        task.add_done_callback(self._on_done)
        return self

    @classmethod
    def _adopt(
        cls,
        group: _Parent,
        loop: asyncio.AbstractEventLoop,
        now: Callable[[], float],
        task: asyncio.Task[T],
        name: str | None,
        critical: bool,
        started: float,
    ) -> Handle[T]:
        """A handle for a ``start_soon`` child whose task has just ended; the group
        calls ``_on_done`` or ``_raised`` next, so that the child ends as a spawned one does."""
        self = cls()
        self._group = group
        self._loop = loop
        self._now = now
        self._coro = task.get_coro()  # type: ignore[assignment]  # a task made from a coroutine
        self._name = name
        self._timeout = None
        self.critical = critical
        self._task = task
        self._status = _RUNNING
        self._value = self._error = self._ended = self._waiter = None
        self._started = started
        return self

    def __repr__(self) -> str:
        return f"<Handle {self.name!r} {self._status.value}>"

    @property
    def name(self) -> str:
        """The name given at spawn, else the coroutine's qualified name."""
        if self._name is None:
            self._name = _coro_name(self._coro)
        return self._name

    @property
    def status(self) -> ChildStatus:
        """Where the child is: pending, running, succeeded, failed, cancelled, timed out."""
        return self._status

    @property
    def failed(self) -> bool:
        """True if the child raised (a timeout included); not for a cancellation."""
        return self._error is not None

    @property
    def error(self) -> BaseException | None:
        """What the child failed or timed out with; ``None`` otherwise (never raises)."""
        return self._error

    @property
    def started(self) -> float | None:
        """When the child's task started, on the loop's clock (``None`` while queued)."""
        return self._started

    @property
    def ended(self) -> float | None:
        """When the child finished, on the loop's clock (``None`` until then)."""
        return self._ended

    @property
    def task(self) -> asyncio.Task[T] | None:
        """The task running the child: ``None`` while queued and once finished."""
        return self._task

    def done(self) -> bool:
        """True once the child has finished, whichever way."""
        return self._status not in (_PENDING, _RUNNING)

    def result(self) -> T:
        """The value; raises the child's error, ``CancelledError`` if it was cancelled."""
        status = self._status
        if status is _SUCCEEDED:
            return self._value  # type: ignore[return-value]
        if status is _CANCELLED:
            raise _CancelledError(f"child {self.name!r} was cancelled")
        if status in (_FAILED, _TIMED_OUT):
            assert self._error is not None
            raise self._error
        raise asyncio.InvalidStateError(f"{self!r} has not finished; await it first")

    def exception(self) -> BaseException | None:
        """The child's error (``None`` on success); ``CancelledError`` raised if cancelled."""
        status = self._status
        if status is _SUCCEEDED:
            return None
        if status is _CANCELLED:
            raise _CancelledError(f"child {self.name!r} was cancelled")
        if status in (_FAILED, _TIMED_OUT):
            return self._error
        raise asyncio.InvalidStateError(f"{self!r} has not finished; await it first")

    def cancel(self) -> bool:
        """Cancel this child (not a failure: it ends CANCELLED). False if already done."""
        if self.done():
            return False
        if self._task is None:
            assert self._group is not None  # unfinished
            self._group._drop_queued(self)
        else:
            cancel_task(self._task)
        return True

    def outcome(self) -> Outcome:
        """A frozen record of the child now: status, value or error, times, attempts."""
        return Outcome(
            self.name,
            self._status,
            self._value,
            self._error,
            self.critical,
            self._started,
            self._ended,
            self.attempts,
        )

    @property
    def attempts(self) -> int:
        """Calls made so far: more than 1 only for ``spawn(..., retry=)``."""
        try:
            return self._tally[0]
        except AttributeError:  # spawned without retry: the slot is never set
            return 1

    def __await__(self) -> Generator[Any, None, T]:
        yield from self._finished().__await__()
        return self.result()

    async def wait(self) -> Outcome:
        """Wait for the child to finish and return its outcome; never raises for it.

        Useful for optional children and graceful shutdowns, where a failure or
        a cancellation of the child is an answer, not an error of the waiter.
        """
        await self._finished()
        return self.outcome()

    async def _finished(self) -> None:
        if not self.done():
            if self._waiter is None:
                self._waiter = self._loop.create_future()
            # Shielded: a cancelled waiter must not cancel the shared future.
            await asyncio.shield(self._waiter)

    # -- driven by the group ---------------------------------------------------------

    def _start(self) -> None:
        """Make the child's task; raises (closing the coroutine) if none can be made."""
        coro = self._coro
        if self._timeout is not None:
            coro = _run_with_timeout(coro, self._timeout, self)
        # Dropped: the context may hold the group (no cycle left behind).
        context, self._context = self._context, None
        try:
            task = self._loop.create_task(coro, name=self._name, context=context)
        except BaseException:
            coro.close()
            self._coro.close()
            raise
        self._status = _RUNNING
        self._started = self._now()
        self._task = task
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[T]) -> None:
        """The child's task ended: how, then tell the group."""
        try:
            value = task.result()
        except BaseException as exc:
            _pop_caller_frame(exc)
            self._raised(task, exc)
            return
        # _settle(_SUCCEEDED, value, None), inlined: every successful child comes here.
        group = self._group
        assert group is not None  # set until settled
        self._status = _SUCCEEDED
        self._value = value
        self._group = self._task = None
        self._ended = self._now()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        group._child_succeeded(self)

    def _raised(self, task: asyncio.Task[T], exc: BaseException) -> None:
        """The child's task ended with ``exc`` (``task.result()`` raised it, which a task
        does with its traceback once only): how, then tell the group."""
        group = self._group
        assert group is not None  # set until settled
        self._discard()
        if task.cancelled() and task.cancelling():
            status = _TIMED_OUT if group.timed_out else _CANCELLED
            self._settle(status, None, None)
        elif task.cancelled():
            status = self._settle(_FAILED, None, stray_cancellation(f"child {self.name!r}", exc))
        else:
            status = self._settle(_FAILED, None, exc)
        group._child_ended(self, status, True)

    def _discard(self) -> None:
        """The child will never run (or its task ended): close its coroutine.

        A task cancelled before its first step never ran the coroutine (it may
        sit inside the timeout wrapper); closed, Python does not warn that it
        was never awaited.
        """
        self._coro.close()
        self._context = None

    def _settle(self, status: ChildStatus, value: Any, error: BaseException | None) -> ChildStatus:
        """Record how the child ended and wake whoever awaits it; return the status.

        A failure with the ``TimeoutError`` of the child's own ``timeout`` is
        TIMED_OUT; so is a child cancelled by its group's timeout (no error).
        """
        if status is _FAILED and self._timeout is not None and self._timed_out:
            status = _TIMED_OUT
        self._status = status
        self._value = value
        self._error = error
        self._group = self._task = None
        self._ended = self._now()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return status


async def _run_with_timeout(coro: Coroutine[Any, Any, T], timeout: float, handle: Handle[T]) -> T:
    with _scopes.move_on_after(timeout):
        return await coro
    handle._timed_out = True
    raise TimeoutError(f"child {handle.name!r} timed out after {timeout} s")


def _coro_name(coro: object) -> str:
    """A child's name when none was given: its coroutine's qualified name."""
    return getattr(coro, "__qualname__", None) or "child"


def _pop_caller_frame(exc: BaseException) -> None:
    """Take the caller's frame off ``exc``'s traceback, where re-raising put it.

    ``task.result()`` re-raises a child's error in ``Handle._on_done``; left on
    the traceback, that frame would show cohort's internals to the user and
    keep the handle and its group alive in a reference cycle.
    """
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame is sys._getframe(1):
        exc.__traceback__ = tb.tb_next
