"""Large payloads through shared memory: round trips, shared objects, nothing left behind.

Real worker processes throughout. Every test checks that no segment of the
pools it made is left in /dev/shm (only theirs: another run of the suite may
share the machine), including when workers crash, calls are cancelled and the
parent itself is killed.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import itertools
import os
import random
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
from _parent_kill import kill_parent_once, remove, segments
from _util import popen_python
from cohort.bridge import ProcessPool, Shared, _shm
from cohort.bridge._pool import SHARE_IN_THREAD, TRIM_AFTER

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _shm.AVAILABLE,
    reason="lists /dev/shm to check that no segment is left behind",
)

BIG = 4 * _shm.OOB_MIN  # comfortably above the out-of-band threshold
SMALL = _shm.OOB_MIN // 4
HUGE = 2 * _shm.COPY_MAX  # above the size that is copied through the scratch mappings


@pytest.fixture(autouse=True)
def no_segment_left(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No segment of a pool the test made is left (other pools' are none of its business)."""
    prefixes: list[str] = []
    new_prefix = _shm.new_prefix

    def recorded() -> str:
        prefixes.append(new_prefix())
        return prefixes[-1]

    monkeypatch.setattr(_shm, "new_prefix", recorded)
    yield
    gc.collect()  # handles dropped by the test release their segments
    assert [name for prefix in prefixes for name in segments(prefix)] == []


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
    a = np.asfortranarray(np.arange(HUGE // 8.0).reshape(-1, 8)) if order == "F" else None
    a = a if a is not None else np.arange(HUGE // 8, dtype=np.float64).reshape(-1, 8)
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


async def test_mid_size_messages_are_copied_through_the_scratch_mappings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Arrays and bytes up to ``COPY_MAX`` reuse each direction's scratch segment, mapped
    once on each side: no segment per call, and what arrives is a private, writable copy."""
    created: list[str] = []
    create = _shm.create

    def recording(name: str) -> tuple[int, str]:
        created.append(name)
        return create(name)

    monkeypatch.setattr(_shm, "create", recording)  # the parent's side
    a = np.arange(BIG // 8, dtype=np.float64)
    data = os.urandom(BIG)
    async with pool_of() as pool:
        (w,) = pool._workers
        for i in range(3):
            back = await pool.run(f.echo, a + i)
            assert (back == a + i).all()
            assert f.buffer_owner(back) == ("bytearray", True)
            assert await pool.run(f.buffer_owner, a) == ("bytearray", True)
            assert await pool.run(f.echo, data) == data
            assert sorted(segments(pool.segment_prefix)) == sorted(
                name.lstrip("/") for name in (w.scratch.name, w.reply_name)
            )
        assert created == [w.scratch.name]  # once, for the first call
        back[:] = 7  # its own memory: the next reply does not change it
        assert (await pool.run(f.echo, a) == a).all()
        assert (back == 7).all()
        assert w.reply_name in _shm._scratch_views
    assert w.reply_name not in _shm._scratch_views  # unmapped when the worker went


async def test_scratch_mappings_survive_their_segments_being_emptied() -> None:
    a = np.arange(2 * BIG // 8, dtype=np.float64)
    async with pool_of() as pool:
        (w,) = pool._workers
        for size in (BIG, BIG // 2, 2 * BIG, BIG):  # emptied, then grown again, other sizes
            back = await pool.run(f.echo, a[: size // 8])
            assert (back == a[: size // 8]).all()
            w.scratch.used -= 2 * TRIM_AFTER
            assert w.large_reply_at is not None
            w.large_reply_at -= 2 * TRIM_AFTER
            pool._trim()
            assert scratch_bytes(w.scratch.name) == scratch_bytes(w.reply_name) == 0


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
        call = asyncio.ensure_future(pool.run(f.type_and_len, np.ones(BIG)))
        await asyncio.sleep(0)  # submitted and sent: the arguments are in a segment
        assert len(segments(pool.segment_prefix)) == 1
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
        with open({prefix!r}, "w") as out:
            out.write(pool.segment_prefix)
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
    prefix_file = tmp_path / "prefix"
    script.write_text(
        textwrap.dedent(
            PARENT.format(tests=tests, big=BIG, marker=str(marker), prefix=str(prefix_file))
        )
    )
    proc = popen_python(str(script), start_new_session=True)
    try:
        worker = _wait_for_marker(marker, proc)
        prefix = prefix_file.read_text()
        assert len(segments(prefix)) >= 2  # the shared array and the scratch segments
        proc.kill()  # SIGKILL: nothing runs in the parent
        proc.wait(timeout=30)
        # The worker removes the pool's segments (all of them) before it exits.
        assert _wait_gone(worker)
        assert segments(prefix) == []
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
        handle = await pool.share(np.ones(1000))
        assert len(segments(pool.segment_prefix)) == 1
        del handle
        gc.collect()
        assert segments(pool.segment_prefix) == []


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


async def test_a_handle_of_another_pool_is_not_kept_by_this_pools_workers() -> None:
    a = np.arange(BIG // 8, dtype=np.float64)
    async with pool_of() as owner, pool_of() as other:
        with await owner.share(a) as data:
            (w,) = other._workers
            assert await other.run(f.shared_view, data) == ("shared", False, float(a.sum()))
            # Loaded for that call only: the other pool would never hear of its release.
            assert await other.run(f.shared_objects_held) == 0
            assert not f.mapped(w.pid or 0, data.key[0])
            assert await other.run(f.shared_len, data) == a.size  # loaded again


async def until(predicate: Any, what: str) -> None:
    """Wait for another process to get somewhere (polled: it has no way to say so)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within 10 s: {what}")


async def test_release_reaches_idle_workers_at_once() -> None:
    async with pool_of(2) as pool:
        data = await pool.share(np.ones(BIG // 8))
        # One call each (both are sent before either can finish): both load it, then idle.
        assert (
            await asyncio.gather(*(pool.run(f.shared_len, data) for _ in range(2)))
            == [BIG // 8] * 2
        )
        name = data.key[0]
        pids = [w.pid or 0 for w in pool._workers]
        assert all(f.mapped(pid, name) for pid in pids)
        data.release()
        await asyncio.sleep(0)  # the pool's turn
        assert [w.forget for w in pool._workers] == [[], []]  # told, not kept for later
        await until(lambda: not any(f.mapped(pid, name) for pid in pids), "unmapped")


# -- failures on the way to shared memory --------------------------------------------


async def test_fallback_to_the_pipe_works_under_warnings_as_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_room(self: Any, name: str, scratch: Any = None) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_shm.Outbound, "write", no_room)
    data = os.urandom(BIG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as `python -W error` and this suite's settings
        async with pool_of() as pool:
            for _ in range(3):  # the worker is not lost: every call gets it
                assert await asyncio.wait_for(pool.run(f.count_len, data), 60) == BIG
            assert pool.statistics().busy == 0


async def test_worker_falls_back_to_the_pipe_under_warnings_as_errors() -> None:
    init = f.shared_memory_fails_and_warnings_are_errors
    async with checked_pool(1, initializer=init) as pool:
        assert await pool.run(f.big, BIG) == b"y" * BIG
        data = os.urandom(BIG)
        assert await pool.run(f.echo, data) == data


async def test_a_send_that_fails_fails_its_call_and_frees_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_room(self: Any, name: str, scratch: Any = None) -> Any:
        raise OSError(28, "No space left on device")

    def no_memory(self: Any) -> bytes:
        raise MemoryError("no room for the pickle either")

    async with pool_of() as pool:
        with monkeypatch.context() as m:
            m.setattr(_shm.Outbound, "write", no_room)
            m.setattr(_shm.Outbound, "inband", no_memory)
            with pytest.raises(MemoryError, match="pickle either"):
                await pool.run(f.count_len, os.urandom(BIG))
        stats = pool.statistics()
        assert (stats.busy, stats.idle) == (0, 1)
        assert await pool.run(f.count_len, os.urandom(BIG)) == BIG


# -- segment names -----------------------------------------------------------------------


async def test_call_segments_never_take_a_workers_scratch_name() -> None:
    a = np.arange(HUGE // 8, dtype=np.float64)
    data = os.urandom(BIG)
    async with pool_of(2) as pool:
        await pool.map(f.count_len, [data, data], chunksize=1)  # both scratch segments exist
        # Call numbers run through the workers' pids and numbers, as over a small pid space.
        pool._segment_numbers = itertools.count(min(w.pid or 0 for w in pool._workers) - 4)
        for _ in range(16):
            sums = pool.map(f.array_sum, [a, a], chunksize=1)
            lens = pool.map(f.count_len, [data, data], chunksize=1)
            assert await sums == [float(a.sum())] * 2
            assert await lens == [BIG] * 2


def squat(name: str) -> bytes:
    """Make segment ``name`` as someone else would, with contents of its own."""
    content = b"squatter " + name.encode()
    fd = _shm.open_segment(name, os.O_CREAT | os.O_EXCL | os.O_RDWR)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    return content


def contents(name: str) -> bytes:
    return Path(f"/dev/shm/{name.lstrip('/')}").read_bytes()


@pytest.mark.parametrize("seed", range(3))
async def test_segment_names_taken_or_repeated_are_never_reused(seed: int) -> None:
    """Fuzz: names from a tiny space (call numbers cycle through 0..2, as pids and
    counters met in a small pid space) and names taken by someone else; every
    result is right and no taken segment is written."""
    rng = random.Random(seed)
    a = np.arange(BIG // 8, dtype=np.float64)
    async with pool_of(2) as pool:
        prefix = pool.segment_prefix
        pool._segment_numbers = itertools.cycle(range(3))
        names = ["c0", "c2", "s1", "w0-a", "w1-a", "w0-r", "w1-r0", "w0-r1", "w1-r2"]
        taken = {prefix + n: squat(prefix + n) for n in rng.sample(names, 4)}
        for _ in range(12):
            calls: list[Any] = []
            expected: list[Any] = []
            for _ in range(rng.randint(1, 5)):
                kind = rng.randrange(4)
                if kind == 0:
                    calls.append(pool.run(f.array_sum, np.zeros(rng.choice([BIG, HUGE]) // 8)))
                    expected.append(0.0)
                elif kind == 1:
                    back = np.full(rng.choice([SMALL, BIG, HUGE]) // 8, float(len(calls)))
                    calls.append(pool.run(f.echo, back))
                    expected.append(back)
                elif kind == 2:
                    blob = os.urandom(rng.choice([SMALL, BIG, 2 * BIG]))
                    calls.append(pool.run(f.echo, blob))
                    expected.append(blob)
                else:
                    value = a + len(calls)
                    calls.append(pool.run(f.shared_view, await pool.share(value)))
                    expected.append(("shared", False, float(value.sum())))
            for got, want in zip(await asyncio.gather(*calls), expected, strict=True):
                if isinstance(want, np.ndarray):
                    assert (got == want).all()
                else:
                    assert got == want
        for name, content in taken.items():
            assert contents(name) == content
    remove(segments(prefix))  # what the pool did not remove (not its own) goes now


@pytest.mark.parametrize("seed", range(2))
def test_a_parent_killed_at_a_random_point_leaves_no_segment(tmp_path: Path, seed: int) -> None:
    """Fuzz (a few kills here; ``benchmarks/parent_kill.py`` runs a hundred)."""
    left = kill_parent_once(tmp_path, seed)
    remove(left)
    assert left == []


@pytest.mark.parametrize(("size", "owner"), [(BIG, "bytearray"), (HUGE, "shared")])
def test_a_received_array_is_not_shared_with_a_forked_child(size: int, owner: str) -> None:
    async def receive() -> Any:
        async with pool_of() as pool:
            return await pool.run(f.echo, np.zeros(size // 8))

    back = asyncio.run(receive())
    assert f.buffer_owner(back) == (owner, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: fine here
        pid = os.fork()
    if pid == 0:  # the child writes to its copy, and is gone
        back[:] = 7
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert not back.any()  # the parent's array is its own
    back[0] = 1.0  # and writable


async def test_small_calls_are_pickled_without_a_buffer_callback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call whose arguments and result are known to be small (scalars, strings,
    short binary data, small plain arrays) is one plain pickle each way."""
    from cohort.bridge import _wire

    def refused(obj: object, **kw: object) -> object:
        raise AssertionError("the out-of-band encoder ran for a small message")

    for args in [(b"x" * 100,), (np.arange(10),), (1, 2.5, "s", None)]:
        monkeypatch.setattr(_shm, "encode", refused)
        frame = _wire.dumps_request(_wire.CALL, f.echo, args)
        monkeypatch.undo()
        assert isinstance(frame, bytes)
        kind, fn, got = _shm.decode(frame[4:])
        assert (kind, fn) == (_wire.CALL, f.echo)
        assert [type(a) for a in got] == [type(a) for a in args]
    async with checked_pool() as pool:
        back = await pool.run(f.echo, np.arange(10))
        assert back.tolist() == list(range(10))


@pytest.mark.parametrize("how", ["partial", "in a list", "object array", "bytes", "strided numpy"])
def test_large_buffers_reach_shared_memory_whatever_holds_them(how: str) -> None:
    """The small-call shortcut never takes a large buffer through the pipe."""
    from cohort.bridge import _wire

    big = np.ones(BIG // 8)
    fn: Any = f.echo
    args: tuple[Any, ...]
    if how == "partial":
        fn, args = functools.partial(f.echo, big), ()
    elif how == "in a list":
        args = ([big],)
    elif how == "object array":
        holder = np.empty(1, dtype=object)
        holder[0] = big
        args = (holder,)
    elif how == "bytes":
        args = (bytes(BIG),)
    else:
        args = (big[::2],)
    out = _wire.dumps_request(_wire.CALL, fn, args)
    assert isinstance(out, _shm.Outbound)
    out.release()


async def test_worker_pipes_hold_a_megabyte_so_mid_size_payloads_cross_in_one_write() -> None:
    from cohort.bridge import _wire

    async with checked_pool() as pool:
        sizes = await pool.run(f.pipe_sizes, None)
        assert sizes.count(_wire.PIPE_SIZE) >= 2  # its request and its reply pipe
        payload = os.urandom(SMALL * 3)  # under the threshold: through the pipe
        assert await pool.run(f.echo, payload) == payload
