"""One task's cancel scopes: their stack, their one timer, shields, deferred scopes.

The machinery under ``CancelScope`` (``cohort._core._scopes``): per task, the
stack of active scopes with the deadline in force at each level, the one timer
shared by their deadlines (armed for the nearest; it re-arms itself when it
fires), the count of shields and what they hold back, the scopes deferred until
first needed, and what anyio's own shields hold back (anyio keeps that state to
itself: read here, through its backend, and nowhere else). Below them, helpers
for whole tasks: waiting for one to finish, and a ``CancelledError`` that nothing
asked for (``stray``).
"""

from __future__ import annotations

import asyncio
import enum
import math
import sys
import time
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from cohort._core._scopes import CancelScope

__all__ = [
    "ANYIO_BACKEND",
    "ANYIO_POLL",
    "Deferrable",
    "ScopePhase",
    "TaskScopes",
    "anyio_scope",
    "anyio_seen",
    "anyio_shielded",
    "anyio_states",
    "current_task_of",
    "fire",
    "shield_between",
    "shielded",
    "state_for",
    "state_var",
    "stray",
    "stray_cancellation",
    "task_anyio_shielded",
    "wait_finished",
]

_modules = sys.modules
_ref = weakref.ref
_monotonic = time.monotonic
_base_time: Final = asyncio.BaseEventLoop.time

# The task running on a loop (never None inside a coroutine a task runs). On 3.11
# asyncio.current_task is a Python function around the get of this dict (kept by
# the C tasks); on 3.12+ it is a C function itself.
current_task_of: Final[Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]] = (
    asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
    if sys.version_info < (3, 12)
    else asyncio.current_task
)


class ScopePhase(enum.IntEnum):
    """Where a scope is in its life."""

    IDLE = 0
    ACTIVE = 1
    EXITED = 2


class Deferrable(Protocol):
    """The owner of a deferred scope (a task group): makes the scope when needed."""

    def _body_scope(self) -> CancelScope: ...


_ACTIVE: Final = ScopePhase.ACTIVE
_INF: Final = math.inf


class TaskScopes:
    """Per-task bookkeeping: the stack of active scopes and the one shared timer."""

    __slots__ = (
        "__weakref__",
        "anyio",
        "base",
        "clock",
        "deferred",
        "firing",
        "key",
        "loop",
        "ref",
        "root_pending",
        "shields",
        "stack",
        "task",
        "timer",
        "timer_when",
    )

    def __init__(self, task: asyncio.Task[object], loop: asyncio.AbstractEventLoop) -> None:
        self.task = task
        self.loop = loop
        # loop.time, or time.monotonic itself where that is all loop.time does (a
        # Python method call less per reading; a virtual clock's loop has its own).
        self.clock: Callable[[], float] = _monotonic if type(loop).time is _base_time else loop.time
        # Made with room for one (a list emptied by pop() from a larger room
        # frees it, and the next append allocates again: once per scope).
        self.stack: list[CancelScope] = [None]  # type: ignore[list-item]
        self.stack.pop()
        # The deadline in force below the stack (a group's child inherits it),
        # read when the first scope of the stack was entered.
        self.base = math.inf
        self.timer: asyncio.Handle | None = None
        self.timer_when = math.inf
        # The timer holds the state weakly (made at the first arm, then kept);
        # firing: the timer's callback runs (no task does).
        self.ref: weakref.ref[TaskScopes] | None = None
        self.firing = False
        self.shields = 0
        # A whole-task cancellation (from a group) held back by a shield.
        self.root_pending = False
        # Scopes entered only when first needed (see defer()), innermost last:
        # (their owner, task.cancelling() and anyio's scope at entry, base deadline),
        # or the owner alone for (owner, 0, None, math.inf). Made with room for one,
        # as the stack.
        self.deferred: list[Deferrable | tuple[Deferrable, int, object, float]] = [None]  # type: ignore[list-item]
        self.deferred.pop()
        # anyio's TaskState of the task once found (anyio keeps it for the task's
        # life), and the weak reference to the task its dict is keyed by.
        self.anyio: Any = None
        self.key: weakref.ref[asyncio.Task[object]] | None = None

    def enter_deferred(self, upto: Deferrable | None = None) -> None:
        """Enter the deferred scopes, outermost first, up to that of ``upto``
        (all of them with None): on top of the stack, where they would have been."""
        deferred = self.deferred
        count = len(deferred)
        if upto is not None:
            count = next(i for i, d in enumerate(deferred) if _owner(d) is upto) + 1
        entering = deferred[:count]
        del deferred[:count]
        for d in entering:
            if isinstance(d, tuple):
                owner, cancelling, anyio, base = d
            else:
                owner, cancelling, anyio, base = d, 0, None, _INF
            scope = owner._body_scope()
            scope._enter_late(self, cancelling, anyio, base)

    def undefer(self, owner: Deferrable) -> None:
        """The block of ``owner``'s deferred scope ended before the scope was needed.

        Usually the innermost one; not always: a group held by an async generator
        can exit, in this task, inside a group entered after it.
        """
        deferred = self.deferred
        if deferred[-1] is owner:
            deferred.pop()
            return
        for i, d in enumerate(deferred):
            if _owner(d) is owner:
                del deferred[i]
                return

    def arm(self, when: float, now: float) -> None:
        """Arm the timer for ``when`` (``now``: the loop's time)."""
        timer = self.timer
        if timer is not None:
            timer.cancel()
        self.timer_when = when
        # The timer holds the state weakly: a finished task's state (and the
        # task) are freed at once, and the stale timer then does nothing.
        # A deadline already passed fires with call_soon, so that it runs
        # before the task's next step even when that await is a bare yield.
        ref = self.ref
        if ref is None:
            ref = self.ref = weakref.ref(self)
        if when <= now:
            self.timer = self.loop.call_soon(fire, ref)
        else:
            self.timer = self.loop.call_at(when, fire, ref)

    def refresh(self, start: int) -> None:
        """The deadline of ``stack[start]`` changed, or a scope left from there:
        recompute the deadlines in force from there up to the next shield."""
        stack = self.stack
        outer = self.base
        if start:
            scope = stack[start - 1]
            outer = scope._effective
        for i in range(start, len(stack)):
            scope = stack[i]
            if scope._shield:
                if i > start:
                    return  # a shield's deadline in force is its own: nothing above changes
                outer = scope._deadline
            elif scope._deadline < outer:
                outer = scope._deadline
            scope._effective = outer

    def shielded_above(self, scope: CancelScope) -> bool:
        """True when a shield sits between ``scope`` and the top of the stack."""
        if not self.shields:
            return False
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            s = stack[i]
            if s is scope:
                return False
            if s._shield:
                return True
        return False

    def deliver_later(self, scope: CancelScope) -> None:
        if scope._phase is _ACTIVE:
            if self.shielded_above(scope):
                self.hold(scope)
            else:
                scope._deliver()

    def hold_for_anyio(self, scope: CancelScope) -> None:
        """An anyio shield entered inside ``scope`` holds its cancellation back.

        As with a cohort shield, the groups entered between ``scope`` and that
        shield cancel their children now; the delivery is retried shortly.
        """
        if self.deferred:
            self.enter_deferred()
        stack = self.stack
        for i in range(stack.index(scope) + 1, len(stack)):
            inner = stack[i]
            if inner._shield or not anyio_shielded(self, inner._anyio):
                break
            inner._held_back()
        self.loop.call_later(ANYIO_POLL, self.deliver_later, scope)

    def hold(self, scope: CancelScope | None) -> None:
        """A shield holds back the cancellation of ``scope`` (``None``: of the whole task).

        What lies between them and the shield is still cancelled: a task group
        opened there cancels its children now, since no shield covers them
        (``move_on_after(1): async with TaskGroup() as g: g.spawn(work); with
        CancelScope(shield=True): ...`` stops ``work`` after 1 s, as anyio does).
        """
        stack = self.stack
        for i in range(0 if scope is None else stack.index(scope) + 1, len(stack)):
            inner = stack[i]
            if inner._shield:
                return
            inner._held_back()


def _owner(deferred: Deferrable | tuple[Deferrable, int, object, float]) -> Deferrable:
    """The owner of an entry of ``TaskScopes.deferred``."""
    return deferred[0] if isinstance(deferred, tuple) else deferred


def fire(ref: weakref.ref[TaskScopes]) -> None:
    """The timer's callback: expire the scopes whose deadline passed, re-arm for the next."""
    state = ref()
    if state is None:
        return
    fired = state.timer_when
    state.timer = None
    state.timer_when = _INF
    now = state.clock()
    if now < fired:
        now = fired
    upcoming = _INF
    state.firing = True  # no task runs: a scope delivers its cancellation at once
    try:
        for scope in state.stack[:]:  # a copy: expiring may enter deferred scopes
            if scope._reason:
                continue
            if scope._deadline <= now:
                scope._expire()
            elif scope._deadline < upcoming:
                upcoming = scope._deadline
    finally:
        state.firing = False
    if upcoming < state.timer_when:
        state.arm(upcoming, now)


state_var: ContextVar[TaskScopes | None] = ContextVar("cohort_task_state", default=None)
# Tasks currently inside a shield, so that cancel_task() can hold back a
# whole-task cancellation until the shield exits.
shielded: dict[asyncio.Task[object], TaskScopes] = {}


def state_for(task: asyncio.Task[object]) -> TaskScopes:
    state = state_var.get()
    if state is None or state.task is not task:
        state = TaskScopes(task, task.get_loop())
        state_var.set(state)
    return state


# How often a cancellation held back by an anyio shield checks whether it has exited.
ANYIO_POLL: Final = 0.002
ANYIO_BACKEND: Final = "anyio._backends._asyncio"


# What anyio_scope() last read: anyio's backend module (None: not loaded) and its
# task states (the dict under its WeakKeyDictionary of TaskState, keyed by a weak
# reference to the task; None when anyio is not loaded or its internals differ).
# While no task holds anyio state, callers skip anyio_scope() altogether:
# ``anyio_seen[1] or (anyio_seen[1] is None and ANYIO_BACKEND in sys.modules)`` is
# false (once anyio is loaded, an empty dict: no look-up in sys.modules at all;
# a backend reloaded later is not seen).
anyio_seen: list[Any] = [None, None]


def anyio_scope(state: TaskScopes) -> object:
    """anyio's innermost cancel scope in ``state``'s task (None without anyio or outside
    its scopes). The task's TaskState is looked up until found, then kept: anyio
    makes it before the task's first scope and keeps it while the task runs."""
    found = state.anyio or _found_anyio_state(state)
    return None if found is None else found.cancel_scope


def _found_anyio_state(state: TaskScopes) -> Any:
    """``state``'s task's anyio TaskState, kept once found; None while anyio has none."""
    states = anyio_seen[1] or anyio_states()
    if not states:  # no anyio, or no task holds anyio state now: no look-up
        return None
    key = state.key
    if key is None:
        key = state.key = _ref(state.task)
    found = states.get(key)
    if found is not None:
        state.anyio = found
    return found


def anyio_states() -> dict[Any, Any] | None:
    """anyio's task states (see ``anyio_seen``), read again if its backend changed."""
    backend = _modules.get(ANYIO_BACKEND)
    seen = anyio_seen
    if backend is not seen[0]:  # loaded (or reloaded) since the last read
        data = getattr(getattr(backend, "_task_states", None), "data", None)
        seen[1] = data if isinstance(data, dict) else None
        seen[0] = backend
    states: dict[Any, Any] | None = seen[1]
    return states


def anyio_shielded(state: TaskScopes, since: object) -> bool:
    """True when ``state``'s task is inside an anyio shield entered after anyio scope
    ``since`` (the innermost one when a cohort scope was entered)."""
    found = state.anyio or _found_anyio_state(state)
    if found is None:
        return False
    scope = found.cancel_scope
    return scope is not since and shield_between(state.task, scope, since)


def task_anyio_shielded(task: asyncio.Task[object]) -> bool:
    """True when ``task`` (any task) is inside an anyio shield."""
    states = anyio_seen[1] or anyio_states()
    found = states.get(_ref(task)) if states else None
    return found is not None and shield_between(task, found.cancel_scope, None)


def shield_between(task: asyncio.Task[object], scope: object, since: object) -> bool:
    """Walks anyio's scopes of ``task`` from ``scope`` out to ``since``; scopes of an
    enclosing task are anyio's business, not this task's."""
    while scope is not None and scope is not since:
        if getattr(scope, "_host_task", None) is not task:
            return False
        if getattr(scope, "_shield", False):
            return True
        scope = getattr(scope, "_parent_scope", None)
    return False


# Whole tasks: waiting for one to finish, a cancellation nothing asked for.


async def wait_finished(task: asyncio.Task[object]) -> asyncio.CancelledError | None:
    """Wait until ``task`` has finished, even if the waiter is cancelled meanwhile.

    For cleanup that must not leave work behind (a stream stopping its run):
    returns the cancellation that arrived while waiting, for the caller to
    re-raise once the task is done, else ``None``.
    """
    interrupted: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as cancelled:
            interrupted = cancelled
    return interrupted


def stray_cancellation(what: str, exc: BaseException) -> RuntimeError:
    """The failure for ``what`` ending with ``CancelledError`` although nothing cancelled it.

    It awaited a future that was cancelled elsewhere (a shared cache entry, a
    pooled connection). Treated as cancelled, its result or item would go
    missing without an error; so it is a ``RuntimeError``, the
    ``CancelledError`` as its cause.
    """
    error = RuntimeError(
        f"{what} raised CancelledError without being cancelled "
        "(did it await something that was cancelled elsewhere?)"
    )
    error.__cause__ = exc
    return error


def stray(exc: BaseException, what: str) -> RuntimeError | None:
    """In the task that caught ``exc`` (a ``CancelledError``): the failure to report
    instead, or ``None`` when the task itself is being cancelled (re-raise then)."""
    try:
        task = current_task_of(asyncio.get_running_loop())
    except RuntimeError:  # no running loop
        return None
    if task is None or task.cancelling():
        return None
    return stray_cancellation(what, exc)
