"""Worker processes as the pool sees them: start method, the parent's ends, kill and reap."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import multiprocessing
import multiprocessing.forkserver
import os
import signal
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from cohort.bridge import _shm, _wire

_WORKER_MODULE = "cohort.bridge._worker"


def default_start_method() -> str:
    """forkserver where the platform has it (Linux), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(eq=False, slots=True)
class Call:
    """One request to a worker: a call or a chunk, its pickled bytes and its future."""

    kind: int
    fn: Any
    payload: bytes | _shm.Outbound  # large buffers go to a segment when it is sent
    future: asyncio.Future[Any]
    size: int  # items: 1 for a call
    worker: Worker | None = None  # the worker running it, once sent
    segment: str = ""  # the shared-memory segment of its arguments, if it has one


class WorkerState(enum.Enum):
    """Where a worker is in its life; only STARTING and READY workers count as live."""

    STARTING = "starting"  # started, has not said hello yet
    READY = "ready"  # takes calls (idle, or running ``Worker.call``)
    RETIRING = "retiring"  # asked to exit: its exit is not a crash
    DYING = "dying"  # killed by the pool: its exit is not a crash


class Worker:
    """One worker process and the parent's ends of its two pipes."""

    __slots__ = (
        "beat_fd",
        "beat_mark",
        "call",
        "exited",
        "family",
        "forget",
        "items",
        "kill_timer",
        "large_reply_at",
        "pid",
        "process",
        "quiet_since",
        "reader",
        "replies",
        "reply_name",
        "rfd",
        "scratch",
        "stalled",
        "state",
        "wbuf",
        "wfd",
    )

    def __init__(
        self, process: BaseProcess, wfd: int, rfd: int, family: str, beat_fd: int = -1
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.wfd = wfd  # requests, parent -> worker (non-blocking)
        self.rfd = rfd  # replies, worker -> parent (non-blocking)
        self.reader = _wire.FrameReader()
        self.wbuf: bytes | memoryview = b""  # request bytes the pipe could not take yet
        self.call: Call | None = None
        self.state = WorkerState.STARTING
        self.items = 0
        self.kill_timer: asyncio.TimerHandle | None = None
        self.exited: asyncio.Future[None] | None = None  # made when someone waits for the exit
        self.replies = 0  # replies received after the hello; names the next reply's segment
        # Every segment of this worker's traffic starts with ``family`` (see
        # ``ProcessPool._spawn``): its reply scratch, its replies, the scratch for
        # its large arguments.
        self.family = family
        self.reply_name = _shm.reply_scratch(family)  # or the name its replies gave
        self.scratch = _shm.Scratch(f"{family}a")  # for large arguments
        self.forget: list[str] = []  # released shared objects to tell it about
        self.large_reply_at: float | None = None  # when a reply last came in shared memory
        # Heartbeats (``ProcessPool(heartbeat=...)``): the pipe they come on (-1: none),
        # which call the pool last looked at (``replies`` when it did), since when
        # that call has been silent, and how long it had been when the pool killed it.
        self.beat_fd = beat_fd
        self.beat_mark = -1
        self.quiet_since = 0.0
        self.stalled: float | None = None

    def unlink_segments(self) -> None:
        """Remove the segments of a worker that is gone: its call's, its replies'."""
        self.scratch.close()
        if self.call is not None and self.call.segment:
            _shm.unlink(self.call.segment)
        _shm.unlink(self.reply_name)
        _shm.forget_scratch(self.reply_name)
        _shm.unlink(_shm.reply_segment(self.family, self.replies))
        # Where /dev/shm can be listed, also what it named otherwise (a name it found taken).
        _shm.cleanup_prefix(self.family)

    @property
    def live(self) -> bool:
        """Starting or ready: neither retiring nor being killed."""
        return self.state is WorkerState.STARTING or self.state is WorkerState.READY


def heard_from(w: Worker) -> bool:
    """Empty the worker's heartbeat pipe; True if anything was in it."""
    heard = False
    while True:
        try:
            data = os.read(w.beat_fd, 4096)
        except OSError:  # BlockingIOError: empty
            return heard
        if not data:  # closed: the worker is gone, its sentinel will say so
            return heard
        heard = True


def exit_description(exitcode: int | None) -> str:
    if exitcode is None:
        return "died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with code {exitcode}"


def signal_group(w: Worker, sig: int) -> bool:
    """Send ``sig`` to the worker's process group: the worker and every process
    its calls started (unless they left the group with ``setsid``/
    ``start_new_session``). False when there is no such group any more."""
    if w.pid is None or not hasattr(os, "killpg"):
        return False
    try:
        os.killpg(w.pid, sig)
    except OSError:  # no such group (all gone), or not ours
        return False
    return True


def terminate(w: Worker) -> None:
    """SIGTERM to the worker and what it started (the pool's first, polite step)."""
    if not signal_group(w, signal.SIGTERM):
        with contextlib.suppress(OSError, ValueError):
            w.process.terminate()


def sigkill(w: Worker) -> None:
    """SIGKILL to the worker and what it started; also what is left after it exited."""
    signal_group(w, signal.SIGKILL)
    if w.process.exitcode is None:
        with contextlib.suppress(OSError, ValueError):
            w.process.kill()


def terminate_all(workers: set[Worker]) -> None:
    """Last resort (pool dropped, loop gone, interpreter exiting): SIGKILL and reap."""
    for w in list(workers):
        try:
            sigkill(w)
            w.process.join(1.0)
            w.process.close()
        except (OSError, ValueError):
            pass
        w.unlink_segments()
        for fd in (w.rfd, w.wfd, w.beat_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        w.rfd = w.wfd = w.beat_fd = -1
    workers.clear()


def preload_worker_in_forkserver() -> None:
    """Have the forkserver import the worker module once, so replacements start fast."""
    server = multiprocessing.forkserver._forkserver
    modules = list(getattr(server, "_preload_modules", ["__main__"]))
    if _WORKER_MODULE not in modules:
        multiprocessing.get_context("forkserver").set_forkserver_preload([*modules, _WORKER_MODULE])
