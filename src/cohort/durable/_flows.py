"""Durable flows: a ``cohort.Flow`` run recorded node by node, resumed, or re-run from a node.

The flow is run as a copy whose nodes are wrapped: each node is a step named
by its node name under the flow's path (``<flow>/<node>``), a ``map_over``
node's elements are children named by their index (``<flow>/<node>/items/<i>``),
and the flow's inputs are a step of their own (``<flow>/@inputs``), so that
``resume_flow`` can re-run a node and what depends on it without them.
The flow's own tasks are not recorded (its scheduling is replayed by replaying
its nodes in their recorded completion order).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from cohort._core._child import ChildStatus
from cohort._core._group import TaskGroup
from cohort._core._retry import attempt_all
from cohort._core._scopes import fail_after
from cohort.bridge import to_process
from cohort.durable._codec import Codec
from cohort.durable._context import current_run
from cohort.durable._replay import FlowReplay
from cohort.durable._run import DurableRun, open_store, run
from cohort.durable._store import Store

if TYPE_CHECKING:
    from cohort._flow._graph import Flow, Node
    from cohort._flow._result import FlowResult

__all__ = ["resume_flow", "run_flow", "run_flow_in"]

_INPUTS = "@inputs"


def _invoker(node: Node[Any]) -> Callable[[dict[str, Any]], Awaitable[Any]]:
    """Calls the node's function once with keyword arguments, as the flow would."""
    fn, kind, timeout = node.fn, node.kind, node.timeout

    async def once(kwargs: dict[str, Any]) -> Any:
        if kind == "async":
            return await fn(**kwargs)
        if kind == "thread":
            return await asyncio.to_thread(functools.partial(fn, **kwargs))
        return await to_process(functools.partial(node.target, **kwargs), executor=node.executor)

    if timeout is None:
        return once

    async def bounded(kwargs: dict[str, Any]) -> Any:
        with fail_after(timeout):
            return await once(kwargs)

    return bounded


def _wrapped(
    durable: DurableRun, replay: FlowReplay, node: Node[Any], cut: bool
) -> Callable[..., Any]:
    once = _invoker(node)
    name, over, limit, policy = node.name, node.map_over, node.limit, node.retry

    async def attempt(kwargs: dict[str, Any]) -> Any:
        if over is None:
            return await once(kwargs)
        elements = kwargs[over]
        if isinstance(elements, str | bytes) or not hasattr(elements, "__iter__"):
            raise TypeError(
                f"node {name!r} maps over {over!r}, which is not a collection of elements: "
                f"{type(elements).__name__}"
            )
        async with TaskGroup(limit=limit, name="items") as group:
            for i, element in enumerate(list(elements)):
                group.spawn(once, {**kwargs, over: element}, name=str(i))
        return group.results

    async def node_fn(**kwargs: Any) -> Any:
        if cut:  # the flow's timeout cut it short before: it waits to be cut short again
            await asyncio.Event().wait()

        async def call() -> Any:
            if policy is None:
                return await attempt(kwargs)
            return await attempt_all(policy, lambda: attempt(kwargs), name)

        return await durable.flow_node(replay, name, call)

    node_fn.__name__ = name
    node_fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in node.params]
    )
    return node_fn


async def run_flow_in(
    flow: Flow,
    *,
    inputs: dict[str, Any] | None,
    timeout: float | None = None,
    on_timeout: Literal["raise", "partial"] = "raise",
) -> FlowResult:
    """Run ``flow`` in the current durable run, as the flow named ``flow.name`` there
    (``inputs`` None: the inputs recorded by an earlier run)."""
    durable = current_run()
    replay = durable.flow_replay(flow.name)
    tokens = durable.flow_scope(replay)
    try:
        given = inputs

        def recorded_inputs() -> dict[str, Any]:
            if given is None:
                raise LookupError(
                    f"flow {flow.name!r} has no recorded inputs in run {durable.run_id!r}: "
                    "run it with its inputs first (run_flow)"
                )
            return dict(given)

        values: dict[str, Any] = await durable.step(recorded_inputs, name=_INPUTS)
        # A partial timeout is journaled as the nodes it cut short (key: the flow's
        # path, "cut"); resumed under a timeout, they are not run again.
        key = ("/".join(replay.path), "cut")
        partial = timeout is not None and on_timeout == "partial"
        cut = set(durable.recorded(key) or ()) if partial else set()
        copy = type(flow)(flow.name, inputs=flow.inputs)
        for node in flow.nodes:
            declare = copy.node(name=node.name, join=node.join, critical=node.critical)
            declare(_wrapped(durable, replay, node, node.name in cut))
        result = await copy.run(timeout=timeout, on_timeout=on_timeout, **values)
        if partial and not cut:
            outcomes = result.outcomes
            cut_now = [n for n, o in outcomes.items() if o.status is ChildStatus.CANCELLED]
            if cut_now:
                durable.record(key, cut_now)
        return result
    finally:
        durable.flow_scope_end(tokens)


async def run_flow(
    flow: Flow,
    /,
    *,
    run_id: str,
    store: Store | str | os.PathLike[str],
    timeout: float | None = None,
    on_timeout: Literal["raise", "partial"] = "raise",
    codec: Codec | None = None,
    sync: Literal["group", "step"] | None = None,
    wait: float = 0.0,
    steal: bool = False,
    on_divergence: Literal["fail", "discard"] = "fail",
    on_ambiguous: Literal["fail", "rerun", "skip"] = "fail",
    **inputs: Any,
) -> FlowResult:
    """``flow.run(**inputs)`` as the durable run ``run_id`` in ``store``: each node is
    a step named by its node name (a ``map_over`` node's elements by their index);
    run again with the same ``run_id``, the nodes that finished return their
    recorded values and the others run, in the recorded completion order (a
    ``Quorum`` or ``FirstWins`` join sees the same upstreams first). The other
    options are ``cohort.durable.run``'s; ``timeout``/``on_timeout`` are
    ``Flow.run``'s."""
    async with run(
        run_id,
        store=store,
        codec=codec,
        sync=sync,
        wait=wait,
        steal=steal,
        on_divergence=on_divergence,
        on_ambiguous=on_ambiguous,
    ):
        return await run_flow_in(flow, inputs=inputs, timeout=timeout, on_timeout=on_timeout)


def _downstream(flow: Flow, start: str) -> set[str]:
    names = {node.name for node in flow.nodes}
    if start not in names:
        raise ValueError(f"flow {flow.name!r} has no node {start!r}; its nodes: {sorted(names)}")
    below = {start}
    for node in flow.nodes:  # declared in dependency order
        if any(d in below for d in node.deps):
            below.add(node.name)
    return below


async def resume_flow(
    flow: Flow,
    run_id: str,
    *,
    from_node: str | Node[Any],
    store: Store | str | os.PathLike[str],
    timeout: float | None = None,
    on_timeout: Literal["raise", "partial"] = "raise",
    codec: Codec | None = None,
    sync: Literal["group", "step"] | None = None,
    wait: float = 0.0,
) -> FlowResult:
    """Re-run node ``from_node`` of the recorded run ``run_id`` and every node
    downstream of it, with the recorded inputs and the recorded results of the
    others (not run again). The records of the re-run nodes are replaced."""
    start = from_node if isinstance(from_node, str) else from_node.name
    again = _downstream(flow, start)
    owned = not isinstance(store, Store)
    ledger = open_store(store, sync or "group")
    try:
        if ledger.run(run_id) is None:
            raise LookupError(f"no run {run_id!r} in {ledger!r}: nothing to resume")
        epoch = ledger.acquire(run_id, wait=wait)
        try:
            steps, _ = ledger.load(run_id)
            prefixes = tuple(f"{flow.name}/{name}" for name in again)
            stale = [
                r.path
                for r in steps
                if r.path in prefixes or r.path.startswith(tuple(p + "/" for p in prefixes))
            ]
            ledger.discard_steps(run_id, stale)
            ledger.flush(run_id, epoch)
        finally:
            ledger.release(run_id)
        # The re-run nodes' own groups were journaled closed: they run again all the same.
        async with run(
            run_id, store=ledger, codec=codec, sync=sync, wait=wait, on_divergence="discard"
        ) as durable:
            durable.forget_decisions(prefixes)  # their clock reads, draws, retries: afresh
            cut = durable.recorded((flow.name, "cut"))
            if cut:  # cut short by a partial timeout, they run again all the same
                durable.record((flow.name, "cut"), [n for n in cut if n not in again])
            return await run_flow_in(flow, inputs=None, timeout=timeout, on_timeout=on_timeout)
    finally:
        if owned:
            ledger.close()
