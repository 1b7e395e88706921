"""Helpers for the bridge tests: "I'm running" signals from workers, leak checks."""

from __future__ import annotations

import asyncio
import multiprocessing.forkserver
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil

from cohort.bridge._pool import ProcessPool
from cohort.bridge._procs import preload_worker_in_forkserver


class WorkerSignal:
    """A FIFO a worker writes its pid to (``Path(path).write_text(...)``); the test awaits it.

    Event-driven: the test reads the FIFO with ``loop.add_reader``, no polling, no sleeps.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name
        os.mkfifo(self.path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)

    def __str__(self) -> str:
        return str(self.path)

    async def wait(self) -> int:
        """Wait until the worker wrote its pid; return it."""
        loop = asyncio.get_running_loop()
        data = b""
        while True:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self._fd, _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(self._fd)
            chunk = os.read(self._fd, 64)
            if not chunk:  # the worker wrote and closed its end
                if not data:
                    raise RuntimeError(f"{self.path} closed without a pid")
                break
            data += chunk
        return int(data)

    def close(self) -> None:
        os.close(self._fd)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def start_forkserver() -> None:
    """Start the forkserver once (with the worker preloaded), so it is part of the baseline."""
    preload_worker_in_forkserver()
    multiprocessing.forkserver.ensure_running()


def snapshot() -> tuple[set[int], set[str], int]:
    me = psutil.Process()
    children = {p.pid for p in me.children(recursive=True) if _alive(p)}
    fds = set(os.listdir("/proc/self/fd"))
    return children, fds, threading.active_count()


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for init)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_no_leaks(before: tuple[set[int], set[str], int]) -> None:
    children, fds, threads = snapshot()
    assert children <= before[0], f"processes left behind: {children - before[0]}"
    assert fds == before[1], f"fds leaked: {fds - before[1]}, closed: {before[1] - fds}"
    assert threads == before[2]


@asynccontextmanager
async def checked_pool(workers: int = 1, **options: Any) -> AsyncIterator[ProcessPool]:
    """A pool whose exit is checked: no process, fd or thread left behind."""
    start_forkserver()
    before = snapshot()
    async with ProcessPool(workers, **options) as pool:
        yield pool
    assert_no_leaks(before)
