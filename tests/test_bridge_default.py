"""to_process, @cohort.cpu and the default executor: per-loop pools, pickling by reference."""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
from typing import Any, TypeVar

import pytest

import _bridge_cpu as c
import _bridge_funcs as f
import cohort
from _bridge_util import assert_no_leaks, snapshot, start_forkserver
from _util import RecordingExecutor
from cohort.bridge import CpuFunction, Executor, ProcessPool, default_executor

_T = TypeVar("_T")
_R = TypeVar("_R")


async def test_to_process_uses_a_per_loop_default_pool() -> None:
    assert await cohort.to_process(f.add, 1, 2) == 3
    first = await default_executor()
    assert isinstance(first, ProcessPool)
    assert await default_executor() is first
    assert await cohort.to_process(os.getpid) != os.getpid()


def test_default_pool_is_closed_when_its_loop_shuts_down() -> None:
    start_forkserver()
    before = snapshot()
    pools: list[Executor] = []

    async def main() -> int:
        pools.append(await default_executor())
        return await cohort.to_process(f.add, 2, 2)

    assert asyncio.run(main()) == 4
    assert isinstance(pools[0], ProcessPool)
    assert pools[0].statistics().closed
    assert_no_leaks(before)


@pytest.mark.parametrize("use_uvloop", [False, True])
def test_cohort_run_closes_the_default_pool(use_uvloop: bool) -> None:
    start_forkserver()
    cohort.run(
        asyncio.sleep, 0, uvloop=use_uvloop
    )  # uvloop keeps one global pipe from its first loop
    before = snapshot()
    pools: list[Executor] = []

    async def main() -> int:
        pools.append(await default_executor())
        return await c.cube(3)

    assert cohort.run(main, uvloop=use_uvloop) == 27
    assert isinstance(pools[0], ProcessPool)
    assert pools[0].statistics().closed
    assert_no_leaks(before)


async def test_cpu_function_runs_in_a_worker_and_keeps_the_plain_function() -> None:
    assert await c.cube(3) == 27
    assert await c.pid_of_worker() != os.getpid()
    assert c.cube.__wrapped__(2) == 8
    assert c.cube.__name__ == "cube"
    assert "Cube a number" in (c.cube.__doc__ or "")
    assert isinstance(c.cube, CpuFunction)
    assert await c.scaled(2, factor=5) == 10


def test_cpu_function_pickles_as_the_plain_function() -> None:
    assert pickle.loads(pickle.dumps(c.cube)) is c.cube.__wrapped__
    assert pickle.loads(pickle.dumps(functools.partial(c.cube, 2)))() == 8


async def test_plain_function_behind_a_cpu_wrapper_can_be_sent() -> None:
    async with ProcessPool(1) as pool:
        assert await pool.run(c.cube.__wrapped__, 4) == 64
        sent: Any = c.cube  # typed as returning awaitables; it pickles as the plain function
        assert await pool.map(sent, [1, 2]) == [1, 8]


def test_cpu_refuses_nested_functions() -> None:
    with pytest.raises(cohort.SerializationError, match="module-level"):

        @cohort.cpu
        def nested(x: int) -> int:
            return x


async def test_set_default_executor_redirects_to_process_and_cpu() -> None:
    ex = RecordingExecutor()
    assert isinstance(ex, Executor)
    cohort.set_default_executor(ex)
    try:
        assert await cohort.to_process(f.add, 1, 2) == 3
        assert await c.cube(2) == 8
        assert await default_executor() is ex
    finally:
        cohort.set_default_executor(None)
    assert ex.calls == ["add", "cube"]


async def test_cpu_with_its_own_executor() -> None:
    ex = RecordingExecutor()
    sq = cohort.cpu(executor=ex)(f.square)
    assert await sq(5) == 25
    assert ex.calls == ["square"]
    assert await cohort.to_process(f.square, 3, executor=ex) == 9


def test_processpool_satisfies_the_executor_protocol() -> None:
    assert isinstance(ProcessPool(1), Executor)
