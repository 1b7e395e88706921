"""Durable pipelines: an item ledger per stage, resumed from the first unfinished item."""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import cohort
import cohort.durable as durable
from _ledger import Ledger
from cohort.pipeline import run_durable, sql_sink
from cohort.testing import crash_loop

PIPE = Path(__file__).with_name("_durable_pipe_prog.py")


@functools.cache
def _crash_free_output() -> str:
    """The program's output without a crash (run once for the module's tests)."""
    with tempfile.TemporaryDirectory(prefix="cohort-test-durable-") as where:
        done = subprocess.run(
            [sys.executable, str(PIPE), str(Path(where) / "clean.db")],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    return done.stdout


class Boom(Exception):
    pass


async def test_a_resumed_pipeline_skips_finished_items_and_counts_them_as_done(
    ledger: Ledger,
) -> None:
    db = ledger.target
    calls: list[tuple[str, int]] = []
    fail_at: set[int] = {7}

    @cohort.stage(workers=2)
    async def a(x: int) -> int:
        calls.append(("a", x))
        return x + 100

    @cohort.stage
    async def b(x: int) -> int | cohort.DropType:
        calls.append(("b", x))
        if x - 100 in fail_at:
            raise Boom(x)
        return cohort.DROP if x % 5 == 0 else x * 2

    with pytest.raises(cohort.PipelineError):
        async with durable.run("r", store=db):
            await run_durable(a | b, range(10), name="p")
    first = set(calls)
    calls.clear()
    fail_at.clear()
    async with durable.run("r", store=db):
        report = await run_durable(a | b, range(10), name="p")
    assert report.outputs == [(x + 100) * 2 for x in range(10) if x % 5]
    assert (report.read, report.succeeded, report.dropped) == (10, 8, 2)
    assert report.counts_add_up()
    assert ("b", 107) in calls  # the failed item runs again, from the stage it had not finished
    assert ("a", 7) not in calls
    assert not first & set(calls) - {("b", 107)}  # nothing finished is re-done
    assert report.extra["resumed_items"] + len({x for s, x in calls if s == "b"}) == 10


async def test_the_engines_workers_are_not_recorded_as_children(ledger: Ledger) -> None:
    db = ledger.target

    @cohort.stage(workers=3)
    async def ident(x: int) -> int:
        return x

    for _ in range(2):  # a recorded worker would replay as done on resume: no output
        async with durable.run("r", store=db):
            report = await ident.run(range(5))
            assert report.outputs == list(range(5))
    store = ledger.open()
    assert store.load("r")[0] == []
    store.close()


async def test_durable_pipeline_bad_input_is_refused_at_the_call(ledger: Ledger) -> None:
    @cohort.stage(batch=4)
    async def batched(xs: list[int]) -> list[int]:
        return xs

    async with durable.run("r", store=ledger.target):
        with pytest.raises(ValueError, match="batches items"):
            await run_durable(batched, range(3))
        with pytest.raises(TypeError, match="Pipeline"):
            await run_durable(print, range(3))  # type: ignore[arg-type]
    with pytest.raises(LookupError):
        await run_durable(batched, range(3))
    with pytest.raises(TypeError, match="SQL statement"):
        sql_sink(3)  # type: ignore[arg-type]
    with pytest.raises(cohort.PipelineError, match="run_durable"):
        await sql_sink("INSERT INTO t VALUES (?)").run(range(1))


async def test_a_sql_sink_writes_each_item_once_across_resumes(ledger: Ledger) -> None:
    db = ledger.target
    ledger.query("CREATE TABLE t (v INTEGER)")
    for _ in range(2):
        async with durable.run("r", store=db):
            report = await run_durable(
                sql_sink(ledger.sql("INSERT INTO t VALUES (?)"), lambda v: [(v,), (-v,)]),
                range(4),
            )
        assert report.outputs == [0, 1, 2, 3]
    assert sorted(v for (v,) in ledger.query("SELECT v FROM t")) == [-3, -2, -1, 0, 0, 1, 2, 3]


@pytest.mark.parametrize("point", ["after-effect", "in-commit"])
def test_a_pipeline_with_a_sql_sink_sigkilled_resumes_exactly_once(
    tmp_path: Path, point: str
) -> None:
    command = [sys.executable, str(PIPE)]
    result = crash_loop(
        [*command, str(tmp_path / "runs.db")],
        random_kills=0,  # random kills: the harness's test, and the soak
        crash_point=point,
        point_kills=1,
        point_range=40 if point == "after-effect" else 1,
        seed=3,
    )
    assert result.kills >= 1
    assert result.output == _crash_free_output()
    read, ok, dropped, _ = map(int, result.output.split()[:4])
    assert (read, ok + dropped) == (300, 300)
    assert result.output.splitlines()[1] == f"sink {ok} {ok}"  # 0 lost, 0 duplicate rows


async def test_a_resumed_item_ledger_adds_to_the_batches_recorded_before_not_over_them(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    for offset in range(3):  # three runs, each moving one more item
        async with durable.run("r", store=db) as run:
            ledger = run.item_ledger("p", 1)
            assert sorted(ledger.recorded) == list(range(offset))
            ledger.reach(offset, 1, f"v{offset}")
    async with durable.run("r", store=db) as run:
        recorded = run.item_ledger("p", 1).recorded
    assert recorded == {i: (1, False, f"v{i}") for i in range(3)}
