"""Task groups whose join policy decides when they are done.

Children are plain ``asyncio.Task``s. The group's body runs inside a cancel
scope of the group's own (carrying the group's ``timeout``), so the group can
stop its body silently once the policy has decided. Whatever path leaves the
``async with`` block, every child has finished and every child error was
raised or recorded.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import itertools
import math
import threading
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Never, NoReturn, TypeVar, TypeVarTuple

from cohort._core import _scopes
from cohort._core._handle import ChildStatus, Handle, Outcome, _coro_name, _pop_caller_frame
from cohort._core._policies import Decision, Gather, JoinPolicy
from cohort._core._scopes import CancelScope, cancel_task
from cohort._observe import _events as _observe
from cohort._observe._events import EVENTS, GroupStatistics
from cohort._validate import check_count, check_seconds, keywords_refused

if TYPE_CHECKING:
    from cohort._core._retry import Retry

__all__ = ["SpawnHook", "TaskGroup", "close_coroutines", "open_groups", "spawn_hook"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_CancelledError = asyncio.CancelledError
_INF: Final = math.inf
_NAN: Final = math.nan
# The thread check of spawn(): asyncio._get_running_loop() makes a getpid() system
# call at every call (it checks for a fork), a thread's id is a plain read.
_get_ident = threading.get_ident
_current_task = asyncio.current_task


# Bound once: an enum member's look-up on its class costs a descriptor call.
_CONTINUE, _DONE, _FAIL = Decision.CONTINUE, Decision.DONE, Decision.FAIL
_CoroutineType = types.CoroutineType
_SUCCEEDED = ChildStatus.SUCCEEDED
_FAILED = ChildStatus.FAILED
_CANCELLED = ChildStatus.CANCELLED
_TIMED_OUT = ChildStatus.TIMED_OUT
_running_handle = Handle._running  # bound once: a classmethod is bound at every look-up
_UNSUCCESSFUL = frozenset({_FAILED, _CANCELLED, _TIMED_OUT})
_NO_HANDLES: frozenset[Handle[Any]] = frozenset()


class _GroupScope(CancelScope):
    """The group's scope around its body: its deadline is the group's timeout."""

    __slots__ = ("_group",)

    def __init__(self, group: TaskGroup, deadline: float) -> None:
        CancelScope.__init__(self, deadline=deadline)  # not super(): no proxy object made
        self._group = group

    def _expire(self) -> None:
        # The group decides (and cancels its body through this scope, if the
        # body still runs); a policy may also choose to ignore the timeout.
        self._group._on_timeout()
        if not self._reason:
            # The body had finished, or the policy chose to ignore the timeout:
            # this deadline is spent, but the scope can still be cancelled.
            self._retire_deadline()

    def _held_back(self) -> None:
        # The body sits in a shield, the children do not: they are cancelled now.
        self._group._outside()


class _Phase(enum.Enum):
    """Where a group is in its life (as CPython's ``asyncio.timeouts._State``)."""

    NEW = "new"
    OPEN = "open"  # the body runs
    EXITING = "exiting"  # the body has finished; waiting for the children
    CLOSED = "closed"


_NEW, _OPEN, _EXITING, _CLOSED = _Phase.NEW, _Phase.OPEN, _Phase.EXITING, _Phase.CLOSED

# A child as task_tree() shows it: name, status, started, ended and its task.
_TreeRow = tuple[str, ChildStatus, float | None, float | None, asyncio.Task[Any] | None]

_group_numbers = itertools.count(1)
# The group whose child is running (children inherit it through their context).
_current_group: ContextVar[TaskGroup | None] = ContextVar("cohort_group", default=None)
# Every open group and the task it runs in, for task_tree() (added at entry,
# removed at exit).
_live_groups: dict[TaskGroup, asyncio.Task[Any]] = {}


def _traits(join: JoinPolicy) -> tuple[bool, bool, bool]:
    """What a group needs to know of its policy: whether results are in completion
    order, whether a success is reported to ``on_child_done``, and whether
    ``on_body_done`` and ``on_all_done`` are JoinPolicy's own."""
    kind = type(join)
    return (
        join.results_order == "completion",
        join.consults_on_success and kind.on_child_done is not JoinPolicy.on_child_done,
        kind.on_body_done is JoinPolicy.on_body_done and kind.on_all_done is JoinPolicy.on_all_done,
    )


# The policy of a group given none: policies keep no state, one serves every group.
_DEFAULT_POLICY: Final = Gather()
_GATHER_TRAITS: Final = _traits(_DEFAULT_POLICY)


# -- the hook of an optional layer (cohort.durable) ------------------------------
#
# spawn() reads this context variable once per child: None (the default) costs
# nothing more. A layer that sets it is called with the group, the callable (or
# coroutine object) and the name given, before the coroutine is made; it
# answers the child's name and a function that wraps the child's coroutine.
SpawnHook = Callable[
    ["TaskGroup", object, "str | None"],
    tuple[str, Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]],
]
spawn_hook: ContextVar[SpawnHook | None] = ContextVar("cohort_spawn_hook", default=None)


def open_groups(loop: asyncio.AbstractEventLoop) -> list[tuple[TaskGroup, asyncio.Task[Any]]]:
    """The groups open on ``loop``, each with the task whose body it is, in entry order."""
    return [(g, task) for g, task in list(_live_groups.items()) if task.get_loop() is loop]


class TaskGroup:
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

    ``__aexit__`` returns True when the group swallowed its own cancellation
    of the body (its policy decided, or a partial timeout); it is typed as
    returning ``None`` so that type checkers do not call every name bound in
    the body "possibly unbound". A class that wraps a group must return that
    value from its own ``__aexit__``.

    Example:
        ```python
        async with cohort.TaskGroup(join=cohort.Quorum(2), timeout=1.5) as g:
            for replica in replicas:
                g.spawn(read, replica, key, name=f"read-{replica}")
        print(g.results)   # the first two values, in completion order
        ```
    """

    # Slots: a group's state is read on every spawn and every child's end, and
    # more attributes than a shared-key instance dict holds would slow each read.
    # __dict__ and __weakref__ stay, as for any class.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_accepting",
        "_bare",
        "_bare_done",
        "_bare_names",
        "_bare_ok",
        "_base_error",
        "_base_token",
        "_cancel_exc",
        "_child_errors",
        "_clock",
        "_completed",
        "_completion_order",
        "_consult_on_success",
        "_decision",
        "_entered_at",
        "_failed",
        "_fatal",
        "_group_token",
        "_handles",
        "_lean_success",
        "_limit",
        "_loop",
        "_name",
        "_on_spawn_hook",
        "_on_timeout_mode",
        "_outside_cancel",
        "_parent",
        "_phase",
        "_plain_ends",
        "_policy",
        "_queue",
        "_quiet",
        "_running",
        "_scope",
        "_spawned",
        "_succeeded",
        "_task",
        "_thread",
        "_timed_out",
        "_timeout",
        "_waiter",
    )

    # While open: _on_bare_done, bound once (by the first start_soon) for every
    # handle-less child; dropped at exit, so that no cycle is left behind.
    _bare_done: Callable[[asyncio.Task[Any]], None] | None

    def __init__(
        self,
        join: JoinPolicy | None = None,
        *,
        limit: int | None = None,
        timeout: float | None = None,
        on_timeout: Literal["raise", "partial"] = "raise",
        name: str | None = None,
    ) -> None:
        if join is None:
            join = _DEFAULT_POLICY
            # What the policy's class says, worked out once for the default policy.
            completion_order, consult_on_success, plain_ends = _GATHER_TRAITS
            on_spawn_hook = None
        else:
            if isinstance(join, type) and issubclass(join, JoinPolicy):
                raise TypeError(f"join= takes a policy instance: write join={join.__name__}()")
            if not isinstance(join, JoinPolicy):
                raise TypeError(f"join= must be a cohort.JoinPolicy instance, got {join!r}")
            completion_order, consult_on_success, plain_ends = _traits(join)
            on_spawn_hook = (
                join.on_spawn if type(join).on_spawn is not JoinPolicy.on_spawn else None
            )
        if limit is not None:
            limit = check_count("limit", limit)
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        if type(on_timeout) is not str or (on_timeout != "raise" and on_timeout != "partial"):
            if not isinstance(on_timeout, str):
                raise TypeError(f'on_timeout must be "raise" or "partial", got {on_timeout!r}')
            if on_timeout not in ("raise", "partial"):
                raise ValueError(f'on_timeout must be "raise" or "partial", got {on_timeout!r}')
        self._policy = join
        self._limit = limit
        self._timeout = timeout
        self._on_timeout_mode = on_timeout
        self._name = name
        self._phase = _NEW
        self._accepting = False  # open and undecided: spawn() is allowed
        # Every child in spawn order: its handle, or for a start_soon() child without
        # one (yet) the time it started.
        self._handles: list[Handle[Any] | float] = []
        # The start_soon() children running without a handle: the index of each in
        # _handles, bit-inverted (~) for an optional child; and the names given.
        self._bare: dict[asyncio.Task[Any], int] = {}
        self._bare_names: dict[asyncio.Task[Any], str] = {}
        self._bare_done = None
        # start_soon() children that have a handle all the same (a timeout, a queue
        # slot, a policy that reads every child): recorded only if they do not succeed.
        # (None until the first such child: a group pays for what it uses.)
        self._quiet: set[Handle[Any]] | None = None
        self._completed: list[Handle[Any]] = []
        # Children waiting for a ``limit`` slot (None until the first one waits).
        self._queue: deque[Handle[Any]] | None = None
        self._running = 0
        self._spawned = 0
        self._succeeded = 0
        self._failed = 0
        self._child_errors = False  # a child failed or timed out (critical or not)
        self._decision = _CONTINUE
        self._timed_out = False
        # KeyboardInterrupt/SystemExit seen in the body or a child: re-raised bare.
        self._base_error: BaseException | None = None
        # Any error that is not an Exception (those two included): no policy
        # may swallow it, the group fails.
        self._fatal = False
        self._outside_cancel = False
        self._cancel_exc: _CancelledError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._completion_order = completion_order
        self._consult_on_success = consult_on_success
        # on_body_done() and on_all_done() are JoinPolicy's: exit need not call them.
        self._plain_ends = plain_ends
        # A critical child's success only counts: not kept in completion order, no
        # policy hook to call (a fatal error has already decided the group).
        self._lean_success = not completion_order and not consult_on_success
        self._on_spawn_hook = on_spawn_hook
        # start_soon() may leave a child without a handle: no policy hook reads it.
        self._bare_ok = self._lean_success and on_spawn_hook is None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._clock: Callable[[], float] = _monotonic  # the loop's clock, from entry
        self._task: asyncio.Task[Any] | None = None
        self._thread = 0  # the id of the thread that runs the group's loop, from entry
        self._scope: _GroupScope | None = None
        self._entered_at = _NAN
        self._parent: TaskGroup | None = None

    def __repr__(self) -> str:
        return (
            f"<TaskGroup {self.name!r} {self._phase.value} join={self._policy!r} "
            f"children={len(self._handles)}>"
        )

    def statistics(self) -> GroupStatistics:
        """The group's counters now, as a frozen record (for monitoring and policies)."""
        entered = self._entered_at
        return GroupStatistics(
            name=self.name,
            policy=self._policy,
            phase=self._phase.value,
            decision=self._decision,
            children=len(self._handles),
            running=self._running,
            queued=len(self._queue or ()),
            spawned=self._spawned,
            succeeded=self._succeeded,
            failed=self._failed,
            timed_out=self._timed_out,
            cancelled_from_outside=self._outside_cancel,
            elapsed=0.0 if entered != entered else self._loop.time() - entered,
        )

    # -- counters for policies ---------------------------------------------------

    @property
    def name(self) -> str:
        """The group's name: ``name=``, or ``TaskGroup-N``."""
        if self._name is None:
            self._name = f"TaskGroup-{next(_group_numbers)}"
        return self._name

    @property
    def policy(self) -> JoinPolicy:
        """The join policy that decides when the group is done."""
        return self._policy

    @property
    def spawned(self) -> int:
        """Critical children spawned so far."""
        return self._spawned

    @property
    def succeeded(self) -> int:
        """Critical children that succeeded."""
        return self._succeeded

    @property
    def failed(self) -> int:
        """Critical children that failed, timed out or were cancelled."""
        return self._failed

    @property
    def pending(self) -> int:
        """Critical children not finished yet (queued or running)."""
        return self._spawned - self._succeeded - self._failed

    @property
    def body_done(self) -> bool:
        """True once the ``async with`` body has finished."""
        return self._phase in (_EXITING, _CLOSED)

    @property
    def timed_out(self) -> bool:
        """True if the group's timeout fired."""
        return self._timed_out

    # -- results ------------------------------------------------------------------

    @property
    def results(self) -> list[Any]:
        """Successful values: spawn order; for quorum policies the critical values that
        made the quorum, in completion order (optional children: see ``outcomes``)."""
        policy = self._policy
        if policy.results_order == "completion":
            values = [h.result() for h in self._completed if h.status is _SUCCEEDED and h.critical]
            cap = policy.results_limit
            return values[:cap] if cap is not None and self._decision is _DONE else values
        return [h.result() for h in self._records() if h.status is _SUCCEEDED]

    @property
    def result(self) -> Any:
        """The winner's value (for ``FirstWins``): the first successful result."""
        values = self.results
        if not values:
            raise LookupError(f"no child of {self!r} succeeded")
        return values[0]

    @property
    def errors(self) -> list[BaseException]:
        """Errors of children that failed or timed out (critical or not), spawn order."""
        return [h.error for h in self._records() if h.error is not None]

    def errors_of_critical(self) -> list[Exception]:
        """Errors of critical children that failed or timed out, in spawn order."""
        return [
            h.error
            for h in self._records()
            if h.critical and isinstance(h.error, Exception) and h.failed
        ]

    @property
    def outcomes(self) -> list[Outcome]:
        """One record per child in spawn order (a ``start_soon`` child only if it did
        not succeed)."""
        return [h.outcome() for h in self._records()]

    @property
    def handles(self) -> list[Handle[Any]]:
        """The children's handles in spawn order (a ``start_soon`` child's only if it
        ended without succeeding)."""
        return self._records()

    def _records(self) -> list[Handle[Any]]:
        quiet = self._quiet or _NO_HANDLES
        return [
            h
            for h in self._handles
            if isinstance(h, Handle) and (h.status in _UNSUCCESSFUL or h not in quiet)
        ]

    def _tree_rows(self) -> list[_TreeRow]:
        """For ``task_tree()``: (name, status, started, ended, task) of every child with
        a record, and of every ``start_soon`` child still running, in spawn order."""
        quiet = self._quiet or _NO_HANDLES
        running = self._bare_at()
        rows: list[_TreeRow] = []
        for i, h in enumerate(self._handles):
            if isinstance(h, Handle):
                if h.status is not _SUCCEEDED or h not in quiet:
                    rows.append((h.name, h.status, h.started, h.ended, h.task))
            elif i in running:
                task = running[i]
                # The task's own name: it was given one, and may have been renamed since.
                name = task.get_name() if task in self._bare_names else _coro_name(task.get_coro())
                rows.append((name, ChildStatus.RUNNING, h, None, task))
        return rows

    def _bare_at(self) -> dict[int, asyncio.Task[Any]]:
        """The running handle-less children by their index in ``_handles``."""
        return {(i if i >= 0 else ~i): task for task, i in self._bare.items()}

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
            raise keywords_refused("spawn", fn, args, kwargs, _SPAWN_OPTIONS)
        loop = self._loop
        if not self._accepting or _get_ident() != self._thread:
            self._refuse_spawn(fn)
        if context is not None:
            context = _child_context(context, fn)
        hook = spawn_hook.get()
        if hook is not None:  # an optional layer wraps the child (see spawn_hook)
            name, wrap = hook(self, fn, name)
        tally: list[int] | None = None
        if retry is not None:
            fn, args, tally = _retrying(fn, args, retry)  # type: ignore[assignment]
        if timeout is not None:
            try:
                timeout = check_seconds("timeout", timeout)
            except (TypeError, ValueError):
                close_coroutines((fn,))
                raise
        coro: Coroutine[Any, Any, T]
        if callable(fn):
            coro = fn(*args)  # type: ignore[assignment]  # checked just below
            if type(coro) is not _CoroutineType:
                coro = _check_coro(fn, coro)
        elif type(fn) is _CoroutineType and not args:
            coro = fn
        else:
            coro = _coro_object(fn, args)
        if hook is not None:
            coro = wrap(coro)
        handle: Handle[T]
        if self._limit is not None and self._running >= self._limit:
            if context is None:
                # A copy of the caller's context now, as for a child started at
                # once: not that of whichever child's end frees the slot.
                context = contextvars.copy_context()
            handle = Handle._queued(self, loop, self._clock, coro, name, timeout, critical, context)
            if self._queue is None:
                self._queue = deque()
            self._queue.append(handle)
        elif timeout is None:
            # The common case, made fast: the task is made here and handed to the handle.
            try:
                if name is None and context is None:
                    task = loop.create_task(coro)  # no keywords to pass: a cheaper call
                else:
                    task = loop.create_task(coro, name=name, context=context)
            except BaseException:
                coro.close()  # no task, no child: nothing is recorded
                raise
            handle = _running_handle(self, loop, self._clock, coro, name, critical, task)
            self._running += 1
            if EVENTS.on:
                _observe.child_started(handle.name, self.name, self._parent_name)
        else:
            handle = Handle._queued(self, loop, self._clock, coro, name, timeout, critical, context)
            self._launch(handle)
        self._handles.append(handle)
        if tally is not None:
            handle._tally = tally
        if critical:
            self._spawned += 1
            if self._on_spawn_hook is not None:
                self._apply(self._on_spawn_hook(self, handle))
        return handle

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

        The group keeps no record of a child that succeeds: its value is not in
        ``results`` (except where the policy orders results by completion, as
        ``Quorum`` does), nor is it in ``handles`` or ``outcomes``. A child that
        fails, times out or is cancelled is recorded as a spawned one is. Errors,
        cancellation, policies, ``limit``, ``timeout``, ``critical`` and
        ``task_tree()`` and ``context`` work as for ``spawn``; a success costs less.
        """
        if kwargs:
            raise keywords_refused("start_soon", fn, args, kwargs, _SPAWN_OPTIONS)
        loop = self._loop
        if (
            timeout is not None
            or retry is not None
            or not self._bare_ok
            or spawn_hook.get() is not None  # a wrapped child goes through spawn()
            or (self._limit is not None and self._running >= self._limit)
        ):
            handle = self.spawn(
                fn,
                *args,
                name=name,
                timeout=timeout,
                critical=critical,
                retry=retry,
                context=context,
            )
            if self._quiet is None:
                self._quiet = set()
            self._quiet.add(handle)
            return
        if not self._accepting or _get_ident() != self._thread:
            self._refuse_spawn(fn)
        if context is not None:
            context = _child_context(context, fn)
        coro: Coroutine[Any, Any, object]
        if callable(fn):
            coro = fn(*args)  # type: ignore[assignment]  # checked just below
            if type(coro) is not _CoroutineType:
                coro = _check_coro(fn, coro)
        elif type(fn) is _CoroutineType and not args:
            coro = fn
        else:
            coro = _coro_object(fn, args)
        try:
            if name is None and context is None:
                task = loop.create_task(coro)  # no keywords to pass: a cheaper call
            else:
                task = loop.create_task(coro, name=name, context=context)
        except BaseException:
            coro.close()
            raise
        handles = self._handles
        if critical:
            self._bare[task] = len(handles)
            self._spawned += 1
        else:
            self._bare[task] = ~len(handles)
        handles.append(self._clock())
        if name is not None:
            self._bare_names[task] = name
        done = self._bare_done
        if done is None:
            done = self._bare_done = self._on_bare_done
        task.add_done_callback(done)
        self._running += 1
        if EVENTS.on:
            _observe.child_started(name or _coro_name(coro), self.name, self._parent_name)

    def _on_bare_done(self, task: asyncio.Task[Any]) -> None:
        """A handle-less child's task ended: a success is counted; anything else
        gives the child a handle, through which it ends as a spawned child does."""
        index = self._bare.pop(task)
        try:
            task.result()
        except BaseException as exc:
            _pop_caller_frame(exc)  # this frame: the error keeps only the child's own
            self._adopt(task, index, exc)
            return
        if EVENTS.on:
            self._adopt(task, index, None)
        else:
            if self._bare_names:
                self._bare_names.pop(task, None)
            self._running -= 1
            if index >= 0:
                self._succeeded += 1
            if self._queue:
                self._launch_queued()
            if self._waiter is not None and (
                self._running == 0 or self._spawned == self._succeeded + self._failed
            ):
                self._wake()

    def _adopt(self, task: asyncio.Task[Any], index: int, error: BaseException | None) -> None:
        """Give a handle-less child a handle and end it through it: with the ``error``
        its task raised (the handle then takes the child's place), or as a success."""
        critical = index >= 0
        if not critical:
            index = ~index
        started = self._handles[index]
        assert not isinstance(started, Handle)
        name = self._bare_names.pop(task, None)
        handle = Handle._adopt(self, self._loop, self._clock, task, name, critical, started)
        if error is None:
            handle._on_done(task)
        else:
            self._handles[index] = handle
            handle._raised(task, error)

    def _refuse_spawn(self, fn: object) -> NoReturn:
        close_coroutines((fn,))
        if self._accepting:  # open, but called from another thread
            raise RuntimeError(
                f"cannot spawn into {self!r} from outside its event loop's thread; "
                "use loop.call_soon_threadsafe or asyncio.run_coroutine_threadsafe"
            )
        if self._phase is _NEW:
            raise RuntimeError(f"cannot spawn into {self!r}: enter it with `async with` first")
        if self._phase is _CLOSED:
            raise RuntimeError(f"cannot spawn into {self!r}: it has exited")
        raise RuntimeError(
            f"cannot spawn into {self!r}: its policy has decided "
            f"({self._decision.value}); spawn into a new group"
        )

    def cancel(self) -> None:
        """Stop the group now: cancel every child and the body; exit normally."""
        if self._phase in (_OPEN, _EXITING) and self._decision is _CONTINUE:
            self._decide(_DONE)

    def _launch(self, handle: Handle[Any]) -> None:
        """Start a child's task; raises (closing its coroutine) if it cannot be created."""
        handle._start()
        self._running += 1
        if EVENTS.on:
            _observe.child_started(handle.name, self.name, self._parent_name)

    def _drop_queued(self, handle: Handle[Any]) -> None:
        """A queued child is cancelled before it ever ran."""
        assert self._queue is not None  # it is queued
        self._queue.remove(handle)
        handle._discard()
        self._child_ended(handle, handle._settle(_CANCELLED, None, None), False)

    # -- completion ---------------------------------------------------------------

    def _launch_queued(self) -> None:
        queue = self._queue
        while (
            queue
            and self._decision is _CONTINUE
            and (self._limit is None or self._running < self._limit)
        ):
            handle = queue.popleft()
            try:
                self._launch(handle)
            except Exception as exc:  # no task could be made: the child failed
                self._child_ended(handle, handle._settle(_FAILED, None, exc), False)

    def _child_succeeded(self, handle: Handle[Any]) -> None:
        """``_child_ended(handle, SUCCEEDED, True)``, shortened where it does nothing more
        than count: every successful child of a group without a queue comes here."""
        if self._lean_success and handle.critical and not self._queue and not EVENTS.on:
            self._running -= 1
            self._succeeded += 1
            waiter = self._waiter
            # _wake(), inlined (no queue): nothing left running, or every critical
            # child done while undecided.
            if (
                waiter is not None
                and (
                    self._running == 0
                    or (
                        self._spawned == self._succeeded + self._failed
                        and self._decision is _CONTINUE
                    )
                )
                and not waiter.done()
            ):
                waiter.set_result(None)
        else:
            self._child_ended(handle, _SUCCEEDED, True)

    def _child_ended(self, handle: Handle[Any], status: ChildStatus, started: bool) -> None:
        """A child ended (its handle has recorded how): count it and let the policy decide.

        Where the group learns of an end: a task that finished (``started``), or
        a queued child that never ran or could not start. Only successes that
        need nothing more than counting end elsewhere (``_child_succeeded``, and
        ``_on_bare_done`` for a child without a handle).
        """
        if handle.error is not None:
            self._child_errors = True
        if started:
            self._running -= 1
            if status is not _SUCCEEDED and not isinstance(handle.error, Exception | None):
                self._on_fatal(handle.error)  # KeyboardInterrupt and other BaseExceptions
            if self._queue:
                self._launch_queued()
        if self._completion_order:
            self._completed.append(handle)
        if handle.critical:
            if status is _SUCCEEDED:
                self._succeeded += 1
                consult = self._consult_on_success
            else:
                self._failed += 1
                consult = True
            if self._decision is _CONTINUE:
                if self._fatal:
                    self._decide(_FAIL)
                elif consult:
                    self._apply(self._policy.on_child_done(self, handle))
        elif self._fatal and self._decision is _CONTINUE:
            self._decide(_FAIL)
        if EVENTS.on:
            _observe.child_ended(handle, self.name, self._parent_name)
        if self._waiter is not None and (
            self._running == 0 or self._spawned == self._succeeded + self._failed
        ):
            self._wake()

    def _apply(self, decision: Decision) -> None:
        if decision is not _CONTINUE and self._decision is _CONTINUE:
            self._decide(decision)

    def _decide(self, decision: Decision) -> None:
        self._decision = decision
        self._accepting = False
        self._cancel_rest()
        scope = self._scope
        if self._phase is _OPEN and scope is not None:
            scope.cancel()  # the body stops at its next await; the scope catches it
        self._wake(force=True)

    def _cancel_rest(self) -> None:
        queue = self._queue
        while queue:
            handle = queue.popleft()
            handle._discard()
            status = _TIMED_OUT if self._timed_out else _CANCELLED
            self._child_ended(handle, handle._settle(status, None, None), False)
        if self._running:  # else no child has a task (a finished one drops it)
            bare = self._bare_at() if self._bare else {}
            for i, child in enumerate(self._handles):
                task = child.task if isinstance(child, Handle) else bare.get(i)
                if task is not None:
                    cancel_task(task)

    def _on_timeout(self) -> None:
        if self._decision is not _CONTINUE:
            return
        self._timed_out = True
        decision = self._policy.on_timeout(self)
        if decision is None:
            decision = _FAIL if self._on_timeout_mode == "raise" else _DONE
        if decision is _CONTINUE:
            self._timed_out = False
            return
        self._decide(decision)

    def _wake(self, force: bool = False) -> None:
        """Wake __aexit__ when it has something to do: a new decision (``force``),
        every critical child done, or nothing left running (once per wait, not per child)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (force or self._exit_ready()):
            waiter.set_result(None)

    def _exit_ready(self) -> bool:
        return (self._running == 0 and not self._queue) or (
            self._decision is _CONTINUE and self.pending == 0
        )

    # -- entering and leaving -----------------------------------------------------

    async def __aenter__(self) -> TaskGroup:
        if self._phase is not _NEW:
            raise RuntimeError(f"{self!r} has already been entered; create a new TaskGroup")
        try:
            task = _current_task()
        except RuntimeError:  # no running asyncio loop
            task = None
        if task is None:
            what = f"{self!r} must be entered inside an asyncio task"
            raise RuntimeError(_scopes.outside_asyncio(what))
        self._task = task
        self._thread = _get_ident()
        self._loop = loop = task.get_loop()
        # clock_of(loop), inlined
        self._clock = _monotonic if type(loop).time is _base_time else loop.time
        self._entered_at = now = loop.time()
        deadline = _INF if self._timeout is None else now + self._timeout
        scope = self._scope = _GroupScope(self, deadline)
        deadline_for_children = scope._enter_in(task)
        base = _scopes._base_deadline
        self._base_token = (
            None if deadline_for_children == base.get() else base.set(deadline_for_children)
        )
        self._parent = _current_group.get()
        self._group_token = _current_group.set(self)
        self._phase = _OPEN
        self._accepting = True
        _live_groups[self] = task
        if EVENTS.on:
            _observe.group_event("group entered", self.statistics(), self._parent_name)
        return self

    async def _leave(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """``__aexit__``: True swallows the body's cancellation by the group itself."""
        self._phase = _EXITING
        try:
            task = self._task
            scope = self._scope
            assert task is not None
            assert scope is not None
            saw_cancel = False
            body_error: BaseException | None = None
            if exc is not None:
                if isinstance(exc, _CancelledError):
                    saw_cancel = True
                    if scope._cancelled_from_outside(task):
                        self._outside()
                else:
                    body_error = exc
                    if not isinstance(exc, Exception):
                        self._on_fatal(exc)
                    if self._decision is _CONTINUE:
                        self._decide(_FAIL)
            if self._decision is _CONTINUE and not self._plain_ends:
                self._apply(self._policy.on_body_done(self))
            while True:
                if self._decision is _CONTINUE and (
                    self._spawned == self._succeeded + self._failed  # nothing pending
                ):
                    if not self._plain_ends:
                        self._apply(self._policy.on_all_done(self))
                    if self._decision is _CONTINUE:
                        # JoinPolicy.on_all_done's answer; with nothing left to
                        # cancel or wake, _decide(DONE) comes down to this:
                        if self._running or self._queue:
                            self._decide(_DONE)
                        else:
                            self._decision = _DONE
                            self._accepting = False
                if self._running == 0 and not self._queue:
                    break
                self._waiter = self._loop.create_future()
                try:
                    await self._waiter
                except _CancelledError as cancelled:
                    # Keep the instance: anyio recognises its own by the message.
                    self._cancel_exc = cancelled
                    saw_cancel = True
                    if scope._cancelled_from_outside(task):
                        self._outside()
                finally:
                    self._waiter = None
            caught = scope._exit(_CancelledError() if saw_cancel else None)
            if saw_cancel and not caught:
                self._outside_cancel = True
            if (
                body_error is None
                and not self._child_errors
                and not self._outside_cancel
                and self._base_error is None
                and self._decision is _DONE
            ):
                return True  # what _raise_outcome() answers then, without its work
            return self._raise_outcome(exc, body_error)
        finally:
            self._phase = _CLOSED
            self._accepting = False
            self._scope = None  # it refers to the group: no cycle left behind
            self._bare_done = None
            _current_group.reset(self._group_token)
            if self._base_token is not None:
                _scopes._base_deadline.reset(self._base_token)
            _live_groups.pop(self, None)
            if EVENTS.on:
                _observe.group_event("group exited", self.statistics(), self._parent_name)

    if TYPE_CHECKING:
        # Typed as never swallowing, like asyncio.TaskGroup's: it swallows only its
        # own cancellation of the body, when its policy decided while the body
        # was awaiting, and a name bound after that await is then unbound (an
        # UnboundLocalError, not a silent error). Typed as `-> bool`, type
        # checkers would call every handle assigned in the body "possibly unbound".
        async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            tb: TracebackType | None,
        ) -> None: ...

    else:
        __aexit__ = _leave

    @property
    def _parent_name(self) -> str | None:
        return None if self._parent is None else self._parent.name

    def _on_fatal(self, exc: BaseException) -> None:
        self._fatal = True
        if self._base_error is None and isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self._base_error = exc

    def _outside(self) -> None:
        # Once only: anyio re-cancels its task every iteration, and children
        # must be able to await in their cleanup (asyncio.TaskGroup aborts once).
        if self._outside_cancel:
            return
        self._outside_cancel = True
        if self._decision is _CONTINUE:
            self._decision = _DONE
            self._accepting = False
        self._cancel_rest()

    def _raise_outcome(self, exc: BaseException | None, body_error: BaseException | None) -> bool:
        """Raise what the group ended with; return True to swallow the body's exception."""
        if self._base_error is not None:
            raise self._base_error
        policy = self._policy
        child_errors = self._errors_to_raise()
        if body_error is not None:
            self._keep_outside_cancel(exc)
            raise BaseExceptionGroup(f"{self.name}: the body failed", [body_error, *child_errors])
        if self._outside_cancel:
            if child_errors:
                self._keep_outside_cancel(exc)
                raise BaseExceptionGroup(f"{self.name}: children failed", child_errors)
            if isinstance(exc, _CancelledError):
                return False
            raise self._cancel_exc or _CancelledError()
        if self._decision is _FAIL:
            if self._timed_out:
                timeout_error = TimeoutError(
                    f"{self.name} timed out after {self._timeout} s ({self._policy!r})"
                )
                if child_errors:
                    raise BaseExceptionGroup(
                        f"{self.name}: timed out", [*child_errors, timeout_error]
                    )
                raise timeout_error
            if self._fatal:
                raise BaseExceptionGroup(f"{self.name}: children failed", child_errors)
            raise policy.error(self)
        if child_errors:
            # Decided DONE (partial timeout, g.cancel()) but children failed on
            # their way out: never swallowed.
            raise BaseExceptionGroup(f"{self.name}: children failed", child_errors)
        return True

    def _keep_outside_cancel(self, exc: BaseException | None) -> None:
        """Errors win over an outside cancellation, as in asyncio.TaskGroup; the
        cancellation is not lost: a raw task.cancel() is delivered again at the
        next await (uncancel + cancel keeps the count, as asyncio does since
        gh-116720), and an enclosing cohort scope gets its own delivered again
        if it is still active then.

        Only a ``CancelledError`` the group consumed (the body's, or one that
        ended a wait for the children) is delivered again: a cancellation still
        held back by a shield arrives on its own, and one the body caught stays
        caught (edge-triggered)."""
        if not self._outside_cancel or (
            self._cancel_exc is None and not isinstance(exc, _CancelledError)
        ):
            return
        task = self._task
        assert task is not None
        if _scopes.foreign_cancels(task):
            task.uncancel()
            task.cancel()
        _scopes.redeliver(task)

    def _errors_to_raise(self) -> list[BaseException]:
        """Child errors the group raises, in spawn order: critical failures if the
        policy raises them, and any child error that is not an ``Exception``."""
        if not self._child_errors:
            return []
        raises = self._policy.raises_child_errors
        return [
            h.error
            for h in self._records()
            if h.failed
            and h.error is not None
            and (not isinstance(h.error, Exception) or (raises and h.critical))
        ]


def detached_context() -> contextvars.Context:
    """A copy of the current context for a task that may outlive this one: the
    application's variables stay (logging bindings...), cohort's group and
    deadlines do not apply there."""
    context = contextvars.copy_context()
    context.run(_detach)
    return context


def _detach() -> None:
    _current_group.set(None)
    _scopes._base_deadline.set(math.inf)
    _scopes._state_var.set(None)


def _child_context(context: object, fn: object) -> contextvars.Context:
    """``spawn(context=)``: the context, checked, holding cohort's own variables as the
    caller's (the group there, the deadline in force), as a copy of the caller's would.

    They are set only where they differ: the caller's own running context (which
    cannot be entered again) already holds them.
    """
    if type(context) is not contextvars.Context:
        close_coroutines((fn,))
        raise TypeError(
            "context= takes a contextvars.Context (e.g. contextvars.copy_context()), "
            f"got {context!r}"
        )
    group = _current_group.get()
    deadline = _scopes._base_deadline.get()
    if (
        context.get(_current_group) is not group
        or context.get(_scopes._base_deadline, math.inf) != deadline
    ):
        context.run(_inherit, group, deadline)
    return context


def _inherit(group: TaskGroup | None, deadline: float) -> None:
    _current_group.set(group)
    _scopes._base_deadline.set(deadline)


def clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or ``time.monotonic`` itself where that is all ``loop.time`` does.

    Children are timed on the loop's clock (a virtual clock included); calling
    the C function directly saves a Python method call per timestamp.
    """
    if type(loop).time is _base_time:
        return _monotonic
    return loop.time


_base_time: Final = asyncio.BaseEventLoop.time
_monotonic: Final = time.monotonic


_SPAWN_OPTIONS = ("name", "timeout", "critical", "retry", "context")


def close_coroutines(items: Iterable[object]) -> None:
    """Close coroutine objects that will never run (no "never awaited" warning)."""
    for item in items:
        if asyncio.iscoroutine(item):
            item.close()


def _coro_object(fn: Any, args: tuple[Any, ...]) -> Coroutine[Any, Any, Any]:
    """``spawn(coroutine_object)``: check it is one, and that no arguments came with it."""
    if not asyncio.iscoroutine(fn):
        raise TypeError(f"spawn() needs an async callable or a coroutine object, got {fn!r}")
    if args:
        fn.close()
        raise TypeError("spawn() got a coroutine object and arguments; pass fn, *args")
    return fn


def _check_coro(fn: Any, coro: Any) -> Coroutine[Any, Any, Any]:
    """``fn(*args)`` did not return a plain coroutine: accept other coroutines only."""
    if asyncio.iscoroutine(coro):
        return coro
    raise TypeError(
        f"spawn() needs an async function: {fn!r} returned {type(coro).__name__}, "
        "not a coroutine (use `async def`, or cohort.to_process/to_thread for plain functions)"
    )


def _retrying(
    fn: Any, args: tuple[Any, ...], policy: Retry
) -> tuple[Callable[[], Coroutine[Any, Any, Any]], tuple[()], list[int]]:
    """``spawn(fn, *args, retry=policy)``: the child calls ``fn(*args)`` again on failure."""
    from cohort._core._retry import Retry, attempt_all  # not imported with cohort
    from cohort._core._retry import _name as _retry_name

    if not isinstance(policy, Retry):
        close_coroutines((fn,))
        raise TypeError(f"retry must be a cohort.Retry, got {policy!r}")
    if not callable(fn):
        close_coroutines((fn,))
        raise TypeError(
            "spawn(retry=) needs an async callable and its arguments, not a coroutine "
            "object: a coroutine runs once"
        )
    tally = [0]
    what = _retry_name(fn)

    def child() -> Coroutine[Any, Any, Any]:
        return attempt_all(policy, lambda: fn(*args), what, tally)

    return child, (), tally
