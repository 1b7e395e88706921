"""Large payloads through shared memory: round trips, shared objects, nothing left behind.

Real worker processes throughout. Every test compares the pool's segments in
/dev/shm before and after, including when workers crash, calls are cancelled
and the parent itself is killed.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import signal
import sys
import textwrap
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import _bridge_funcs as f
import cohort
from _bridge_util import WorkerSignal, checked_pool
from _util import popen_python
from cohort.bridge import ProcessPool, Shared, _shm
from cohort.bridge._pool import SHARE_IN_THREAD, TRIM_AFTER

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _shm.AVAILABLE,
    reason="lists /dev/shm to check that no segment is left behind",
)

BIG = 4 * _shm.OOB_MIN  # comfortably above the out-of-band threshold
SMALL = _shm.OOB_MIN // 4


def segments() -> set[str]:
    """cohort's shared-memory segments that exist now."""
    return {name for name in os.listdir("/dev/shm") if name.startswith("ch-")}


@pytest.fixture(autouse=True)
def no_segment_left() -> Iterator[None]:
    before = segments()
    yield
    gc.collect()  # handles dropped by the test release their segments
    assert segments() == before


@pytest.fixture
def sig(tmp_path: Path) -> Iterator[WorkerSignal]:
    s = WorkerSignal(tmp_path, "running")
    yield s
    s.close()


@asynccontextmanager
async def pool_of(workers: int = 1) -> AsyncIterator[ProcessPool]:
    async with checked_pool(workers) as pool:
        yield pool


# -- round trips -------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, SMALL, BIG])
async def test_binary_payloads_keep_their_type_and_content(size: int) -> None:
    data = os.urandom(size)
    async with pool_of() as pool:
        assert await pool.run(f.echo, data) == data
        assert type(await pool.run(f.echo, data)) is bytes
        back = await pool.run(f.echo, bytearray(data))
        assert type(back) is bytearray
        assert back == data
        view = await pool.run(f.echo, memoryview(data))
        assert type(view) is memoryview
        assert view.readonly
        assert bytes(view) == data
        # Inside the worker too: the function sees the types it was given.
        assert await pool.run(f.type_and_len, data) == ("bytes", size)
        assert await pool.run(f.type_and_len, bytearray(data)) == ("bytearray", size)
        assert await pool.run(f.type_and_len, memoryview(data)) == ("memoryview", size)


async def test_a_writable_memoryview_stays_writable() -> None:
    async with pool_of() as pool:
        view = await pool.run(f.echo, memoryview(bytearray(BIG)))
        assert not view.readonly
        view[0] = 7  # its memory is the received segment's, not shared with anyone


@pytest.mark.parametrize("order", ["C", "F"])
async def test_numpy_arrays_arrive_without_a_copy_and_writable(order: str) -> None:
    a = np.asfortranarray(np.arange(BIG // 8.0).reshape(-1, 8)) if order == "F" else None
    a = a if a is not None else np.arange(BIG // 8, dtype=np.float64).reshape(-1, 8)
    async with pool_of() as pool:
        back = await pool.run(f.echo, a)
        assert back.dtype == a.dtype
        assert back.shape == a.shape
        assert (back == a).all()
        assert back.flags.f_contiguous == a.flags.f_contiguous
        # In the worker and back here, the array's memory is the segment itself.
        assert await pool.run(f.buffer_owner, a) == ("shared", True)
        assert f.buffer_owner(back) == ("shared", True)
        assert (await pool.run(f.add_one_in_place, a) == a + 1).all()


async def test_small_and_strided_arrays_take_the_pipe() -> None:
    async with pool_of() as pool:
        small = np.arange(100)
        assert (await pool.run(f.echo, small) == small).all()
        assert (await pool.run(f.buffer_owner, small))[0] != "shared"
        strided = np.arange(BIG // 4, dtype=np.int32)[::2]  # not contiguous: pickled in band
        assert (await pool.run(f.echo, strided) == strided).all()


async def test_large_objects_nested_in_other_objects() -> None:
    payload: dict[str, Any] = {"a": os.urandom(BIG), "b": [np.ones(BIG // 8), "x" * BIG], "n": 3}
    async with pool_of() as pool:
        back = await pool.run(f.echo, payload)
    assert back["a"] == payload["a"]
    assert back["b"][1] == payload["b"][1]
    assert back["n"] == 3
    assert (back["b"][0] == 1).all()


async def test_map_items_and_results_reach_shared_memory() -> None:
    blobs = [os.urandom(BIG) for _ in range(6)]
    async with pool_of(2) as pool:
        assert await pool.map(f.count_len, blobs, chunksize=2) == [BIG] * 6
        assert await pool.map(f.echo, blobs) == blobs


async def test_many_large_calls_leave_nothing_behind() -> None:
    data = os.urandom(BIG)
    async with pool_of(2) as pool:
        for _ in range(20):
            assert (
                await asyncio.gather(*(pool.run(f.count_len, data) for _ in range(50)))
                == [BIG] * 50
            )


def scratch_bytes(name: str) -> int:
    return os.stat(f"/dev/shm/{name.lstrip('/')}").st_size


async def test_idle_scratch_segments_are_emptied() -> None:
    async with pool_of() as pool:
        assert await pool.run(f.echo, os.urandom(BIG)) != b""  # both directions
        (w,) = pool._workers
        assert scratch_bytes(w.scratch.name) >= BIG
        assert scratch_bytes(w.reply_name) >= BIG
        assert w.large_reply_at is not None
        w.scratch.used -= 2 * TRIM_AFTER  # as if they had been idle
        w.large_reply_at -= 2 * TRIM_AFTER
        pool._trim()
        assert scratch_bytes(w.scratch.name) == scratch_bytes(w.reply_name) == 0
        data = os.urandom(BIG)
        assert await pool.run(f.echo, data) == data  # and they grow again


async def test_a_full_dev_shm_falls_back_to_the_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_room(self: Any, name: str, scratch: Any = None) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_shm.Outbound, "write", no_room)
    data = os.urandom(BIG)
    async with pool_of() as pool:
        with pytest.warns(RuntimeWarning, match="through the pipe"):
            assert await pool.run(f.count_len, data) == BIG


# -- crashes, cancellation, a killed parent ---------------------------------------------


async def test_worker_killed_before_reading_its_arguments() -> None:
    async with pool_of() as pool:
        (w,) = pool._workers
        await pool.run(f.add, 1, 1)  # ready
        os.kill(w.pid or 0, signal.SIGSTOP)  # it cannot read the request
        before = segments()
        call = asyncio.ensure_future(pool.run(f.type_and_len, np.ones(BIG)))
        await asyncio.sleep(0)  # submitted and sent: the arguments are in a segment
        assert len(segments() - before) == 1
        os.kill(w.pid or 0, signal.SIGKILL)
        with pytest.raises(cohort.WorkerCrashedError):
            await call
        assert await pool.run(f.add, 2, 2) == 4  # the replacement


async def test_worker_killed_while_writing_its_reply() -> None:
    async with pool_of() as pool:
        await pool.run(f.count_len, os.urandom(BIG))  # the parent's scratch exists too
        with pytest.raises(cohort.WorkerCrashedError):
            await pool.run(f.die_while_replying, BIG)
        assert await pool.run(f.count_len, os.urandom(BIG)) == BIG


async def test_worker_segfault_while_holding_an_array() -> None:
    async with pool_of() as pool:
        with pytest.raises(cohort.WorkerCrashedError):
            await pool.run(f.buffer_owner_then_segfault, np.ones(BIG))


async def test_cancelled_call_with_a_large_argument(sig: WorkerSignal) -> None:
    async with pool_of() as pool:
        call = asyncio.ensure_future(pool.run(f.mark_and_spin_holding, str(sig), b"z" * BIG))
        await sig.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call


async def test_closing_the_pool_mid_call_with_large_payloads(sig: WorkerSignal) -> None:
    async with pool_of() as pool:
        shared = await pool.share(np.ones(BIG))
        call = asyncio.ensure_future(pool.run(f.mark_and_spin_holding, str(sig), b"z" * BIG))
        await sig.wait()
        await pool.aclose()
        with pytest.raises(cohort.ClosedError):
            await call
        assert shared.released


PARENT = """
import asyncio, sys
sys.path.insert(0, {tests!r})
import numpy as np
import _bridge_funcs as f
import cohort

async def main():
    async with cohort.ProcessPool(2) as pool:
        shared = await pool.share(np.ones({big}))
        await asyncio.gather(*(pool.run(f.count_len, b"x" * {big}) for _ in range(4)))
        await pool.run(f.mark_and_spin_holding, {marker!r}, b"z" * {big})

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_killed_parent_leaves_no_segment(tmp_path: Path) -> None:
    from test_bridge_process import _wait_for_marker, _wait_gone

    marker = tmp_path / "running"
    os.mkfifo(marker)
    script = tmp_path / "prog.py"
    tests = str(Path(__file__).parent)
    script.write_text(textwrap.dedent(PARENT.format(tests=tests, big=BIG, marker=str(marker))))
    before = segments()
    proc = popen_python(str(script), start_new_session=True)
    try:
        worker = _wait_for_marker(marker, proc)
        assert len(segments() - before) >= 2  # the shared array and the scratch segments
        proc.kill()  # SIGKILL: nothing runs in the parent
        proc.wait(timeout=30)
        # The worker removes the pool's segments (all of them) before it exits.
        assert _wait_gone(worker)
    finally:
        proc.kill()
        proc.wait()


# -- shared objects ----------------------------------------------------------------------


async def test_shared_array_is_read_in_place_by_every_call() -> None:
    a = np.arange(16_000, dtype=np.float64)
    async with pool_of(2) as pool:
        with await pool.share(a) as data:
            assert isinstance(data, Shared)
            assert data.value is a
            assert await pool.run(f.shared_view, data) == ("shared", False, float(a.sum()))
            parts = await pool.map(functools.partial(f.shared_slice_sum, data), range(16))
            assert parts == [float(a[i * 1000 : (i + 1) * 1000].sum()) for i in range(16)]
        assert data.released
        with pytest.raises(cohort.SerializationError, match="released"):
            await pool.run(f.shared_len, data)
        # Workers drop a released object when they hear of it (with their next call).
        assert await pool.map(f.shared_objects_held, range(8), chunksize=1) == [0] * 8


async def test_a_large_object_is_shared_from_a_thread() -> None:
    a = np.ones((SHARE_IN_THREAD // 8) + 1)
    async with ProcessPool(1) as pool:
        with await pool.share(a) as data:
            assert (await pool.run(f.shared_view, data))[2] == a.size


async def test_shared_objects_of_any_picklable_type() -> None:
    async with pool_of() as pool:
        text = await pool.share("t" * 1000)
        blob = await pool.share(os.urandom(BIG))
        assert await pool.run(f.shared_len, text) == 1000
        assert await pool.run(f.shared_len, blob) == BIG
        text.release()
        text.release()  # idempotent
        assert text.value == "t" * 1000  # the parent's object stays usable


async def test_a_dropped_handle_releases_its_segment() -> None:
    async with pool_of() as pool:
        before = segments()
        handle = await pool.share(np.ones(1000))
        assert len(segments() - before) == 1
        del handle
        gc.collect()
        assert segments() == before


async def test_share_on_a_closed_pool_fails() -> None:
    pool = ProcessPool(1)
    await pool.aclose()
    with pytest.raises(cohort.ClosedError):
        await pool.share(b"x")


def test_an_unclosed_pool_releases_its_shared_objects() -> None:
    async def leave_open() -> Shared[Any]:
        pool = ProcessPool(1)
        await pool.__aenter__()
        return await pool.share(np.ones(1000))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        handle = asyncio.run(leave_open())
        gc.collect()  # the pool is collected: its finalizer kills workers, frees segments
    assert handle.released
