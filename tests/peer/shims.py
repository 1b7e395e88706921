"""asyncio's names over cohort's API, for CPython's asyncio test suites.

Every shim here only renames: a method or attribute of asyncio's class is
forwarded to the cohort call that does the same thing, and reprs use asyncio's
words. None of them decides anything itself; whatever behaviour the suites
check is cohort's.
"""

from __future__ import annotations

import math
from collections.abc import Coroutine, Generator
from contextvars import Context
from types import TracebackType
from typing import Any

import cohort

# -- asyncio.TaskGroup -> cohort.TaskGroup ------------------------------------------


class Task:
    """A cohort ``Handle`` under the ``asyncio.Task`` names the suites call."""

    __slots__ = ("_handle",)

    def __init__(self, handle: cohort.Handle[Any]) -> None:
        self._handle = handle

    def __repr__(self) -> str:
        return repr(self._handle)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._handle.__await__()

    def get_name(self) -> str:
        return self._handle.name

    def done(self) -> bool:
        return self._handle.done()

    def cancelled(self) -> bool:
        return self._handle.status is cohort.ChildStatus.CANCELLED

    def cancel(self, msg: object = None) -> bool:
        return self._handle.cancel()

    def result(self) -> Any:
        return self._handle.result()

    def exception(self) -> BaseException | None:
        return self._handle.exception()


class TaskGroup:
    """``asyncio.TaskGroup``: a ``cohort.TaskGroup`` with its default policy, ``Gather()``."""

    def __init__(self) -> None:
        self._group = cohort.TaskGroup()

    def __repr__(self) -> str:
        return repr(self._group)

    async def __aenter__(self) -> TaskGroup:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # cohort's __aexit__ is typed `-> None` (see TaskGroup) but returns whether
        # it swallowed the body's cancellation: a wrapper must pass that on.
        leave: Any = self._group.__aexit__
        return bool(await leave(exc_type, exc, tb))

    def create_task(
        self,
        coro: Coroutine[Any, Any, Any],
        *,
        name: str | None = None,
        context: Context | None = None,
    ) -> Task:
        return Task(self._group.spawn(coro, name=name, context=context))


# -- asyncio.timeout / timeout_at -> cohort.fail_after / fail_at ---------------------


class Timeout:
    """``asyncio.Timeout`` over a cohort ``CancelScope`` made by ``fail_after``/``fail_at``.

    ``when()``/``reschedule()`` are the scope's ``deadline`` (``None`` for
    ``math.inf``), ``expired()`` its ``cancel_called`` (nothing else cancels
    it: the shim never calls ``cancel()``), ``async with`` its ``with``.
    """

    __slots__ = ("_phase", "_scope")

    def __init__(self, scope: cohort.CancelScope) -> None:
        self._scope = scope
        self._phase = "created"  # only for the repr's wording

    def __repr__(self) -> str:
        if self._phase == "active":
            return f"<Timeout [active] when={self.when()}>"
        if self._phase == "exited":
            return f"<Timeout [{'expired' if self.expired() else 'finished'}]>"
        return "<Timeout [created]>"

    async def __aenter__(self) -> Timeout:
        self._scope.__enter__()
        self._phase = "active"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._phase = "exited"
        return self._scope.__exit__(exc_type, exc, tb)

    def when(self) -> float | None:
        deadline = self._scope.deadline
        return None if deadline == math.inf else deadline

    def reschedule(self, when: float | None) -> None:
        self._scope.deadline = math.inf if when is None else when

    def expired(self) -> bool:
        return self._scope.cancel_called


def timeout(delay: float | None) -> Timeout:
    """``asyncio.timeout`` is ``cohort.fail_after`` (``None``: no deadline)."""
    return Timeout(cohort.fail_after(math.inf if delay is None else delay))


def timeout_at(when: float | None) -> Timeout:
    """``asyncio.timeout_at`` is ``cohort.fail_at`` (``None``: no deadline)."""
    return Timeout(cohort.fail_at(math.inf if when is None else when))


# -- asyncio.Barrier -> cohort.Barrier -----------------------------------------------


class Barrier(cohort.Barrier):
    """``asyncio.Barrier``: ``cohort.Barrier`` with asyncio's spellings.

    ``async with barrier as i`` is ``i = await barrier.wait()``; asyncio's
    ``reset()``/``abort()`` are coroutines, cohort's are plain calls.
    """

    def __repr__(self) -> str:
        # cohort has no draining or resetting phase: an unbroken barrier is
        # always filling its current generation.
        state = "broken" if self.broken else "filling"
        return (
            f"<{type(self).__name__} object at {id(self):#x} "
            f"[{state}, waiters:{self.n_waiting}/{self.parties}]>"
        )

    async def __aenter__(self) -> int:
        return await self.wait()

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def reset(self) -> None:  # type: ignore[override]
        super().reset()

    async def abort(self) -> None:  # type: ignore[override]
        super().abort()


# -- asyncio.Event -> cohort.EventFlags with one flag --------------------------------


class Event:
    """``asyncio.Event``: a ``cohort.EventFlags`` with the single flag ``"set"``."""

    __slots__ = ("_flags",)

    def __init__(self) -> None:
        self._flags = cohort.EventFlags("set")

    def __repr__(self) -> str:
        state = "set" if self.is_set() else "unset"
        n = self._flags.statistics().n_waiting
        extra = f", waiters:{n}" if n else ""
        return f"<{type(self).__name__} object at {id(self):#x} [{state}{extra}]>"

    @property
    def _waiters(self) -> range:
        """The suites count blocked waiters through asyncio's private ``_waiters``;
        cohort's public count is ``statistics().n_waiting``."""
        return range(self._flags.statistics().n_waiting)

    def is_set(self) -> bool:
        return self._flags.is_set("set")

    def set(self) -> None:
        self._flags.set("set")

    def clear(self) -> None:
        self._flags.clear("set")

    async def wait(self) -> bool:
        await self._flags.wait_all("set")
        return True
