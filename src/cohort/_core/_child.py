"""A task group's child: its ``Handle`` (the group's record of it), ``ChildStatus``, ``Outcome``.

A ``Handle`` is one slotted object per child, owned by its group: the group
writes it (at spawn, when its task starts, when it ends), while the caller
(``spawn`` returns it) and the join policies (as a ``ChildView``) only read
it. ``Child`` is its name in the group's code. Its fields are plain
attributes: there is no protocol between the group and the handle beyond
this record.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from cohort._core import _scopes
from cohort._core._scopes import cancel_task
from cohort._observe._reasons import CancelReason

__all__ = [
    "Child",
    "ChildStatus",
    "Handle",
    "Outcome",
    "coro_name",
    "handle_cancelled",
    "pop_caller_frame",
    "record_of",
    "run_with_timeout",
]

T = TypeVar("T")


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
_CancelledError = asyncio.CancelledError


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
    #: why cohort cancelled it (or timed it out); None otherwise
    cancel_reason: CancelReason | None = None


class Handle(Generic[T]):
    """A child of a task group: awaitable, and a view of its state.

    ``await handle`` returns the value or raises what the child raised;
    awaiting never cancels the child. Made by the group (``spawn``), as its
    record of the child: ``g.handles`` lists the same objects.
    """

    __slots__ = (
        "coro",  # the child's own coroutine (closed if it never runs, named from)
        "critical",  # False for an optional child (critical=False)
        "ended",  # on the loop's clock; None until the child ends
        "error",  # what it failed or timed out with; None otherwise
        "label",  # the name given at spawn, or None
        "on_cancel",  # while queued: the group's way to drop it; None otherwise
        "reason",  # why cohort cancelled it (a CancelReason); unset unless cancelled
        "seq",  # its place in spawn order
        "shown",  # in handles/outcomes: spawned, or a start_soon child that did not succeed
        "started",  # on the loop's clock; None while queued
        "status",  # where the child is: pending, running, succeeded, failed, ...
        "tally",  # spawn(retry=): [attempts so far]; None otherwise
        "task",  # the task running the child: None while queued and once finished
        "value",  # once succeeded; while running, the TimeoutError of its own timeout
        "waiter",  # a future set when the child ends, made by the first awaiter
    )

    # Made by the group (Handle() and plain stores: no __init__ call on the spawn
    # path); every slot but reason (set only for a child cohort cancelled, read
    # with getattr) is set before the record is shared.
    coro: Coroutine[Any, Any, Any]
    critical: bool
    ended: float | None
    error: BaseException | None
    label: str | None
    on_cancel: Callable[[Child], None] | None
    reason: CancelReason | None
    seq: int
    shown: bool
    started: float | None
    status: ChildStatus
    tally: list[int] | None
    task: asyncio.Task[T] | None
    value: Any
    waiter: asyncio.Future[None] | None

    def __repr__(self) -> str:
        return f"<Handle {self.name!r} {self.status.value}>"

    @property
    def name(self) -> str:
        """The name given at spawn, else the coroutine's qualified name."""
        if self.label is None:
            return coro_name(self.coro)
        return self.label

    @property
    def failed(self) -> bool:
        """True if the child raised (a timeout included); not for a cancellation."""
        return self.error is not None

    @property
    def attempts(self) -> int:
        """Calls made so far: more than 1 only for ``spawn(..., retry=)``."""
        return 1 if self.tally is None else self.tally[0]

    def done(self) -> bool:
        """True once the child has finished, whichever way."""
        return self.status is not _PENDING and self.status is not _RUNNING

    def result(self) -> T:
        """The value; raises the child's error, ``CancelledError`` if it was cancelled."""
        status = self.status
        if status is _SUCCEEDED:
            return self.value  # type: ignore[no-any-return]
        if status is _CANCELLED:
            raise _CancelledError(f"child {self.name!r} was cancelled")
        if status is _FAILED or status is _TIMED_OUT:
            assert self.error is not None
            raise self.error
        raise asyncio.InvalidStateError(f"{self!r} has not finished; await it first")

    def exception(self) -> BaseException | None:
        """The child's error (``None`` on success); ``CancelledError`` raised if cancelled."""
        status = self.status
        if status is _SUCCEEDED:
            return None
        if status is _CANCELLED:
            raise _CancelledError(f"child {self.name!r} was cancelled")
        if status is _FAILED or status is _TIMED_OUT:
            return self.error
        raise asyncio.InvalidStateError(f"{self!r} has not finished; await it first")

    def cancel(self) -> bool:
        """Cancel this child (not a failure: it ends CANCELLED). False if already done."""
        if self.done():
            return False
        if self.task is not None:
            cancel_task(self.task, handle_cancelled(self.name))
        else:
            assert self.on_cancel is not None  # queued
            self.on_cancel(self)
        return True

    def outcome(self) -> Outcome:
        """A frozen record of the child now: status, value or error, times, attempts."""
        return Outcome(
            self.name,
            self.status,
            self.value,
            self.error,
            self.critical,
            self.started,
            self.ended,
            self.attempts,
            getattr(self, "reason", None),
        )

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
            if self.waiter is None:
                self.waiter = asyncio.get_running_loop().create_future()
            # Shielded: a cancelled waiter must not cancel the shared future.
            await asyncio.shield(self.waiter)


# The group's record of a child is its handle: Child in the group's code.
if TYPE_CHECKING:
    Child: TypeAlias = Handle[Any]
else:
    Child = Handle


def handle_cancelled(child: str) -> CancelReason:
    return CancelReason("handle cancelled", f"child {child!r} was cancelled by its handle",
                        child=child)  # fmt: skip


async def run_with_timeout(coro: Coroutine[Any, Any, T], timeout: float, child: Child) -> T:
    """A child with a ``timeout`` of its own: the clock starts when its task does.

    On expiry the ``TimeoutError`` is kept in the record's ``value`` before it
    is raised, so that the group's completion path tells it from an error of
    the child's own (the group clears it when it records the end).
    """
    with _scopes.move_on_after(timeout):
        return await coro
    error = child.value = TimeoutError(f"child {child.name!r} timed out after {timeout} s")
    raise error


def record_of(task: asyncio.Task[Any], seq: int, started: float) -> Child:
    """The record of a plain ``start_soon`` child, which its group keeps without one
    while it runs (its task keyed to its place in spawn order and its start): made
    when a reader needs it (``task_tree()``) or the child ends without succeeding."""
    child: Child = Handle()
    child.seq = seq
    child.coro = task.get_coro()  # type: ignore[assignment]  # a coroutine: made so
    child.label = child.tally = child.value = child.error = child.ended = None
    child.waiter = child.on_cancel = None
    child.critical = True
    child.shown = False
    child.status = _RUNNING
    child.task = task
    child.started = started
    return child


def coro_name(coro: object) -> str:
    """A child's name when none was given: its coroutine's qualified name."""
    return getattr(coro, "__qualname__", None) or "child"


def pop_caller_frame(exc: BaseException) -> None:
    """Take the caller's frame off ``exc``'s traceback, where re-raising put it.

    ``task.result()`` re-raises a child's error in the group's done callback;
    left on the traceback, that frame would show cohort's internals to the user
    and keep the group alive in a reference cycle.
    """
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame is sys._getframe(1):
        exc.__traceback__ = tb.tb_next
