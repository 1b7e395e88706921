"""The Flow examples: the phased batch job and map-reduce over partitions (processes, Dask)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

import cohort
from _util import EXAMPLES, run_python


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


batch = load("flow_batch")
mapreduce = load("flow_mapreduce")


@pytest.mark.virtual_clock
async def test_the_batch_job_waits_for_all_loads_then_proceeds_with_three_regions() -> None:
    result = await batch.JOB.run(seed=3)
    assert result["publish"] == "published 3 regional reports"
    snapshot = result.outcome("snapshot")
    assert snapshot.started == max(result.outcome(n).ended or 0 for n in ("orders", "stock"))
    statuses = [result.outcome(r).status for r in batch.REGIONS]
    assert statuses.count(cohort.ChildStatus.SUCCEEDED) == 3
    assert statuses.count(cohort.ChildStatus.CANCELLED) == 1
    merged = result.outcome("merged")
    third = sorted(result.outcome(r).ended or 0 for r in batch.REGIONS)[2]
    assert merged.started == third  # the moment the third region finished


@pytest.mark.virtual_clock
async def test_a_stuck_region_is_cut_by_its_timeout() -> None:
    with pytest.raises(cohort.FlowError) as info:
        await batch.JOB.run(seed=8)  # two regions stuck: no quorum of 3, and no hang
    outcomes = info.value.result.outcomes
    stuck = [r for r in batch.REGIONS if outcomes[r].status is cohort.ChildStatus.TIMED_OUT]
    assert stuck
    for region in stuck:
        o = outcomes[region]
        assert (o.ended or 0) - (o.started or 0) == pytest.approx(2.0)


def test_the_batch_script_prints_the_outcomes_and_the_graph() -> None:
    done = run_python(str(EXAMPLES / "flow_batch.py"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("published 3 regional reports")
    assert "flowchart TD" in done.stdout


def _expected_lines(words: int, parts: int) -> list[str]:
    serial = mapreduce.total([mapreduce.counts(p) for p in mapreduce.partitions(words, parts)])
    return [f"  {word:<5} {n:>7,}" for word, n in serial]


@pytest.mark.parametrize("backend", ["processes", "dask"])
def test_map_reduce_gives_the_serial_counts(backend: str) -> None:
    """Run as a script: worker processes import its functions from the main module."""
    if backend == "dask":
        pytest.importorskip("distributed")
    flags = ["--dask"] if backend == "dask" else []
    done = run_python(
        str(EXAMPLES / "flow_mapreduce.py"), "--words", "20000", "--parts", "4", *flags
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    where = "Dask" if backend == "dask" else "worker processes"
    assert lines[0] == f"20,000 words in 4 partitions on {where}:"
    assert lines[1:] == _expected_lines(20_000, 4)
