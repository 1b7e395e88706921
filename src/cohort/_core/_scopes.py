"""Cancellation scopes and deadlines on plain asyncio tasks.

A ``CancelScope`` is a ``with`` block inside a task. Cancelling it (by hand or
because its deadline passed) delivers one ``asyncio.CancelledError`` to the
task at its current ``await``; the scope catches that error on exit and the
task goes on after the block. Delivery uses ``task.cancel()``/``uncancel()``
exactly as ``asyncio.timeout`` does, so the two nest in either order and
``Task.cancelling()`` is the same after the block as before it.

Cancellation is *edge-triggered*, as everywhere in asyncio: a cancelled scope
delivers one ``CancelledError``; code that catches it and awaits again inside
the scope is not cancelled a second time by that scope. The one exception is
a shield: cancellation that arrives while a shielded block runs is held back
and delivered when the shield exits (at its exit if it exits normally).
An anyio shield entered inside a cohort scope (``anyio.CancelScope(shield=True)``,
``anyio.to_thread.run_sync``, httpcore's cleanup) holds it back too: anyio keeps
that state to itself, so the delivery is retried every few milliseconds until the
anyio shield has exited.

Deadlines of one task share one timer: entering a scope whose deadline is not
earlier than the timer already armed costs no timer at all (the timer re-arms
itself for the next deadline when it fires). This is what makes a scope
cheaper than ``asyncio.timeout``, which schedules and cancels a timer per use.
"""

from __future__ import annotations

import asyncio
import enum
import math
import sys
import weakref
from contextvars import ContextVar
from types import TracebackType
from typing import Final, NoReturn

from cohort._core._taskstate import (
    ANYIO_BACKEND,
    ANYIO_POLL,
    Deferrable,
    ScopePhase,
    TaskScopes,
    anyio_scope,
    anyio_seen,
    anyio_shielded,
    current_task_of,
    shielded,
    state_for,
    state_var,
    stray,
    stray_cancellation,
    task_anyio_shielded,
    wait_finished,
)
from cohort._observe._reasons import CancelReason, LazyReason, site
from cohort._validate import is_real

__all__ = [
    "CancelScope",
    "TaskScopes",
    "cancel_task",
    "current_deadline",
    "current_time",
    "defer",
    "foreign_cancels",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
    "redeliver",
    "stray",
    "stray_cancellation",
    "wait_finished",
]

_current_task = current_task_of  # with the loop: no Python wrapper on 3.11
_running_loop = asyncio.get_running_loop
_new = object.__new__
_getframe = sys._getframe
_modules = sys.modules
_ANYIO, _seen = ANYIO_BACKEND, anyio_seen  # see anyio_seen
_CancelledError = asyncio.CancelledError
_INF: Final = math.inf


def outside_asyncio(what: str) -> str:
    """The error for cohort used where no asyncio task runs (trio, anyio on trio, sync code)."""
    hint = " (in a coroutine run by an asyncio loop)"
    if "trio" in _modules:
        hint = "; cohort runs on asyncio (anyio's asyncio backend too), not on trio"
    return what + hint


class _Reason(enum.IntEnum):
    NONE = 0
    EXPLICIT = 1
    DEADLINE = 2


# Bound once: an enum member's look-up on its class costs a descriptor call.
_IDLE, _ACTIVE, _EXITED = ScopePhase.IDLE, ScopePhase.ACTIVE, ScopePhase.EXITED
_NO_REASON, _EXPLICIT, _DEADLINE = _Reason.NONE, _Reason.EXPLICIT, _Reason.DEADLINE


# Deadline in force for tasks started by a group: set in the group's context at
# entry, copied into each child's context by create_task.
_base_deadline: ContextVar[float] = ContextVar("cohort_base_deadline", default=math.inf)
# A task's scopes (TaskScopes, kept in the task's context).
_state_var = state_var
# The reason of a whole-task cancellation held back by a shield (cancel_task's msg).
_held_reasons: weakref.WeakKeyDictionary[asyncio.Task[object], object] = weakref.WeakKeyDictionary()


def defer(task: asyncio.Task[object], owner: Deferrable) -> tuple[TaskScopes, float]:
    """Defer a scope with no deadline, entered now in ``task`` (the running one),
    until something needs it: ``owner._body_scope()`` makes it when the next scope
    is entered in the task (it then lies below that one, as if entered now), when anyio
    holds a cancellation back, or when its owner calls ``enter_deferred``.

    Returns the task's scope state and the deadline in force (that of the scope).
    A task group's own scope, which most groups never use, costs nothing so (what it
    needs from its entry is kept only when not the default: ``TaskScopes.deferred``).
    """
    state = _state_var.get()
    if state is None or state.task is not task:
        state = state_for(task)
    stack = state.stack
    if stack:
        scope = stack[-1]
        deadline = scope._effective
        base = _INF  # not read when entered late: the scopes below say it
    else:
        deadline = base = _base_deadline.get()
    anyio = anyio_scope(state) if _seen[1] or (_seen[1] is None and _ANYIO in _modules) else None
    cancelling = task.cancelling()
    if cancelling or base != _INF or anyio is not None:
        state.deferred.append((owner, cancelling, anyio, base))
    else:
        state.deferred.append(owner)  # the common case: the owner alone
    return state, deadline


def cancel_task(task: asyncio.Task[object], msg: object = None) -> None:
    """Cancel a whole task, unless it is inside a shield: then when the shield exits."""
    state = shielded.get(task)
    if state is not None:
        state.root_pending = True
        _held_reasons[task] = msg
        state.hold(None)
        return
    if (_seen[1] or (_seen[1] is None and _ANYIO in _modules)) and task_anyio_shielded(task):
        task.get_loop().call_later(ANYIO_POLL, cancel_task, task, msg)
        return
    task.cancel(msg)


class CancelScope:
    """A block of code that can be cancelled, by hand or by a deadline.

    Args:
        deadline: absolute time on the loop's clock (``current_time()``) after
            which the block is cancelled; ``math.inf`` for none.
        shield: hold back cancellation coming from cohort scopes and groups
            around this block (its own deadline still applies). A raw
            ``task.cancel()`` (or ``asyncio.timeout``, or an anyio scope) is
            not held back: shields protect against cohort's own cancellation.

    Example:
        ```python
        with cohort.CancelScope() as scope:
            ...
            scope.cancel()          # the block ends at its next await
        if scope.cancelled_caught:
            ...
        ```
    """

    __slots__ = (
        "_anyio",
        "_cancel_requests",
        "_deadline",
        "_effective",
        "_entry_cancelling",
        "_fail",
        "_made",  # the CancelReason, once built (unset until then; see _why)
        "_phase",
        "_raised",
        "_reason",
        "_relative",
        "_shield",
        "_site",  # where __enter__ was called: the caller's code (unset until entered)
        "_site_at",  # and its instruction offset (for the cancel reason's file:line)
        "_state",
        "cancelled_caught",
    )

    def __init__(self, *, deadline: float = math.inf, shield: bool = False) -> None:
        # _relative_scope sets the same fields without calling this.
        if type(deadline) is not float or deadline != deadline:  # not the common case
            deadline = _check_deadline(deadline)
        self._deadline = deadline
        self._relative: float | None = None  # move_on_after/fail_after: seconds from entry
        self._shield = shield
        self._fail = False
        self._phase = _IDLE
        self._reason = _NO_REASON
        self._state: TaskScopes | None = None
        self._cancel_requests = 0
        self._raised = False
        # Set at entry (unset until then): task.cancelling() and anyio's innermost
        # scope in the task at entry (_entry_cancelling, _anyio); the nearest
        # deadline in force in the block (_effective: this scope's, those around it
        # up to a shield, the one inherited below the stack), kept up to date when
        # one of them changes; current_deadline() reads it.
        self._entry_cancelling: int
        self._anyio: object
        self._effective: float
        #: True when the block ended because this scope cancelled it.
        self.cancelled_caught = False

    def __repr__(self) -> str:
        state = ("idle", "active", "exited")[self._phase]
        extra = ", shield=True" if self._shield else ""
        return (
            f"<{type(self).__name__} {state}, deadline={self.deadline}"
            f"{extra}, cancel_called={self.cancel_called}>"
        )

    @property
    def deadline(self) -> float:
        """The absolute deadline (settable; ``math.inf`` for none)."""
        if self._phase is _IDLE and self._relative is not None:
            try:
                return asyncio.get_running_loop().time() + self._relative
            except RuntimeError:
                return math.inf
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        if self._phase is _EXITED:
            raise RuntimeError(f"{self!r} has exited: its deadline can no longer change")
        if self._reason is _DEADLINE:
            raise RuntimeError(
                f"{self!r} has already expired: its deadline can no longer change "
                "(as asyncio.Timeout.reschedule); enter a new scope"
            )
        value = _check_deadline(value)
        if self._reason:  # cancelled by hand: the reason names the scope as it was
            self._reason_now()
        self._relative = None
        self._deadline = value
        state = self._state
        if self._phase is _ACTIVE and state is not None:
            state.refresh(state.stack.index(self))
        if self._phase is _ACTIVE and state is not None and not self._reason:
            now = state.clock()
            if self._deadline <= now:
                self._expire()
            elif self._deadline < state.timer_when:
                state.arm(self._deadline, now)

    @property
    def shield(self) -> bool:
        """Whether cancellation from enclosing cohort scopes and groups is held back."""
        return self._shield

    @property
    def cancel_called(self) -> bool:
        """True once ``cancel()`` was called or the deadline passed."""
        return self._reason is not _NO_REASON

    def cancel(self) -> None:
        """Cancel the block: the task gets ``CancelledError`` at its next await inside it.

        Idempotent. Before the block is entered, it is cancelled as soon as it is.
        """
        if self._reason:
            return
        self._reason = _EXPLICIT
        self._request()

    def _retire_deadline(self) -> None:
        """The deadline no longer applies (the scope stays active, and can still be cancelled)."""
        self._deadline = math.inf
        state = self._state
        if self._phase is _ACTIVE and state is not None:
            state.refresh(state.stack.index(self))

    def _expire(self) -> None:
        """Called by the task's timer when the deadline has passed."""
        self._reason = _DEADLINE
        state = self._state
        if state is None or not state.firing or state.shields:
            self._request()
        # The timer fires (no task runs), nothing shields: _deliver(), inlined.
        elif (_seen[1] or (_seen[1] is None and _ANYIO in _modules)) and anyio_shielded(
            state, self._anyio
        ):
            state.hold_for_anyio(self)
        else:  # _why(), inlined too: GroupScope, which has its own, has its own _expire
            self._cancel_requests += 1
            state.task.cancel(LazyReason(self._reason_now))

    def _request(self) -> None:
        state = self._state
        if self._phase is not _ACTIVE or state is None:
            return
        if state.shields and state.shielded_above(self):
            state.hold(self)  # delivered when the shield exits
            return
        if not state.firing and state.task is _current_task(state.loop):
            # Never cancel the running task synchronously: a block that ends
            # before its next await must not leave a cancellation behind.
            state.loop.call_soon(state.deliver_later, self)
        else:
            self._deliver()

    def _held_back(self) -> None:
        """An enclosing scope's cancellation is held back by a shield inside this one."""

    def _deliver(self) -> None:
        state = self._state
        assert state is not None
        if (_seen[1] or (_seen[1] is None and _ANYIO in _modules)) and anyio_shielded(
            state, self._anyio
        ):
            state.hold_for_anyio(self)
            return
        self._cancel_requests += 1
        state.task.cancel(self._why())

    def _why(self) -> CancelReason | LazyReason | None:
        """The reason the task is given when this scope cancels it: built when read
        (a deadline that fires in a loop is rarely asked why)."""
        return LazyReason(self._reason_now)

    def _reason_now(self) -> CancelReason:
        made: CancelReason | None = getattr(self, "_made", None)
        if made is None:
            made = self._made = self._build_reason()
        return made

    def _build_reason(self) -> CancelReason:
        what = self._describe()
        where = site(getattr(self, "_site", None), getattr(self, "_site_at", 0))
        at = "" if where is None else f" entered at {where}"
        if self._reason is _DEADLINE:
            message = f"the deadline of {what}{at} passed"
            return CancelReason("deadline", message, source=what, where=where)
        message = f"{what}{at} was cancelled"
        return CancelReason("scope cancelled", message, source=what, where=where)

    def _describe(self) -> str:
        kind = "fail" if self._fail else "move_on"
        if self._relative is not None:
            return f"cohort.{kind}_after({self._relative:g})"
        if self._deadline != _INF:
            return f"cohort.{kind}_at({self._deadline:g})"
        return "cohort.CancelScope()"

    async def __aenter__(self) -> NoReturn:
        # `async with cohort.fail_after(...)`: say what to write instead.
        raise TypeError(
            "cohort's cancel scopes (CancelScope, move_on_after, fail_after, ...) are plain "
            "context managers: write `with cohort.fail_after(...)`, not `async with`"
        )

    async def __aexit__(self, *exc_info: object) -> None:
        raise AssertionError("unreachable: __aenter__ always raises")

    def __enter__(self) -> CancelScope:
        try:
            task = _current_task(_running_loop())
        except RuntimeError:  # no running loop
            task = None
        if task is None:
            raise RuntimeError(outside_asyncio(f"{self!r} must be entered inside an asyncio task"))
        if self._phase is not _IDLE:
            raise RuntimeError(f"{self!r} has already been entered; create a new scope each time")
        frame = _getframe(1)
        self._site = frame.f_code
        self._site_at = frame.f_lasti
        self._enter_in(task)
        return self

    def _enter_in(self, task: asyncio.Task[object]) -> float:
        """Enter the (idle) scope in ``task``, the running one; return the deadline in force."""
        state = _state_var.get()
        if state is None or state.task is not task:
            state = state_for(task)
        if state.deferred:
            state.enter_deferred()
        self._state = state
        self._phase = _ACTIVE
        self._entry_cancelling = task.cancelling()
        self._anyio = (
            anyio_scope(state) if _seen[1] or (_seen[1] is None and _ANYIO in _modules) else None
        )
        relative = self._relative
        if relative is not None:
            now = state.clock()
            self._deadline = now + relative
        stack = state.stack
        deadline = self._deadline
        if stack:
            scope = stack[-1]
            effective = scope._effective
        else:
            effective = state.base = _base_deadline.get()
        if deadline < effective or self._shield:
            effective = deadline
        self._effective = effective
        stack.append(self)
        if self._shield:
            state.shields += 1
            shielded[task] = state
        if self._reason:
            state.loop.call_soon(state.deliver_later, self)
        elif deadline < state.timer_when:
            # A deadline already passed arms a timer in the past: it fires at
            # the task's next await, and not at all if the block never awaits.
            state.arm(deadline, now if relative is not None else state.clock())
        return effective

    def _enter_late(self, state: TaskScopes, cancelling: int, anyio: object, base: float) -> None:
        """Enter a deferred scope (no deadline, no shield) on top of ``state``'s stack,
        with what was read when its block was entered (see ``defer``)."""
        self._state = state
        self._phase = _ACTIVE
        self._entry_cancelling = cancelling
        self._anyio = anyio
        stack = state.stack
        if stack:
            scope = stack[-1]
            self._effective = scope._effective
        else:
            self._effective = state.base = base
        stack.append(self)
        if self._reason:
            state.loop.call_soon(state.deliver_later, self)

    def _timeout_message(self) -> str:
        relative = self._relative
        if relative is None:
            return f"cohort.fail_at({self._deadline:g}): the deadline passed"
        message = _fail_after_messages.get(relative)  # a loop uses the same few delays
        if message is None:
            if len(_fail_after_messages) >= 64:
                _fail_after_messages.clear()
            message = f"cohort.fail_after({relative:g}): the deadline passed"
            _fail_after_messages[relative] = message
        return message

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Leave the scope: True (swallow ``exc``) when it is this scope's own cancellation."""
        state = self._state
        if state is None or self._phase is not _ACTIVE:
            raise RuntimeError(f"{self!r} exited without being entered")
        here = _current_task(state.loop)
        if here is not state.task:
            # The scope stays active for the task that entered it, which exits it
            # as usual; unless its block is being closed (an async generator
            # closed in another task): no exit can come from the owner then.
            if isinstance(exc, GeneratorExit):
                self._abandon(state)
            raise RuntimeError(
                f"{self!r} was entered in task {state.task.get_name()!r} and exited in "
                f"{'no task' if here is None else repr(here.get_name())}: a scope must be "
                "exited by the task that entered it (do not carry it across an await in "
                "another task, e.g. an async generator closed elsewhere)"
            )
        stack = state.stack
        if not stack or stack[-1] is not self:
            raise RuntimeError(
                f"{self!r} exited out of order (inner scope still active: {stack[-1]!r}); "
                "scopes must nest"
            )
        stack.pop()
        self._phase = _EXITED
        self._state = None
        task = state.task
        if self._shield:
            state.shields -= 1
            if not state.shields:
                shielded.pop(task, None)
            self._release_held(state, exc)
        caught = False
        requests = self._cancel_requests
        if requests:
            remaining = task.uncancel()
            while requests > 1:  # rare: cancelled again after catching its cancellation
                requests -= 1
                remaining = task.uncancel()
            caught = isinstance(exc, _CancelledError) and remaining <= self._entry_cancelling
        elif self._raised and isinstance(exc, _CancelledError):
            # Delivered by raising at a shield's exit, not through task.cancel():
            # the outermost such scope catches it.
            caught = task.cancelling() <= self._entry_cancelling and not _outer_raised(stack)
        self.cancelled_caught = caught
        if caught and self._fail and self._reason is _DEADLINE:
            message = _fail_after_messages.get(self._relative) or self._timeout_message()
            raise TimeoutError(message) from exc
        return caught

    def _exit(self, exc: BaseException | None) -> bool:
        """Leave the scope; True when ``exc`` is this scope's own cancellation (caught)."""
        return self.__exit__(None, exc, None)  # a group's scope never fails: no raise

    def _cancelled_from_outside(self, task: asyncio.Task[object]) -> bool:
        """Whether a ``CancelledError`` seen inside this active scope is not its own.

        Counted cancellations beyond the scope's own requests come from outside;
        so does one the scope never asked for at all: a cancellation raised at
        the exit of a shield in the block (``move_on_after(1): async with
        TaskGroup(): with CancelScope(shield=True): await sleep(2)``) is
        raised, not delivered, and bumps no count.
        """
        if task.cancelling() > self._entry_cancelling + self._cancel_requests:
            return True
        return not (self._cancel_requests or self._raised)

    def _abandon(self, state: TaskScopes) -> None:
        """Take the scope off its task's stack without delivering anything."""
        if self in state.stack:
            index = state.stack.index(self)
            del state.stack[index]
            if index < len(state.stack):
                state.refresh(index)
            if self._shield:
                state.shields -= 1
                if not state.shields:
                    shielded.pop(state.task, None)
        self._phase = _EXITED
        self._state = None

    @staticmethod
    def _release_held(state: TaskScopes, exc: BaseException | None) -> None:
        """A shield exited: deliver what it held back, unless another shield still does.

        Held-back scopes become reachable down to the next shield. If the block
        ended normally the cancellation is raised right here (there may be no
        further await before the scopes exit); otherwise it is delivered at the
        task's next await, if the scope is still active then.
        """
        root = state.root_pending and not state.shields
        if root:
            # The whole task is being cancelled (by its group): delivered at its
            # next await, or by the raise below; held scopes see the raised
            # cancel count and let it pass.
            state.root_pending = False
            state.task.cancel(_held_reasons.pop(state.task, None))
        pending: list[CancelScope] = []
        for scope in reversed(state.stack):
            if scope._reason and not scope._cancel_requests and not scope._raised:
                pending.append(scope)
            if scope._shield:
                break
        if pending:
            if exc is None:
                for scope in pending:
                    scope._raised = True
                raise _CancelledError(pending[0]._why() or _SHIELD_MSG)
            if not root:
                state.loop.call_soon(state.deliver_later, pending[-1])


_SHIELD_MSG: Final = "cohort: cancellation held back by a shield"
# The message of fail_after(seconds)'s TimeoutError, by seconds (a few kept).
_fail_after_messages: dict[float | None, str] = {}


def _outer_raised(stack: list[CancelScope]) -> bool:
    """True when an enclosing reachable scope also had a held-back cancellation raised."""
    for scope in reversed(stack):
        if scope._raised:
            return True
        if scope._shield:
            return False
    return False


def foreign_cancels(task: asyncio.Task[object]) -> int:
    """How many of the task's pending cancellation requests no cohort scope made
    (a raw ``task.cancel()``, ``asyncio.timeout``, anyio)."""
    state = _state_var.get()
    ours = 0
    if state is not None and state.task is task:
        ours = sum(scope._cancel_requests for scope in state.stack)
    return max(0, task.cancelling() - ours)


def redeliver(task: asyncio.Task[object]) -> None:
    """Deliver again, at the task's next await, the cancellation of its innermost
    cancelled scope (used when errors replaced a cancellation on its way out):
    one delivered through ``task.cancel()`` or raised at a shield's exit."""
    state = _state_var.get()
    if state is None or state.task is not task:
        return
    for scope in reversed(state.stack):
        if scope._reason and (scope._cancel_requests or scope._raised):
            state.loop.call_soon(state.deliver_later, scope)
            return
        if scope._shield:
            return


def _check_deadline(value: object) -> float:
    if type(value) is float and value == value:  # the common case, without the ABC check
        return value
    if not is_real(value):
        raise TypeError(f"deadline must be a number on the loop's clock or math.inf, got {value!r}")
    if value != value:
        raise ValueError("deadline must be a number or math.inf, not NaN")
    return float(value)


def _relative_scope(delay: float, fail: bool, shield: bool) -> CancelScope:
    kind = type(delay)
    # float and int first: the ABC check is slow, and this runs at every move_on_after.
    if kind is not float and kind is not int and not is_real(delay):
        raise TypeError(f"the delay must be a number of seconds, got {delay!r}")
    if delay != delay:
        raise ValueError("the delay must be a number of seconds, not NaN")
    # CancelScope(shield=shield), without the type call and its keywords' dict (this
    # runs at every use); the same fields as __init__.
    scope = _new(CancelScope)
    scope._deadline = _INF
    scope._relative = delay if kind is float else float(delay)
    scope._shield = shield
    scope._fail = fail
    scope._phase = _IDLE
    scope._reason = _NO_REASON
    scope._state = None
    scope._cancel_requests = 0
    scope._raised = False
    scope.cancelled_caught = False
    return scope


def move_on_after(seconds: float, *, shield: bool = False) -> CancelScope:
    """A scope cancelled ``seconds`` after it is entered; leaves the block silently.

    Check ``scope.cancelled_caught`` to learn whether time ran out:

    ```python
    with cohort.move_on_after(0.5) as scope:
        data = await fetch()
    if scope.cancelled_caught:
        data = cached
    ```
    """
    return _relative_scope(seconds, False, shield)


def move_on_at(deadline: float, *, shield: bool = False) -> CancelScope:
    """A scope cancelled at the absolute ``deadline``; leaves the block silently."""
    return CancelScope(deadline=deadline, shield=shield)


def fail_after(seconds: float, *, shield: bool = False) -> CancelScope:
    """A scope cancelled ``seconds`` after it is entered; then raises ``TimeoutError``."""
    return _relative_scope(seconds, True, shield)


def fail_at(deadline: float, *, shield: bool = False) -> CancelScope:
    """A scope cancelled at the absolute ``deadline``; then raises ``TimeoutError``."""
    scope = CancelScope(deadline=deadline, shield=shield)
    scope._fail = True
    return scope


def current_time() -> float:
    """The running loop's clock (``loop.time()``), the clock deadlines are on."""
    return asyncio.get_running_loop().time()


def current_deadline() -> float:
    """The nearest deadline in force for the current task, ``math.inf`` if none.

    Counts the task's enclosing cohort scopes up to the nearest shield and, in a
    task group's child, the deadlines in force where the group was opened.
    """
    try:
        task = _current_task(_running_loop())
    except RuntimeError:  # no running loop
        task = None
    if task is None:
        raise RuntimeError("current_deadline() must be called inside an asyncio task")
    state = _state_var.get()
    if state is not None and state.task is task and state.stack:
        scope = state.stack[-1]
        return scope._effective  # kept up to date: no walk of the stack
    return _base_deadline.get()
