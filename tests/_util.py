"""Helpers shared by the test modules (imported as ``from _util import ...``)."""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import psutil

_T = TypeVar("_T")
_R = TypeVar("_R")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def popen_python(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``python *args`` (text mode) with Ctrl-C, SIGINT, at its default action.

    A shell starts background jobs with SIGINT ignored and children inherit
    that; Python then installs no KeyboardInterrupt handler, and a test's
    SIGINT would do nothing. POSIX only, like the tests that send SIGINT.
    """
    return subprocess.Popen(
        [sys.executable, *args], text=True, preexec_fn=_default_sigint, **kwargs
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_python(
    *args: str, stdin: str = "", cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python *args`` to the end (a script, ``-m module`` or ``-c code``); text output."""
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def now() -> float:
    """The running loop's clock (virtual under ``@pytest.mark.virtual_clock``)."""
    return asyncio.get_running_loop().time()


async def ok(value: Any, delay: float = 1.0) -> Any:
    """A child that returns ``value`` after ``delay`` seconds."""
    await asyncio.sleep(delay)
    return value


async def bad(message: str, delay: float = 1.0) -> Any:
    """A child that raises ``ValueError(message)`` after ``delay`` seconds."""
    await asyncio.sleep(delay)
    raise ValueError(message)


def start(group: Any, how: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    """Start a child through ``group.spawn`` or ``group.start_soon`` (``how``: the fixture)."""
    getattr(group, how)(fn, *args, **kwargs)


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the loop until ``predicate()`` holds: ordering by state, not by sleeping."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never became true")


def live_children() -> set[int]:
    """Our descendant processes that still run (a forkserver's workers included)."""
    alive = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                alive.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def closed(coro: Coroutine[Any, Any, Any]) -> bool:
    """True when the coroutine object was closed (so never \"never awaited\")."""
    return inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


class Calls:
    """Records when each call started and ended; a cancelled call cleans up for `cleanup` s."""

    def __init__(self, cleanup: float = 0.0) -> None:
        self.cleanup = cleanup
        self.started: dict[Any, float] = {}
        self.finalized: dict[Any, float] = {}
        self.running = 0
        self.peak = 0

    async def __call__(self, key: Any, delay: float = 1.0, fail: bool = False) -> Any:
        self.started[key] = now()
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(delay)
            if fail:
                raise ValueError(f"call {key} failed")
            return key
        except asyncio.CancelledError:
            if self.cleanup:
                await asyncio.sleep(self.cleanup)  # cleanup that itself awaits
            raise
        finally:
            self.running -= 1
            self.finalized[key] = now()


class RecordingExecutor:
    """An Executor that runs calls inline and records them (stands in for a cluster)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def run(self, fn: Callable[..., _R], *args: Any) -> _R:
        self.calls.append(getattr(fn, "__name__", repr(fn)))
        return fn(*args)

    async def imap(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | Any,
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> AsyncGenerator[_R, None]:
        for x in iterable:
            yield fn(x)

    async def map(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | Any,
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> list[_R]:
        return [fn(x) for x in iterable]

    async def aclose(self) -> None:
        pass
