"""The pool's worker slots: its state, and each worker's life from start to reaping.

``WorkerSlots`` is the base of ``ProcessPool``: it keeps the workers (live,
idle, dying), starts them, says hello, retires and kills them, reaps them
when their sentinel fires, counts crashes (restarting with backoff, or
breaking the pool), fails the call of a worker whose heartbeat went silent
(``heartbeat=``), and moves the pool along ``TRANSITIONS``. The call path
(submit, dispatch, write, replies) is ``ProcessPool``'s, in ``_pool``; the
two hooks it supplies here are ``_on_readable`` and ``_on_message`` (a dead
worker's pipe is drained through them) and ``_dispatch`` (a worker that
became ready takes the next call).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import itertools
import multiprocessing
import os
import random
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from cohort._exceptions import ClosedError, PoolBrokenError, WorkerCrashedError
from cohort._observe._events import emit
from cohort.bridge import _shm, _wire
from cohort.bridge._leftovers import weakly
from cohort.bridge._procs import (
    Call,
    Worker,
    WorkerState,
    exit_description,
    heard_from,
    sigkill,
    signal_group,
    terminate,
)
from cohort.bridge._worker import worker_main

STARTING, READY, RETIRING, DYING = (
    WorkerState.STARTING,
    WorkerState.READY,
    WorkerState.RETIRING,
    WorkerState.DYING,
)


class PoolState(enum.Enum):
    """Where a pool is in its life; ``TRANSITIONS`` says where it may go next."""

    NEW = "new"  # made: its workers start on first use, on the loop of that use
    OPEN = "open"  # started on a loop: takes calls
    BROKEN = "broken"  # gave up (initializer failed, crashes): calls fail with PoolBrokenError
    CLOSED = "closed"  # aclose() called: calls fail with ClosedError


NEW, OPEN, BROKEN, CLOSED = (
    PoolState.NEW,
    PoolState.OPEN,
    PoolState.BROKEN,
    PoolState.CLOSED,
)
TRANSITIONS = {
    NEW: {OPEN, CLOSED},
    OPEN: {BROKEN, CLOSED},
    BROKEN: {CLOSED},
    CLOSED: set(),
}

EXIT_FRAME = _wire.frame((_wire.EXIT, None, None))
RETIRE_GRACE = 5.0  # seconds a retired worker gets to exit before it is killed
BEATS_PER_INTERVAL = 4  # heartbeats a worker sends, and looks the pool takes, per interval


class WorkerSlots:
    """The workers of a pool and the pool's state (see the module's docstring)."""

    def __init__(
        self,
        size: int,
        method: str,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_crashes: int,
        crash_window: float,
        kill_grace: float,
        heartbeat: float | None,
    ) -> None:
        self._size = size
        self._initializer = initializer
        self._initargs = initargs
        self._method = method
        self._ctx = multiprocessing.get_context(method)
        self._max_crashes = max_crashes
        self._crash_window = crash_window
        self._kill_grace = kill_grace
        self._heartbeat = heartbeat
        self._beat_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: set[Worker] = set()
        self._idle: list[Worker] = []
        self._queue: collections.deque[Call] = collections.deque()
        self._spawns_pending = 0
        self._crash_times: collections.deque[float] = collections.deque()
        self._ever_ready = False
        self._state = NEW  # changed only by _move
        self._broken: BaseException | None = None  # why it broke, once it has (kept when closed)
        self._all_exited: asyncio.Future[None] | None = None
        self._n_crashes = self._n_started = 0
        self._prefix = _shm.new_prefix()  # names of this pool's shared-memory segments
        self._worker_numbers = itertools.count()  # each worker's segments ("w<k>-")
        # The loop holds the pool only weakly (its readers and timers call
        # through these), so a pool dropped without aclose() is collected and
        # its finalizer kills the workers and releases their pipes.
        self._on_readable_cb = weakly(self._on_readable)
        self._on_exit_cb = weakly(self._on_exit)
        self._kill_cb = weakly(self._kill)
        self._spawn_pending_cb = weakly(self._spawn_pending)
        self._check_beats_cb = weakly(self._check_beats)

    # -- the hooks of the call path (ProcessPool) ----------------------------------

    def _on_readable(self, w: Worker) -> None:
        """The worker's reply pipe is readable."""
        raise NotImplementedError

    def _on_message(self, w: Worker, msg: bytes) -> None:
        """One whole frame from a worker that has said hello."""
        raise NotImplementedError

    def _dispatch(self) -> None:
        """Send queued calls to idle workers."""
        raise NotImplementedError

    # -- the pool's state ------------------------------------------------------------

    def _fail_everything(self, error: Callable[[], BaseException]) -> None:
        """Fail every pending call (each with its own exception object) and stop every worker."""
        while self._queue:
            call = self._queue.popleft()
            if not call.future.done():
                call.future.set_exception(error())
        self._idle.clear()
        for w in list(self._workers):
            if w.call is not None and not w.call.future.done():
                w.call.future.set_exception(error())
            if w.call is not None or w.state is STARTING:
                self._kill(w)
            else:
                self._retire(w)

    def _check_usable(self) -> None:
        state = self._state
        if state is CLOSED:
            raise ClosedError(f"{self!r} is closed; create a new pool")
        if state is BROKEN:
            raise PoolBrokenError(f"{self!r} is broken: {self._broken}") from self._broken

    def _move(self, new: PoolState) -> None:
        """The one place the pool's state changes: along ``TRANSITIONS`` only."""
        if new not in TRANSITIONS[self._state]:
            raise AssertionError(f"{self!r}: no transition from {self._state} to {new}")
        self._state = new

    # -- worker processes ----------------------------------------------------------

    def _spawn(self) -> None:
        assert self._loop is not None
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        _wire.widen(req_w)
        _wire.widen(rep_w)
        child_req = Connection(req_r, writable=False)
        child_rep = Connection(rep_w, readable=False)
        family = _shm.worker_family(self._prefix, next(self._worker_numbers))
        beat_r = -1
        beats: tuple[Connection, float] | tuple[()] = ()
        if self._heartbeat is not None:
            beat_r, beat_w = os.pipe()
            beats = (Connection(beat_w, readable=False), self._heartbeat / BEATS_PER_INTERVAL)
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(
                child_req,
                child_rep,
                os.getpid(),
                self._initializer,
                self._initargs,
                self._prefix,
                family,
                *beats,
            ),
            name="cohort-worker",
        )
        try:
            process.start()
        except Exception as exc:
            os.close(req_w)
            os.close(rep_r)
            if beat_r >= 0:
                os.close(beat_r)
            self._break(PoolBrokenError(_wire.main_module_hint()), cause=exc)
            return
        finally:
            child_req.close()
            child_rep.close()
            if beats:
                beats[0].close()
        os.set_blocking(req_w, False)
        os.set_blocking(rep_r, False)
        if beats:
            os.set_blocking(beat_r, False)
            if self._beat_timer is None:  # looks while the pool is open
                self._beat_timer = self._loop.call_later(beats[1], self._check_beats_cb)
        w = Worker(process, req_w, rep_r, family, beat_r)
        self._workers.add(w)
        self._n_started += 1
        self._loop.add_reader(rep_r, self._on_readable_cb, w)
        self._loop.add_reader(process.sentinel, self._on_exit_cb, w)

    def _replenish(self) -> None:
        """Start workers until the pool has its size again (counting ones about to start)."""
        if self._state is not OPEN:
            return
        live = sum(1 for w in self._workers if w.live)
        for _ in range(self._size - live - self._spawns_pending):
            self._spawn()

    def _kill(self, w: Worker) -> None:
        if w.state is DYING or w.process.exitcode is not None:
            return
        w.state = DYING
        if w.kill_timer is not None:
            w.kill_timer.cancel()
        if w in self._idle:
            self._idle.remove(w)
        terminate(w)
        assert self._loop is not None
        w.kill_timer = self._loop.call_later(self._kill_grace, sigkill, w)

    def _retire(self, w: Worker) -> None:
        """Ask an idle worker to exit; kill it if it has not after ``RETIRE_GRACE``.

        An explicit exit request, not just closing the pipe: a process the
        parent forked since may hold the pipe open, so end-of-file may never come.
        """
        if not w.live:
            return
        if w.wbuf:  # a frame half-written (a slow reader): no exit request can follow it
            self._kill(w)
            return
        w.state = RETIRING
        if w in self._idle:
            self._idle.remove(w)
        assert self._loop is not None
        self._loop.remove_writer(w.wfd)
        with contextlib.suppress(OSError):
            os.write(w.wfd, EXIT_FRAME)
        os.close(w.wfd)
        w.wfd = -1
        w.kill_timer = self._loop.call_later(RETIRE_GRACE, self._kill_cb, w)

    def _on_hello(self, w: Worker, msg: bytes) -> None:
        kind, value = _wire.loads_reply(msg, None)
        if kind == _wire.READY:
            w.state = READY
            self._ever_ready = True
            emit("debug", "bridge.worker_started", pid=w.pid)
            if self._state is CLOSED:
                self._retire(w)
                return
            self._idle.append(w)
            self._dispatch()
        elif kind == _wire.INIT_FAILED:
            cause = value.rebuild()
            self._break(PoolBrokenError(f"the worker initializer failed: {cause!r}"), cause=cause)

    def _on_exit(self, w: Worker) -> None:
        loop = self._loop
        assert loop is not None
        loop.remove_reader(w.process.sentinel)
        self._drain(w)
        w.process.join(1.0)  # the sentinel fired: this returns at once (reaps, no zombie)
        w.unlink_segments()
        exitcode = w.process.exitcode
        signal_group(w, signal.SIGKILL)  # what its calls started does not outlive it
        if w.kill_timer is not None:
            w.kill_timer.cancel()
        self._release(w)
        emit("debug", "bridge.worker_exited", pid=w.pid, exitcode=exitcode)
        expected = not w.live
        if w.exited is not None and not w.exited.done():
            w.exited.set_result(None)
        if not expected:
            self._on_crash(w, exitcode)
        if not self._workers and self._all_exited is not None and not self._all_exited.done():
            self._all_exited.set_result(None)

    def _drain(self, w: Worker) -> None:
        """Read what the dead worker wrote before dying: a finished reply still counts."""
        while w.rfd >= 0:
            try:
                data = os.read(w.rfd, _wire.READ_SIZE)
            except OSError:
                return
            if not data:
                return
            for msg in w.reader.feed(data):
                self._on_message(w, msg)

    def _release(self, w: Worker) -> None:
        assert self._loop is not None
        self._workers.discard(w)
        if w in self._idle:
            self._idle.remove(w)
        self._loop.remove_reader(w.rfd)
        os.close(w.rfd)
        w.rfd = -1
        if w.wfd >= 0:
            self._loop.remove_writer(w.wfd)
            os.close(w.wfd)
            w.wfd = -1
        if w.beat_fd >= 0:
            os.close(w.beat_fd)
            w.beat_fd = -1
        w.process.close()

    def _on_crash(self, w: Worker, exitcode: int | None) -> None:
        self._n_crashes += 1
        if w.state is STARTING and not self._ever_ready:
            self._break(PoolBrokenError(_wire.main_module_hint()), cause=None)
            return
        call = w.call
        if call is not None:
            how = exit_description(exitcode)
            if w.stalled is not None:
                how = (
                    f"stopped responding for {w.stalled:.3g} s (no heartbeat within "
                    f"heartbeat={self._heartbeat:g} s) and was killed"
                )
            emit("warning", "bridge.call_crashed", pid=w.pid, exitcode=exitcode)
            err = WorkerCrashedError(
                f"the worker process (pid {w.pid}) running {_wire.describe(call.fn)} {how}",
                exitcode=exitcode,
            )
            if not call.future.done():
                call.future.set_exception(err)
        assert self._loop is not None
        now = self._loop.time()
        self._crash_times.append(now)
        while self._crash_times and self._crash_times[0] < now - self._crash_window:
            self._crash_times.popleft()
        recent = len(self._crash_times)
        if recent >= self._max_crashes:
            msg = f"{recent} worker crashes within {self._crash_window} s; the pool gave up"
            self._break(PoolBrokenError(msg), cause=None)
            return
        self._restart_later(0.0 if recent <= 1 else min(2.0, 0.05 * 2 ** (recent - 2)))

    # -- heartbeats ----------------------------------------------------------------

    def _check_beats(self) -> None:
        """Every ``heartbeat / BEATS_PER_INTERVAL`` s while the pool is open: a worker
        whose call has been silent for ``heartbeat`` s is treated as crashed.

        Silence is counted from the first look at a call (or the last byte
        heard during it), so stale bytes from before the call never count, and
        a worker is declared stopped between ``heartbeat`` and ``1.25 *
        heartbeat`` after its last sign of life.
        """
        loop, every = self._loop, self._heartbeat
        assert loop is not None
        assert every is not None
        self._beat_timer = None
        if self._state is not OPEN:
            return
        now = loop.time()
        for w in list(self._workers):
            if w.call is None or w.state is not READY:
                continue
            if heard_from(w) or w.beat_mark != w.replies:
                w.beat_mark, w.quiet_since = w.replies, now
            elif now - w.quiet_since >= every:
                self._stalled(w, now - w.quiet_since)
        if self._state is OPEN:
            self._beat_timer = loop.call_later(every / BEATS_PER_INTERVAL, self._check_beats_cb)

    def _stalled(self, w: Worker, quiet: float) -> None:
        """The worker running a call stopped responding: fail the call as a crash,
        SIGKILL the worker (a stopped process takes no SIGTERM), start another."""
        w.stalled = quiet
        emit("warning", "bridge.worker_stalled", pid=w.pid, seconds=quiet)
        self._on_crash(w, -signal.SIGKILL)
        w.state = DYING  # its exit, and a reply it wrote before it stopped, are expected now
        sigkill(w)

    def _restart_later(self, delay: float) -> None:
        if self._state is not OPEN:
            return
        assert self._loop is not None
        delay *= random.uniform(0.5, 1.0)  # jitter: do not restart in lockstep
        self._spawns_pending += 1
        self._loop.call_later(delay, self._spawn_pending_cb)

    def _spawn_pending(self) -> None:
        self._spawns_pending -= 1
        self._replenish()

    def _break(self, exc: PoolBrokenError, *, cause: BaseException | None) -> None:
        if self._state is not OPEN:
            return
        exc.__cause__ = cause
        self._broken = exc
        self._move(BROKEN)
        emit("error", "bridge.pool_broken", reason=str(exc))

        def error() -> PoolBrokenError:
            err = PoolBrokenError(str(exc))
            err.__cause__ = cause
            return err

        self._fail_everything(error)
