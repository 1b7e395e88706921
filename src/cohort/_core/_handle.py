"""``Handle``: the public view of one child of a task group.

The group keeps a ``Child`` record per child (``cohort._core._child``) and
makes a handle only where ``spawn`` returns one (or ``g.handles`` lists
them). A handle reads the record and keeps working after the group has
exited; cancelling a child goes through the record (its task, or, while it
is queued, the group's ``on_cancel``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any, Generic, TypeVar

from cohort._core._child import Child, ChildStatus, Outcome
from cohort._core._scopes import cancel_task
from cohort._core._why import handle_cancelled

# ChildStatus and Outcome are shown here too: the handle's module is where
# the layers above look for a child's public types.
__all__ = ["ChildStatus", "Handle", "Outcome"]

T = TypeVar("T")

_CancelledError = asyncio.CancelledError
_SUCCEEDED = ChildStatus.SUCCEEDED
_FAILED = ChildStatus.FAILED
_CANCELLED = ChildStatus.CANCELLED
_TIMED_OUT = ChildStatus.TIMED_OUT


class Handle(Generic[T]):
    """A child of a task group: awaitable, and a view of its state.

    ``await handle`` returns the value or raises what the child raised;
    awaiting never cancels the child. Made by the group (``spawn``): two
    handles of the same child are equal.
    """

    __slots__ = ("_child",)

    def __init__(self, child: Child) -> None:
        self._child = child

    def __repr__(self) -> str:
        return f"<Handle {self.name!r} {self._child.status.value}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Handle):
            # The hash is the record's id, and both records are alive here.
            return hash(self) == hash(other)
        return NotImplemented

    def __hash__(self) -> int:
        return id(self._child)

    @property
    def name(self) -> str:
        """The name given at spawn, else the coroutine's qualified name."""
        return self._child.name

    @property
    def critical(self) -> bool:
        """False for an optional child (``critical=False``)."""
        return self._child.critical

    @property
    def status(self) -> ChildStatus:
        """Where the child is: pending, running, succeeded, failed, cancelled, timed out."""
        return self._child.status

    @property
    def failed(self) -> bool:
        """True if the child raised (a timeout included); not for a cancellation."""
        return self._child.error is not None

    @property
    def error(self) -> BaseException | None:
        """What the child failed or timed out with; ``None`` otherwise (never raises)."""
        return self._child.error

    @property
    def started(self) -> float | None:
        """When the child's task started, on the loop's clock (``None`` while queued)."""
        return self._child.started

    @property
    def ended(self) -> float | None:
        """When the child finished, on the loop's clock (``None`` until then)."""
        return self._child.ended

    @property
    def task(self) -> asyncio.Task[T] | None:
        """The task running the child: ``None`` while queued and once finished."""
        return self._child.task

    @property
    def attempts(self) -> int:
        """Calls made so far: more than 1 only for ``spawn(..., retry=)``."""
        return self._child.attempts

    def done(self) -> bool:
        """True once the child has finished, whichever way."""
        return self._child.done()

    def result(self) -> T:
        """The value; raises the child's error, ``CancelledError`` if it was cancelled."""
        child = self._child
        status = child.status
        if status is _SUCCEEDED:
            return child.value  # type: ignore[no-any-return]
        if status is _CANCELLED:
            raise _CancelledError(f"child {child.name!r} was cancelled")
        if status is _FAILED or status is _TIMED_OUT:
            assert child.error is not None
            raise child.error
        raise asyncio.InvalidStateError(f"{self!r} has not finished; await it first")

    def exception(self) -> BaseException | None:
        """The child's error (``None`` on success); ``CancelledError`` raised if cancelled."""
        child = self._child
        status = child.status
        if status is _SUCCEEDED:
            return None
        if status is _CANCELLED:
            raise _CancelledError(f"child {child.name!r} was cancelled")
        if status is _FAILED or status is _TIMED_OUT:
            return child.error
        raise asyncio.InvalidStateError(f"{self!r} has not finished; await it first")

    def cancel(self) -> bool:
        """Cancel this child (not a failure: it ends CANCELLED). False if already done."""
        child = self._child
        if child.done():
            return False
        if child.task is not None:
            cancel_task(child.task, handle_cancelled(child.name))
        else:
            assert child.on_cancel is not None  # queued
            child.on_cancel(child)
        return True

    def outcome(self) -> Outcome:
        """A frozen record of the child now: status, value or error, times, attempts."""
        return self._child.outcome()

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
        child = self._child
        if not child.done():
            if child.waiter is None:
                child.waiter = asyncio.get_running_loop().create_future()
            # Shielded: a cancelled waiter must not cancel the shared future.
            await asyncio.shield(child.waiter)
