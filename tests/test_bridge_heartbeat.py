"""ProcessPool(heartbeat=...): a worker that stops responding during a call is treated as crashed.

Real workers, stopped for real (SIGSTOP, or C code holding the GIL); each
test resumes or kills only the worker it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import _bridge_funcs as f
import cohort
from _bridge_util import WorkerSignal, checked_pool


@pytest.fixture
def sig(tmp_path: Path) -> Iterator[WorkerSignal]:
    s = WorkerSignal(tmp_path, "running")
    yield s
    s.close()


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP the worker ``pid``; SIGCONT it at the end if it is still there."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def test_heartbeat_fails_the_call_of_a_stopped_worker_and_replaces_it(
    sig: WorkerSignal,
) -> None:
    async with checked_pool(1, heartbeat=0.5) as pool:
        task = asyncio.create_task(pool.run(f.mark_and_spin, str(sig)))
        pid = await sig.wait()
        with stopped(pid), pytest.raises(cohort.WorkerCrashedError) as info:
            await task
        message = str(info.value)
        assert f"pid {pid}" in message
        assert "mark_and_spin" in message
        assert "stopped responding for" in message
        assert "heartbeat=0.5 s" in message
        assert info.value.exitcode == -signal.SIGKILL
        # The pool heals: a new worker takes the next call; the stall counts as a crash.
        assert await pool.run(f.getpid) != pid
        stats = pool.statistics()
        assert stats.crashes == 1
        assert stats.workers == 1


async def test_heartbeat_fails_a_call_that_holds_the_gil_in_c_code() -> None:
    async with checked_pool(1, heartbeat=0.5) as pool:
        with pytest.raises(cohort.WorkerCrashedError, match="stopped responding for"):
            await pool.run(f.sleep_holding_the_gil, 3600)
        assert await pool.run(f.add, 1, 2) == 3


async def test_heartbeat_leaves_long_calls_alone_that_run_python_or_release_the_gil() -> None:
    async with checked_pool(1, heartbeat=0.5) as pool:
        # Pure Python for several intervals: the heartbeat thread gets the GIL.
        assert await pool.run(f.busy, 2000) > 0
        # Blocked in a call that releases the GIL: alive, and not stopped either.
        assert await pool.run(f.sleep_releasing_the_gil, 1.5) == 1.5
        assert pool.statistics().crashes == 0


@pytest.mark.virtual_clock(autojump_threshold=0.2)
async def test_without_heartbeat_a_stopped_worker_is_waited_for(sig: WorkerSignal) -> None:
    async with checked_pool(1) as pool:
        task = asyncio.create_task(pool.run(f.mark_and_spin, str(sig)))
        pid = await sig.wait()
        with stopped(pid):
            done, _ = await asyncio.wait([task], timeout=3600)  # virtual seconds
            assert not done  # the default: no heartbeat, the call is still awaited
            task.cancel()  # cancelling still works: SIGKILL reaches a stopped process
            with pytest.raises(asyncio.CancelledError):
                await task


@pytest.mark.virtual_clock(autojump_threshold=0.2)
async def test_heartbeat_silence_is_noticed_within_one_and_a_quarter_intervals(
    sig: WorkerSignal,
) -> None:
    # 60 virtual seconds: the worker, stopped, would tick only every 15 real seconds anyway.
    loop = asyncio.get_running_loop()
    async with checked_pool(1, heartbeat=60) as pool:
        assert await pool.run(f.add, 1, 2) == 3  # a worker is ready: the next call goes now
        sent = loop.time()
        task = asyncio.create_task(pool.run(f.mark_and_spin, str(sig)))
        pid = await sig.wait()
        with stopped(pid), pytest.raises(cohort.WorkerCrashedError, match="stopped responding"):
            await task
        assert 60 <= loop.time() - sent <= 75
        assert await pool.run(f.getpid) != pid
