"""Picklable functions for the bridge tests (workers import this module by name)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def echo(x: _T) -> _T:
    return x


def echo_two(x: _T, y: _T) -> tuple[_T, _T]:
    return x, y


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
    """Return normally; a thread kills the process as soon as the reply has been written.

    It watches the worker loop's reply counter (a local of its ``_serve`` frame),
    which goes up once the reply is in the pipe: no timer that a loaded machine
    could fire before the reply went out.
    """
    import sys
    import threading
    import time

    frame = sys._current_frames()[threading.main_thread().ident or 0]
    while frame.f_code.co_name != "_serve":
        assert frame.f_back is not None, "reply_then_die must run in a cohort worker"
        frame = frame.f_back
    serve, before = frame, frame.f_locals["replies"]

    def die_after_the_reply() -> None:
        while serve.f_locals["replies"] == before:
            time.sleep(0.001)
        os._exit(7)

    threading.Thread(target=die_after_the_reply, daemon=True).start()
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


def logged_zero_or_mark_and_sleep(item: tuple[str, str, int]) -> int:
    """``zero_or_mark_and_sleep((path, n))`` after appending ``n`` to the log ``runs``."""
    runs, path, n = item
    with open(runs, "a") as log:
        log.write(f"{n}\n")
    return zero_or_mark_and_sleep((path, n))


def logged_zero_or_mark_and_wait(item: tuple[str, str, str, int]) -> int:
    """Item ``(runs, path, go, 0)`` returns 0; any other marks ``path`` and returns its
    ``n`` once something is written to the FIFO ``go``. Each appends ``n`` to ``runs``."""
    runs, path, go, n = item
    with open(runs, "a") as log:
        log.write(f"{n}\n")
    if n:
        Path(path).write_text(str(os.getpid()))
        Path(go).read_text()
    return n


def transitions_seen(dask_scheduler: Any) -> int:
    """Runs on a Dask scheduler: how many task transitions it has logged."""
    return len(dask_scheduler.transition_log)


def chunks_recomputed(dask_scheduler: Any, since: int) -> list[str]:
    """Runs on a Dask scheduler: the map chunks it set out to compute again because a
    worker holding their result was lost, among the transitions logged after ``since``."""
    return [
        str(t.key)
        for t in list(dask_scheduler.transition_log)[since:]
        if str(t.key).startswith("_apply_chunk")
        and t.start == "memory"
        and t.stimulus_id.startswith("handle-worker-cleanup")
    ]


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


def buffer_owner(a: Any) -> tuple[str, bool]:
    """What owns array ``a``'s memory in this process ("shared": a mapping of a
    shared-memory segment, not a copy), and whether the array is writable."""
    base = a
    while getattr(base, "base", None) is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    name = type(base).__name__
    return "shared" if name.startswith("c_ubyte_Array") else name, bool(a.flags.writeable)


def shared_view(handle: Any) -> tuple[str, bool, float]:
    """How a worker sees a shared array: its memory's owner, writable, its sum."""
    owner, writable = buffer_owner(handle.value)
    return owner, writable, float(handle.value.sum())


def shared_slice_sum(handle: Any, i: int) -> float:
    return float(handle.value[i * 1000 : (i + 1) * 1000].sum())


def shared_len(handle: Any) -> int:
    return len(handle.value)


def shared_objects_held(_: object = None) -> int:
    """How many shared objects this worker keeps loaded."""
    from cohort.bridge import _shared

    return len(_shared._attached)


def type_and_len(x: Any) -> tuple[str, int]:
    return type(x).__name__, len(x)


def add_one_in_place(a: Any) -> Any:
    a += 1
    return a


def die_while_replying(n: int) -> None:
    """Leave behind the segments a worker killed half-way through a large reply would:
    its reply's and its scratch's, then die by SIGKILL."""
    import _posixshmem  # type: ignore[import-not-found]

    from cohort.bridge import _worker

    for name in (_worker._replying, _worker._scratch_name):
        fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_RDWR, 0o600)
        os.ftruncate(fd, n)
        os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


def mark_and_spin_holding(path: str, data: bytes) -> None:
    """Like ``mark_and_spin``, with a large argument in hand."""
    Path(path).write_text(str(os.getpid()))
    while data:
        pass


def buffer_owner_then_segfault(a: Any) -> None:
    buffer_owner(a)
    segfault()


def shared_memory_fails_and_warnings_are_errors() -> None:
    """Initializer: this worker cannot write segments, and runs as under ``-W error``."""
    import warnings

    from cohort.bridge import _shm

    def no_room(self: Any, name: str, scratch: Any = None) -> Any:
        raise OSError(28, "No space left on device")

    _shm.Outbound.write = no_room  # type: ignore[method-assign]
    warnings.simplefilter("error")


def array_sum(a: Any) -> float:
    return float(a.sum())


def maps_segment(name: str) -> bool:
    """Whether this process has the shared-memory segment ``name`` mapped."""
    return mapped(os.getpid(), name)


def mapped(pid: int, name: str) -> bool:
    """Whether process ``pid`` has the shared-memory segment ``name`` mapped."""
    with open(f"/proc/{pid}/maps") as maps:
        return any(f"/dev/shm/{name.lstrip('/')}" in line for line in maps)


def pipe_sizes(_: object = None) -> list[int]:
    """The capacity of each pipe this process has open (Linux)."""
    import fcntl
    import stat

    sizes = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                sizes.append(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
        except OSError:
            continue
    return sizes


def sleep_holding_the_gil(seconds: int) -> None:
    """Sleep in C code that keeps the GIL (libc ``sleep`` through ``ctypes.PyDLL``):
    no other thread of the process runs meanwhile."""
    import ctypes

    ctypes.PyDLL(None).sleep(seconds)


def sleep_releasing_the_gil(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def span_in_worker(_: object = None) -> tuple[int, int]:
    """Open a span where this runs (an SDK tracer of its own): its trace id and its
    parent's span id (0: no parent), to compare with the caller's span."""
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("worker")
    with tracer.start_as_current_span("in worker") as span:
        parent = span.parent  # type: ignore[attr-defined]
        return span.get_span_context().trace_id, 0 if parent is None else parent.span_id
