"""Worker processes as the pool sees them: start method, the parent's ends, kill and reap."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.forkserver
import os
import signal
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from cohort.bridge import _wire

if TYPE_CHECKING:
    from cohort.bridge._pool import _Call

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


class Worker:
    """One worker process and the parent's ends of its two pipes."""

    __slots__ = (
        "call",
        "dying",
        "exited",
        "items",
        "kill_timer",
        "pid",
        "process",
        "reader",
        "ready",
        "retiring",
        "rfd",
        "wbuf",
        "wfd",
    )

    def __init__(self, process: BaseProcess, wfd: int, rfd: int) -> None:
        self.process = process
        self.pid = process.pid
        self.wfd = wfd  # requests, parent -> worker (non-blocking)
        self.rfd = rfd  # replies, worker -> parent (non-blocking)
        self.reader = _wire.FrameReader()
        self.wbuf: bytes | memoryview = b""  # request bytes the pipe could not take yet
        self.call: _Call | None = None
        self.ready = False
        self.dying = False  # killed by the pool: its exit is not a crash
        self.retiring = False  # asked to exit (pipe closed): its exit is not a crash
        self.items = 0
        self.kill_timer: asyncio.TimerHandle | None = None
        self.exited: asyncio.Future[None] | None = None  # made when someone waits for the exit


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


def sigkill(w: Worker) -> None:
    if w.process.exitcode is None:
        with contextlib.suppress(OSError, ValueError):
            w.process.kill()


def terminate_all(workers: set[Worker]) -> None:
    """Last resort (pool dropped, loop gone, interpreter exiting): SIGKILL and reap."""
    for w in list(workers):
        try:
            if w.process.exitcode is None:
                w.process.kill()
            w.process.join(1.0)
            w.process.close()
        except (OSError, ValueError):
            pass
        for fd in (w.rfd, w.wfd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        w.rfd = w.wfd = -1
    workers.clear()


def preload_worker_in_forkserver() -> None:
    """Have the forkserver import the worker module once, so replacements start fast."""
    server = multiprocessing.forkserver._forkserver
    modules = list(getattr(server, "_preload_modules", ["__main__"]))
    if _WORKER_MODULE not in modules:
        multiprocessing.get_context("forkserver").set_forkserver_preload([*modules, _WORKER_MODULE])
