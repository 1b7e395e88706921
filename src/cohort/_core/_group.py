"""Task groups whose join policy decides when they are done.

Children are plain ``asyncio.Task``s, each with one ``Child`` record (a plain
``start_soon`` child only once it ends without succeeding or ``task_tree()``
reads it: ``record_of``); one done callback (``_on_task_done``) records every
end, as CPython's TaskGroup does. The body runs in a cancel scope of the
group's own (entered when needed: ``_scopes.defer``), so the group can stop
it silently once the policy decided. Whatever path leaves the ``async with``
block, every child has finished and every child error was raised or recorded.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Never, TypeVar, TypeVarTuple

from cohort._core import _scopes, _why
from cohort._core._child import (
    Child,
    ChildStatus,
    pop_caller_frame,
    record_of,
    run_with_timeout,
)
from cohort._core._coros import (
    SPAWN_OPTIONS,
    check_coro,
    child_context,
    clock_of,
    close_coroutines,
    coro_object,
    detached_context,
    retrying,
    spawn_hook,
)
from cohort._core._handle import Handle
from cohort._core._policies import (
    Decision,
    ask_all_done,
    ask_body_done,
    ask_spawned,
    ask_timeout,
)
from cohort._core._scopes import CancelScope, cancel_task, stray_cancellation
from cohort._core._state import GroupScope, GroupState, Phase, live_groups, open_groups
from cohort._core._taskstate import current_task_of as _current_task
from cohort._observe import _events as _observe
from cohort._observe._awaited import add_awaited_by, discard_awaited_by
from cohort._observe._events import EVENTS
from cohort._observe._reasons import CancelReason, cancel_reason
from cohort._validate import check_seconds, keywords_refused

if TYPE_CHECKING:
    from cohort._core._retry import Retry

# clock_of, close_coroutines, detached_context: for the layers above, with TaskGroup.
__all__ = ["TaskGroup", "clock_of", "close_coroutines", "detached_context", "open_groups"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_CancelledError = asyncio.CancelledError
_base_time: Final = asyncio.BaseEventLoop.time
_monotonic: Final = time.monotonic
_INF: Final = math.inf
# spawn()'s thread check: a thread's id is a plain read (_get_running_loop: getpid()).
_get_ident = threading.get_ident
_get_running_loop = asyncio.get_running_loop

# Bound once: an enum member's look-up on its class costs a descriptor call.
_CONTINUE, _DONE, _FAIL = Decision.CONTINUE, Decision.DONE, Decision.FAIL
_CoroutineType = types.CoroutineType
_PENDING, _RUNNING, _SUCCEEDED = ChildStatus.PENDING, ChildStatus.RUNNING, ChildStatus.SUCCEEDED
_FAILED, _CANCELLED, _TIMED_OUT = ChildStatus.FAILED, ChildStatus.CANCELLED, ChildStatus.TIMED_OUT
_NEW, _OPEN, _EXITING, _CLOSED = Phase.NEW, Phase.OPEN, Phase.EXITING, Phase.CLOSED


class TaskGroup(GroupState):
    """A task group whose join policy decides when it is done.

    Args:
        join: the policy (``Gather()`` by default); see ``Settle``,
            ``Quorum(k)``, ``FirstWins()`` or write a ``JoinPolicy``.
        limit: at most this many children run at once; the rest start in
            spawn order as slots free up (``spawn`` never blocks).
        timeout: seconds from entry after which everything is cancelled.
        on_timeout: ``"raise"`` (``TimeoutError``) or ``"partial"`` (exit
            normally with whatever completed).
        name: shown in errors, logs and ``task_tree()``.

    ``__aexit__`` returns True when the group swallowed its own cancellation of
    the body (typed ``None``, so that checkers do not call names bound in the
    body "possibly unbound"): a class that wraps a group must return it too.

    Example:
        ```python
        async with cohort.TaskGroup(join=cohort.Quorum(2), timeout=1.5) as g:
            for replica in replicas:
                g.spawn(read, replica, key, name=f"read-{replica}")
        print(g.results)   # the first two values, in completion order
        ```
    """

    # -- spawning -----------------------------------------------------------------

    def spawn(
        self,
        fn: Callable[[*Ts], Awaitable[T]] | Coroutine[Any, Any, T],
        *args: *Ts,
        name: str | None = None,
        timeout: float | None = None,
        critical: bool = True,
        retry: Retry | None = None,
        context: contextvars.Context | None = None,
        **kwargs: Never,
    ) -> Handle[T]:
        """Start ``fn(*args)`` as a child (queued if ``limit`` children already run).

        ``fn`` is an async callable, or a coroutine object (then no ``args``).
        Keyword arguments for ``fn`` go through ``functools.partial``. With
        ``retry=cohort.Retry(...)`` a failed call is made again under that
        policy (``timeout`` then bounds all attempts together; the outcome
        counts them). With ``context=`` the child runs in that
        ``contextvars.Context`` instead of a copy of the caller's, as with
        ``asyncio.TaskGroup.create_task``.
        """
        if kwargs:
            raise keywords_refused("spawn", fn, args, kwargs, SPAWN_OPTIONS)
        if (  # _add(), inlined for a child with no options, started at once
            name is None
            and timeout is None
            and retry is None
            and context is None
            and self._limit is None
            and self._accepting
            and not spawn_hook.used
            and not EVENTS.on
            and _get_ident() == self._thread
        ):
            coro = fn(*args) if callable(fn) else fn  # fn: a coroutine object, checked below
            if type(coro) is _CoroutineType and (coro is not fn or not args):
                try:
                    task = self._loop.create_task(coro)
                except BaseException:
                    coro.close()
                    raise
                child = Child()
                child.seq = self._count
                child.coro = coro
                child.critical = critical
                child.shown = True
                child.task = task
                child.status = _RUNNING
                child.started = self._clock()
                child.label = child.tally = child.value = child.error = child.ended = None
                child.waiter = child.on_cancel = None
                self._tasks[task] = child
                cb_context = self._cb_context
                if cb_context is None:
                    cb_context = self._cb_context = contextvars.copy_context()
                task.add_done_callback(self._done_cb, context=cb_context)  # type: ignore[arg-type]
                if add_awaited_by is not None:
                    add_awaited_by(task, self._task)
                self._count += 1
                self._kept.append(child)
                if critical:
                    self._spawned += 1
                    if self._traits.sees_spawns:
                        self._apply(ask_spawned(self._policy, self._traits, self, child))
                return Handle(child)
            if coro is not fn:  # another coroutine, or raises
                fn, args = check_coro(fn, coro), ()  # type: ignore[assignment]
        return Handle(self._add(fn, args, name, timeout, critical, retry, context, True))

    def start_soon(
        self,
        fn: Callable[[*Ts], Awaitable[object]] | Coroutine[Any, Any, object],
        *args: *Ts,
        name: str | None = None,
        timeout: float | None = None,
        critical: bool = True,
        retry: Retry | None = None,
        context: contextvars.Context | None = None,
        **kwargs: Never,
    ) -> None:
        """Start ``fn(*args)`` as a child, as ``spawn`` does, but return no handle.

        No record is kept of a child that succeeds: its value is not in ``results``
        (unless the policy orders results by completion, as ``Quorum`` does),
        ``handles`` or ``outcomes``; one that fails, times out or is cancelled is
        recorded as a spawned one is. All else works as for ``spawn``, for less.
        """
        if kwargs:
            raise keywords_refused("start_soon", fn, args, kwargs, SPAWN_OPTIONS)
        if (  # a plain child (see record_of), started here: no record, no other call
            timeout is None
            and critical is True
            and retry is None
            and context is None
            and self._plain
            and self._accepting
            and not spawn_hook.used
            and not EVENTS.on
            and _get_ident() == self._thread
            and callable(fn)
        ):
            coro = fn(*args)
            if type(coro) is _CoroutineType:
                try:
                    if name is None:
                        task = self._loop.create_task(coro)
                        self._tasks[task] = (self._count, self._clock())
                    else:  # the name is its task's (as task_tree() shows a record's)
                        task = self._loop.create_task(coro, name=name)
                        self._tasks[task] = (self._count, self._clock(), name)
                except BaseException:
                    coro.close()
                    raise
                cb_context = self._cb_context
                if cb_context is None:
                    cb_context = self._cb_context = contextvars.copy_context()
                task.add_done_callback(self._done_cb, context=cb_context)  # type: ignore[arg-type]
                if add_awaited_by is not None:
                    add_awaited_by(task, self._task)
                self._count += 1
                self._spawned += 1
                return
            fn, args = check_coro(fn, coro), ()  # type: ignore[assignment]  # another coroutine
        self._add(fn, args, name, timeout, critical, retry, context, False)

    def _add(
        self,
        fn: Any,
        args: tuple[Any, ...],
        name: str | None,
        timeout: float | None,
        critical: bool,
        retry: Retry | None,
        context: contextvars.Context | None,
        shown: bool,
    ) -> Child:
        """``spawn``/``start_soon``: check, make the coroutine and the record (see
        ``record_of``), start or queue it, count it; nothing is recorded on failure."""
        if not self._accepting or _get_ident() != self._thread:
            self._refuse_spawn(fn)
        if context is not None:
            context = child_context(context, fn)
        hook = spawn_hook.get() if spawn_hook.used else None
        if hook is not None:  # an optional layer wraps the child (see spawn_hook)
            name, wrap = hook(self, fn, name)
        tally: list[int] | None = None
        if retry is not None:
            fn, args, tally = retrying(fn, args, retry)
        if timeout is not None:
            try:
                timeout = check_seconds("timeout", timeout)
            except (TypeError, ValueError):
                close_coroutines((fn,))
                raise
        if callable(fn):
            coro = fn(*args)
            if type(coro) is not _CoroutineType:
                coro = check_coro(fn, coro)
        elif type(fn) is _CoroutineType and not args:
            coro = fn
        else:
            coro = coro_object(fn, args)
        if hook is not None:
            coro = wrap(coro)
        child = Child()  # no __init__: a cheaper call than Child.__new__(Child)
        child.seq = self._count
        child.coro = coro
        child.label = name
        child.critical = critical
        child.shown = shown
        child.tally = tally
        child.value = child.error = child.ended = child.waiter = child.on_cancel = None
        run = coro if timeout is None else run_with_timeout(coro, timeout, child)
        if self._limit is not None and len(self._tasks) >= self._limit:
            child.status = _PENDING
            child.task = child.started = None
            child.on_cancel = self._drop_queued
            if self._queue is None:
                self._queue = deque()
            # A copy of the caller's context now, as for a child started at once:
            # not that of whichever child's end frees the slot.
            if context is None:
                context = contextvars.copy_context()
            self._queue.append((child, run, context))
        else:
            self._start(child, run, context)
        self._count += 1
        if shown:
            self._kept.append(child)
        if critical:
            self._spawned += 1
            if self._traits.sees_spawns:
                self._apply(ask_spawned(self._policy, self._traits, self, child))
        return child

    def cancel(self) -> None:
        """Stop the group now: cancel every child and the body; exit normally."""
        if self._phase in (_OPEN, _EXITING) and self._decision is _CONTINUE:
            self._decide(_DONE, _why.group_cancelled(self.name))

    # -- completion ---------------------------------------------------------------

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        """A child's task ended (the done callback of every child): how, then record it."""
        child = self._tasks.pop(task)
        if discard_awaited_by is not None:
            discard_awaited_by(task, self._task)
        try:
            value = task.result()
        except BaseException as exc:
            pop_caller_frame(exc)  # this frame: the error keeps only the child's own
            if isinstance(child, tuple):  # a plain start_soon child (start_soon): recorded
                child = record_of(task, *child)
            child.coro.close()  # a task cancelled before its first step never ran it
            if task.cancelled():
                if task.cancelling():  # by the group, its timeout, or Handle.cancel()
                    child.reason = cancel_reason(exc) or self._cancel_reason
                    self._ended(child, _TIMED_OUT if self._timed_out else _CANCELLED, None, None)
                else:
                    error = stray_cancellation(f"child {child.name!r}", exc)
                    self._ended(child, _FAILED, None, error)
            elif exc is child.value:  # the TimeoutError of its own timeout
                self._ended(child, _TIMED_OUT, None, exc)
            else:
                self._ended(child, _FAILED, None, exc)
            return
        if isinstance(child, tuple):  # a plain start_soon child: its success only counts
            if EVENTS.on:
                self._ended(record_of(task, *child), _SUCCEEDED, value, None)
                return
            self._succeeded += 1
        elif not self._lean or self._queue or EVENTS.on:
            self._ended(child, _SUCCEEDED, value, None)
            return
        else:  # _ended() of a success that only counts (no queue to start from, no
            # policy to ask, no event), inlined: every such child ends here.
            child.status = _SUCCEEDED
            child.value = value
            child.task = None
            child.ended = self._clock()
            waiter = child.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if child.critical:
                self._succeeded += 1
        waiter = self._waiter  # _wake_exit(), inlined (no queue here)
        if waiter is not None and not waiter.done():
            pending = self._spawned - self._succeeded - self._failed
            if not self._tasks or (not pending and self._decision is _CONTINUE):
                waiter.set_result(None)

    def _ended(
        self,
        child: Child,
        status: ChildStatus,
        value: Any,
        error: BaseException | None,
        ran: bool = True,
    ) -> None:
        """Record how a child ended (``ran``: its task ended; else it was queued), count
        it, let the policy decide, and wake ``__aexit__`` if it has something to do."""
        child.status = status
        child.value = value
        child.error = error
        child.task = None
        if not ran:
            child.on_cancel = None  # it was queued: the group's way to drop it goes
        child.ended = self._clock()
        waiter = child.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if status is not _SUCCEEDED:
            if error is not None:
                self._child_errors = True
                if not isinstance(error, Exception):
                    self._on_fatal(error)  # KeyboardInterrupt and other BaseExceptions
            if not child.shown:  # a start_soon child is recorded once it did not succeed
                child.shown = self._unsorted = True
                self._kept.append(child)
        if ran and self._queue:
            self._launch_queued()
        if self._lean and status is _SUCCEEDED and not EVENTS.on:
            if child.critical:
                self._succeeded += 1
        else:
            self._judge(child, status)
        if self._waiter is not None:
            self._wake_exit()

    def _apply(self, decision: Decision, cause: Child | None = None) -> None:
        if decision is not _CONTINUE and self._decision is _CONTINUE:
            self._decide(decision, cause)

    def _decide(self, decision: Decision, cause: Child | CancelReason | None = None) -> None:
        self._decision = decision
        self._accepting = False
        if self._cancel_reason is None:  # why: told to the children and the body cancelled
            self._cancel_reason = self._reason_for(decision, cause)
        self._cancel_rest()
        if self._phase is _OPEN:  # the body stops at its next await; the scope catches it
            self._entered_scope().cancel()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # __aexit__ has a new decision to act on

    def _cancel_rest(self) -> None:
        queue = self._queue
        while queue:
            child, run, _ = queue.popleft()
            run.close()
            child.coro.close()
            child.reason = self._cancel_reason
            self._ended(child, _TIMED_OUT if self._timed_out else _CANCELLED, None, None, False)
        reason = self._cancel_reason
        for task in list(self._tasks):
            cancel_task(task, reason)

    def _on_timeout(self) -> None:
        if self._decision is not _CONTINUE:
            return
        self._timed_out = True
        partial = self._on_timeout_mode == "partial"
        decision = ask_timeout(self._policy, self._traits, self, partial)
        if decision is _CONTINUE:
            self._timed_out = False
            return
        self._decide(decision)

    async def __aenter__(self) -> TaskGroup:
        if self._phase is not _NEW:
            raise RuntimeError(f"{self!r} has already been entered; create a new TaskGroup")
        try:
            loop = _get_running_loop()
        except RuntimeError:  # no running asyncio loop
            task = None
        else:
            task = _current_task(loop)  # with the loop: no second look-up
        if task is None:
            what = f"{self!r} must be entered inside an asyncio task"
            raise RuntimeError(_scopes.outside_asyncio(what))
        self._task = task
        self._thread = _get_ident()
        self._loop = loop
        # clock_of(loop), inlined
        self._clock = clock = _monotonic if type(loop).time is _base_time else loop.time
        self._entered_at = now = clock()
        if self._timeout is None:  # the group's scope is entered when first needed
            state, deadline = _scopes.defer(task, self)
            self._scope_state = state
            same = not state.stack  # no scope active: defer() gave the base deadline itself
        else:
            scope = self._scope = GroupScope(self, now + self._timeout)
            deadline, same = scope._enter_in(task), False
        base = _scopes._base_deadline
        self._base_token = None if same or deadline == base.get() else base.set(deadline)
        self._phase = _OPEN
        self._accepting = True
        self._done_cb = self._on_task_done
        live_groups[self] = task
        if EVENTS.on:
            _observe.group_event("group entered", self, self._parent_name)
        return self

    async def _leave(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """``__aexit__``: True swallows the body's cancellation by the group itself."""
        self._phase = _EXITING
        task = self._task
        try:
            scope = self._scope
            if scope is None:
                if _current_task(self._loop) is not task:
                    scope = self._entered_scope()  # left in another task: the scope says so
                else:  # never needed: no longer deferred (_scope_state: set while open)
                    self._scope_state.undefer(self)  # type: ignore[union-attr]
            saw_cancel = False
            body_error: BaseException | None = None
            if exc is not None:
                if isinstance(exc, _CancelledError):
                    saw_cancel = True
                    # Without a scope, the group never cancelled its body.
                    if scope is None or scope._cancelled_from_outside(task):
                        self._outside(cancel_reason(exc))
                else:
                    body_error = exc
                    if not isinstance(exc, Exception):
                        self._on_fatal(exc)
                    if self._decision is _CONTINUE:
                        self._decide(_FAIL, _why.body_failed(self.name, exc))
            traits = self._traits
            if self._decision is _CONTINUE and traits.sees_body_done:
                self._apply(ask_body_done(self._policy, traits, self))
            while True:
                if self._decision is _CONTINUE and (
                    self._spawned == self._succeeded + self._failed  # nothing pending
                ):
                    decision = (
                        ask_all_done(self._policy, traits, self) if traits.sees_all_done else _DONE
                    )
                    if self._tasks or self._queue or decision is not _DONE:
                        self._decide(decision)
                    else:  # nothing left to cancel or wake: _decide(DONE) is this (and the
                        self._decision = _DONE  # finally: below, that stops spawns)
                        break
                if not self._tasks and not self._queue:
                    break
                waiter = self._waiter = self._loop.create_future()
                try:
                    await waiter
                except _CancelledError as cancelled:
                    # Keep the instance: anyio recognises its own by the message.
                    self._cancel_exc = cancelled
                    saw_cancel = True
                    if scope is None or scope._cancelled_from_outside(task):
                        self._outside(cancel_reason(cancelled))
                finally:
                    self._waiter = None
            if scope is not None and scope._exit(_CancelledError() if saw_cancel else None):
                saw_cancel = False  # caught: its own cancellation
            if saw_cancel:
                self._outside_cancel = True
            elif (
                body_error is None
                and not self._child_errors
                and not self._outside_cancel  # (a _base_error comes with one of these)
                and self._decision is _DONE
            ):
                return True  # what _raise_outcome() answers then, without its work
            return self._raise_outcome(exc, body_error)
        finally:
            self._phase = _CLOSED
            self._accepting = False
            self._scope = self._scope_state = self._done_cb = None  # no cycle left behind
            if self._base_token is not None and _current_task(self._loop) is task:
                _scopes._base_deadline.reset(self._base_token)  # the entering task's context
            if EVENTS.on:
                _observe.group_event("group exited", self, self._parent_name)
            del live_groups[self]  # added at entry (a statement: no method call)

    if TYPE_CHECKING:

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

    else:
        __aexit__ = _leave

    def _body_scope(self) -> CancelScope:
        """Make the group's scope (deferred at entry: see ``_entered_scope``)."""
        scope = self._scope = GroupScope(self, _INF)
        return scope

    def _outside(self, reason: CancelReason | None = None) -> None:
        # Once only: anyio re-cancels its task every iteration, and children
        # must be able to await in their cleanup (asyncio.TaskGroup aborts once).
        if self._outside_cancel:
            return
        self._outside_cancel = True
        if self._cancel_reason is None:  # the children get the reason the group got
            self._cancel_reason = reason or _why.outside(self.name)
        if self._decision is _CONTINUE:
            self._decision = _DONE
            self._accepting = False
        self._cancel_rest()
