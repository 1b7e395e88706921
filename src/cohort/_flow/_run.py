"""One run of a flow: a record per node, and who starts whom.

A run is one task group. A node starts the moment its own join policy is
satisfied, not level by level; an upstream node that no node still waiting
needs is cancelled, and so, in turn, are its own upstreams; leaving or
cancelling the run leaves nothing running, except the thread of a plain
``def`` node cut short, which Python cannot stop (the run warns about it).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import TYPE_CHECKING, Any

from cohort._core._group import TaskGroup, clock_of
from cohort._core._handle import ChildStatus, Handle, Outcome
from cohort._core._policies import ChildView, Decision, GroupView, Settle
from cohort._core._scopes import cancel_task, stray_cancellation
from cohort._core._taskstate import current_task_of
from cohort._flow._invoke import Threads, call
from cohort._flow._join import decide
from cohort._flow._result import FlowError, FlowResult, UpstreamFailed
from cohort._observe._events import EVENTS, emit
from cohort._observe._reasons import CancelReason, cancel_reason

if TYPE_CHECKING:
    from cohort._flow._graph import Flow, Node

__all__ = ["NodeRecord", "Plan", "Run"]

_PENDING = ChildStatus.PENDING
_RUNNING = ChildStatus.RUNNING
_SUCCEEDED = ChildStatus.SUCCEEDED
_FAILED = ChildStatus.FAILED
_CANCELLED = ChildStatus.CANCELLED
_TIMED_OUT = ChildStatus.TIMED_OUT

_new_record = object.__new__

# A node carried on by the task of the node that unblocked it: its record and arguments.
Carried = tuple["Node[Any]", "NodeRecord", "Args"]
# A node's arguments: its values in parameter order (Node.by_position), else by name.
Args = list[Any] | dict[str, Any]


class Plan:
    """What every run of a flow starts from, kept up to date by the flow as its
    nodes are declared."""

    __slots__ = ("group_name", "n_critical", "nodes", "roots")

    def __init__(self, group_name: str, nodes: dict[str, Node[Any]]) -> None:
        self.group_name = group_name  # the run's task group's
        self.nodes = nodes  # by name, in declaration order (the flow's own dict)
        self.roots: list[Node[Any]] = []  # the nodes that take only inputs
        self.n_critical = 0


class NodeRecord:
    """One node in one run.

    ``state`` is a ``ChildStatus``: ``PENDING`` until the node starts (its join
    is satisfied), ``RUNNING`` once its task is made, then how it ended. The
    counters are its upstreams that ended counted (succeeded, or optional and
    passed as ``None``) and not, kept as each ends, so deciding whether the
    node may start costs the same however wide the graph.
    """

    __slots__ = (
        "ended",
        "error",
        "handle",
        "n_bad",
        "n_ok",
        "node",
        "reason",
        "started",
        "state",
        "tally",
        "task",
        "value",
    )

    node: Node[Any]
    state: ChildStatus
    value: Any  # set if it succeeded
    error: BaseException | None  # set if it failed or timed out
    started: float | None  # the loop's clock, if it ran
    ended: float | None
    tally: list[int] | None  # attempts, where a retry may make several
    handle: Handle[Any] | None  # the child, if it may be cut short
    task: asyncio.Task[Any] | None  # else its task, once it runs the node
    n_ok: int
    n_bad: int
    reason: CancelReason | None  # why the run cancelled it, if it did

    @property
    def succeeded(self) -> bool:
        return self.state is _SUCCEEDED

    def outcome(self) -> Outcome:
        """The node's ``Outcome``, made when asked for (a run makes none of its own)."""
        node = self.node
        status = self.state
        if status is _RUNNING:  # started, then cancelled before it ran at all
            status = _CANCELLED
        tally = self.tally
        started = self.started
        return Outcome(
            node.name,
            status,
            self.value,
            self.error,
            node.critical,
            started,
            self.ended,
            tally[0] if tally else (1 if started is not None else 0),
            self.reason,
        )


class Run:
    """One execution of a flow: its nodes' records, and who starts whom."""

    __slots__ = (
        "alive",
        "clock",
        "critical_left",
        "ending",
        "failure",
        "finished",
        "flow",
        "group",
        "inputs",
        "loop",
        "plan",
        "records",
        "threads",
        "whole",
    )

    def __init__(self, flow: Flow, plan: Plan, inputs: dict[str, Any]) -> None:
        self.flow = flow
        self.plan = plan
        self.inputs = inputs
        nodes = plan.nodes
        self.records: dict[str, NodeRecord] = {}
        records = self.records
        for name, node in nodes.items():
            # A record per node, made inline (no __init__ call: a run makes one per node).
            record: NodeRecord = _new_record(NodeRecord)
            records[name] = record
            record.node = node
            record.state = _PENDING
            record.value = record.error = record.started = record.ended = None
            record.tally = record.handle = record.task = record.reason = None
            record.n_ok = record.n_bad = 0
        self.clock = time.monotonic
        # The run ends when every critical node ended; a flow of optional nodes
        # only, when every node ended.
        self.whole = plan.n_critical == 0
        self.critical_left = len(self.records) if self.whole else plan.n_critical
        self.group: TaskGroup | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.finished = False  # set once the run is decided (every critical node ended, or failed)
        self.ending = False  # set once the run cancels what still runs
        self.failure: tuple[str, BaseException] | None = None
        self.threads: Threads = []  # of plain-def nodes cut short
        self.alive = 0  # node tasks started and not returned (or not yet run: counted)

    async def execute(self) -> None:
        loop = asyncio.get_running_loop()
        self.clock = clock_of(loop)
        self.loop = loop
        join = _RunJoin(self)
        try:
            # The group's exit waits for the node tasks: the run ends with the last one,
            # or, once it is decided (_finish_now), by cancelling what still runs.
            async with TaskGroup(join=join, name=self.plan.group_name) as group:
                self.group = group
                records = self.records
                for node in self.plan.roots:
                    self._start(node, records[node.name])
        finally:
            # The node tasks' contexts hold the group, its policy this run: break the
            # cycle, so that refcounting frees a run (the collector would, much later).
            join.run = None
            self.group = None

    def warn_threads_left(self) -> None:
        """Warn about plain-def nodes whose threads still run (Python cannot stop one)."""
        left = self.threads_left()
        if left:
            warnings.warn(
                f"flow {self.flow.name!r}: the thread of node {left[0]!r}"
                + (f" (and of {left[1:]})" if len(left) > 1 else "")
                + " is still running: the node was cut short (timeout or cancellation), but "
                "Python cannot stop a thread. Make the function return on its own (bound "
                "its I/O, check a flag), or run it in a process (cpu=True), which can be killed",
                RuntimeWarning,
                stacklevel=3,
            )

    def threads_left(self) -> list[str]:
        """The nodes whose thread, cut short, has not returned yet."""
        return list(dict.fromkeys(name for name, ended in self.threads if not ended.is_set()))

    def finish(self) -> FlowResult:
        result = FlowResult(self)
        if self.failure is not None:
            name, exc = self.failure
            error = FlowError(
                f"flow {self.flow.name!r}: node {name!r} failed: {type(exc).__name__}: {exc}",
                node=name,
                result=result,
            )
            raise error from exc
        return result

    # -- starting ----------------------------------------------------------------------

    def _start(self, node: Node[Any], record: NodeRecord) -> None:
        """Start ``node`` as a child of the run's group."""
        args = self._launch(node, record)
        group = self.group
        assert group is not None
        self.alive += 1
        if node.cancellable:  # it may be cut short, even before its task runs: keep a handle
            record.handle = group.spawn(self._run_node, node, record, args, name=node.name)
        else:
            group.start_soon(self._run_node, node, record, args, name=node.name)

    def _launch(self, node: Node[Any], record: NodeRecord) -> Args:
        """Mark ``node`` started and return its arguments: an upstream that did not
        make it (quorum, first-wins, optional) is passed as ``None``. In parameter
        order for a node called by position, else by name."""
        record.state = _RUNNING
        records = self.records
        values = []
        if node.plain_args:  # it takes upstreams' values only: the common case
            for p in node.params:
                values.append(records[p].value)
        elif node.outcomes:
            inputs = self.inputs
            for p in node.params:
                values.append(inputs[p] if p in inputs else records[p].outcome())
        else:
            inputs = self.inputs
            for p in node.params:
                values.append(inputs[p] if p in inputs else records[p].value)
        if node.n_deps > record.n_ok + record.n_bad:
            self._cancel_unneeded(node)
        if node.by_position:
            return values
        return dict(zip(node.params, values, strict=True))

    def _cancel_unneeded(self, started: Node[Any]) -> None:
        """Cancel what nothing that can still run needs any more, now that ``started``
        started (or can never start): each of its upstreams not ended that no waiting
        node takes, then, in turn, theirs (a chain feeding only a met quorum). A sink
        never: its value is an output."""
        records = self.records
        stack = [(dep, started.name) for dep in started.deps]
        while stack:
            name, by = stack.pop()
            record = records[name]
            node = record.node
            state = record.state
            if (state is not _PENDING and state is not _RUNNING) or not node.dependents:
                continue  # ended, or a sink
            if any(records[dep.name].state is _PENDING for dep in node.dependents):
                continue  # still needed
            handle = record.handle
            task = record.task if handle is None else handle.task
            if state is not _PENDING and task is None and handle is None:
                continue  # its task has not taken its first step: it runs to its end
            reason = _not_needed(self.flow.name, node.name, by)
            if state is _PENDING:
                pass  # never to start
            elif task is not None:  # a cancellable node's child, or the task running the node
                cancel_task(task, reason)  # (the node its task runs now: the chain stops)
            else:
                assert handle is not None
                handle.cancel()  # queued for a slot of the group: it never runs
            record.reason = reason
            if state is _PENDING and EVENTS.on:
                self._cancelled_event(node, reason, 0)  # its only event
            # Count it as ended now: a task cancelled before its first step
            # never runs its node, so it would never report.
            record.state = _CANCELLED
            self._ended(node, record, False)
            stack.extend((dep, node.name) for dep in node.deps)

    # -- running a node ----------------------------------------------------------------

    async def _run_node(self, node: Node[Any], record: NodeRecord, args: Args) -> None:
        """Run ``node``, then, in the same task, a node it was the last to unblock
        (one task per chain instead of one per node)."""
        # A node without a handle is cancelled through its task, while it runs (the
        # task stays in the record after the node ended, when it is never looked at).
        task = None if node.cancellable else current_task_of(self.loop)  # type: ignore[arg-type]
        clock = self.clock
        try:
            while True:
                record.task = task
                started = clock()
                if EVENTS.on:
                    emit("debug", "flow.node_started", flow=self.flow.name, node=node.name)
                try:
                    if node.by_position:
                        value = await node.fn(*args)
                    else:
                        assert isinstance(args, dict)
                        if node.simple:
                            value = await node.fn(**args)
                        else:
                            tally = record.tally = [1]
                            value = await call(node, args, tally, self.threads)
                except BaseException as exc:
                    record.started = started
                    record.ended = clock()
                    error = self._raised(node, record, exc)
                    if error is exc:
                        raise
                    raise error from exc
                record.started = started
                record.ended = clock()
                if record.state is not _RUNNING:  # cancelled as unneeded, returned anyway
                    if EVENTS.on:
                        self._cancelled_event(node, record.reason, (record.tally or [1])[0])
                    return
                record.state = _SUCCEEDED
                record.value = value
                if EVENTS.on:
                    self._event(node, record)
                # A task with a handle (a cancellable node's) shows that node's name in
                # task_tree(): it does not carry on with another one.
                carried = self._ended(node, record, True, task is not None)
                if carried is None:
                    return
                node, record, args = carried
                assert task is not None
                task.set_name(node.name)  # task_tree() shows the node now running
        finally:
            self.alive -= 1

    def _raised(self, node: Node[Any], record: NodeRecord, exc: BaseException) -> BaseException:
        """``node`` raised ``exc``: record how it ended; return what its task raises."""
        if record.state is not _RUNNING:  # cancelled as unneeded, then ended: counted
            if EVENTS.on:
                self._cancelled_event(node, record.reason, (record.tally or [1])[0])
            return exc
        name = node.name
        error: BaseException = exc
        if isinstance(exc, asyncio.CancelledError):
            if self._cancelled_by_run():
                # The run is ending: there is no one to start.
                record.state = _CANCELLED
                if EVENTS.on:
                    self._cancelled_event(node, cancel_reason(exc), (record.tally or [1])[0])
                self._ended(node, record, False)
                return exc
            # Nothing in the run asked for it (a library cancelled its own task,
            # or it awaited something cancelled elsewhere): a failure of the node.
            error = stray_cancellation(f"flow {self.flow.name!r}: node {name!r}", exc)
        if any(n == name and not ended.is_set() for n, ended in self.threads):
            error.add_note(
                f"node {name!r}: its thread is still running (Python cannot stop a thread)"
            )
        record.state = _TIMED_OUT if isinstance(error, TimeoutError) else _FAILED
        record.error = error
        self._event(node, record)
        self._ended(node, record, False)
        if node.critical and self.failure is None and not self._tolerated(node):
            self._fail(name, error)
        return error

    def _event(self, node: Node[Any], record: NodeRecord) -> None:
        status = record.state
        emit(
            "info" if status is _SUCCEEDED else "warning",
            "flow.node_done",
            flow=self.flow.name,
            node=node.name,
            status=status.value,
            attempts=(record.tally or [1])[0],
        )

    def _cancelled_event(self, node: Node[Any], reason: CancelReason | None, attempts: int) -> None:
        """``flow.node_done`` of a node the run cancelled, and why: from the node's own
        task once it ran (its span ends there), else from the run's."""
        emit(
            "info",
            "flow.node_done",
            flow=self.flow.name,
            node=node.name,
            status=_CANCELLED.value,
            attempts=attempts,
            cancel_reason=None if reason is None else str(reason),
        )

    def cancelled_unrun(self, name: str) -> None:
        """The task started for node ``name`` ended cancelled. If the run did not ask
        for it, the task was cancelled before it ran the node (else the node itself
        reports): a stray cancellation, the node's failure."""
        record = self.records[name]
        if record.state is _CANCELLED and record.started is None and EVENTS.on:
            self._cancelled_event(record.node, record.reason, 0)  # cancelled before it ran
        if record.state is not _RUNNING or self._cancelled_by_run():
            return
        node = record.node
        cause = asyncio.CancelledError()
        error = stray_cancellation(f"flow {self.flow.name!r}: node {name!r} (before it ran)", cause)
        record.state = _FAILED
        record.error = error
        self._event(node, record)
        self._ended(node, record, False)
        if node.critical and self.failure is None and not self._tolerated(node):
            self._fail(name, error)

    @staticmethod
    def _tolerated(node: Node[Any]) -> bool:
        """Whether a failure of ``node``, already counted for its dependents (which
        failed the run if a critical one could not do without it), is absorbed: only
        a critical dependent can absorb it (an optional one, or none, cannot)."""
        return any(dep.critical for dep in node.dependents)

    # -- a node ended ------------------------------------------------------------------

    def _ended(
        self, node: Node[Any], record: NodeRecord, ok: bool, carry_on: bool = False
    ) -> Carried | None:
        """``node`` ended: count it for its dependents, start what it unblocked, and
        see whether the run is over. With ``carry_on``, one unblocked node that no
        join may cancel is returned instead of started, for the caller's task to run."""
        carried: Carried | None = None
        if node.critical or self.whole:
            self.critical_left -= 1
        counted = ok or not node.critical  # an optional upstream that failed passes None
        cancelled = record.state is _CANCELLED
        records = self.records
        for dependent in node.dependents:
            waiting = records[dependent.name]
            if counted:
                count = waiting.n_ok = waiting.n_ok + 1
                if dependent.gathers:  # decide() asks its policy nothing: START once all ended
                    if (
                        count + waiting.n_bad < dependent.n_deps
                        or waiting.state is not _PENDING
                        or cancelled
                        or self.failure is not None
                    ):
                        continue
                    if carry_on and carried is None and not dependent.cancellable:
                        carried = (dependent, waiting, self._launch(dependent, waiting))
                    else:
                        self._start(dependent, waiting)
                    continue
                if not dependent.traits.sees_successes and count + waiting.n_bad < dependent.n_deps:
                    continue  # a policy not shown successes: nothing to decide yet
            else:
                waiting.n_bad += 1
            if waiting.state is _PENDING and not cancelled and self.failure is None:
                try:
                    decision = decide(dependent, waiting, records, record, counted)
                except Exception as exc:  # the policy's own error: the node cannot start
                    self._impossible(dependent, waiting, record, exc)
                    continue
                if decision > 0:
                    if carry_on and carried is None and not dependent.cancellable:
                        carried = (dependent, waiting, self._launch(dependent, waiting))
                    else:
                        self._start(dependent, waiting)
                elif decision < 0:
                    self._impossible(dependent, waiting, record)
        if self.critical_left == 0 or self.failure is not None:
            self._finish_now()
        return carried

    def _impossible(
        self,
        node: Node[Any],
        record: NodeRecord,
        trigger: NodeRecord,
        policy_error: Exception | None = None,
    ) -> None:
        """``node`` can never start: what it needed failed, ``trigger`` last (or its
        join policy raised ``policy_error``)."""
        records = self.records
        failed = [
            d
            for d in node.deps
            if (s := records[d].state) is not _PENDING and s is not _RUNNING and s is not _SUCCEEDED
        ]
        error: Exception = policy_error or UpstreamFailed(
            f"node {node.name!r} needed {failed}, which did not succeed"
            if failed
            else f"node {node.name!r}: its join {node.join!r} answered FAIL, no upstream failing"
        )
        record.state = _FAILED
        record.error = error
        emit("warning", "flow.node_skipped", flow=self.flow.name, node=node.name, missing=failed)
        if node.critical:
            # The failure it comes from: that of the upstream that just ended, else (a
            # policy may answer FAIL once every upstream ended, the last a success) of
            # the last upstream that failed; none failed: the node's own.
            culprits = [d for d in failed if records[d].error is not None]
            if policy_error is not None:
                self._fail(node.name, policy_error)
            elif trigger.error is not None:
                self._fail(*self._root_cause(trigger.node.name))
            elif culprits:
                self._fail(*self._root_cause(culprits[-1]))
            else:
                self._fail(node.name, error)
        self._ended(node, record, False)
        if self.failure is None:
            self._cancel_unneeded(node)  # what it was waiting for may be needed no more

    def _root_cause(self, name: str) -> tuple[str, BaseException]:
        """The node whose own failure ``name``'s failure comes from, and its error."""
        records = self.records
        seen = set()
        while isinstance(records[name].error, UpstreamFailed) and name not in seen:
            seen.add(name)
            upstream = [d for d in records[name].node.deps if records[d].error is not None]
            if not upstream:
                break
            name = upstream[-1]
        error = records[name].error
        assert error is not None
        return name, error

    def _fail(self, name: str, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = (name, exc)
        self._finish_now()

    def _finish_now(self) -> None:
        """The run is decided: what still runs is not needed any more. The group is
        cancelled from the loop's next step, not from the node task that decided (it
        returns on its own; cancelled, it would end cancelled)."""
        if self.finished:
            return
        self.finished = True
        # ``alive`` counts the node task deciding, or the one cancelled before it ran
        # whose end decided: more than that one is still running.
        if self.alive > 1:
            assert self.loop is not None
            self.loop.call_soon(self._cancel_rest)

    def _cancel_rest(self) -> None:
        self.ending = True  # a node cancelled from now on was cancelled by the run
        group = self.group
        if group is not None:
            group.cancel()

    def _cancelled_by_run(self) -> bool:
        """Whether a node's cancellation came from the run: it is ending, or its group
        was cancelled (the task running the run was) or failed."""
        if self.ending:
            return True
        group = self.group
        if group is not None and group.statistics().decision is not Decision.CONTINUE:
            self.ending = True
            return True
        return False


class _RunJoin(Settle):
    """The policy of a run's group: wait for every node task, never fail for one (the
    run decides); a task cancelled by anything but the run before it ran its node is
    reported to the run, which would otherwise wait for that node for ever."""

    __slots__ = ("run",)  # its instance dict stays empty: traits_of() reads no per-instance switch

    consults_on_success = False

    def __init__(self, run: Run) -> None:
        self.run: Run | None = run  # None once the group exited

    def on_child_done(self, group: GroupView, handle: ChildView) -> Decision:
        if handle.status is _CANCELLED and self.run is not None:
            self.run.cancelled_unrun(handle.name)
        return Decision.CONTINUE


def _not_needed(flow: str, node: str, by: str) -> CancelReason:
    """Why the run cancels ``node``: ``by`` started (or can never start) without it,
    and nothing else that can still run takes its value."""
    message = f"node {node!r} of flow {flow!r} is not needed any more: "
    message += f"{by!r} no longer waits for it"
    return CancelReason("not needed", message, source=flow, child=by)
