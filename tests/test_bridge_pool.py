"""ProcessPool with real worker processes: results, errors, crashes, cancellation, no leaks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import _bridge_funcs as f
import cohort
from _bridge_util import WorkerSignal, assert_no_leaks, checked_pool, gone, snapshot
from _util import until
from cohort.bridge import PoolStatistics, ProcessPool


@pytest.fixture
def sig(tmp_path: Path) -> Iterator[WorkerSignal]:
    s = WorkerSignal(tmp_path, "running")
    yield s
    s.close()


# -- results ---------------------------------------------------------------------


async def test_run_returns_the_result_and_forwards_args() -> None:
    async with checked_pool(2) as pool:
        assert await pool.run(f.add, 2, 3) == 5
        results = await asyncio.gather(*(pool.run(f.add, i, i) for i in range(50)))
        assert results == [2 * i for i in range(50)]


async def test_large_arguments_and_results_cross_in_pieces() -> None:
    async with checked_pool(1) as pool:
        assert await pool.run(f.count_len, b"z" * 3_000_000) == 3_000_000
        assert await pool.run(f.big, 2_500_000) == b"y" * 2_500_000


async def test_map_keeps_input_order_and_batches() -> None:
    async with checked_pool(2) as pool:
        assert await pool.map(f.square, range(3000)) == [x * x for x in range(3000)]
        assert await pool.map(f.square, []) == []
        assert await pool.map(f.square, range(10), chunksize=3) == [x * x for x in range(10)]
        # 3000 items in far fewer round trips than items.
        assert pool.statistics().calls_completed < 100


async def test_map_unordered_returns_every_result() -> None:
    async with checked_pool(2) as pool:
        out = await pool.map(f.square, range(500), ordered=False)
        assert sorted(out) == [x * x for x in range(500)]


async def test_imap_unordered_yields_in_completion_order(tmp_path: Path) -> None:
    slow = WorkerSignal(tmp_path, "slow")
    try:
        async with checked_pool(2) as pool:
            # Chunk 1 spins until cancelled; chunk 2 finishes first and is yielded first.
            it = pool.imap(f.spin_unless_int, [str(slow), 7], chunksize=1, ordered=False)
            async with contextlib.aclosing(it):
                assert await anext(it) == 7
                pid = await slow.wait()
            assert gone(pid)
    finally:
        slow.close()


async def test_map_accepts_async_iterables() -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(20):
            yield i

    async with checked_pool(1) as pool:
        assert await pool.map(f.square, numbers()) == [x * x for x in range(20)]


async def test_map_raises_the_first_failure() -> None:
    async with checked_pool(2) as pool:
        with pytest.raises(KeyError) as info:
            await pool.map(f.fail_at, range(100))
        assert info.value.args == (13,)
        assert await pool.run(f.add, 1, 1) == 2


async def test_imap_keeps_a_bounded_number_of_chunks_in_flight() -> None:
    taken = 0

    def source() -> Iterator[int]:
        nonlocal taken
        for i in range(1_000_000):
            taken += 1
            yield i

    async with checked_pool(1) as pool:
        got = []
        async with contextlib.aclosing(pool.imap(f.square, source(), chunksize=10)) as it:
            async for value in it:
                got.append(value)
                if len(got) == 25:
                    break
        # One worker: two chunks in flight, plus the chunk being read.
        assert taken <= 25 + 3 * 10
        assert got == [x * x for x in range(25)]


async def test_leaving_imap_early_kills_the_chunks_in_flight(sig: WorkerSignal) -> None:
    async with checked_pool(1) as pool:
        it = pool.imap(f.spin_unless_int, [1, str(sig)], chunksize=1)
        async with contextlib.aclosing(it):
            async for value in it:
                assert value == 1
                pid = await sig.wait()  # the second chunk is running
                break
        assert gone(pid)
        assert await pool.run(f.add, 1, 1) == 2


async def test_cancelling_an_imap_runs_none_of_its_queued_chunks(
    sig: WorkerSignal, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    items = [(str(runs), str(sig), n) for n in (1, 2)]

    async def consume() -> None:
        async for _ in pool.imap(f.logged_zero_or_mark_and_sleep, items, chunksize=1):
            pass

    async with checked_pool(1) as pool:
        task = asyncio.create_task(consume())
        await sig.wait()  # chunk 0 runs; chunk 1 waits in the pool's queue
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await pool.run(f.add, 1, 1) == 2  # one worker: a queued chunk would run first
    assert runs.read_text().split() == ["1"]


# -- errors ----------------------------------------------------------------------


async def test_exception_is_reraised_as_its_type_with_the_remote_traceback() -> None:
    async with checked_pool(1) as pool:
        with pytest.raises(ValueError, match="boom") as info:
            await pool.run(f.fail, "boom")
        notes = "".join(getattr(info.value, "__notes__", []))
        assert "Remote traceback" in notes
        assert "in fail" in notes


async def test_unrebuildable_exception_arrives_as_remote_error() -> None:
    async with checked_pool(1) as pool:
        with pytest.raises(cohort.RemoteError) as info:
            await pool.run(f.raise_unbuildable)
        err = info.value
        assert err.type_name == "_bridge_funcs.UnbuildableError"
        assert "left/right" in str(err)
        assert "raise_unbuildable" in err.remote_traceback


async def test_base_exception_in_worker_arrives_as_remote_error() -> None:
    async with checked_pool(1) as pool:
        with pytest.raises(cohort.RemoteError, match="KeyboardInterrupt"):
            await pool.run(f.raise_base)
        assert await pool.run(f.add, 1, 2) == 3


async def test_lambdas_and_closures_are_refused_at_submit() -> None:
    def local(x: int) -> int:
        return x

    async with checked_pool(1) as pool:
        with pytest.raises(cohort.SerializationError, match="lambda"):
            await pool.run(lambda: 1)
        with pytest.raises(cohort.SerializationError, match="module level"):
            await pool.run(local, 1)
        with pytest.raises(TypeError, match="nested function"):
            pool.imap(functools.partial(local), [1])
        assert pool.statistics().calls_completed == 0
        assert await pool.run(f.add, 1, 2) == 3


async def test_unpicklable_argument_is_named() -> None:
    async with checked_pool(1) as pool:
        with pytest.raises(cohort.SerializationError, match=r"argument 1 \(lock\)"):
            await pool.run(f.add, 1, threading.Lock())  # type: ignore[arg-type]
        assert await pool.run(f.add, 1, 2) == 3


async def test_unpicklable_result_is_a_serialization_error_and_the_pool_survives() -> None:
    async with checked_pool(1) as pool:
        with pytest.raises(cohort.SerializationError, match="result of _bridge_funcs"):
            await pool.run(f.return_unpicklable)
        assert await pool.run(f.add, 1, 2) == 3


# -- crashes ---------------------------------------------------------------------


async def test_crash_fails_only_its_call_and_the_worker_is_replaced(sig: WorkerSignal) -> None:
    async with checked_pool(2) as pool:
        bystander = asyncio.create_task(pool.run(f.mark_and_sleep, str(sig)))
        pid = await sig.wait()  # one worker is busy: the crash happens on the other
        with pytest.raises(cohort.WorkerCrashedError, match="exited with code 3") as info:
            await pool.run(f.exit_now, 3)
        assert info.value.exitcode == 3
        assert not bystander.done()  # still running, untouched
        assert not gone(pid)
        assert await pool.run(f.add, 1, 2) == 3  # on the replacement
        assert pool.statistics().crashes == 1
        bystander.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bystander


async def test_killed_worker_reports_the_signal() -> None:
    async with checked_pool(1) as pool:
        with pytest.raises(cohort.WorkerCrashedError, match="SIGKILL") as info:
            await pool.run(f.kill_self, signal.SIGKILL)
        assert info.value.signal == signal.SIGKILL
        assert await pool.run(f.add, 1, 2) == 3


def _wait_gone(pid: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(timeout=30)


async def test_reply_written_before_death_still_counts() -> None:
    async with checked_pool(1) as pool:
        pid = await pool.run(f.getpid)
        call = asyncio.create_task(pool.run(f.reply_then_die, 5))
        await until(lambda: pool.statistics().busy == 1)  # sent to the worker
        # The loop blocked until the worker has replied and exited: the pool sees its
        # reply and its exit at once, and reads the reply before it counts the crash.
        _wait_gone(pid)
        assert await call == 5
        # Then a new worker takes the next call (one sent to the dying worker would
        # fail with WorkerCrashedError).
        await until(lambda: pool.statistics().crashes == 1)
        assert await pool.run(f.add, 1, 2) == 3


@pytest.mark.virtual_clock(autojump_threshold=0.2)
async def test_repeated_crashes_break_the_pool() -> None:
    async with checked_pool(1, max_crashes=3, crash_window=60) as pool:
        for _ in range(3):
            with pytest.raises(cohort.CohortError):
                await pool.run(f.exit_now, 1)
        with pytest.raises(cohort.PoolBrokenError, match="3 worker crashes"):
            await pool.run(f.add, 1, 2)
        assert pool.statistics().broken


async def test_worker_ignores_sigint() -> None:
    async with checked_pool(1) as pool:
        assert await pool.run(f.sigint_self, 7) == 7


async def test_flooding_stdout_cannot_deadlock() -> None:
    async with checked_pool(1) as pool:
        assert await pool.run(f.flood, 1 << 20) == 1 << 20


# -- cancellation ----------------------------------------------------------------


async def test_cancelling_a_running_call_kills_and_replaces_its_worker(
    sig: WorkerSignal,
) -> None:
    async with checked_pool(1) as pool:
        task = asyncio.create_task(pool.run(f.mark_and_spin, str(sig)))
        pid = await sig.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gone(pid)  # the CPU work stopped before the caller resumed
        assert await pool.run(f.getpid) != pid
        stats = pool.statistics()
        assert stats.calls_cancelled == 1
        assert stats.crashes == 0


@pytest.mark.virtual_clock(autojump_threshold=0.2)
async def test_fail_after_times_out_a_running_call(sig: WorkerSignal) -> None:
    loop = asyncio.get_running_loop()
    async with checked_pool(1) as pool:
        start = loop.time()
        with pytest.raises(TimeoutError), cohort.fail_after(5):
            await pool.run(f.mark_and_spin, str(sig))
        assert loop.time() - start == pytest.approx(5)
        assert await pool.run(f.add, 1, 2) == 3


async def test_call_cancelled_before_it_was_sent_never_runs(
    sig: WorkerSignal, tmp_path: Path
) -> None:
    never = tmp_path / "never"
    async with checked_pool(1) as pool:
        first = asyncio.create_task(pool.run(f.mark_and_sleep, str(sig)))
        await sig.wait()
        queued = asyncio.create_task(pool.run(f.mark_then_return, str(never), 1))
        while pool.statistics().queued == 0:
            await asyncio.sleep(0)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await pool.run(f.add, 1, 2) == 3
        assert not never.exists()


async def test_first_wins_over_cpu_branches_stops_the_losers(tmp_path: Path) -> None:
    signals = [WorkerSignal(tmp_path, f"loser{i}") for i in range(2)]
    try:
        async with checked_pool(3) as pool:

            async def loser(s: WorkerSignal) -> None:
                await pool.run(f.mark_and_spin, str(s))

            async def winner() -> int:
                pids = [await s.wait() for s in signals]  # both losers are burning CPU
                winner_pids.extend(pids)
                return await pool.run(f.add, 20, 22)

            winner_pids: list[int] = []
            async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
                for s in signals:
                    g.spawn(loser, s)
                g.spawn(winner)
            assert g.result == 42
            assert len(winner_pids) == 2
            assert all(gone(pid) for pid in winner_pids)
    finally:
        for s in signals:
            s.close()


# -- lifetime --------------------------------------------------------------------


async def test_aclose_kills_running_calls_with_closed_error(sig: WorkerSignal) -> None:
    async with checked_pool(1) as pool:
        task = asyncio.create_task(pool.run(f.mark_and_spin, str(sig)))
        pid = await sig.wait()
        await pool.aclose()
        with pytest.raises(cohort.ClosedError, match="closed"):
            await task
        assert gone(pid)
        with pytest.raises(cohort.ClosedError):
            await pool.run(f.add, 1, 2)
        assert pool.statistics().closed


# One test per transition of a pool's life: new -> open -> broken -> closed, new -> closed.


async def test_a_pool_closed_before_it_started_refuses_calls_and_entry() -> None:
    pool = ProcessPool(1)
    await pool.aclose()  # new -> closed: no worker was ever started
    with pytest.raises(cohort.ClosedError, match="is closed; create a new pool"):
        await pool.run(f.add, 1, 2)
    with pytest.raises(cohort.ClosedError, match="is closed; create a new pool"):
        async with pool:
            pytest.fail("a closed pool does not run the body")
    stats = pool.statistics()
    assert (stats.closed, stats.broken, stats.workers_started) == (True, False, 0)
    assert "closed" in repr(pool)


async def test_entering_a_pool_closed_on_its_own_loop_is_a_closed_error() -> None:
    async with checked_pool(1) as pool:
        assert await pool.run(f.add, 1, 2) == 3
    with pytest.raises(cohort.ClosedError, match="is closed"):
        async with pool:
            pytest.fail("a closed pool does not run the body")


async def test_closing_a_pool_twice_is_a_no_op() -> None:
    async with checked_pool(1) as pool:
        assert await pool.run(f.add, 1, 2) == 3
        await pool.aclose()
        stats = pool.statistics()
        await pool.aclose()  # and the context manager's exit closes it a third time
        assert pool.statistics() == stats
        assert (stats.closed, stats.workers) == (True, 0)


async def test_closing_fails_the_running_and_the_queued_calls(sig: WorkerSignal) -> None:
    async with checked_pool(1) as pool:
        running = asyncio.create_task(pool.run(f.mark_and_spin, str(sig)))
        await sig.wait()
        queued = asyncio.create_task(pool.run(f.add, 1, 2))
        await until(lambda: pool.statistics().queued == 1)
        await pool.aclose()
        for call in (running, queued):
            with pytest.raises(cohort.ClosedError, match="closed while the call was pending"):
                await call


async def test_a_broken_pool_refuses_calls_until_closed_then_is_closed() -> None:
    async with checked_pool(1, initializer=f.init_fail) as pool:
        with pytest.raises(cohort.PoolBrokenError, match="initializer"):
            await pool.run(f.add, 1, 2)  # open -> broken
        with pytest.raises(cohort.PoolBrokenError, match="is broken: the worker initializer"):
            await pool.run(f.add, 1, 2)
        with pytest.raises(cohort.PoolBrokenError, match="is broken"):
            async with pool:
                pytest.fail("a broken pool does not run the body")
        assert "broken" in repr(pool)
        await pool.aclose()  # broken -> closed: it still says it broke
        stats = pool.statistics()
        assert (stats.broken, stats.closed) == (True, True)
        with pytest.raises(cohort.ClosedError):
            await pool.run(f.add, 1, 2)


async def test_initializer_runs_in_every_worker(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    async with checked_pool(1, initializer=f.init_marker, initargs=(str(marker),)) as pool:
        assert await pool.run(f.read_marker, str(marker)) == "init"


async def test_failing_initializer_breaks_the_pool() -> None:
    async with checked_pool(1, initializer=f.init_fail) as pool:
        with pytest.raises(cohort.PoolBrokenError, match="initializer") as info:
            await pool.run(f.add, 1, 2)
        assert isinstance(info.value.__cause__, RuntimeError)


async def test_max_tasks_per_worker_replaces_workers() -> None:
    async with checked_pool(1, max_tasks_per_worker=2) as pool:
        pids = [await pool.run(f.getpid) for _ in range(4)]
        assert pids[0] == pids[1] != pids[2] == pids[3]


async def test_statistics_is_a_frozen_snapshot() -> None:
    async with checked_pool(2) as pool:
        await pool.map(f.square, range(4), chunksize=1)
        stats = pool.statistics()
        assert isinstance(stats, PoolStatistics)
        assert stats.calls_completed == 4
        assert stats.queued == 0
        assert not stats.broken
        with pytest.raises(AttributeError):
            stats.idle = 3  # type: ignore[misc]


async def test_pool_refuses_another_loop_and_bad_sizes() -> None:
    with pytest.raises(ValueError, match="workers"):
        ProcessPool(0)
    pool = ProcessPool(1)
    await pool.aclose()
    with pytest.raises(cohort.ClosedError):
        await pool.run(f.add, 1, 2)


async def test_default_size_is_the_usable_cpu_count() -> None:
    pool = ProcessPool()
    assert pool._size == len(os.sched_getaffinity(0))
    await pool.aclose()


def test_reprs_and_statistics_before_start() -> None:
    pool = ProcessPool(1)
    assert "ProcessPool" in repr(pool)
    assert pool.statistics().workers == 0
    assert psutil.Process().pid == os.getpid()


async def test_structlog_events_when_switched_on(sig: WorkerSignal) -> None:
    from structlog.testing import capture_logs

    from cohort._observe._events import enable_events

    enable_events(True)
    try:
        with capture_logs() as logs:
            async with checked_pool(1) as pool:
                with pytest.raises(cohort.WorkerCrashedError):
                    await pool.run(f.exit_now, 4)
                task = asyncio.create_task(pool.run(f.mark_and_spin, str(sig)))
                await sig.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
    finally:
        enable_events(False)
    events = [e["event"] for e in logs]
    for name in ("worker_started", "call_crashed", "call_cancelled", "worker_exited"):
        assert f"bridge.{name}" in events
    crashed = next(e for e in logs if e["event"] == "bridge.call_crashed")
    assert crashed["exitcode"] == 4


@pytest.mark.virtual_clock(autojump_threshold=0.2)
async def test_a_worker_ignoring_sigterm_is_killed_after_the_grace(sig: WorkerSignal) -> None:
    loop = asyncio.get_running_loop()
    async with checked_pool(1, kill_grace=3) as pool:
        task = asyncio.create_task(pool.run(f.ignore_sigterm_and_spin, str(sig)))
        pid = await sig.wait()
        start = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() - start == pytest.approx(3)  # SIGTERM ignored, SIGKILL at 3 s
        assert gone(pid)


@pytest.mark.virtual_clock(autojump_threshold=0.2)
async def test_repeated_crashes_restart_with_growing_delays() -> None:
    loop = asyncio.get_running_loop()
    async with checked_pool(1, max_crashes=10) as pool:
        start = loop.time()
        for _ in range(4):
            with pytest.raises(cohort.WorkerCrashedError):
                await pool.run(f.exit_now, 1)
        assert await pool.run(f.add, 1, 2) == 3
        # First restart at once, then 0.05, 0.1, 0.2 s, each with jitter in [0.5, 1].
        assert loop.time() - start >= 0.5 * (0.05 + 0.1 + 0.2)
        assert pool.statistics().crashes == 4


async def test_quorum_over_cpu_branches_stops_the_rest(tmp_path: Path) -> None:
    spinner = WorkerSignal(tmp_path, "spinner")
    try:
        async with checked_pool(3) as pool:
            watcher = asyncio.create_task(spinner.wait())

            async def quick(value: int) -> int:
                await asyncio.shield(watcher)  # the slow branch is burning CPU
                return await pool.run(f.add, value, 0)

            async with cohort.TaskGroup(join=cohort.Quorum(2)) as g:
                g.spawn(pool.run, f.mark_and_spin, str(spinner))
                g.spawn(quick, 1)
                g.spawn(quick, 2)
            assert sorted(g.results) == [1, 2]
            assert gone(await watcher)
    finally:
        spinner.close()


async def test_cancelling_a_call_also_stops_the_processes_it_started(sig: WorkerSignal) -> None:
    async with checked_pool(1) as pool:
        task = asyncio.create_task(pool.run(f.start_sleeper_and_wait, str(sig)))
        sleeper = psutil.Process(await sig.wait())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # SIGTERM reached the worker's whole process group, the sleeper included.
        gone_procs, _ = psutil.wait_procs([sleeper], timeout=30)
        assert gone_procs == [sleeper] or sleeper.status() == psutil.STATUS_ZOMBIE
        assert await pool.run(f.add, 1, 2) == 3


async def test_a_pool_dropped_without_closing_is_reclaimed_with_a_resource_warning() -> None:
    async with checked_pool(1) as pool:  # the forkserver is up before the snapshot
        assert await pool.run(f.add, 2, 2) == 4
    before = snapshot()
    for _ in range(3):
        dropped = [cohort.ProcessPool(2)]
        assert await dropped[0].run(f.add, 1, 2) == 3
        with pytest.warns(ResourceWarning, match="unclosed <cohort.ProcessPool"):
            dropped.clear()  # the last reference: no cycle keeps a pool alive
        gc.collect()
    await asyncio.sleep(0)  # the loop forgets the dead workers' pipes
    assert_no_leaks(before)
    async with checked_pool(1) as pool:  # and still runs pools normally
        assert await pool.run(f.add, 2, 2) == 4


# -- the crash matrix: each kind fails only its own call, with a clear type; the pool heals --


CRASHES: list[tuple[str, Any, tuple[Any, ...], type[BaseException], str | None]] = [
    ("sys.exit", f.sys_exit, (4,), cohort.RemoteError, "SystemExit: 4"),
    ("os._exit", f.exit_now, (3,), cohort.WorkerCrashedError, "exited with code 3"),
    ("SIGKILL", f.kill_self, (signal.SIGKILL,), cohort.WorkerCrashedError, "SIGKILL"),
    ("segfault", f.segfault, (), cohort.WorkerCrashedError, "SIGSEGV"),
    ("RLIMIT_AS", f.exhaust_memory, (), MemoryError, None),
    ("unpicklable exception", f.raise_unpicklable, (), cohort.RemoteError, "cannot travel"),
    ("unpicklable result", f.return_unpicklable, (), cohort.SerializationError, "result"),
]


async def test_every_kind_of_crash_fails_only_its_call_and_the_pool_heals() -> None:
    async with checked_pool(2, max_crashes=100) as pool:
        for what, fn, args, error, text in CRASHES:
            bystander = asyncio.create_task(pool.run(f.add, 20, 22))
            with pytest.raises(error, match=text):
                await pool.run(fn, *args)
            assert await bystander == 42, what
            assert await pool.run(f.add, 1, 2) == 3, what
        with pytest.raises(cohort.SerializationError, match="argument 1"):
            await pool.run(f.add, 1, threading.Lock())  # type: ignore[arg-type]
        assert pool.statistics().crashes == 3  # os._exit, SIGKILL, segfault


async def test_create_use_cancel_close_cycles_leave_nothing_behind() -> None:
    async with checked_pool(1) as warm:  # the forkserver is up before the snapshot
        await warm.run(f.add, 1, 1)
    before = snapshot()
    for cycle in range(20):
        async with cohort.ProcessPool(2) as pool:
            assert await pool.run(f.add, cycle, 1) == cycle + 1
            if cycle % 4 == 0:
                with cohort.move_on_after(0):  # cancelled at its first await
                    await pool.run(f.add, 1, 1)
            elif cycle % 4 == 1:
                with pytest.raises(cohort.WorkerCrashedError):
                    await pool.run(f.exit_now, 1)
            elif cycle % 4 == 2:
                with pytest.raises(ValueError):
                    await pool.run(f.fail, "boom")
    assert_no_leaks(before)


async def test_a_cancelled_aclose_kills_the_workers_and_leaves_the_loop_clean(
    sig: WorkerSignal,
) -> None:
    async with checked_pool(1) as warm:  # the forkserver is up before the snapshot
        await warm.run(f.add, 1, 1)
    before = snapshot()
    pool = cohort.ProcessPool(1, kill_grace=3600)  # SIGKILL would come only after an hour
    call = asyncio.create_task(pool.run(f.ignore_sigterm_and_spin, str(sig)))
    pid = await sig.wait()
    closing = asyncio.create_task(pool.aclose())
    with pytest.raises(cohort.ClosedError):
        await call  # failed by aclose(), which now waits for the worker ignoring SIGTERM
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert gone(pid)  # killed at once, not left to the hour-long grace
    async with checked_pool(1) as pool2:  # the loop runs on, no stale pipes in it
        assert await pool2.run(f.add, 2, 2) == 4
    assert_no_leaks(before)


# -- trace context -----------------------------------------------------------------


@contextlib.contextmanager
def _instrumented() -> Iterator[Any]:
    """cohort instrumented with an SDK tracer provider; yields a tracer of it."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    cohort.instrument(tracer_provider=provider)
    try:
        yield provider.get_tracer("test")
    finally:
        cohort.uninstrument()


async def test_trace_context_goes_with_a_call_to_the_worker() -> None:
    with _instrumented() as tracer:
        async with checked_pool(1) as pool:
            with tracer.start_as_current_span("caller") as span:
                here = span.get_span_context()
                seen = await pool.run(f.span_in_worker)
                mapped = await pool.map(f.span_in_worker, range(6), chunksize=2)
            assert seen == (here.trace_id, here.span_id)
            assert mapped == [(here.trace_id, here.span_id)] * 6
            # No span current: nothing is carried, the worker's span is a root.
            trace_id, parent = await pool.run(f.span_in_worker)
            assert parent == 0
            assert trace_id != here.trace_id


async def test_no_trace_context_goes_while_instrumentation_is_off() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    async with checked_pool(1) as pool:
        with tracer.start_as_current_span("caller") as span:
            trace_id, parent = await pool.run(f.span_in_worker)
        assert parent == 0
        assert trace_id != span.get_span_context().trace_id
