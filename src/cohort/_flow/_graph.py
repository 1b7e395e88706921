"""``Flow`` and ``Node``: a graph of named steps, declared and checked.

Nodes are functions declared with ``@flow.node``; their parameters name what
they take: the flow's inputs or nodes declared above them. Wiring by
parameter name (as Hamilton does) keeps a node an ordinary function, readable
and testable alone, and requiring dependencies to be declared first makes a
cycle impossible to write: every wiring mistake is an error at the
decorator, naming the node. ``result[node]`` is typed by the node's return
type. Running the graph is ``_run``'s; calling one node, ``_invoke``'s.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import FunctionType, MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeAlias, TypeVar, overload

import cohort._flow as package
from cohort._core._policies import Gather, JoinPolicy, Quorum, traits_of
from cohort._core._retry import Retry
from cohort._core._scopes import fail_after, move_on_after
from cohort._flow import _join
from cohort._flow._render import mermaid
from cohort._flow._result import FlowError, FlowResult
from cohort._flow._run import Plan, Run
from cohort._validate import check_count, check_flag, check_seconds

if TYPE_CHECKING:
    from cohort.durable import Store
    from cohort.pipeline import Stage

# FlowError and FlowResult too: cohort loads the layer's names from here.
__all__ = ["Flow", "FlowError", "FlowResult", "Node"]

R = TypeVar("R")
Join: TypeAlias = JoinPolicy
# run()'s own keywords: an input named so could never be passed.
_RUN_KEYWORDS = frozenset({"timeout", "on_timeout"})


class Node(Generic[R]):
    """A step of a :class:`Flow` (made by ``@flow.node``); ``result[node]`` is its value."""

    __slots__ = (
        "_cohort_cpu_target",
        "by_position",
        "cancellable",
        "critical",
        "dependents",
        "deps",
        "executor",
        "flow",
        "fn",
        "gathers",
        "join",
        "kind",
        "limit",
        "map_over",
        "n_deps",
        "name",
        "outcomes",
        "params",
        "plain_args",
        "retry",
        "simple",
        "target",
        "timeout",
        "traits",
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
        self.n_deps = len(self.deps)
        self.dependents: list[Node[Any]] = []  # the nodes that take it, in declaration order
        self.cancellable = False  # set when a join may start without it (it may be cut short)
        join = self.join
        self.traits = traits_of(join)  # what the policy's class asks to see, as a group does
        self.outcomes = _join.takes_outcomes(join)  # it takes each upstream's Outcome
        # Starts once every upstream is counted, its policy asked nothing (Gather).
        self.gathers = _join.starts_when_all_counted(self.traits)
        # Every parameter is an upstream's value (no input, no Outcome).
        self.plain_args = not self.outcomes and self.n_deps == len(self.params)
        # What a worker process is sent: a reference to the function by its module
        # and name. The decorator rebinds that name to this node, so the node leads
        # back to the function (as a @cohort.cpu wrapper or a cpu stage does).
        self._cohort_cpu_target = fn
        self.target = package._extras.cpu_target(fn) if self.kind == "cpu" else fn
        # Awaited directly, without the wrappers a timeout, a retry or a map needs.
        self.simple = (
            self.kind == "async"
            and self.timeout is None
            and self.retry is None
            and not self.map_over
        )
        # Called as fn(*values) where its own code takes exactly its parameters by
        # position (a plain async def): the same call as by name, for less.
        self.by_position = self.simple and _takes_by_position(fn, self.params)

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
        self._plan = Plan(f"flow {name}", self._nodes)  # what each run starts from
        self._input_set = frozenset(self.inputs)

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
        _join.check_join(join)
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
        early = _join.may_start_early(join)
        for d in node.deps:
            self._nodes[d].dependents.append(node)
            if early:
                self._mark_cancellable(self._nodes[d])
        if not node.deps:
            self._plan.roots.append(node)
        self._plan.n_critical += node.critical
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
        run_id: str | None = None,
        store: Store | str | os.PathLike[str] | None = None,
        **inputs: Any,
    ) -> FlowResult:
        """Run the flow once with these inputs; return every node's value and outcome.

        ``timeout`` bounds the whole run: ``on_timeout="raise"`` raises
        ``TimeoutError``, ``"partial"`` returns what finished (the rest
        cancelled). Raises :class:`FlowError` when a critical node failed
        and no join could do without it. With ``run_id=`` and ``store=`` the
        run is durable (``cohort.durable.run_flow``): run again with the same
        id after a crash, the nodes that finished are not run again.
        """
        if run_id is not None or store is not None:
            if run_id is None or store is None:
                raise TypeError(
                    "a durable flow run takes both run_id= and store= "
                    "(a ledger path or a cohort.durable.Store)"
                )
            return await package.durable.run_flow(
                self, run_id=run_id, store=store, timeout=timeout, on_timeout=on_timeout, **inputs
            )
        if inputs.keys() != self._input_set:
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
        run = Run(self, self._plan, inputs)
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
            if run.threads:
                run.warn_threads_left()
        return run.finish()

    async def resume(
        self,
        run_id: str,
        *,
        from_node: str | Node[Any],
        store: Store | str | os.PathLike[str],
        timeout: float | None = None,
        on_timeout: Literal["raise", "partial"] = "raise",
    ) -> FlowResult:
        """Re-run node ``from_node`` of the durable run ``run_id`` and every node
        downstream of it, keeping the recorded results of the others and the
        recorded inputs (``cohort.durable.resume_flow``): after a fix to one
        node's code, only what depends on it runs again."""
        return await package.durable.resume_flow(
            self, run_id, from_node=from_node, store=store, timeout=timeout, on_timeout=on_timeout
        )

    def as_stage(self, input: str, output: Node[R], **stage_options: Any) -> Stage[Any, R]:
        """This flow as a pipeline stage: each item is the ``input``, the stage emits
        ``output``'s value (``stage_options`` as for ``@cohort.stage``)."""
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
        made: Stage[Any, R] = package._extras.stage(**stage_options)(per_item)
        return made

    # -- looking at it -----------------------------------------------------------------

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart; fan-in edges carry the join policy."""
        return mermaid(self.inputs, self._nodes.values())


def _takes_by_position(fn: Callable[..., Any], params: list[str]) -> bool:
    """Whether ``fn`` is a function whose code takes ``params``, in that order, as
    its positional-or-keyword parameters, and no other (a wrapper's signature may
    show another function's parameters: its own code decides)."""
    if type(fn) is not FunctionType:
        return False
    code = fn.__code__
    return code.co_posonlyargcount == 0 and list(code.co_varnames[: code.co_argcount]) == params


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
