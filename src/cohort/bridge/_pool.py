"""ProcessPool: CPU-bound calls in worker processes, cancellable like any other child.

Design, cheapest path first:

* each worker owns two ``os.pipe()``s; the parent reads replies with
  ``loop.add_reader`` (no feeder or result threads, no shared queue), so a
  round trip is one write, one wake-up and one read;
* a worker runs one call or chunk at a time; a call waits in the parent
  until a worker is ready, so a call cancelled before it was sent never runs;
* a running call that is cancelled kills its worker (SIGTERM, then SIGKILL
  after ``kill_grace``) and a replacement starts at once;
* a dead worker is noticed by its process sentinel; its pipe is drained first
  (it may have written its reply and then died), then only its own call fails.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import multiprocessing
import os
import sys
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
    Sized,
)
from dataclasses import dataclass
from typing import Any, Never, TypeVar, TypeVarTuple, Unpack

from cohort._exceptions import ClosedError, SerializationError
from cohort._observe._events import EVENTS, emit
from cohort._validate import check_count, check_seconds, keywords_refused
from cohort.bridge import _shm, _wire
from cohort.bridge._chunks import (
    ChunkSizer,
    check_map_arguments,
    collect_items,
    iterate_items,
    stream_chunks,
)
from cohort.bridge._leftovers import Leftovers, forget_shared, kill_now, reclaim, weakly
from cohort.bridge._procs import (
    Call,
    Worker,
    default_start_method,
    preload_worker_in_forkserver,
    usable_cpus,
)
from cohort.bridge._shared import Shared
from cohort.bridge._slots import CLOSED, DYING, NEW, OPEN, READY, STARTING, WorkerSlots

_T = TypeVar("_T")
_R = TypeVar("_R")
_Ts = TypeVarTuple("_Ts")

SHARE_IN_THREAD = 16 << 20  # bytes: share() copies larger objects in a thread
TRIM_AFTER = 1.0  # seconds: scratch segments (see _shm.Scratch) unused this long are emptied


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a pool, from :meth:`ProcessPool.statistics`."""

    workers: int  # live workers, started or starting (dying ones excluded)
    idle: int  # ready and waiting for a call
    busy: int  # running a call or a chunk
    queued: int  # calls and chunks waiting for a worker
    calls_completed: int  # replies received (values and exceptions)
    calls_cancelled: int  # calls abandoned by their caller (running ones killed a worker)
    crashes: int  # workers that died without being asked to
    workers_started: int
    broken: bool
    closed: bool


class ProcessPool(WorkerSlots):
    """A pool of worker processes for CPU-bound calls, cancellable like any other child.

    Args:
        workers: number of worker processes (default: the CPUs this process may use).
        max_tasks_per_worker: replace a worker after it ran this many items.
        initializer: run ``initializer(*initargs)`` in each new worker; if it
            fails, the pool is broken (``PoolBrokenError`` with the cause).
        initargs: the arguments of ``initializer``.
        start_method: ``"forkserver"`` (default where available) or ``"spawn"``;
            ``"fork"`` works but is unsafe with threads.
        max_crashes: the pool gives up (``PoolBrokenError``) after this many
            worker crashes within ``crash_window`` seconds; before that, crashed
            workers are restarted with exponential backoff and jitter.
        crash_window: seconds over which ``max_crashes`` are counted.
        kill_grace: seconds between SIGTERM and SIGKILL when a call is cancelled.
        heartbeat: detect a worker that stopped responding (SIGSTOP, a debugger,
            a call holding the GIL in C code) while it runs a call: after
            ``heartbeat`` seconds without a heartbeat from the worker's thread
            (noticed within ``1.25 * heartbeat``) the call fails with
            ``WorkerCrashedError`` ("stopped responding for N s"), the worker is
            killed and replaced, and it counts as a crash. ``None`` (default):
            off. A call that holds the GIL longer than this in one C function
            is treated as stopped too; one that releases it (sleep, I/O) is not.

    Each worker leads its own process group, and the pool signals the whole
    group: cancelling a call also stops the processes the call started
    (``subprocess.run`` in the function), and whatever a worker started does
    not outlive it. A process that leaves the group (``setsid``,
    ``start_new_session=True``, a daemon) escapes this; stop such processes
    in the function itself.

    Example:
        ```python
        async with cohort.ProcessPool(workers=4) as pool:
            digest = await pool.run(sha, blob)        # cancelling kills the worker
            sizes = await pool.map(len_of, paths)     # auto-chunked
            async for doc in pool.imap(parse, lines, ordered=False):
                ...
        ```
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_tasks_per_worker: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        start_method: str | None = None,
        max_crashes: int = 5,
        crash_window: float = 30.0,
        kill_grace: float = 0.1,
        heartbeat: float | None = None,
    ) -> None:
        workers = check_count("workers", workers, none=True)
        max_tasks_per_worker = check_count("max_tasks_per_worker", max_tasks_per_worker, none=True)
        max_crashes = check_count("max_crashes", max_crashes)
        crash_window = check_seconds("crash_window", crash_window, zero=False)
        kill_grace = check_seconds("kill_grace", kill_grace, inf=False)
        heartbeat = check_seconds("heartbeat", heartbeat, none=True, zero=False, inf=False)
        if initializer is not None:
            _wire.check_callable(initializer)
        if not isinstance(initargs, tuple | list):
            raise TypeError(f"initargs must be a tuple of arguments, got {initargs!r}")
        methods = multiprocessing.get_all_start_methods()
        if start_method is not None and start_method not in methods:
            raise ValueError(f"start_method must be one of {methods} or None, got {start_method!r}")
        super().__init__(
            size=workers or usable_cpus(),
            method=start_method or default_start_method(),
            initializer=initializer,
            initargs=tuple(initargs),
            max_crashes=max_crashes,
            crash_window=crash_window,
            kill_grace=kill_grace,
            heartbeat=heartbeat,
        )
        self._max_tasks = max_tasks_per_worker
        self._n_completed = self._n_cancelled = 0
        # Numbers in the names of calls' ("c<n>") and shared objects' ("s<n>") segments.
        self._segment_numbers: Iterator[int] = itertools.count()
        self._trim_timer: asyncio.TimerHandle | None = None
        # Held weakly by the loop, as WorkerSlots' callbacks are.
        self._on_writable_cb = weakly(self._on_writable)
        self._trim_cb = weakly(self._trim)
        self._leftovers = Leftovers(self._workers, repr(self), self._prefix)
        self._leftovers.tell_forget = weakly(self._tell_forget)
        self._finalizer = weakref.finalize(self, reclaim, self._leftovers)

    def __repr__(self) -> str:
        state = "open" if self._state is NEW else self._state.value
        return f"<cohort.ProcessPool workers={self._size} method={self._method!r} {state}>"

    @property
    def segment_prefix(self) -> str:
        """How the names of this pool's shared-memory segments start (``/ch-<token>-``).

        Every segment the pool and its workers create starts with it (in
        ``/dev/shm`` on Linux, without the leading ``/``): what a leak check of
        this pool, and only this pool, looks for.
        """
        return self._prefix

    # -- lifetime -----------------------------------------------------------------

    async def __aenter__(self) -> ProcessPool:
        self._check_usable()
        self._ensure_started()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return loop
        if self._state is CLOSED:
            raise ClosedError(f"{self!r} is closed; create a new pool")
        if self._loop is not None:
            raise RuntimeError(
                f"{self!r} belongs to the event loop it was started on; create one pool per loop"
            )
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            raise RuntimeError(
                "cohort.ProcessPool started while a worker process was importing the main "
                'module: guard the code that starts your program with `if __name__ == "__main__":`'
            )
        self._loop = self._leftovers.loop = loop
        self._move(OPEN)
        if self._method == "forkserver":
            preload_worker_in_forkserver()
        for _ in range(self._size):
            self._spawn()
        return loop

    async def aclose(self) -> None:
        """Stop the pool: idle workers exit, running calls are killed and fail with ``ClosedError``.

        Waits until every worker has exited and been reaped. Idempotent.
        """
        if self._state is NEW:
            self._move(CLOSED)
            self._leftovers.release_shared()
            return
        if self._state is not CLOSED:
            self._move(CLOSED)
            msg = f"{self!r} was closed while the call was pending"
            self._fail_everything(lambda: ClosedError(msg))
        try:
            if self._workers:
                assert self._loop is not None  # workers run only on the loop it started on
                if self._all_exited is None or self._all_exited.done():
                    self._all_exited = self._loop.create_future()
                try:
                    await asyncio.shield(self._all_exited)
                except asyncio.CancelledError:
                    # Cancelled while waiting: kill and reap now, taking the pipes off
                    # the loop before they are closed.
                    kill_now(self._loop, self._workers)
                    raise
        finally:
            self._leftovers.release_shared()
        self._finalizer.detach()

    # -- public calls -----------------------------------------------------------

    async def run(self, fn: Callable[[Unpack[_Ts]], _R], *args: *_Ts, **kwargs: Never) -> _R:
        """Run ``fn(*args)`` in a worker process and return its result.

        Cancelling the caller while the call runs kills that worker (and starts a
        replacement); a call cancelled before it was sent never runs. The function's
        exception is re-raised here with the remote traceback as a note.

        Raises:
            WorkerCrashedError: the worker died while running this call.
            SerializationError: ``fn``, an argument or the result cannot be pickled.
            ClosedError, PoolBrokenError: the pool cannot take calls.
        """
        if kwargs:
            raise keywords_refused("pool.run", fn, args, kwargs, ())
        call = self._submit(_wire.CALL, fn, args, 1)
        try:
            kind, value = await call.future
        except asyncio.CancelledError:
            # Wait for the worker to die, so that once the caller's scope has
            # exited the CPU work has stopped (the wait is short: SIGTERM,
            # then SIGKILL after kill_grace).
            await _wait_exits([self._abandon(call)])
            raise
        if kind == _wire.OK:
            return value  # type: ignore[no-any-return]
        raise _reply_error(kind, value)

    def imap(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | AsyncIterable[_T],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> AsyncGenerator[_R, None]:
        """Yield ``fn(item)`` for each item, computed in workers, few chunks at a time.

        ``chunksize=None`` sizes chunks from measured per-item cost so tiny calls are
        batched. At most two chunks per worker are in flight, so memory stays flat
        over any number of items. Leaving the loop early cancels the chunks in flight.
        """
        return iterate_items(self._chunks(fn, iterable, chunksize, ordered))

    async def map(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | AsyncIterable[_T],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> list[_R]:
        """``[fn(item) for item in iterable]`` in workers, auto-chunked (see :meth:`imap`).

        ``ordered=False`` returns results in completion order. The first failure
        cancels the rest and is raised.
        """
        return await collect_items(self._chunks(fn, iterable, chunksize, ordered))

    def _chunks(
        self,
        fn: Any,
        iterable: Iterable[Any] | AsyncIterable[Any],
        chunksize: int | None,
        ordered: bool,
    ) -> AsyncGenerator[list[Any], None]:
        """Check the arguments now (at the call site), then stream result chunks."""
        self._check_usable()
        _wire.check_callable(fn)
        check_map_arguments(iterable, chunksize, ordered)
        total = len(iterable) if isinstance(iterable, Sized) else None
        sizer = ChunkSizer(chunksize, total, self._size)
        # At most two chunks per worker in flight: memory stays flat however long the input.
        return stream_chunks(_PoolChunks(self), fn, iterable, sizer, 2 * self._size, ordered)

    async def share(self, obj: _T) -> Shared[_T]:
        """Put ``obj`` in shared memory once; pass the handle to calls instead of ``obj``.

        Each worker loads it once (numpy arrays and other buffers as read-only
        views of the shared memory, no copy) and calls read ``handle.value``.
        The copy is released by ``handle.release()``, at the end of a ``with``
        block, when the last reference to the handle goes, or when the pool
        closes. An object over 16 MiB is copied in a thread, so that the loop
        keeps running meanwhile.

        Example:
            ```python
            with await pool.share(big_array) as data:
                parts = await pool.map(functools.partial(total, data), ranges)
            ```
        """
        self._check_usable()
        out = _shm.encode(obj, always=True)
        if isinstance(out, bytes):  # no shared memory on this platform: pickled per call
            return Shared(obj, None, None)
        name = f"{self._prefix}s{next(self._segment_numbers)}"  # write() may pick another
        try:
            if out.nbytes < SHARE_IN_THREAD:
                key = out.write(name)
            else:
                writing = asyncio.get_running_loop().run_in_executor(None, out.write, name)
                try:
                    key = await asyncio.shield(writing)
                except asyncio.CancelledError:
                    writing.add_done_callback(lambda _: _shm.unlink(out.written))
                    raise
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot share {type(obj).__name__} ({out.nbytes:,} bytes) through /dev/shm: "
                f"{exc.strerror}; give /dev/shm more room or pass the object itself",
            ) from exc
        handle = Shared(obj, key, functools.partial(forget_shared, weakref.ref(self._leftovers)))
        self._leftovers.shared[key[0]] = handle
        if self._state is CLOSED:  # closed while it was being written
            handle.release()
            self._check_usable()
        return handle

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool's workers, queue and counters."""
        live = [w for w in self._workers if w.live]
        return PoolStatistics(
            workers=len(live),
            idle=len(self._idle),
            busy=sum(1 for w in live if w.call is not None),
            queued=sum(1 for c in self._queue if not c.future.done()),
            calls_completed=self._n_completed,
            calls_cancelled=self._n_cancelled,
            crashes=self._n_crashes,
            workers_started=self._n_started,
            broken=self._broken is not None,
            closed=self._state is CLOSED,
        )

    # -- submission and dispatch ---------------------------------------------------

    def _submit(self, kind: int, fn: Any, args: Any, size: int) -> Call:
        self._check_usable()
        _wire.check_callable(fn)
        loop = self._ensure_started()
        fn = _by_reference(fn)
        sent = fn
        sink = EVENTS.sink
        if sink is not None:  # instrumented: the caller's trace context goes with the call
            sent = _wire.traced(fn, sink.carrier())
        call = Call(kind, fn, _wire.dumps_request(kind, sent, args), loop.create_future(), size)
        self._queue.append(call)
        if self._idle:
            self._dispatch()
        return call

    def _dispatch(self) -> None:
        queue, idle = self._queue, self._idle
        while queue and idle:
            call = queue.popleft()
            if call.future.done():
                continue  # cancelled before it was sent: it never runs
            self._send(idle.pop(), call)

    def _send(self, w: Worker, call: Call) -> None:
        data = call.payload
        if not isinstance(data, bytes):
            # Large buffers are copied into shared memory now, not at submit:
            # a queued call holds no copy.
            out = data
            try:
                data = _wire.finish(out, f"{self._prefix}c{next(self._segment_numbers)}", w.scratch)
            except BaseException as exc:
                # Even the pipe fallback failed: nothing was sent, the worker stays idle.
                self._idle.append(w)
                if not isinstance(exc, Exception):
                    call.future.cancel()
                    raise
                call.future.set_exception(exc)
                return
            call.segment = out.written
            call.payload = data
            w.scratch.used = self._trim_later()
        w.call = call
        call.worker = w
        if w.forget:
            names, w.forget = w.forget, []  # a finalizer may append meanwhile: keep those
            data = _wire.frame((_wire.FORGET, names, None)) + data
        self._write(w, data)

    def _write(self, w: Worker, data: bytes) -> None:
        """Write ``data`` to the worker; what the pipe cannot take now follows when it can."""
        if w.wbuf:
            w.wbuf = bytes(w.wbuf) + data  # behind what is waiting already
            return
        try:
            n = os.write(w.wfd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            return  # the worker is gone; its sentinel will report it
        if n < len(data):
            w.wbuf = memoryview(data)[n:]  # a view: no copy per partial write
            assert self._loop is not None
            self._loop.add_writer(w.wfd, self._on_writable_cb, w)

    def _tell_forget(self) -> None:
        """Tell idle workers about released shared objects now, so they unmap them
        (busy ones hear it with their next request, or when they become idle)."""
        for w in self._idle:
            if w.forget:
                names, w.forget = w.forget, []
                self._write(w, _wire.frame((_wire.FORGET, names, None)))

    def _trim_later(self) -> float:
        """Make sure scratch segments get emptied once unused; return the time now."""
        assert self._loop is not None
        if self._trim_timer is None:
            self._trim_timer = self._loop.call_later(TRIM_AFTER, self._trim_cb)
        return self._loop.time()

    def _trim(self) -> None:
        """Empty the scratch segments of idle workers that moved no large payload lately.

        Both directions are trimmed here, the worker's reply scratch too: only
        the parent knows when it has read the last reply, and a worker with no
        call is not writing one.
        """
        assert self._loop is not None
        self._trim_timer = None
        now = self._loop.time()
        for w in self._workers:
            if w.call is not None:
                continue
            if w.scratch.size and now - w.scratch.used >= TRIM_AFTER:
                w.scratch.trim()
            if w.large_reply_at is not None and now - w.large_reply_at >= TRIM_AFTER:
                _shm.truncate(w.reply_name)
                w.large_reply_at = None
        if any(w.scratch.size or w.large_reply_at is not None for w in self._workers):
            self._trim_timer = self._loop.call_later(TRIM_AFTER, self._trim_cb)

    def _on_writable(self, w: Worker) -> None:
        try:
            n = os.write(w.wfd, w.wbuf[: _wire.READ_SIZE])
        except BlockingIOError:
            return
        except OSError:
            n = len(w.wbuf)
        w.wbuf = w.wbuf[n:]
        if not w.wbuf:
            assert self._loop is not None
            self._loop.remove_writer(w.wfd)

    def _abandon(self, call: Call) -> asyncio.Future[None] | None:
        """The caller gave up on ``call``: never send it, or kill the worker running it.

        Returns a future for the killed worker's exit, if one was killed.
        """
        if not call.future.done():
            call.future.cancel()
        elif not call.future.cancelled():
            call.future.exception()  # mark retrieved: nobody will look at it now
        w = call.worker
        if w is None or w.call is not call:
            return None
        self._n_cancelled += 1
        emit("info", "bridge.call_cancelled", pid=w.pid, fn=_wire.describe(call.fn))
        self._kill(w)
        self._replenish()
        if w.exited is None:
            assert self._loop is not None
            w.exited = self._loop.create_future()
        return w.exited

    def _on_readable(self, w: Worker) -> None:
        try:
            data = os.read(w.rfd, _wire.READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # End of file: stop watching; the sentinel says when and how it exited.
            assert self._loop is not None
            self._loop.remove_reader(w.rfd)
            return
        for msg in w.reader.feed(data):
            self._on_message(w, msg)

    def _on_message(self, w: Worker, msg: bytes) -> None:
        if w.state is STARTING:
            self._on_hello(w, msg)
            return
        w.replies += 1
        call = w.call
        if call is None or w.state is DYING:
            _shm.discard(msg)  # nobody reads it: free its segment, if any
            return
        w.call = None
        call.worker = None
        self._n_completed += 1
        reply = None
        if _shm.is_envelope(msg):
            # Read it before the worker gets its next request: it may reuse the segment.
            w.large_reply_at = self._trim_later()
            scratch = _shm.scratch_of(msg)
            if scratch is not None:
                w.reply_name = scratch  # to empty it when idle, and remove it at exit
            if call.future.done():
                _shm.discard(msg)
            else:
                reply = _wire.loads_reply(msg, call.fn)
        # Give the worker its next request before unpickling this reply: the
        # worker computes while the parent reads.
        w.items += call.size
        if self._max_tasks is not None and w.items >= self._max_tasks:
            self._retire(w)
            self._replenish()
        elif w.state is READY:
            self._idle.append(w)
            self._dispatch()
            if w.forget and w.call is None:
                self._tell_forget()
        if reply is not None:
            call.future.set_result(reply)
        elif not call.future.done():
            call.future.set_result(_wire.loads_reply(msg, call.fn))


class _PoolChunks:
    """The pool's side of a chunked ``map``/``imap`` (see ``_chunks.stream_chunks``)."""

    __slots__ = ("pool",)

    def __init__(self, pool: ProcessPool) -> None:
        self.pool = pool

    def submit(self, fn: Any, items: Sequence[Any]) -> Call:
        return self.pool._submit(_wire.CHUNK, fn, items, len(items))

    async def next_done(self, inflight: collections.deque[Call], ordered: bool) -> Call:
        if ordered:
            call = inflight[0]
            if not call.future.done():
                await asyncio.wait([call.future])
            inflight.popleft()
            return call
        for call in inflight:
            if call.future.done():
                break
        else:
            await asyncio.wait([c.future for c in inflight], return_when=asyncio.FIRST_COMPLETED)
            call = next(c for c in inflight if c.future.done())
        inflight.remove(call)
        return call

    async def result(self, call: Call) -> tuple[list[Any], BaseException | None, float | None]:
        kind, value = call.future.result()
        if kind != _wire.OK:
            raise _reply_error(kind, value)
        values, failure, elapsed = value
        return values, None if failure is None else failure.rebuild(), elapsed

    async def cancel(self, calls: list[Call]) -> None:
        await _wait_exits([self.pool._abandon(call) for call in calls])


async def _wait_exits(exits: list[asyncio.Future[None] | None]) -> None:
    """Wait for killed workers to be gone; a second cancellation stops the wait, not the kill."""
    pending = [f for f in exits if f is not None and not f.done()]
    if pending:
        await asyncio.shield(asyncio.gather(*pending))


def _by_reference(fn: Any) -> Any:
    """A function that a ``@cohort.cpu`` wrapper shadows is sent as that wrapper."""
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None)
    if module and name and "." not in name:
        holder = getattr(sys.modules.get(module), name, None)
        if getattr(holder, "_cohort_cpu_target", None) is fn:
            return holder
    return fn


def _reply_error(kind: int, value: Any) -> BaseException:
    if isinstance(value, BaseException):
        return value
    if kind == _wire.UNPICKLABLE:
        return SerializationError(value)
    if isinstance(value, _wire.RemoteFailure):
        return value.rebuild()
    return RuntimeError(f"unexpected reply from a worker: {kind!r}")
