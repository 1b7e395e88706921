"""Property tests: random flows on the virtual clock.

Each example is a random DAG (every node takes a random subset of the nodes
before it, under a random join) with random integer durations.

Without failures, against a model of when nodes start: a node without
upstream nodes at 0; a ``Gather`` node at the last end of its upstreams,
``Quorum(k)`` at the k-th, ``FirstWins`` at the first, ``Settle`` at the
last. Checked: every node that ran started exactly then and took its
duration, ``Gather`` nodes got the exact values, nodes not run were
cancelled because nothing waiting needed them, nothing is left running.

With random failures and optional nodes: a run never hangs and leaves no
task, a ``FlowError`` names a critical node's own exception, and a run that
returns has every critical sink succeeded.

With stray cancellations too (a node cancelling its own task, or awaiting a
future cancelled elsewhere): the same, a stray cancellation counting as its
node's failure; and a run that returns lost no error (every critical node
that failed had a critical dependent to absorb it). ``benchmarks/soak.py``
runs :func:`check_random_flow` over thousands of flows from :func:`generate`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis.internal.conjecture.optimiser  # noqa: F401  (eager: see test_group_properties)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cohort
from cohort import ChildStatus
from cohort.testing import run as vrun


@dataclass(frozen=True)
class Spec:
    deps: tuple[int, ...]
    join: str  # "gather", "quorum", "first", "settle"
    k: int
    duration: int
    fails: bool = False
    critical: bool = True
    # "self": it cancels its own task; "future": it awaits a future cancelled elsewhere;
    # "other": it cancels the task named after node ``target`` (running it, or about to).
    stray: str = ""
    target: int = 0


JOINS = ("gather", "quorum", "first", "settle")
STRAYS = ("", "", "self", "future", "other")


def generate(integer: Callable[[int, int], int], faults: bool, strays: bool = False) -> list[Spec]:
    """A random DAG, drawing with ``integer(lo, hi)``; with ``faults``, nodes that fail
    and optional nodes too; with ``strays``, nodes ending in a stray cancellation."""
    n = integer(1, 8)
    specs: list[Spec] = []
    for i in range(n):
        deps = tuple(sorted({integer(0, i - 1) for _ in range(integer(0, 3))})) if i else ()
        join = JOINS[integer(0, 3)] if deps else "gather"
        k = integer(1, len(deps)) if join == "quorum" else 1
        duration = integer(0, 4)
        fails = bool(integer(0, 1)) if faults else False
        critical = bool(integer(0, 1)) if faults else True
        stray = STRAYS[integer(0, 4)] if strays and not fails else ""
        target = integer(0, n - 1) if stray == "other" else 0
        specs.append(Spec(deps, join, k, duration, fails, critical, stray, target))
    return specs


@st.composite
def flows(draw: st.DrawFn, faults: bool = False, strays: bool = False) -> list[Spec]:
    return generate(lambda lo, hi: draw(st.integers(lo, hi)), faults, strays)


def model_starts(specs: list[Spec]) -> list[float]:
    ends: list[float] = []
    starts: list[float] = []
    for spec in specs:
        dep_ends = sorted(ends[d] for d in spec.deps)
        if not dep_ends:
            start = 0.0
        elif spec.join in ("gather", "settle"):
            start = dep_ends[-1]
        elif spec.join == "quorum":
            start = dep_ends[spec.k - 1]
        else:
            start = dep_ends[0]
        starts.append(start)
        ends.append(start + spec.duration)
    return starts


class Boom(Exception):
    pass


async def _cancel_own_task() -> None:
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)


def _cancel_task_of(node: str) -> None:
    for task in asyncio.all_tasks():
        if task.get_name() == node:
            task.cancel()


async def _await_cancelled_future() -> None:
    shared: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(shared.cancel)
    await shared


def build(specs: list[Spec], scale: float = 1.0) -> cohort.Flow:
    """Node i sleeps its duration (times ``scale`` seconds), then fails or returns i
    plus its upstreams' values."""
    flow = cohort.Flow("random", inputs=["seed"])
    joins: dict[str, Any] = {
        "gather": cohort.Gather,
        "first": cohort.FirstWins,
        "settle": cohort.Settle,
    }
    for i, spec in enumerate(specs):
        params = ", ".join(["seed", *(f"n{d}" for d in spec.deps)])
        values = " + ".join(
            [f"{i}", *(f"(n{d} if isinstance(n{d}, int) else 0)" for d in spec.deps)]
        )
        body = "    raise Boom()\n" if spec.fails else f"    return {values}\n"
        if spec.stray == "other":
            body = f"    cancel_task_of('n{spec.target}')\n" + body
        elif spec.stray:
            body = f"    await {'own' if spec.stray == 'self' else 'shared'}()\n" + body
        code = f"async def n{i}({params}):\n    await sleep({spec.duration * scale})\n{body}"
        namespace: dict[str, Any] = {
            "sleep": asyncio.sleep,
            "Boom": Boom,
            "own": _cancel_own_task,
            "shared": _await_cancelled_future,
            "cancel_task_of": _cancel_task_of,
        }
        exec(code, namespace)
        join = cohort.Quorum(spec.k) if spec.join == "quorum" else joins[spec.join]()
        flow.node(join=join, critical=spec.critical)(namespace[f"n{i}"])
    return flow


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows())
def test_nodes_start_when_the_model_says(specs: list[Spec]) -> None:
    flow = build(specs)
    starts = model_starts(specs)

    async def main() -> None:
        before = len(asyncio.all_tasks())
        result = await flow.run(seed=0)
        assert len(asyncio.all_tasks()) == before  # nothing left running
        values: dict[int, int] = {}
        for i, spec in enumerate(specs):
            outcome = result.outcome(f"n{i}")
            if outcome.status is ChildStatus.CANCELLED:
                # Only an upstream that no node still waiting needed.
                dependents = [j for j, s in enumerate(specs) if i in s.deps]
                assert dependents, f"n{i} is a sink: never cancelled"
                assert all(
                    result.outcome(f"n{j}").status is not ChildStatus.PENDING for j in dependents
                ), "cancelled while a node waiting for it had not started"
                continue
            assert outcome.status is ChildStatus.SUCCEEDED, (i, outcome)
            assert outcome.started == starts[i], (i, specs, outcome)
            assert outcome.ended == starts[i] + spec.duration
            if spec.join == "gather" and all(d in values for d in spec.deps):
                values[i] = i + sum(values[d] for d in spec.deps)
                assert result[f"n{i}"] == values[i]

    vrun(main)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows(faults=True))
def test_random_failures_never_hang_lose_an_error_or_leave_a_task(specs: list[Spec]) -> None:
    flow = build(specs)
    sinks = [i for i in range(len(specs)) if not any(i in s.deps for s in specs)]

    async def main() -> None:
        before = len(asyncio.all_tasks())
        error: cohort.FlowError | None = None
        try:
            result = await flow.run(seed=0)
        except cohort.FlowError as exc:
            error, result = exc, exc.result
        if error is not None:
            assert isinstance(error.__cause__, Boom)  # the node's own error, never a marker
            culprit = specs[int(error.node[1:])]
            assert culprit.fails
            assert culprit.critical
        else:
            for i in sinks:
                if specs[i].critical:
                    assert result.outcome(f"n{i}").status is ChildStatus.SUCCEEDED, (i, specs)
        assert len(asyncio.all_tasks()) == before  # nothing left running
        for name, outcome in result.outcomes.items():
            if outcome.status is ChildStatus.FAILED and outcome.error is not None:
                assert isinstance(outcome.error, Boom) or "needed" in str(outcome.error), name

    vrun(main)


HANG = 1000.0  # virtual seconds: far past any random flow's end (8 nodes of at most 4 s)


def _is_stray(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and isinstance(exc.__cause__, asyncio.CancelledError)


async def check_random_flow(specs: list[Spec], scale: float = 1.0, alone: bool = True) -> str:
    """Run the flow of ``specs`` once; ``""`` if all is well, else what went wrong:
    a hang, a lost error (the run returned though a critical node's failure was not
    absorbed), a wrong error, or (if it runs ``alone`` on its loop) a task left."""
    flow = build(specs, scale)
    critical_dependents = {
        i: any(i in s.deps and s.critical for s in specs) for i in range(len(specs))
    }
    sinks = [i for i in range(len(specs)) if not any(i in s.deps for s in specs)]
    # A task cancelled by another node fails the node it runs then: the target, or a
    # node downstream of it that the target's task went on to run.
    victims = {s.target for s in specs if s.stray == "other"}
    for i, spec in enumerate(specs):
        if victims.intersection(spec.deps):
            victims.add(i)
    # Nodes whose own run ends in an error: a failure, or a stray cancellation.
    erring = {i for i, s in enumerate(specs) if s.fails or s.stray in ("self", "future")}
    before = len(asyncio.all_tasks())
    error: cohort.FlowError | None = None
    try:
        result = await flow.run(seed=0, timeout=HANG * scale)
    except TimeoutError:
        return "hang"
    except cohort.FlowError as exc:
        error, result = exc, exc.result
    await asyncio.sleep(0)
    if alone and len(asyncio.all_tasks()) != before:
        return "task left"
    if error is not None:
        culprit = specs[int(error.node[1:])]
        if not (isinstance(error.__cause__, Boom) or _is_stray(error.__cause__)):
            return f"wrong error: {error.__cause__!r}"
        index = int(error.node[1:])
        if not (index in erring or index in victims) or not culprit.critical:
            return f"wrong culprit: {error.node}"
    else:
        for i in sinks:
            if specs[i].critical and result.outcome(f"n{i}").status is not ChildStatus.SUCCEEDED:
                return f"lost error: critical sink n{i} {result.outcome(f'n{i}').status.value}"
        for i, spec in enumerate(specs):
            status = result.outcome(f"n{i}").status
            if spec.critical and status is ChildStatus.FAILED and not critical_dependents[i]:
                return f"lost error: n{i} failed and nothing absorbed it"
    for name, outcome in result.outcomes.items():
        if outcome.status is ChildStatus.SUCCEEDED and int(name[1:]) in erring:
            return f"lost error: {name} succeeded"
        if outcome.status is ChildStatus.FAILED and outcome.error is not None:
            e = outcome.error
            if not (isinstance(e, Boom) or _is_stray(e) or "needed" in str(e)):
                return f"wrong error of {name}: {e!r}"
    return ""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flows(faults=True, strays=True))
def test_random_stray_cancellations_never_hang_or_lose_an_error(specs: list[Spec]) -> None:
    async def main() -> None:
        assert await check_random_flow(specs) == "", specs

    vrun(main)
