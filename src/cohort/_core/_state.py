"""A task group's state and what is read of it: ``GroupState``, the base of ``TaskGroup``.

The records of the children (running by task, kept in spawn order, finished in
completion order, queued), the counters the policies read, the results, and the
phase, and the queue of children waiting for a ``limit`` slot (started or
dropped here); a child's task made (``_start``) and its end judged (``_judge``).
``TaskGroup`` (``cohort._core._group``) adds what changes the rest: spawning,
the completion path, decisions, entry and exit.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import itertools
import operator
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

from cohort._core import _scopes, _why
from cohort._core._child import Child, ChildStatus, Outcome, record_of
from cohort._core._coros import close_coroutines
from cohort._core._handle import Handle
from cohort._core._policies import Decision, Gather, JoinPolicy, ask_child_done, traits_of
from cohort._core._scopes import CancelScope
from cohort._observe import _events as _observe
from cohort._observe._awaited import add_awaited_by
from cohort._observe._events import EVENTS, GroupStatistics
from cohort._observe._reasons import CancelReason
from cohort._validate import check_count, check_seconds

if TYPE_CHECKING:
    from cohort._core._group import TaskGroup

__all__ = [
    "GroupScope",
    "GroupState",
    "Phase",
    "Queued",
    "TreeRow",
    "live_groups",
    "open_groups",
]

_CancelledError = asyncio.CancelledError
_CONTINUE, _DONE, _FAIL = Decision.CONTINUE, Decision.DONE, Decision.FAIL
_SUCCEEDED, _FAILED, _CANCELLED = ChildStatus.SUCCEEDED, ChildStatus.FAILED, ChildStatus.CANCELLED
_RUNNING = ChildStatus.RUNNING
_by_seq = operator.attrgetter("seq")
# The completion order of a group whose policy does not read it: never appended to.
_NOT_KEPT: Final[list[Child]] = []


class Phase(enum.Enum):
    """Where a group is in its life (as CPython's ``asyncio.timeouts._State``)."""

    NEW = "new"
    OPEN = "open"  # the body runs
    EXITING = "exiting"  # the body has finished; waiting for the children
    CLOSED = "closed"


_NEW, _EXITING, _CLOSED = Phase.NEW, Phase.EXITING, Phase.CLOSED

# A child as task_tree() shows it: name, status, started, ended, its task, and why
# cohort cancelled it.
TreeRow = tuple[
    str, ChildStatus, float | None, float | None, asyncio.Task[Any] | None, CancelReason | None
]
# A plain start_soon child while it runs without a record (record_of's arguments
# after its task): its place in spawn order, its start, and the name given if any.
Plain = tuple[int, float] | tuple[int, float, str]
# A child waiting for a ``limit`` slot: its record, the coroutine to run, the context.
Queued = tuple[Child, Coroutine[Any, Any, Any], contextvars.Context]

_group_numbers = itertools.count(1)
# Every open group and the task it runs in, in entry order, for task_tree() and
# for naming a group's parent in events (added at entry, removed at exit).
live_groups: dict[GroupState, asyncio.Task[Any]] = {}

# The policy of a group given none: policies keep no state, one serves every group.
_DEFAULT_POLICY: Final = Gather()
_DEFAULT_TRAITS: Final = traits_of(_DEFAULT_POLICY)


def open_groups(loop: asyncio.AbstractEventLoop) -> list[tuple[Any, asyncio.Task[Any]]]:
    """The groups open on ``loop``, each with the task whose body it is, in entry order."""
    return [(g, task) for g, task in list(live_groups.items()) if task.get_loop() is loop]


class GroupScope(CancelScope):
    """A task group's scope around its body: its deadline is the group's timeout."""

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

    def _why(self) -> CancelReason | None:
        # The body is cancelled for the group's own reason.
        return self._group._cancel_reason


class GroupState:
    """A task group's state, its counters for policies and its results (see ``TaskGroup``)."""

    # Slots: a group's state is read on every spawn and every child's end, and
    # more attributes than a shared-key instance dict holds would slow each read.
    # __dict__ and __weakref__ stay, as for any class.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_accepting",
        "_base_token",
        "_cb_context",
        "_child_errors",
        "_clock",
        "_count",
        "_decision",
        "_done_cb",
        "_entered_at",
        "_failed",
        "_kept",
        "_lean",
        "_limit",
        "_loop",
        "_outside_cancel",
        "_phase",
        "_plain",
        "_policy",
        "_queue",
        "_scope",
        "_scope_state",
        "_spawned",
        "_succeeded",
        "_task",
        "_tasks",
        "_thread",
        "_timeout",
        "_traits",
        "_waiter",
    )

    # Set at entry, read only once entered (not stored by __init__): the task whose
    # body the group is, its loop, the loop's clock, the id of the loop's thread,
    # and _on_task_done, bound once for every child (dropped at exit: no cycle).
    _task: asyncio.Task[Any]
    _loop: asyncio.AbstractEventLoop
    _clock: Callable[[], float]
    _thread: int
    _entered_at: float
    _done_cb: Callable[[asyncio.Task[Any]], None] | None
    # Set at entry when the group has no timeout (its scope is deferred then, see
    # _scopes.defer): the task's scopes; None after exit.
    _scope_state: _scopes.TaskScopes | None

    # Rarely set, so not slots: these class-level values serve until an instance
    # sets its own (in its __dict__), and a group that never needs them pays no store.
    _unsorted: bool = False  # a start_soon child's record was added out of spawn order
    _timed_out: bool = False
    # KeyboardInterrupt/SystemExit seen in the body or a child: re-raised bare.
    _base_error: BaseException | None = None
    # Any error that is not an Exception (those two included): no policy may
    # swallow it, the group fails.
    _fatal: bool = False
    _cancel_exc: _CancelledError | None = None
    # Why the group cancels its children and body, from its first decision on.
    _cancel_reason: CancelReason | None = None
    # The group this one runs in (for events), found on first need while open.
    _parent: GroupState | Literal[False] | None = False
    _on_timeout_mode: Literal["raise", "partial"] = "raise"
    _name: str | None = None  # name=, else TaskGroup-N once asked for
    # The finished children in completion order, for a policy that orders results
    # so (a list of its own then): never appended to otherwise.
    _completed: list[Child] = _NOT_KEPT

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
            traits = _DEFAULT_TRAITS
        elif isinstance(join, JoinPolicy):
            traits = traits_of(join)
        else:
            if isinstance(join, type) and issubclass(join, JoinPolicy):
                raise TypeError(f"join= takes a policy instance: write join={join.__name__}()")
            raise TypeError(f"join= must be a cohort.JoinPolicy instance, got {join!r}")
        if limit is not None:
            limit = check_count("limit", limit)
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        if on_timeout != "raise":
            if not isinstance(on_timeout, str):
                raise TypeError(f'on_timeout must be "raise" or "partial", got {on_timeout!r}')
            if on_timeout != "partial":
                raise ValueError(f'on_timeout must be "raise" or "partial", got {on_timeout!r}')
            self._on_timeout_mode = on_timeout
        self._policy = join
        self._traits = traits
        # A critical child's success only counts: not kept in completion order, no
        # policy hook to call.
        self._lean = traits.lean
        # And no queue: a plain start_soon child runs without a record (record_of).
        self._plain = traits.plain and limit is None
        self._limit = limit
        self._timeout = timeout
        if name is not None:
            self._name = name
        self._phase = _NEW
        self._accepting = False  # open and undecided: spawn() is allowed
        self._count = 0  # children admitted: the next one's place in spawn order
        # The running children by their task; the records shown in handles/outcomes
        # (in spawn order unless _unsorted); the finished ones in completion order
        # (for a policy that orders results so).
        self._tasks: dict[asyncio.Task[Any], Child | Plain] = {}
        self._kept: list[Child] = []
        # The context every child's done callback runs in: a copy of the context of
        # the group's first spawn, shared (one context per group, not one per child).
        self._cb_context: contextvars.Context | None = None
        if traits.completion_order:
            self._completed = []
        # Children waiting for a ``limit`` slot (None until the first one waits).
        self._queue: deque[Queued] | None = None
        self._spawned = 0
        self._succeeded = 0
        self._failed = 0
        self._decision = _CONTINUE
        # Read at every exit (slots: a class-level default read costs more than a store):
        # a child failed or timed out (critical or not); the group was cancelled from outside.
        self._child_errors = self._outside_cancel = False
        self._waiter: asyncio.Future[None] | None = None
        self._scope: CancelScope | None = None

    def __repr__(self) -> str:
        return (
            f"<TaskGroup {self.name!r} {self._phase.value} join={self._policy!r} "
            f"children={self._count}>"
        )

    def statistics(self) -> GroupStatistics:
        """The group's counters now, as a frozen record (for monitoring and policies)."""
        entered = None if self._phase is _NEW else self._entered_at
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
            cancel_reason=None if self._cancel_reason is None else str(self._cancel_reason),
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

    def _tree_rows(self) -> list[TreeRow]:
        """For ``task_tree()``: (name, status, started, ended, task) of every child with
        a record, and of every ``start_soon`` child still running, in spawn order."""
        children = self._records().copy()
        for running, c in self._tasks.items():
            if isinstance(c, tuple):  # a plain start_soon child, running without a record
                children.append(record_of(running, *c))
            elif not c.shown:
                children.append(c)
        children.sort(key=_by_seq)
        rows: list[TreeRow] = []
        for c in children:
            task = c.task
            # A running task's own name: it may have been renamed since.
            name = task.get_name() if task is not None and c.label is not None else c.name
            rows.append((name, c.status, c.started, c.ended, task, getattr(c, "reason", None)))
        return rows

    @property
    def _parent_name(self) -> str | None:
        parent = self._parent
        if parent is False:
            parent = self._parent = self._find_parent()
        return None if parent is None else parent.name

    def _find_parent(self) -> GroupState | None:
        """The group this one runs in: the innermost open group whose body runs in the
        same task, else the group of which that task is a child (read only for events:
        no context variable is set at each entry for it)."""
        host = self._task
        child_of: GroupState | None = None
        outer: GroupState | None = None
        for g, task in list(live_groups.items()):
            if g is self:
                break
            if task is host:
                outer = g
            elif host in g._tasks:
                child_of = g
        return outer or child_of

    # -- the children queued by ``limit`` ---------------------------------------------

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
        child.reason = _why.handle_cancelled(child.name)
        self._ended(child, _CANCELLED, None, None, False)

    def _launch_queued(self) -> None:
        queue = self._queue
        while (
            queue
            and self._decision is _CONTINUE
            and (self._limit is None or len(self._tasks) < self._limit)
        ):
            child, run, context = queue.popleft()
            child.on_cancel = None
            try:
                self._start(child, run, context)
            except Exception as exc:  # no task could be made: the child failed
                self._ended(child, _FAILED, None, exc, False)

    def _start(
        self, child: Child, run: Coroutine[Any, Any, Any], context: contextvars.Context | None
    ) -> None:
        """A child's coroutine becomes its task."""
        loop = self._loop
        try:
            task = loop.create_task(run, name=child.label, context=context)
        except BaseException:
            run.close()
            child.coro.close()
            raise
        child.task = task
        child.status = _RUNNING
        child.started = self._clock()
        self._tasks[task] = child
        cb_context = self._cb_context
        if cb_context is None:
            cb_context = self._cb_context = contextvars.copy_context()
        task.add_done_callback(self._done_cb, context=cb_context)  # type: ignore[arg-type]
        if add_awaited_by is not None:
            add_awaited_by(task, self._task)
        if EVENTS.on:
            _observe.child_started(child, self, self._parent_name)

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
                    self._decide(_FAIL, child)
                else:
                    self._apply(ask_child_done(self._policy, self._traits, self, child), child)
        elif self._fatal and self._decision is _CONTINUE:
            self._decide(_FAIL, child)
        if EVENTS.on:
            _observe.child_ended(child, self, self._parent_name)

    if TYPE_CHECKING:  # the group's own (TaskGroup)

        def _apply(self, decision: Decision, cause: Child | None = None) -> None: ...

        def _decide(
            self, decision: Decision, cause: Child | CancelReason | None = None
        ) -> None: ...

        def _ended(
            self,
            child: Child,
            status: ChildStatus,
            value: Any,
            error: BaseException | None,
            ran: bool = True,
        ) -> None: ...

    def _wake_exit(self) -> None:
        """Wake __aexit__ (once per wait, not per child) when it has something to do:
        nothing left running, or every critical child done while undecided."""
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

    def _on_fatal(self, exc: BaseException) -> None:
        self._fatal = True
        if self._base_error is None and isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self._base_error = exc

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

    # -- what the group ends with -------------------------------------------------

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

    def _body_scope(self) -> CancelScope:
        """Make the group's own scope (``TaskGroup`` makes a ``GroupScope`` of itself)."""
        raise NotImplementedError

    def _entered_scope(self) -> CancelScope:
        """The group's scope, entered now (where it would have been) if deferred."""
        if self._scope is None:
            assert self._scope_state is not None  # open, without a timeout
            self._scope_state.enter_deferred(self)
        assert self._scope is not None
        return self._scope

    # -- the group's scope, and why the group cancels -----------------------------------

    def _reason_for(self, decision: Decision, cause: Child | CancelReason | None) -> CancelReason:
        if isinstance(cause, CancelReason):
            return cause
        if cause is not None and not self._timed_out:
            return _why.after_child(self.name, self._policy, decision, cause)
        return _why.by_group(self.name, self._policy, decision, self._timeout, self._timed_out)
