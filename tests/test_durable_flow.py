"""Durable flows: run_flow resumes a Flow node by node; resume_flow re-runs from a node."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import cohort
import cohort.durable as durable
from _ledger import Ledger
from cohort.testing import crash_loop

FLOW = Path(__file__).with_name("_durable_flow_prog.py")


@functools.cache
def _crash_free_output() -> str:
    """The program's output without a crash (run once for the module's tests)."""
    with tempfile.TemporaryDirectory(prefix="cohort-test-durable-") as where:
        done = subprocess.run(
            [sys.executable, str(FLOW), str(Path(where) / "clean.db")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    return done.stdout


async def test_a_finished_flow_node_is_not_run_again_on_resume(ledger: Ledger) -> None:
    db = ledger.target
    calls: list[str] = []
    flow = cohort.Flow("f", inputs=["x"])
    fail = {"b": True}

    @flow.node
    async def a(x: int) -> list[int]:
        calls.append("a")
        return list(range(x))

    @flow.node(map_over="a")
    async def sq(a: int) -> int:
        calls.append(f"sq{a}")
        return a * a

    @flow.node
    async def b(sq: list[int]) -> int:
        calls.append("b")
        if fail["b"]:
            raise ValueError("b")
        return sum(sq)

    with pytest.raises(cohort.FlowError):
        await durable.run_flow(flow, run_id="r", store=db, x=3)
    assert calls == ["a", "sq0", "sq1", "sq2", "b"]
    calls.clear()
    fail["b"] = False
    # A recorded error replays as the same error: the node's record must go first.
    with pytest.raises(cohort.FlowError):
        await durable.run_flow(flow, run_id="r", store=db, x=3)
    assert calls == []
    result = await durable.resume_flow(flow, "r", from_node="b", store=db)
    assert result[b] == 5
    assert result[sq] == [0, 1, 4]
    assert calls == ["b"]  # upstream results kept
    calls.clear()
    result = await durable.resume_flow(flow, "r", from_node=sq, store=db)
    assert result[b] == 5
    assert sorted(calls) == ["b", "sq0", "sq1", "sq2"]
    with pytest.raises(ValueError, match="no node 'nope'"):
        await durable.resume_flow(flow, "r", from_node="nope", store=db)
    with pytest.raises(LookupError, match="nothing to resume"):
        await durable.resume_flow(flow, "other", from_node="b", store=db)


async def test_flow_run_with_a_run_id_is_durable_and_flow_resume_reruns_downstream(
    ledger: Ledger,
) -> None:
    db = ledger.target
    calls: list[str] = []
    flow = cohort.Flow("g", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        calls.append("a")
        return x + 1

    @flow.node
    async def b(a: int) -> int:
        calls.append("b")
        return 2 * a

    assert (await flow.run(run_id="r", store=db, x=1))[b] == 4
    assert (await flow.run(run_id="r", store=db, x=1))[b] == 4
    assert calls == ["a", "b"]  # the second run replayed both nodes
    assert (await flow.resume("r", from_node=b, store=db))[b] == 4
    assert calls == ["a", "b", "b"]
    with pytest.raises(TypeError, match="both run_id= and store="):
        await flow.run(run_id="r", x=1)
    with pytest.raises(TypeError, match="both run_id= and store="):
        await flow.run(store=db, x=1)


@pytest.mark.parametrize("point", ["after-effect", "in-commit"])
def test_a_flow_with_a_quorum_and_a_map_sigkilled_resumes_to_the_crash_free_output(
    tmp_path: Path, point: str
) -> None:
    command = [sys.executable, str(FLOW)]
    result = crash_loop(
        [*command, str(tmp_path / "runs.db")],
        random_kills=0,  # random kills: the harness's test, and the soak
        crash_point=point,
        point_kills=1,
        point_range=12 if point == "after-effect" else 1,
        seed=7,
    )
    assert result.kills >= 1
    assert result.output == _crash_free_output()
    assert result.output.splitlines()[1] == "[8555, 8556]"


@pytest.mark.virtual_clock
async def test_flow_nodes_cut_short_by_a_first_wins_join_are_not_run_again_on_resume(
    ledger: Ledger,
) -> None:
    db = ledger.target
    calls: list[str] = []
    decided = asyncio.Event()
    gate = asyncio.Event()
    delays = {"a": 3.0, "b": 1.0, "c": 2.0}
    flow = cohort.Flow("race", inputs=["x"])

    def upstream(name: str) -> None:
        async def node(x: int) -> str:
            calls.append(name)
            await asyncio.sleep(delays[name])
            return name

        flow.node(name=name)(node)

    for name in delays:
        upstream(name)

    @flow.node(join=cohort.FirstWins())
    async def first(a: str | None, b: str | None, c: str | None) -> str:
        calls.append("first")
        decided.set()
        await gate.wait()
        return a or b or c or ""

    run = asyncio.create_task(durable.run_flow(flow, run_id="r", store=db, x=0))
    await decided.wait()  # b won; a and c were cut short
    await asyncio.sleep(0)
    run.cancel()  # as a crash would stop it, after the join's decision
    with pytest.raises(asyncio.CancelledError):
        await run
    assert calls == ["a", "b", "c", "first"]
    calls.clear()
    gate.set()
    delays.update(a=0.0, c=0.0)  # they would win a fresh race
    result = await durable.run_flow(flow, run_id="r", store=db, x=0)
    assert result[first] == "b"
    assert calls == ["first"]  # the losers stay cut short
    statuses = [result.outcome(n).status.value for n in "abc"]
    assert statuses == ["cancelled", "succeeded", "cancelled"]


@pytest.mark.virtual_clock
async def test_flow_nodes_cut_short_by_a_partial_timeout_stay_cut_short_on_resume(
    ledger: Ledger,
) -> None:
    db = ledger.target
    calls: list[str] = []
    delays = {"a": 1.0, "b": 5.0, "c": 2.0}
    flow = cohort.Flow("timed", inputs=["x"])

    def sink(name: str) -> None:
        async def node(x: int) -> str:
            calls.append(name)
            await asyncio.sleep(delays[name])
            return name

        flow.node(name=name)(node)

    for name in delays:
        sink(name)

    async def body() -> list[str]:
        result = await durable.run_flow(
            flow, run_id="r", store=db, timeout=2.5, on_timeout="partial", x=0
        )
        return [result.outcome(n).status.value for n in "abc"]

    assert await body() == ["succeeded", "cancelled", "succeeded"]
    calls.clear()
    delays["b"] = 0.0  # it would finish in time now
    assert await body() == ["succeeded", "cancelled", "succeeded"]
    assert calls == []  # b stays cut short
    result = await durable.resume_flow(
        flow, "r", from_node="b", store=db, timeout=2.5, on_timeout="partial"
    )
    assert calls == ["b"]  # re-run on demand
    assert result["b"] == "b"
    assert await body() == ["succeeded"] * 3
