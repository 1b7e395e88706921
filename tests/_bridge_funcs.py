"""Picklable functions for the bridge tests (workers import this module by name)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def echo(x: object) -> object:
    return x


def getpid(_: object = None) -> int:
    return os.getpid()


def fail(message: str) -> int:
    raise ValueError(message)


def fail_at(x: int) -> int:
    if x == 13:
        raise KeyError(x)
    return x


class UnbuildableError(Exception):
    """Pickles, but cannot be rebuilt: its __init__ needs two arguments."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


def raise_unbuildable() -> None:
    raise UnbuildableError("left", "right")


def raise_base() -> None:
    raise KeyboardInterrupt("from the worker")


def exit_now(code: int) -> None:
    os._exit(code)


def kill_self(sig: int = signal.SIGKILL) -> None:
    os.kill(os.getpid(), sig)


def return_unpicklable() -> object:
    return lambda: None


def mark_and_spin(path: str) -> None:
    """Signal "I'm running" by creating ``path``, then burn CPU forever."""
    Path(path).write_text(str(os.getpid()))
    while True:
        pass


def mark_and_sleep(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    while True:
        time.sleep(0.01)


def mark_then_return(path: str, value: int) -> int:
    Path(path).write_text(str(os.getpid()))
    return value


def flood(n_bytes: int) -> int:
    chunk = "x" * 4096 + "\n"
    for _ in range(n_bytes // len(chunk)):
        sys.stdout.write(chunk)
        sys.stderr.write(chunk)
    sys.stdout.flush()
    sys.stderr.flush()
    return n_bytes


def big(n: int) -> bytes:
    return b"y" * n


def count_len(data: bytes) -> int:
    return len(data)


def busy(ms: float) -> int:
    end = time.perf_counter() + ms / 1000
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def init_marker(path: str) -> None:
    Path(path).write_text("init")


def init_fail() -> None:
    raise RuntimeError("initializer says no")


def read_marker(path: str) -> str:
    return Path(path).read_text()


def reply_then_die(value: int) -> int:
    """Return normally, then let a timer kill the process right after the reply went out."""
    import threading

    threading.Timer(0.01, os._exit, (7,)).start()
    return value


def sigint_self(value: int) -> int:
    os.kill(os.getpid(), signal.SIGINT)
    return value


def spin_unless_int(x: object) -> object:
    if isinstance(x, int):
        return x
    mark_and_spin(str(x))
    return None


def cpu_work(n: int) -> int:
    """Pure-Python work, ~n * 0.1 us."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def ignore_sigterm_and_spin(path: str) -> None:
    """A call that shrugs off SIGTERM: only SIGKILL stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    mark_and_spin(path)


def zero_or_mark_and_sleep(item: tuple[str, int]) -> int:
    """Item ``(path, 0)`` returns 0; any other marks ``path`` and never returns."""
    path, n = item
    if n == 0:
        return 0
    mark_and_sleep(path)
    return n


def start_sleeper_and_wait(path: str) -> None:
    """Start a ``sleep`` subprocess, write its pid to ``path`` and wait for it."""
    import subprocess

    child = subprocess.Popen(["sleep", "1000"])
    Path(path).write_text(str(child.pid))
    child.wait()


def sys_exit(code: int) -> None:
    import sys

    sys.exit(code)


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def exhaust_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    blocks = []
    while True:
        blocks.append(bytearray(1 << 26))


class UnpicklableError(Exception):
    """An exception that cannot be pickled back to the parent."""

    def __init__(self) -> None:
        super().__init__("cannot travel")
        self.lock = __import__("threading").Lock()


def raise_unpicklable() -> None:
    raise UnpicklableError
