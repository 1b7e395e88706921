"""A task group's child as its group records it: ``Child``, ``ChildStatus``, ``Outcome``.

A ``Child`` is one slotted record per child, owned by its group: the group
writes it (at spawn, when its task starts, when it ends), while a ``Handle``
(the public view that ``spawn`` returns) and the join policies only read it.
Its fields are plain attributes: there is no protocol between the group and
the handle beyond this record.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from cohort._core import _scopes
from cohort._observe._reasons import CancelReason

__all__ = [
    "Child",
    "ChildStatus",
    "Outcome",
    "coro_name",
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


class Child:
    """One child of a task group: the record its group keeps (a ``ChildView``).

    Made by the group (``Child.__new__`` and plain stores: no ``__init__`` call
    on the spawn path); every slot but ``reason`` (set only for a child cohort
    cancelled, read with ``getattr``) is set before the record is shared.
    """

    __slots__ = (
        "coro",  # the child's own coroutine (closed if it never runs, named from)
        "critical",
        "ended",  # on the loop's clock; None until the child ends
        "error",  # what it failed or timed out with; None otherwise
        "label",  # the name given at spawn, or None
        "on_cancel",  # while queued: the group's way to drop it; None otherwise
        "reason",  # why cohort cancelled it (a CancelReason); unset unless cancelled
        "seq",  # its place in spawn order
        "shown",  # in handles/outcomes: spawned, or a start_soon child that did not succeed
        "started",  # on the loop's clock; None while queued
        "status",
        "tally",  # spawn(retry=): [attempts so far]; None otherwise
        "task",  # while running; None before and after
        "value",  # once succeeded; while running, the TimeoutError of its own timeout
        "waiter",  # a future set when the child ends, made by the first awaiter
    )

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
    task: asyncio.Task[Any] | None
    value: Any
    waiter: asyncio.Future[None] | None

    def __repr__(self) -> str:
        return f"<Child {self.name!r} {self.status.value}>"

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

    def outcome(self) -> Outcome:
        """A frozen record of the child now."""
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


def record_of(task: asyncio.Task[Any], seq: int, started: float, label: str | None = None) -> Child:
    """The record of a plain ``start_soon`` child, which its group keeps without one
    while it runs (its task keyed to its place in spawn order, its start, and the
    name given, if any): made when a reader needs it (``task_tree()``) or the child
    ends without succeeding."""
    child = Child.__new__(Child)
    child.seq = seq
    child.coro = task.get_coro()  # type: ignore[assignment]  # a coroutine: made so
    child.label = label
    child.tally = child.value = child.error = child.ended = None
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
