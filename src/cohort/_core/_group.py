"""Task groups whose join policy decides when they are done.

Children are plain ``asyncio.Task``s, each with one ``Child`` record owned by
the group; one done callback (``_on_task_done``) records every end, as
CPython's TaskGroup does. The group's body runs inside a cancel scope of the
group's own (carrying the group's ``timeout``), so the group can stop its body
silently once the policy has decided. Whatever path leaves the ``async with``
block, every child has finished and every child error was raised or recorded.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import itertools
import math
import operator
import threading
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Never, NoReturn, TypeVar, TypeVarTuple

from cohort._core import _scopes
from cohort._core._child import Child, ChildStatus, Outcome, pop_caller_frame, run_with_timeout
from cohort._core._coros import (
    SPAWN_OPTIONS,
    check_coro,
    child_context,
    clock_of,
    close_coroutines,
    coro_object,
    detached_context,
    retrying,
)
from cohort._core._handle import Handle
from cohort._core._policies import (
    Decision,
    Gather,
    JoinPolicy,
    ask_all_done,
    ask_body_done,
    ask_child_done,
    ask_spawned,
    ask_timeout,
    traits_of,
)
from cohort._core._scopes import CancelScope, cancel_task, stray_cancellation
from cohort._observe import _events as _observe
from cohort._observe._events import EVENTS, GroupStatistics
from cohort._validate import check_count, check_seconds, keywords_refused

if TYPE_CHECKING:
    from cohort._core._retry import Retry

# clock_of, close_coroutines and detached_context: shown here too, for the layers
# above that import them with TaskGroup.
__all__ = ["TaskGroup", "clock_of", "close_coroutines", "detached_context", "open_groups"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_CancelledError = asyncio.CancelledError
_INF: Final = math.inf
# The thread check of spawn(): asyncio._get_running_loop() makes a getpid() system
# call at every call (it checks for a fork), a thread's id is a plain read.
_get_ident = threading.get_ident
_current_task = asyncio.current_task
_new_child = Child.__new__
_by_seq = operator.attrgetter("seq")

# Bound once: an enum member's look-up on its class costs a descriptor call.
_CONTINUE, _DONE, _FAIL = Decision.CONTINUE, Decision.DONE, Decision.FAIL
_CoroutineType = types.CoroutineType
_PENDING = ChildStatus.PENDING
_RUNNING = ChildStatus.RUNNING
_SUCCEEDED = ChildStatus.SUCCEEDED
_FAILED = ChildStatus.FAILED
_CANCELLED = ChildStatus.CANCELLED
_TIMED_OUT = ChildStatus.TIMED_OUT


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
# A child waiting for a ``limit`` slot: its record, the coroutine to run, the context.
_Queued = tuple[Child, Coroutine[Any, Any, Any], contextvars.Context]

_group_numbers = itertools.count(1)
# Every open group and the task it runs in, in entry order, for task_tree() and
# for naming a group's parent in events (added at entry, removed at exit).
_live_groups: dict[TaskGroup, asyncio.Task[Any]] = {}

# The policy of a group given none: policies keep no state, one serves every group.
_DEFAULT_POLICY: Final = Gather()


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
        "_base_token",
        "_clock",
        "_completed",
        "_count",
        "_decision",
        "_done_cb",
        "_entered_at",
        "_failed",
        "_kept",
        "_lean",
        "_limit",
        "_loop",
        "_name",
        "_on_timeout_mode",
        "_phase",
        "_policy",
        "_queue",
        "_scope",
        "_spawned",
        "_succeeded",
        "_task",
        "_tasks",
        "_thread",
        "_timeout",
        "_traits",
        "_waiter",
    )

    # Rarely set, so not slots: these class-level values serve until an instance
    # sets its own (in its __dict__), and a group that never needs them pays no store.
    _unsorted: bool = False  # a start_soon child's record was added out of spawn order
    _child_errors: bool = False  # a child failed or timed out (critical or not)
    _timed_out: bool = False
    # KeyboardInterrupt/SystemExit seen in the body or a child: re-raised bare.
    _base_error: BaseException | None = None
    # Any error that is not an Exception (those two included): no policy may
    # swallow it, the group fails.
    _fatal: bool = False
    _outside_cancel: bool = False
    _cancel_exc: _CancelledError | None = None
    # The group this one runs in (for events), found on first need while open.
    _parent: TaskGroup | Literal[False] | None = False

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
        elif not isinstance(join, JoinPolicy):
            if isinstance(join, type) and issubclass(join, JoinPolicy):
                raise TypeError(f"join= takes a policy instance: write join={join.__name__}()")
            raise TypeError(f"join= must be a cohort.JoinPolicy instance, got {join!r}")
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
        self._traits = traits = traits_of(join)
        # A critical child's success only counts: not kept in completion order, no
        # policy hook to call.
        self._lean = traits.lean
        self._limit = limit
        self._timeout = timeout
        self._on_timeout_mode = on_timeout
        self._name = name
        self._phase = _NEW
        self._accepting = False  # open and undecided: spawn() is allowed
        self._count = 0  # children admitted: the next one's place in spawn order
        # The running children by their task; the records shown in handles/outcomes
        # (in spawn order unless _unsorted); the finished ones in completion order
        # (for a policy that orders results so).
        self._tasks: dict[asyncio.Task[Any], Child] = {}
        self._kept: list[Child] = []
        self._completed: list[Child] = []
        # Children waiting for a ``limit`` slot (None until the first one waits).
        self._queue: deque[_Queued] | None = None
        self._spawned = 0
        self._succeeded = 0
        self._failed = 0
        self._decision = _CONTINUE
        self._waiter: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._clock: Callable[[], float] = time.monotonic  # the loop's clock, from entry
        # While open: _on_task_done, bound once for every child (dropped at exit,
        # so that no cycle is left behind).
        self._done_cb: Callable[[asyncio.Task[Any]], None] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._thread = 0  # the id of the thread that runs the group's loop, from entry
        self._scope: _GroupScope | None = None
        self._entered_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"<TaskGroup {self.name!r} {self._phase.value} join={self._policy!r} "
            f"children={self._count}>"
        )

    def statistics(self) -> GroupStatistics:
        """The group's counters now, as a frozen record (for monitoring and policies)."""
        entered = self._entered_at
        return GroupStatistics(
            name=self.name,
            policy=self._policy,
            phase=self._phase.value,
            decision=self._decision,
            children=self._count,
            running=len(self._tasks),
            queued=len(self._queue or ()),
            spawned=self._spawned,
            succeeded=self._succeeded,
            failed=self._failed,
            timed_out=self._timed_out,
            cancelled_from_outside=self._outside_cancel,
            elapsed=0.0 if entered is None else self._loop.time() - entered,
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
        if self._traits.completion_order:
            values = [c.value for c in self._completed if c.status is _SUCCEEDED and c.critical]
            cap = policy.results_limit
            return values[:cap] if cap is not None and self._decision is _DONE else values
        return [c.value for c in self._records() if c.status is _SUCCEEDED]

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
        return [c.error for c in self._records() if c.error is not None]

    def errors_of_critical(self) -> list[Exception]:
        """Errors of critical children that failed or timed out, in spawn order."""
        return [c.error for c in self._records() if c.critical and isinstance(c.error, Exception)]

    @property
    def outcomes(self) -> list[Outcome]:
        """One record per child in spawn order (a ``start_soon`` child only if it did
        not succeed)."""
        return [c.outcome() for c in self._records()]

    @property
    def handles(self) -> list[Handle[Any]]:
        """The children's handles in spawn order (a ``start_soon`` child's only if it
        ended without succeeding)."""
        return [Handle(c) for c in self._records()]

    def _records(self) -> list[Child]:
        if self._unsorted:
            self._kept.sort(key=_by_seq)
            self._unsorted = False
        return self._kept

    def _tree_rows(self) -> list[_TreeRow]:
        """For ``task_tree()``: (name, status, started, ended, task) of every child with
        a record, and of every ``start_soon`` child still running, in spawn order."""
        children = [*self._records(), *(c for c in self._tasks.values() if not c.shown)]
        children.sort(key=_by_seq)
        rows: list[_TreeRow] = []
        for c in children:
            task = c.task
            # A running task's own name: it may have been renamed since.
            name = task.get_name() if task is not None and c.label is not None else c.name
            rows.append((name, c.status, c.started, c.ended, task))
        return rows

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

        The group keeps no record of a child that succeeds: its value is not in
        ``results`` (except where the policy orders results by completion, as
        ``Quorum`` does), nor is it in ``handles`` or ``outcomes``. A child that
        fails, times out or is cancelled is recorded as a spawned one is. Errors,
        cancellation, policies, ``limit``, ``timeout``, ``critical`` and
        ``task_tree()`` and ``context`` work as for ``spawn``; a success costs less.
        """
        if kwargs:
            raise keywords_refused("start_soon", fn, args, kwargs, SPAWN_OPTIONS)
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
        """``spawn`` and ``start_soon``: check, make the coroutine and the child's record,
        start it (or queue it) and count it; nothing is recorded if that fails."""
        if not self._accepting or _get_ident() != self._thread:
            self._refuse_spawn(fn)
        if context is not None:
            context = child_context(context, fn)
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
        child = _new_child(Child)
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

    def _start(
        self, child: Child, run: Coroutine[Any, Any, Any], context: contextvars.Context | None
    ) -> None:
        """The one place where a child's coroutine becomes its task; raises (closing the
        coroutine) if no task can be made."""
        loop = self._loop
        try:
            if child.label is None and context is None:
                task = loop.create_task(run)  # no keywords to pass: a cheaper call
            else:
                task = loop.create_task(run, name=child.label, context=context)
        except BaseException:
            run.close()
            child.coro.close()
            raise
        child.task = task
        child.status = _RUNNING
        child.started = self._clock()
        self._tasks[task] = child
        done = self._done_cb
        assert done is not None  # open
        task.add_done_callback(done)
        if EVENTS.on:
            _observe.child_started(child.name, self.name, self._parent_name)

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

    def _drop_queued(self, child: Child) -> None:
        """A queued child is cancelled before it ever ran (``Handle.cancel``)."""
        queue = self._queue
        assert queue is not None  # it is queued
        for i, (queued, run, _) in enumerate(queue):
            if queued is child:
                del queue[i]
                run.close()
                child.coro.close()
                break
        self._ended(child, _CANCELLED, None, None, False)

    # -- completion ---------------------------------------------------------------

    def _launch_queued(self) -> None:
        queue = self._queue
        while (
            queue
            and self._decision is _CONTINUE
            and (self._limit is None or len(self._tasks) < self._limit)
        ):
            child, run, context = queue.popleft()
            try:
                self._start(child, run, context)
            except Exception as exc:  # no task could be made: the child failed
                self._ended(child, _FAILED, None, exc, False)

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        """A child's task ended (the done callback of every child): how, then record it."""
        child = self._tasks.pop(task)
        try:
            value = task.result()
        except BaseException as exc:
            pop_caller_frame(exc)  # this frame: the error keeps only the child's own
            child.coro.close()  # a task cancelled before its first step never ran it
            if task.cancelled():
                if task.cancelling():  # by the group, its timeout, or Handle.cancel()
                    self._ended(child, _TIMED_OUT if self._timed_out else _CANCELLED, None, None)
                else:
                    error = stray_cancellation(f"child {child.name!r}", exc)
                    self._ended(child, _FAILED, None, error)
            elif exc is child.value:  # the TimeoutError of its own timeout
                self._ended(child, _TIMED_OUT, None, exc)
            else:
                self._ended(child, _FAILED, None, exc)
            return
        self._ended(child, _SUCCEEDED, value, None)

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
        child.task = child.on_cancel = None
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
        # Wake __aexit__ (once per wait, not per child): nothing left running, or
        # every critical child done while undecided.
        waiter = self._waiter
        if (
            waiter is not None
            and (
                (not self._tasks and not self._queue)
                or (self._spawned == self._succeeded + self._failed and self._decision is _CONTINUE)
            )
            and not waiter.done()
        ):
            waiter.set_result(None)

    def _judge(self, child: Child, status: ChildStatus) -> None:
        """A child's end as the policy sees it: counted, and asked about if critical."""
        if self._traits.completion_order:
            self._completed.append(child)
        if child.critical:
            if status is _SUCCEEDED:
                self._succeeded += 1
            else:
                self._failed += 1
            if self._decision is _CONTINUE:
                if self._fatal:
                    self._decide(_FAIL)
                else:
                    self._apply(ask_child_done(self._policy, self._traits, self, child))
        elif self._fatal and self._decision is _CONTINUE:
            self._decide(_FAIL)
        if EVENTS.on:
            _observe.child_ended(child, self.name, self._parent_name)

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
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # __aexit__ has a new decision to act on

    def _cancel_rest(self) -> None:
        queue = self._queue
        while queue:
            child, run, _ = queue.popleft()
            run.close()
            child.coro.close()
            self._ended(child, _TIMED_OUT if self._timed_out else _CANCELLED, None, None, False)
        for task in list(self._tasks):
            cancel_task(task)

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
            task = _current_task()
        except RuntimeError:  # no running asyncio loop
            task = None
        if task is None:
            what = f"{self!r} must be entered inside an asyncio task"
            raise RuntimeError(_scopes.outside_asyncio(what))
        self._task = task
        self._thread = _get_ident()
        self._loop = loop = task.get_loop()
        self._clock = clock_of(loop)
        self._entered_at = now = loop.time()
        deadline = _INF if self._timeout is None else now + self._timeout
        scope = self._scope = _GroupScope(self, deadline)
        deadline_for_children = scope._enter_in(task)
        base = _scopes._base_deadline
        self._base_token = (
            None if deadline_for_children == base.get() else base.set(deadline_for_children)
        )
        self._phase = _OPEN
        self._accepting = True
        self._done_cb = self._on_task_done
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
            traits = self._traits
            if self._decision is _CONTINUE and traits.sees_body_done:
                self._apply(ask_body_done(self._policy, traits, self))
            while True:
                if self._decision is _CONTINUE and (
                    self._spawned == self._succeeded + self._failed  # nothing pending
                ):
                    decision = ask_all_done(self._policy, traits, self)
                    if self._tasks or self._queue or decision is not _DONE:
                        self._decide(decision)
                    else:  # with nothing left to cancel or wake, _decide(DONE) is this:
                        self._decision = _DONE
                        self._accepting = False
                if not self._tasks and not self._queue:
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
            self._done_cb = None
            if self._base_token is not None:
                _scopes._base_deadline.reset(self._base_token)
            if EVENTS.on:
                _observe.group_event("group exited", self.statistics(), self._parent_name)
            _live_groups.pop(self, None)

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
        parent = self._parent
        if parent is False:
            parent = self._parent = self._find_parent()
        return None if parent is None else parent.name

    def _find_parent(self) -> TaskGroup | None:
        """The group this one runs in: the innermost open group whose body runs in the
        same task, else the group of which that task is a child (read only for events:
        no context variable is set at each entry for it)."""
        host = self._task
        child_of: TaskGroup | None = None
        outer: TaskGroup | None = None
        for g, task in list(_live_groups.items()):
            if g is self:
                break
            if task is host:
                outer = g
            elif host in g._tasks:
                child_of = g
        return outer or child_of

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
            c.error
            for c in self._records()
            if c.error is not None
            and (not isinstance(c.error, Exception) or (raises and c.critical))
        ]
