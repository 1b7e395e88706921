"""``Flow``: a graph of named steps, run once per request, joined under policies.

Nodes are functions declared with ``@flow.node``; their parameters name what
they take: the flow's inputs or nodes declared above them. Wiring by
parameter name (as Hamilton does) keeps a node an ordinary function, readable
and testable alone, and requiring dependencies to be declared first makes a
cycle impossible to write: every wiring mistake is an error at the
decorator, naming the node. ``result[node]`` is typed by the node's return
type.

A run is one task group. A node starts the moment its own join policy is
satisfied, not level by level; an upstream node that no node still waiting
needs is cancelled, and so, in turn, are its own upstreams; leaving or
cancelling the run leaves nothing running, except the thread of a plain
``def`` node cut short, which Python cannot stop (the run warns about it).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeAlias, TypeVar, overload

from cohort._core._group import TaskGroup, clock_of
from cohort._core._handle import ChildStatus, Handle, Outcome
from cohort._core._policies import (
    ChildView,
    Decision,
    Gather,
    GroupView,
    JoinPolicy,
    Quorum,
    Settle,
)
from cohort._core._retry import Retry, attempt_all
from cohort._core._scopes import cancel_task, fail_after, move_on_after, stray_cancellation
from cohort._exceptions import CohortError
from cohort._observe._events import EVENTS, emit
from cohort._validate import check_count, check_flag, check_seconds

if TYPE_CHECKING:
    from cohort.pipeline._stage import Stage

__all__ = ["Flow", "FlowError", "FlowResult", "Node"]

R = TypeVar("R")
_SUCCEEDED = ChildStatus.SUCCEEDED
_FAILED = ChildStatus.FAILED
_CANCELLED = ChildStatus.CANCELLED
_TIMED_OUT = ChildStatus.TIMED_OUT
Join: TypeAlias = JoinPolicy
_DONE = Decision.DONE
_FAIL = Decision.FAIL
# run()'s own keywords: an input named so could never be passed.
_RUN_KEYWORDS = frozenset({"timeout", "on_timeout"})


class FlowError(CohortError):
    """A flow run failed: a critical node failed and nothing could take its place.

    ``node`` names it, ``result`` holds every node's outcome so far; the node's
    exception is the ``__cause__``.
    """

    def __init__(self, message: str, *, node: str, result: FlowResult) -> None:
        super().__init__(message)
        self.node = node
        self.result = result


class UpstreamFailed(CohortError):
    """Internal marker: a node that never ran because what it needed failed."""


class Node(Generic[R]):
    """A step of a :class:`Flow` (made by ``@flow.node``); ``result[node]`` is its value."""

    __slots__ = (
        "_cohort_cpu_target",
        "all_done_default",
        "cancellable",
        "consult_ok",
        "critical",
        "deps",
        "executor",
        "flow",
        "fn",
        "join",
        "kind",
        "limit",
        "map_over",
        "name",
        "outcomes",
        "params",
        "retry",
        "simple",
        "target",
        "timeout",
    )

    def __init__(self, flow: Flow, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.flow = flow
        self.fn = fn
        self.name: str = options["name"]
        self.join: Join = options["join"]
        self.timeout: float | None = options["timeout"]
        self.retry: Retry | None = options["retry"]
        self.critical: bool = options["critical"]
        self.limit: int | None = options["limit"]
        self.map_over: str | None = options["map_over"]
        self.executor: Any = options["executor"]
        self.kind: str = options["kind"]  # "async", "thread" or "cpu"
        self.params: list[str] = options["params"]
        self.deps: list[str] = [p for p in self.params if p in flow.by_name]
        self.cancellable = False  # set when a join may start without it (it may be cut short)
        join = self.join
        # As TaskGroup: a success is shown to the policy only if it asks to see successes.
        self.consult_ok = join.consults_on_success and (
            type(join).on_child_done is not JoinPolicy.on_child_done
        )
        # JoinPolicy.on_all_done says DONE: no need to ask it.
        self.all_done_default = type(join).on_all_done is JoinPolicy.on_all_done
        self.outcomes = isinstance(join, Settle)  # it takes each upstream's Outcome
        # What a worker process is sent: a reference to the function by its module
        # and name. The decorator rebinds that name to this node, so the node leads
        # back to the function (as a @cohort.cpu wrapper or a cpu stage does).
        self._cohort_cpu_target = fn
        self.target = fn
        if self.kind == "cpu":
            from cohort.bridge._default import by_reference

            self.target = by_reference(fn)
        # Awaited directly, without the wrappers a timeout, a retry or a map needs.
        self.simple = (
            self.kind == "async"
            and self.timeout is None
            and self.retry is None
            and not self.map_over
        )

    def __repr__(self) -> str:
        return f"<cohort.Node {self.flow.name}.{self.name}>"


class _NodeDecorator(Protocol):
    """``@flow.node(...)``: a node typed by what its function returns."""

    @overload
    def __call__(self, fn: Callable[..., Awaitable[R]], /) -> Node[R]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Node[R]: ...


class _MapNodeDecorator(Protocol):
    """``@flow.node(map_over=...)``: the node's value is the list of the calls' results."""

    @overload
    def __call__(self, fn: Callable[..., Awaitable[R]], /) -> Node[list[R]]: ...
    @overload
    def __call__(self, fn: Callable[..., R], /) -> Node[list[R]]: ...


class FlowResult:
    """What a flow run produced: ``result[node]`` (or ``result["name"]``) is a node's
    value, ``result.outcome(node)`` how it ended (status, times, attempts, error)."""

    __slots__ = ("_run", "flow")

    def __init__(self, run: _Run) -> None:
        self.flow = run.flow
        self._run = run

    @overload
    def __getitem__(self, node: Node[R]) -> R: ...
    @overload
    def __getitem__(self, node: str) -> Any: ...
    def __getitem__(self, node: Node[Any] | str) -> Any:
        name = node if isinstance(node, str) else node.name
        run = self._run
        if run.status.get(name) is _SUCCEEDED:
            return run.values[name]
        outcome = self.outcome(name)
        raise LookupError(f"node {name!r} has no value: it {outcome.status.value}")

    def get(self, node: Node[R] | str, default: Any = None) -> R | Any:
        """The node's value, or ``default`` if it did not succeed."""
        name = node if isinstance(node, str) else node.name
        run = self._run
        return run.values[name] if run.status.get(name) is _SUCCEEDED else default

    def outcome(self, node: Node[Any] | str) -> Outcome:
        """How the node ended (``PENDING`` if it never started)."""
        name = node if isinstance(node, str) else node.name
        if name not in self.flow.by_name:
            raise KeyError(f"flow {self.flow.name!r} has no node {name!r}")
        return self._run.outcome(name)

    @property
    def outcomes(self) -> dict[str, Outcome]:
        """Every node's outcome, by name, in declaration order."""
        return {name: self._run.outcome(name) for name in self.flow.by_name}

    @property
    def values(self) -> dict[str, Any]:
        """The values of the nodes that succeeded, by name."""
        run = self._run
        return {n: run.values[n] for n in self.flow.by_name if run.status.get(n) is _SUCCEEDED}

    @property
    def threads_left(self) -> list[str]:
        """Plain-``def`` nodes cut short (timeout, cancellation) whose thread was still
        running when the run ended (Python cannot stop a thread)."""
        return self._run.threads_left()

    def __repr__(self) -> str:
        done = sum(s is _SUCCEEDED for s in self._run.status.values())
        return f"<cohort.FlowResult {self.flow.name!r} {done}/{len(self.flow.by_name)} succeeded>"


class Flow:
    """A graph of async (or CPU-bound) steps with join policies on fan-in.

    Args:
        name: for task names, events and errors.
        inputs: the names the flow's ``run(**inputs)`` takes.

    Example:
        ```python
        page = cohort.Flow("page", inputs=["user_id"])

        @page.node
        async def user(user_id: str) -> User:
            return await load_user(user_id)

        @page.node(timeout=0.4)
        async def recs(user: User) -> list[Item]:
            return await recommend(user)

        @page.node(join=cohort.Quorum(1))
        async def render(user: User, recs: list[Item] | None) -> str:
            return f"{user}: {len(recs or [])} recommendations"

        result = await page.run(user_id="u1")
        html = result[render]
        ```
    """

    def __init__(self, name: str, *, inputs: Iterable[str] = ()) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a Flow needs a name (a non-empty str), got {name!r}")
        if isinstance(inputs, str):
            raise TypeError(f"inputs= takes a list of names, got the string {inputs!r}")
        self.name = name
        self.inputs: tuple[str, ...] = tuple(inputs)
        for item in self.inputs:
            if not isinstance(item, str) or not item.isidentifier():
                raise ValueError(f"flow {name!r}: input names must be identifiers, got {item!r}")
            if item in _RUN_KEYWORDS:
                raise ValueError(
                    f"flow {name!r}: input {item!r} is a keyword of run() itself, so it could "
                    "never be passed; rename the input"
                )
        if len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"flow {name!r}: an input is named twice in {list(self.inputs)}")
        self._nodes: dict[str, Node[Any]] = {}
        self._dependents: dict[str, list[Node[Any]]] = {}  # who takes each node
        self._roots: list[Node[Any]] = []  # nodes that take only inputs
        self._n_critical = 0
        self._group_name = f"flow {name}"

    def __repr__(self) -> str:
        return f"<cohort.Flow {self.name!r} {len(self._nodes)} nodes>"

    @property
    def nodes(self) -> list[Node[Any]]:
        """The nodes, in declaration order."""
        return list(self._nodes.values())

    @property
    def by_name(self) -> Mapping[str, Node[Any]]:
        """The nodes by name, in declaration order (read-only)."""
        return MappingProxyType(self._nodes)

    # -- declaring ---------------------------------------------------------------------

    @overload
    def node(self, fn: Callable[..., Awaitable[R]], /) -> Node[R]: ...
    @overload
    def node(self, fn: Callable[..., R], /) -> Node[R]: ...
    @overload
    def node(
        self,
        /,
        *,
        name: str | None = None,
        join: Join | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        critical: bool = True,
        map_over: None = None,
        limit: int | None = None,
        cpu: bool = False,
        executor: Any = None,
    ) -> _NodeDecorator: ...
    @overload
    def node(
        self,
        /,
        *,
        name: str | None = None,
        join: Join | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        critical: bool = True,
        map_over: str,
        limit: int | None = None,
        cpu: bool = False,
        executor: Any = None,
    ) -> _MapNodeDecorator: ...
    def node(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        join: Join | None = None,
        timeout: float | None = None,
        retry: Retry | None = None,
        critical: bool = True,
        map_over: str | None = None,
        limit: int | None = None,
        cpu: bool = False,
        executor: Any = None,
    ) -> Any:
        """Declare a node (``@flow.node`` or ``@flow.node(...)``).

        Its parameters name the flow's inputs and nodes declared above it.

        Args:
            name: the node's name (default: the function's).
            join: how it joins the nodes it takes: ``Gather()`` (all must
                succeed; the default), ``Quorum(k)`` (starts once k succeeded),
                ``FirstWins()`` (starts at the first success) -- an upstream
                that did not succeed is passed as ``None`` -- or ``Settle()``
                (starts when all ended; each upstream is passed as its
                ``cohort.Outcome``). Any ``cohort.JoinPolicy`` works: the node
                starts when its ``on_child_done`` (or, once every upstream
                ended, ``on_all_done``) says DONE, and fails unrun on FAIL.
            timeout: seconds per attempt.
            retry: a ``cohort.Retry`` for the node's call.
            critical: ``False`` for an optional node: the flow completes
                without it, and nodes that take it receive ``None``.
            map_over: the parameter (a node or input holding a collection)
                the function is applied to element by element; the node's
                value is the list of results, in order.
            limit: with ``map_over``, at most this many elements at once.
            cpu: run a plain ``def`` in a worker process (the default executor).
            executor: run a plain ``def`` on this ``cohort.Executor``.
        """
        if join is None:
            join = Gather()
        _check_join(join)
        options: dict[str, Any] = {
            "join": join,
            "timeout": check_seconds("timeout", timeout, none=True, zero=False),
            "critical": check_flag("critical", critical),
            "limit": check_count("limit", limit, none=True),
            "map_over": map_over,
            "executor": executor,
        }
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a cohort.Retry or None, got {retry!r}")
        options["retry"] = retry
        check_flag("cpu", cpu)
        if limit is not None and map_over is None:
            raise ValueError("limit= goes with map_over= (it bounds the elements run at once)")

        def declare(f: Callable[..., Any]) -> Node[Any]:
            return self._add(f, name, options, cpu)

        return declare(fn) if fn is not None else declare

    def _add(
        self, fn: Callable[..., Any], name: str | None, options: dict[str, Any], cpu: bool
    ) -> Node[Any]:
        if not callable(fn):
            raise TypeError(f"@{self.name}.node decorates a function, got {fn!r}")
        label = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(label, str) or not label.isidentifier():
            raise ValueError(f"flow {self.name!r}: cannot name a node {label!r}; pass name=")
        where = f"flow {self.name!r}, node {label!r}"
        if label in self._nodes or label in self.inputs:
            raise ValueError(f"{where}: the name is already taken by a node or an input")
        params = _parameters(fn, where)
        known = set(self._nodes) | set(self.inputs)
        for p in params:
            if p not in known:
                raise ValueError(
                    f"{where} takes {p!r}, which is neither an input of the flow "
                    f"({', '.join(self.inputs) or 'none'}) nor a node declared above it "
                    f"({', '.join(self._nodes) or 'none'}); declare nodes before the nodes "
                    "that use them (so the graph cannot have a cycle)"
                )
        if not params:
            raise ValueError(f"{where} takes nothing: a node needs an input or another node")
        map_over = options["map_over"]
        if map_over is not None and map_over not in params:
            raise ValueError(f"{where}: map_over={map_over!r} is not one of its parameters")
        deps = [p for p in params if p in self._nodes]
        join = options["join"]
        if isinstance(join, Quorum) and join.k > len(deps):
            raise ValueError(
                f"{where}: Quorum({join.k}) over {len(deps)} upstream nodes can never be met"
            )
        off_loop = cpu or options["executor"] is not None
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        )
        if off_loop and is_async:
            raise TypeError(f"{where}: cpu=True/executor= need a plain def, not an async one")
        kind = "cpu" if off_loop else "async" if is_async else "thread"
        node: Node[Any] = Node(self, fn, {**options, "name": label, "kind": kind, "params": params})
        self._nodes[label] = node
        self._dependents[label] = []
        # Only these two are known to start no earlier than every upstream ended.
        early = type(join) is not Gather and type(join) is not Settle
        for d in node.deps:
            self._dependents[d].append(node)
            if early:
                self._mark_cancellable(self._nodes[d])
        if not node.deps:
            self._roots.append(node)
        self._n_critical += node.critical
        return node

    def _mark_cancellable(self, node: Node[Any]) -> None:
        """``node`` may be cut short once nothing needs it, and so may everything it
        takes (each keeps a handle, in a task of its own)."""
        stack = [node]
        while stack:
            n = stack.pop()
            if not n.cancellable:
                n.cancellable = True
                stack.extend(self._nodes[d] for d in n.deps)

    # -- running -----------------------------------------------------------------------

    async def run(
        self,
        *,
        timeout: float | None = None,
        on_timeout: Literal["raise", "partial"] = "raise",
        **inputs: Any,
    ) -> FlowResult:
        """Run the flow once with these inputs; return every node's value and outcome.

        ``timeout`` bounds the whole run: ``on_timeout="raise"`` raises
        ``TimeoutError``, ``"partial"`` returns what finished (the rest
        cancelled). Raises :class:`FlowError` when a critical node failed
        and no join could do without it.
        """
        if len(inputs) != len(self.inputs) or not all(i in inputs for i in self.inputs):
            missing = [i for i in self.inputs if i not in inputs]
            extra = [i for i in inputs if i not in self.inputs]
            wrong = [f"unknown {extra}"] if extra else []
            wrong += [f"missing {missing}"] if missing else []
            raise TypeError(
                f"flow {self.name!r} takes inputs {list(self.inputs)}; {', '.join(wrong)}"
            )
        if on_timeout != "raise" and on_timeout != "partial":
            raise ValueError(f'on_timeout must be "raise" or "partial", got {on_timeout!r}')
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        if not self._nodes:
            raise ValueError(f"flow {self.name!r} has no nodes")
        run = _Run(self, inputs)
        try:
            if timeout is None:
                await run.execute()
            elif on_timeout == "raise":
                with fail_after(timeout):
                    await run.execute()
            else:
                with move_on_after(timeout):
                    await run.execute()
        finally:
            run.warn_threads_left()
        return run.finish()

    def as_stage(self, input: str, output: Node[R], **stage_options: Any) -> Stage[Any, R]:
        """This flow as a pipeline stage: each item is the ``input``, the stage emits
        ``output``'s value (``stage_options`` as for ``@cohort.stage``)."""
        from cohort.pipeline import stage

        if input not in self.inputs or len(self.inputs) != 1:
            raise ValueError(
                f"as_stage(input={input!r}): flow {self.name!r} must take exactly that one input"
            )
        if not isinstance(output, Node) or output.flow is not self:
            raise ValueError(f"as_stage(output=...) takes a node of flow {self.name!r}")

        async def per_item(item: Any) -> Any:
            return (await self.run(**{input: item}))[output]

        per_item.__name__ = self.name
        stage_options.setdefault("name", self.name)
        made: Stage[Any, R] = stage(**stage_options)(per_item)
        return made

    # -- looking at it -----------------------------------------------------------------

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart; fan-in edges carry the join policy."""
        lines = ["flowchart TD"]
        for item in self.inputs:
            lines.append(f"  {item}([{item}])")
        for node in self._nodes.values():
            extras = []
            if not node.critical:
                extras.append("optional")
            if node.map_over:
                extras.append(f"map over {node.map_over}")
            if node.kind == "cpu":
                extras.append("cpu")
            label = node.name + (f"<br/><i>{', '.join(extras)}</i>" if extras else "")
            lines.append(f'  {node.name}["{label}"]')
            policy = _policy_label(node.join) if len(node.deps) > 1 else ""
            for p in node.params:
                arrow = f'-->|"{policy}"|' if policy and p in node.deps else "-->"
                lines.append(f"  {p} {arrow} {node.name}")
        return "\n".join(lines)


def _policy_label(join: Join) -> str:
    return repr(join).replace('"', "'")  # as declared: FirstWins() is not drawn as Quorum(1)


def _check_join(join: object) -> None:
    """``join=`` must be a policy whose answers a flow can ask for."""
    if not isinstance(join, JoinPolicy):
        raise TypeError(
            "join= takes a cohort.JoinPolicy: Gather(), Quorum(k), FirstWins(), Settle() "
            f"or a subclass, got {join!r}"
        )
    kind = type(join)
    for hook in ("on_spawn", "on_timeout"):
        if getattr(kind, hook) is not getattr(JoinPolicy, hook):
            raise TypeError(
                f"join={join!r} overrides {hook}(), which a flow never calls (a node's "
                "upstreams are not spawned by it and its join has no timeout of its own); "
                "decide in on_child_done()/on_all_done(), or use it in a TaskGroup"
            )


def _parameters(fn: Callable[..., Any], where: str) -> list[str]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: cannot read the function's parameters ({exc})") from None
    names = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{where}: *args/**kwargs cannot be wired; name each parameter")
        if p.kind is p.POSITIONAL_ONLY:
            raise TypeError(f"{where}: parameter {p.name!r} is positional-only; nodes get keywords")
        names.append(p.name)
    return names


class _Run:
    """One execution of a flow: the nodes' states, and who starts whom.

    Per node it keeps counters of its upstreams that succeeded (or were
    optional) and that failed, updated as each ends, so deciding whether a
    node may start costs the same however wide the graph.
    """

    __slots__ = (
        "clock",
        "critical_left",
        "dependents",
        "done",
        "ending",
        "errors",
        "failure",
        "flow",
        "group",
        "handles",
        "inputs",
        "n_bad",
        "n_ok",
        "nodes",
        "running",
        "status",
        "tallies",
        "threads",
        "times",
        "values",
        "waiting",
        "whole",
    )

    def __init__(self, flow: Flow, inputs: dict[str, Any]) -> None:
        self.flow = flow
        self.nodes = flow.by_name
        self.inputs = inputs
        self.values: dict[str, Any] = {}
        self.status: dict[str, ChildStatus] = {}
        self.errors: dict[str, BaseException] = {}
        self.tallies: dict[str, list[int]] = {}
        self.handles: dict[str, Handle[Any]] = {}  # of the nodes that may be cancelled
        self.running: dict[str, asyncio.Task[Any]] = {}  # the task of each other node started
        self.times: dict[str, tuple[float, float]] = {}  # (started, ended) of nodes that ran
        self.clock = time.monotonic
        self.waiting: dict[str, Node[Any]] = dict(self.nodes)  # not started yet
        self.dependents = flow._dependents
        self.n_ok = dict.fromkeys(self.nodes, 0)
        self.n_bad = dict.fromkeys(self.nodes, 0)
        # The run ends when every critical node ended; a flow of optional nodes
        # only, when every node ended.
        self.whole = flow._n_critical == 0
        self.critical_left = len(self.nodes) if self.whole else flow._n_critical
        self.group: TaskGroup | None = None
        self.done: asyncio.Future[None] | None = None
        self.ending = False  # set once the run cancels what still runs
        self.failure: tuple[str, BaseException] | None = None
        # Threads of plain-def nodes cut short, and whether each has returned since.
        self.threads: list[tuple[str, threading.Event]] = []

    async def execute(self) -> None:
        loop = asyncio.get_running_loop()
        self.clock = clock_of(loop)
        self.done = loop.create_future()
        async with TaskGroup(join=_RunJoin(self), name=self.flow._group_name) as group:
            self.group = group
            for node in self.flow._roots:
                self._start(node)
            try:
                await self.done
            finally:
                self.ending = True  # a node cancelled from now on was cancelled by the run
                group.cancel()  # whatever still runs is not needed any more

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

    def outcome(self, name: str) -> Outcome:
        """Node ``name``'s record, made when asked for (a run makes none of its own)."""
        node = self.nodes[name]
        status = self.status.get(name)
        started, ended = self.times.get(name, (None, None))
        if status is None:  # never started, or cancelled before it ran at all
            status = ChildStatus.PENDING if name in self.waiting else _CANCELLED
        tally = self.tallies.get(name)
        return Outcome(
            name,
            status,
            self.values.get(name),
            self.errors.get(name),
            node.critical,
            started,
            ended,
            tally[0] if tally else (1 if started is not None else 0),
        )

    # -- scheduling --------------------------------------------------------------------

    def _decide(self, node: Node[Any], upstream: str, counted: bool) -> int:
        """1: ``node`` can start now; 0: it must wait; -1: it never can.

        Its join policy answers, as in a task group whose children are the node's
        upstreams (all spawned at once): ``on_child_done`` for the upstream that
        just ended (a success only if the policy asks to see successes), then,
        once every upstream ended, ``on_all_done``; CONTINUE there means DONE.
        """
        join = node.join
        key = node.name
        view: _JoinView | None = None
        if not counted or node.consult_ok:
            view = _JoinView(self, node)
            decision = join.on_child_done(view, _UpstreamView(self, upstream, counted))
            if decision is _DONE:
                return 1
            if decision is _FAIL:
                return -1
        if self.n_ok[key] + self.n_bad[key] < len(node.deps):
            return 0
        if node.all_done_default:
            return 1
        return -1 if join.on_all_done(view or _JoinView(self, node)) is _FAIL else 1

    def _start(self, node: Node[Any]) -> None:
        """Start ``node`` as a child of the run's group."""
        kwargs = self._launch(node)
        assert self.group is not None
        if node.cancellable:  # it may be cut short, even before its task runs: keep a handle
            self.handles[node.name] = self.group.spawn(self._run_node, node, kwargs, name=node.name)
        else:
            self.group.start_soon(self._run_node, node, kwargs, name=node.name)

    def _launch(self, node: Node[Any]) -> dict[str, Any]:
        """Mark ``node`` started and return its arguments."""
        del self.waiting[node.name]
        inputs, values = self.inputs, self.values
        if node.outcomes:
            kwargs = {p: inputs[p] if p in inputs else self.outcome(p) for p in node.params}
        else:  # an upstream that did not make it (quorum, first-wins, optional): None
            kwargs = {p: inputs[p] if p in inputs else values.get(p) for p in node.params}
        if node.deps and len(node.deps) > self.n_ok[node.name] + self.n_bad[node.name]:
            self._cancel_unneeded(node)
        return kwargs

    def _cancel_unneeded(self, started: Node[Any]) -> None:
        """Cancel what nothing that can still run needs any more, now that ``started``
        started (or can never start): each of its upstreams not ended that no waiting
        node takes, then, in turn, theirs (a chain feeding only a met quorum). A sink
        never: its value is an output."""
        stack = list(started.deps)
        while stack:
            d = stack.pop()
            if d in self.status or not self.dependents[d]:
                continue  # ended, or a sink
            if any(dep.name in self.waiting for dep in self.dependents[d]):
                continue  # still needed
            if d in self.waiting:
                del self.waiting[d]  # never to start
            elif d in self.handles:
                self.handles[d].cancel()
            elif d in self.running:
                cancel_task(self.running[d])  # the node its task runs now: the chain stops
            else:
                continue  # its task has not taken its first step: it runs to its end
            # Count it as ended now: a task cancelled before its first step
            # never runs its node, so it would never report.
            self.status[d] = _CANCELLED
            node = self.nodes[d]
            self._ended(node, False)
            stack.extend(node.deps)

    async def _run_node(self, node: Node[Any], kwargs: dict[str, Any]) -> None:
        """Run ``node``, then, in the same task, a node it was the last to unblock
        (one task per chain instead of one per node)."""
        nxt: tuple[Node[Any], dict[str, Any]] | None = (node, kwargs)
        # A node without a handle is cancelled through its task, while it runs (an
        # entry stays after the node ended, when it is never looked up: see status).
        task = None if node.cancellable else asyncio.current_task()
        running = self.running
        while nxt is not None:
            node, kwargs = nxt
            if task is not None:
                running[node.name] = task
            nxt = await self._run_one(node, kwargs)

    async def _run_one(
        self, node: Node[Any], kwargs: dict[str, Any]
    ) -> tuple[Node[Any], dict[str, Any]] | None:
        name = node.name
        clock = self.clock
        started = clock()
        if EVENTS.on:
            emit("debug", "flow.node_started", flow=self.flow.name, node=name)
        try:
            if node.simple:
                value = await node.fn(**kwargs)
            else:
                tally = self.tallies[name] = [1]
                value = await self._call(node, kwargs, tally)
        except BaseException as exc:
            self.times[name] = (started, clock())
            if name in self.status:  # cancelled as unneeded, then ended: counted already
                raise
            error: BaseException = exc
            if isinstance(exc, asyncio.CancelledError):
                if self.ending:
                    # The run is ending: there is no one to start.
                    self.status[name] = _CANCELLED
                    self._ended(node, False)
                    raise
                # Nothing in the run asked for it (a library cancelled its own task,
                # or it awaited something cancelled elsewhere): a failure of the node.
                error = stray_cancellation(f"flow {self.flow.name!r}: node {name!r}", exc)
            if any(n == name and not ended.is_set() for n, ended in self.threads):
                error.add_note(
                    f"node {name!r}: its thread is still running (Python cannot stop a thread)"
                )
            self.status[name] = _TIMED_OUT if isinstance(error, TimeoutError) else _FAILED
            self.errors[name] = error
            self._event(node)
            self._ended(node, False)
            if node.critical and self.failure is None and not self._tolerated(node):
                self._fail(name, error)
            if error is exc:
                raise
            raise error from exc
        self.times[name] = (started, clock())
        if name in self.status:  # cancelled as unneeded, and it returned anyway: counted
            return None
        self.status[name] = _SUCCEEDED
        self.values[name] = value
        if EVENTS.on:
            self._event(node)
        # A task with a handle (a cancellable node's) shows that node's name in
        # task_tree(): it does not carry on with another one.
        nxt = self._ended(node, True, carry_on=not node.cancellable)
        if nxt is not None:
            task = asyncio.current_task()
            if task is not None:
                task.set_name(nxt[0].name)  # task_tree() shows the node now running
        return nxt

    def _event(self, node: Node[Any]) -> None:
        status = self.status[node.name]
        emit(
            "info" if status is _SUCCEEDED else "warning",
            "flow.node_done",
            flow=self.flow.name,
            node=node.name,
            status=status.value,
            attempts=(self.tallies.get(node.name) or [1])[0],
        )

    def cancelled_unrun(self, name: str) -> None:
        """The task started for node ``name`` ended cancelled. If the run did not ask
        for it, the task was cancelled before it ran the node (else the node itself
        reports): a stray cancellation, the node's failure."""
        if self.ending or name in self.status:
            return
        node = self.nodes[name]
        cause = asyncio.CancelledError()
        error = stray_cancellation(f"flow {self.flow.name!r}: node {name!r} (before it ran)", cause)
        self.status[name] = _FAILED
        self.errors[name] = error
        self._event(node)
        self._ended(node, False)
        if node.critical and self.failure is None and not self._tolerated(node):
            self._fail(name, error)

    def _tolerated(self, node: Node[Any]) -> bool:
        """Whether a failure of ``node``, already counted for its dependents (which
        failed the run if a critical one could not do without it), is absorbed: only
        a critical dependent can absorb it (an optional one, or none, cannot)."""
        return any(dep.critical for dep in self.dependents[node.name])

    def _ended(
        self, node: Node[Any], ok: bool, *, carry_on: bool = False
    ) -> tuple[Node[Any], dict[str, Any]] | None:
        """``node`` ended: count it for its dependents, start what it unblocked, and
        see whether the run is over. With ``carry_on``, one unblocked node that no
        join may cancel is returned instead of started, for the caller's task to run."""
        name = node.name
        carried: tuple[Node[Any], dict[str, Any]] | None = None
        if node.critical or self.whole:
            self.critical_left -= 1
        counted = ok or not node.critical  # an optional upstream that failed passes None
        cancelled = self.status[name] is _CANCELLED
        n_ok, n_bad = self.n_ok, self.n_bad
        for dependent in self.dependents[name]:
            key = dependent.name
            if counted:
                count = n_ok[key] = n_ok[key] + 1
                if not dependent.consult_ok and count + n_bad[key] < len(dependent.deps):
                    continue  # a policy not shown successes (Gather): nothing to decide yet
            else:
                n_bad[key] += 1
            if key in self.waiting and not cancelled and self.failure is None:
                try:
                    decision = self._decide(dependent, name, counted)
                except Exception as exc:  # the policy's own error: the node cannot start
                    self._impossible(dependent, name, exc)
                    continue
                if decision > 0:
                    if carry_on and carried is None and not dependent.cancellable:
                        carried = (dependent, self._launch(dependent))
                    else:
                        self._start(dependent)
                elif decision < 0:
                    self._impossible(dependent, name)
        if self.critical_left == 0 or self.failure is not None:
            self._finish_now()
        return carried

    def _impossible(
        self, node: Node[Any], trigger: str, policy_error: Exception | None = None
    ) -> None:
        """``node`` can never start: what it needed failed, ``trigger`` last (or its
        join policy raised ``policy_error``)."""
        del self.waiting[node.name]
        status = self.status
        failed = [d for d in node.deps if d in status and status[d] is not _SUCCEEDED]
        error: Exception = policy_error or UpstreamFailed(
            f"node {node.name!r} needed {failed}, which did not succeed"
        )
        status[node.name] = _FAILED
        self.errors[node.name] = error
        emit("warning", "flow.node_skipped", flow=self.flow.name, node=node.name, missing=failed)
        if node.critical:
            if policy_error is not None:
                self._fail(node.name, policy_error)
            else:
                self._fail(*self._root_cause(trigger))
        self._ended(node, False)
        if self.failure is None:
            self._cancel_unneeded(node)  # what it was waiting for may be needed no more

    def _root_cause(self, name: str) -> tuple[str, BaseException]:
        """The node whose own failure ``name``'s failure comes from, and its error."""
        seen = set()
        while isinstance(self.errors.get(name), UpstreamFailed) and name not in seen:
            seen.add(name)
            upstream = [d for d in self.nodes[name].deps if d in self.errors]
            if not upstream:
                break
            name = upstream[-1]
        return name, self.errors[name]

    def _fail(self, name: str, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = (name, exc)
        self._finish_now()

    def _finish_now(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    # -- calling a node ------------------------------------------------------------------

    async def _call(self, node: Node[Any], kwargs: dict[str, Any], tally: list[int]) -> Any:
        if node.map_over is None:
            invoke = functools.partial(self._once, node, kwargs)
        else:
            invoke = functools.partial(self._map, node, kwargs)
        if node.retry is not None:
            return await attempt_all(node.retry, invoke, node.name, tally)
        return await invoke()

    async def _once(self, node: Node[Any], kwargs: dict[str, Any]) -> Any:
        if node.timeout is None:
            return await self._invoke(node, kwargs)
        with fail_after(node.timeout):
            return await self._invoke(node, kwargs)

    async def _invoke(self, node: Node[Any], kwargs: dict[str, Any]) -> Any:
        if node.kind == "async":
            return await node.fn(**kwargs)
        if node.kind == "thread":
            return await self._in_thread(node, kwargs)
        from cohort.bridge import to_process

        return await to_process(functools.partial(node.target, **kwargs), executor=node.executor)

    async def _in_thread(self, node: Node[Any], kwargs: dict[str, Any]) -> Any:
        """``asyncio.to_thread``, remembering a thread left running when cut short."""
        ended = threading.Event()
        call = functools.partial(_in_thread, ended, node.fn, kwargs)
        future = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(contextvars.copy_context().run, call)
        )
        try:
            return await future
        except asyncio.CancelledError:
            if not ended.is_set():
                self.threads.append((node.name, ended))
            raise

    async def _map(self, node: Node[Any], kwargs: dict[str, Any]) -> list[Any]:
        assert node.map_over is not None
        elements = kwargs[node.map_over]
        if isinstance(elements, str | bytes) or not isinstance(elements, Iterable):
            raise TypeError(
                f"node {node.name!r} maps over {node.map_over!r}, which is not a collection "
                f"of elements: {type(elements).__name__}"
            )
        items = list(elements)
        if node.kind == "cpu" and node.timeout is None and node.limit is None:
            from cohort.bridge import default_executor

            executor = node.executor if node.executor is not None else await default_executor()
            rest = {k: v for k, v in kwargs.items() if k != node.map_over}
            fn = functools.partial(_call_with, node.target, node.map_over, rest)
            return list(await executor.map(fn, items))
        async with TaskGroup(limit=node.limit, name=f"{node.name} map") as group:
            for i, item in enumerate(items):
                one = {**kwargs, node.map_over: item}
                group.spawn(self._once, node, one, name=f"{node.name}[{i}]")
        return group.results


def _call_with(fn: Callable[..., Any], param: str, rest: dict[str, Any], item: Any) -> Any:
    """In a worker: ``fn(**rest, param=item)`` (a ``map_over`` node's call on one element)."""
    return fn(**rest, **{param: item})


def _in_thread(ended: threading.Event, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """In a worker thread: ``fn(**kwargs)``, then ``ended`` set however it ends."""
    try:
        return fn(**kwargs)
    finally:
        ended.set()


class _RunJoin(Settle):
    """The policy of a run's group: wait for every node task, never fail for one (the
    run decides); a task cancelled by anything but the run before it ran its node is
    reported to the run, which would otherwise wait for that node for ever."""

    consults_on_success = False

    def __init__(self, run: _Run) -> None:
        self.run = run

    def on_child_done(self, group: GroupView, handle: ChildView) -> Decision:
        if handle.status is _CANCELLED:
            self.run.cancelled_unrun(handle.name)
        return Decision.CONTINUE


class _JoinView:
    """A node's upstreams as a join policy sees a task group's children (``GroupView``):
    all spawned at once (the body is done), optional failures counted as successes.
    Made for one decision: the counters are read once."""

    __slots__ = ("_node", "_run", "failed", "pending", "spawned", "succeeded")

    body_done = True
    timed_out = False

    def __init__(self, run: _Run, node: Node[Any]) -> None:
        self._run = run
        self._node = node
        self.spawned = len(node.deps)
        self.succeeded = run.n_ok[node.name]
        self.failed = run.n_bad[node.name]
        self.pending = self.spawned - self.succeeded - self.failed

    @property
    def name(self) -> str:
        return f"{self._run.flow.name}.{self._node.name}"

    @property
    def results(self) -> list[Any]:
        run = self._run
        return [run.values[d] for d in self._node.deps if run.status.get(d) is _SUCCEEDED]

    def errors_of_critical(self) -> list[Exception]:
        errors = self._run.errors
        return [e for d in self._node.deps if isinstance(e := errors.get(d), Exception)]


class _UpstreamView:
    """The upstream that just ended, as a policy sees a finished child (``ChildView``)."""

    __slots__ = ("counted", "name", "run")

    def __init__(self, run: _Run, name: str, counted: bool) -> None:
        self.run = run
        self.name = name
        self.counted = counted  # succeeded, or optional and passed as None

    @property
    def critical(self) -> bool:
        return self.run.nodes[self.name].critical

    @property
    def status(self) -> ChildStatus:
        return _SUCCEEDED if self.counted else self.run.status[self.name]

    @property
    def failed(self) -> bool:
        return not self.counted and self.run.status[self.name] is not _CANCELLED

    @property
    def error(self) -> BaseException | None:
        return None if self.counted else self.run.errors.get(self.name)
