"""cpu stages: plain functions run in worker processes through the bridge."""

from __future__ import annotations

import os

import pytest

import _pipeline_funcs as funcs
import cohort


async def test_a_decorated_cpu_stage_runs_in_worker_processes() -> None:
    assert await funcs.square(7) == 49  # directly awaitable too
    report = await (funcs.square | cohort.stage(cpu=True, workers=2)(funcs.pid_of)).run(range(8))
    assert report.outputs is not None
    assert os.getpid() not in report.outputs
    assert report.succeeded == 8


async def test_a_stage_on_an_explicit_executor() -> None:
    async with cohort.ProcessPool(2) as pool:
        pids = cohort.stage(executor=pool, workers=2)(funcs.pid_of)
        report = await (funcs.square.with_options(executor=pool) | pids).run(range(6))
        assert report.outputs is not None
        assert os.getpid() not in report.outputs
        assert pool.statistics().calls_completed == 12


async def test_a_crashed_worker_fails_only_its_item() -> None:
    async with cohort.ProcessPool(2) as pool:
        crashy = cohort.stage(executor=pool, workers=2, on_error="skip")(funcs.crash_on)
        report = await crashy.run(range(6))
    assert sorted(report.outputs or []) == [0, 1, 2, 4, 5]
    assert [e.index for e in report.errors] == [3]
    assert isinstance(report.errors[0].exception, cohort.WorkerCrashedError)
    assert report.counts_add_up()


async def test_fail_fast_kills_the_running_cpu_work() -> None:
    async with cohort.ProcessPool(3) as pool:
        spinning = cohort.stage(executor=pool, workers=3)(funcs.spin)
        with pytest.raises(cohort.PipelineError) as info:
            await spinning.run([300.0, 300.0, "not a number"])  # type: ignore[list-item]
        assert isinstance(info.value.__cause__, TypeError)
        assert pool.statistics().calls_cancelled == 2  # their workers were killed


async def test_cancelling_a_run_kills_the_running_cpu_work() -> None:
    async with cohort.ProcessPool(2) as pool:
        spinning = cohort.stage(executor=pool, workers=2)(funcs.spin)
        with cohort.move_on_after(0.2):
            await spinning.run([300.0, 300.0])
        assert pool.statistics().calls_cancelled == 2
