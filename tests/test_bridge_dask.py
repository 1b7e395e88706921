"""DaskExecutor on a real LocalCluster (worker processes, scratch space in a temp dir)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import _bridge_funcs as f
import _flow_funcs as ff
import cohort
from _bridge_util import WorkerSignal, gone
from cohort.bridge import DaskExecutor, Executor

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One LocalCluster for the module: 1 worker process, 1 thread, scratch in a temp dir.

    Hard stops restart its worker again and again. A LocalCluster closes a worker's
    nanny for good when none of that name is up ``lost-worker-timeout`` after any
    earlier restart, which under load falls inside a later restart: raised, as the
    docs tell hard_stop users to.
    """
    scratch = tmp_path_factory.mktemp("dask-scratch")
    with (
        dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}),
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            local_directory=str(scratch),
            worker_class=distributed.Nanny,
        ) as c,
    ):
        yield c


async def test_run_map_and_imap_on_the_cluster(cluster: Any) -> None:
    async with DaskExecutor(cluster.scheduler_address) as dask:
        assert isinstance(dask, Executor)
        assert await dask.run(f.add, 2, 3) == 5
        assert await dask.map(f.square, range(200)) == [x * x for x in range(200)]
        assert sorted(await dask.map(f.square, range(50), ordered=False)) == [
            x * x for x in range(50)
        ]
        got = [v async for v in dask.imap(f.square, iter(range(30)), chunksize=4)]
        assert got == [x * x for x in range(30)]


async def test_shared_objects_are_scattered_once(cluster: Any) -> None:
    import functools

    import numpy as np

    a = np.arange(16_000, dtype=np.float64)
    async with DaskExecutor(cluster.scheduler_address) as dask:
        with await dask.share(a) as data:
            assert data.value is a
            assert (await dask.run(f.shared_view, data))[2] == float(a.sum())
            parts = await dask.map(functools.partial(f.shared_slice_sum, data), range(16))
            assert parts == [float(a[i * 1000 : (i + 1) * 1000].sum()) for i in range(16)]
            assert len(await dask.client.who_has()) >= 1
        assert data.released
        kept = await dask.share(b"x" * 100)
    assert kept.released  # closing the executor released it


@pytest.mark.parametrize("executor", ["dask", "pool"])
async def test_a_released_handle_is_refused_on_every_executor(cluster: Any, executor: str) -> None:
    import functools

    async with (
        DaskExecutor(cluster.scheduler_address) if executor == "dask" else cohort.ProcessPool(1)
    ) as ex:
        data = await ex.share(b"x" * 100)
        data.release()
        with pytest.raises(cohort.SerializationError, match=r"argument 0.*was released"):
            await ex.run(f.shared_len, data)
        with pytest.raises(cohort.SerializationError, match=r"function.*was released"):
            await ex.map(functools.partial(f.shared_slice_sum, data), range(4))


async def test_remote_exception_keeps_its_type(cluster: Any) -> None:
    async with DaskExecutor(cluster.scheduler_address) as dask:
        with pytest.raises(ValueError, match="boom"):
            await dask.run(f.fail, "boom")
        with pytest.raises(KeyError):
            await dask.map(f.fail_at, range(20), chunksize=5)


async def test_cancellation_cancels_the_dask_future(cluster: Any, tmp_path: Path) -> None:
    sig = WorkerSignal(tmp_path, "running")
    try:
        async with DaskExecutor(cluster.scheduler_address, hard_stop=True) as dask:
            task = asyncio.create_task(dask.run(f.mark_and_sleep, str(sig)))
            pid = await sig.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The hard stop restarted the worker: the work stopped, the cluster keeps serving.
            assert gone(pid)
            assert await dask.run(f.add, 1, 1) == 2
    finally:
        sig.close()


async def test_leaving_imap_early_cancels_the_chunks_in_flight(
    cluster: Any, tmp_path: Path
) -> None:
    sig = WorkerSignal(tmp_path, "running")
    items = [(str(sig), n) for n in range(4)]
    try:
        async with DaskExecutor(cluster.scheduler_address, hard_stop=True) as dask:
            results = dask.imap(f.zero_or_mark_and_sleep, items, chunksize=1)
            async with contextlib.aclosing(results):
                async for value in results:
                    assert value == 0
                    pid = await sig.wait()  # the next chunk is running on the worker
                    break
            # Leaving the loop cancelled the chunk in flight and (hard stop) its worker.
            assert gone(pid)
            assert await dask.run(f.add, 1, 1) == 2
    finally:
        sig.close()


async def test_leaving_imap_early_with_hard_stop_runs_none_of_its_chunks_again(
    cluster: Any, tmp_path: Path
) -> None:
    """The chunk read last is still held when the stream cancels; the hard stop kills the
    worker that holds its result, and Dask would compute it again had it not been cancelled."""
    sig = WorkerSignal(tmp_path, "running")
    runs = tmp_path / "runs"
    items = [(str(runs), str(sig), n) for n in range(4)]
    try:
        async with DaskExecutor(cluster.scheduler_address, hard_stop=True) as dask:
            since = await dask.client.run_on_scheduler(f.transitions_seen)
            results = dask.imap(f.logged_zero_or_mark_and_sleep, items, chunksize=1)
            async with contextlib.aclosing(results):
                async for _ in results:
                    await sig.wait()
                    break
            assert await dask.run(f.add, 1, 1) == 2  # the killed worker's loss is handled
            # Dask set out to compute no chunk again (with another worker up, it would
            # have run there at once).
            assert await dask.client.run_on_scheduler(f.chunks_recomputed, since=since) == []
        assert runs.read_text().split() == ["0", "1"]
    finally:
        sig.close()


@pytest.mark.skip(
    reason="not yet: the cancelled chunk 2, which the worker already held behind the running "
    "chunk 1, runs once chunk 1 ends (the log reads 0, 1, 2) and blocks the worker's thread"
)
async def test_leaving_imap_early_without_hard_stop_runs_none_of_its_queued_chunks(
    cluster: Any, tmp_path: Path
) -> None:
    sig = WorkerSignal(tmp_path, "running")
    go = tmp_path / "go"
    os.mkfifo(go)
    runs = tmp_path / "runs"
    items = [(str(runs), str(sig), str(go), n) for n in range(4)]
    try:
        async with DaskExecutor(cluster.scheduler_address) as dask:
            results = dask.imap(f.logged_zero_or_mark_and_wait, items, chunksize=1)
            async with contextlib.aclosing(results):
                async for _ in results:
                    await sig.wait()  # chunk 1 runs; chunks 2 and 3 are queued
                    break
            await asyncio.to_thread(go.write_text, "go")  # chunk 1 (not stopped) ends
            assert await dask.run(f.add, 1, 1) == 2  # one worker thread: after chunk 1
        assert runs.read_text().split() == ["0", "1"]
    finally:
        sig.close()


async def test_default_executor_can_be_the_cluster(cluster: Any) -> None:
    async with DaskExecutor(cluster.scheduler_address) as dask:
        cohort.set_default_executor(dask)
        try:
            assert await cohort.to_process(f.add, 20, 22) == 42
        finally:
            cohort.set_default_executor(None)


async def test_decorated_cpu_nodes_stages_and_retries_run_on_the_cluster(cluster: Any) -> None:
    """The decorator forms that rebind the function's name reach Dask workers too."""
    async with DaskExecutor(cluster.scheduler_address) as dask:
        cohort.set_default_executor(dask)
        try:
            result = await ff.decorated.run(x=2, xs=[1, 2])
            assert await ff.tripled(5) == 15
            assert await ff.retried(1) == 11
        finally:
            cohort.set_default_executor(None)
    assert result[ff.doubled] == 4
    assert result[ff.shifted] == [5, 6]


async def test_closed_executor_refuses_calls(cluster: Any) -> None:
    dask = DaskExecutor(cluster.scheduler_address)
    async with dask:
        pass
    with pytest.raises(cohort.ClosedError):
        await dask.run(f.add, 1, 1)
    with pytest.raises(RuntimeError, match="has not started"):
        _ = dask.client


async def test_none_starts_and_closes_a_local_cluster(tmp_path: Path) -> None:
    options = {"n_workers": 1, "threads_per_worker": 1, "local_directory": str(tmp_path)}
    async with DaskExecutor(cluster_options=options) as dask:
        assert await dask.run(f.square, 7) == 49
        cluster = dask._cluster
    assert cluster is not None
    assert cluster.status.name == "closed"


_CANCELLED_START = """
import asyncio, os, sys, psutil, cohort
from cohort.bridge import DaskExecutor

async def main():
    dask = DaskExecutor(cluster_options={
        "n_workers": 1, "threads_per_worker": 1, "local_directory": sys.argv[1]})
    task = asyncio.create_task(dask.run(os.getpid))
    await asyncio.sleep(0)  # the cluster's start has begun
    while dask._cluster is None:
        await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    await dask.aclose()
    print(dask._cluster is None and "closed")
    alive = []
    for p in psutil.Process().children(recursive=True):
        try:
            p.wait(timeout=10)
        except psutil.TimeoutExpired:
            alive.append(p.pid)
    print("left:", alive)

asyncio.run(main())
"""


def test_cancelled_cluster_start_is_still_closed(tmp_path: Path) -> None:
    """A first call cancelled while the LocalCluster starts leaves no worker behind.

    Run in a child interpreter: distributed itself leaves a socket or two unclosed
    when its start is cancelled, which must not leak into other tests.
    """
    script = tmp_path / "cancelled_start.py"
    script.write_text(_CANCELLED_START)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, str(script), str(scratch)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["closed", "left: []"]


async def test_trace_context_goes_with_a_dask_task(cluster: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    cohort.instrument(tracer_provider=provider)
    try:
        async with DaskExecutor(cluster.scheduler_address) as dask:
            with provider.get_tracer("test").start_as_current_span("caller") as span:
                here = span.get_span_context()
                seen = await dask.run(f.span_in_worker)
                mapped = await dask.map(f.span_in_worker, range(4), chunksize=2)
            assert seen == (here.trace_id, here.span_id)
            assert mapped == [(here.trace_id, here.span_id)] * 4
    finally:
        cohort.uninstrument()
