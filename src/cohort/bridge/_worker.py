"""The worker process: read a request, run it, write the reply, repeat.

Kept small and free of heavy imports, because a replacement worker's start
time is part of cancel latency. The worker talks to its parent over two
pipes of its own (no shared queue), so killing it mid-write can only
corrupt its own channel.

It exits on its own when the parent goes away: a watchdog thread polls the
request pipe for hang-up (the parent's write end closed, which also happens
when the parent is SIGKILLed) even while the main thread is busy running a
call.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cohort.bridge import _shared, _shm, _wire
from cohort.bridge._wire import READ_SIZE, FrameReader, RemoteFailure

POLL_AFTER_REPLY = 100e-6  # seconds to spin for the next request before blocking


def worker_main(
    requests: Any,
    replies: Any,
    parent_pid: int,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    prefix: str,
) -> None:
    """Entry point of a worker process (``requests``/``replies`` are pipe connections;
    ``prefix`` starts the names of the pool's shared-memory segments)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    if hasattr(os, "setpgid"):
        # A process group of its own: killing the worker kills what its calls
        # started too (a subprocess.run() in the call), not only the worker.
        os.setpgid(0, 0)
    rfd, wfd = requests.fileno(), replies.fileno()
    os.set_blocking(rfd, True)
    os.set_blocking(wfd, True)
    _start_watchdog(rfd, parent_pid, prefix)
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as exc:
            _write(wfd, _wire.frame((_wire.INIT_FAILED, RemoteFailure.capture(exc))))
            return
    _write(wfd, _wire.frame((_wire.READY, os.getpid())))
    _serve(rfd, wfd, f"{prefix}r{os.getpid()}")


def _exit_with_group(prefix: str) -> None:
    """The parent is gone: remove the pool's shared memory, take down what this
    worker's calls started, then exit."""
    _shm.cleanup_prefix(prefix)  # every segment of the pool, where /dev/shm can be listed
    # Elsewhere, those this worker knows: its reply segments, the shared objects it read.
    for name in [_replying, _scratch_name, *_shared.attached_names()]:
        if name:
            _shm.unlink(name)
    if hasattr(os, "killpg") and os.getpgid(0) == os.getpid():  # leads its own group
        os.killpg(0, signal.SIGKILL)  # this process included
    os._exit(0)


def _start_watchdog(rfd: int, parent_pid: int, prefix: str) -> None:
    """Exit the process when the parent dies, even while a call is running.

    Watches the parent itself (a pidfd where the kernel has them, else a
    liveness check every second) and the request pipe's hang-up. The pipe
    alone is not enough: a child that the parent forks later inherits its
    write end and keeps the pipe open after the parent is gone.
    """
    try:
        pidfd: int | None = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        os._exit(0)
    except (AttributeError, OSError):
        pidfd = None

    def watch() -> None:
        poller = select.poll()
        poller.register(rfd, 0)  # only POLLHUP/POLLERR, never wakes for data
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)  # readable once the parent exited
        while True:
            events = poller.poll(None if pidfd is not None else 1000)
            if events or not _alive(parent_pid):
                _exit_with_group(prefix)

    threading.Thread(target=watch, name="cohort-parent-watchdog", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_replying = ""  # the shared-memory segment of the reply being written, if any
_scratch_name = ""  # the segment this worker rewrites for replies the parent copies out


def _serve(rfd: int, wfd: int, reply_name: str) -> None:
    """Answer requests until told to exit.

    Large replies go through shared memory: the scratch segment ``reply_name``
    when the parent copies them out, else a new segment ``{reply_name}-{n}``
    for the n-th reply; the parent can derive both names to clean up after a crash,
    and empties the scratch when it has been idle a while.
    """
    global _replying, _scratch_name
    replies = 0
    scratch = _shm.Scratch(reply_name)
    _scratch_name = reply_name
    reader = FrameReader()
    poller = select.poll()
    poller.register(rfd, select.POLLIN)
    pending: list[bytes] = []
    while True:
        while not pending:
            # Spin briefly for the next request: waking a sleeping process on
            # the other core costs more than a whole small call.
            deadline = time.perf_counter() + POLL_AFTER_REPLY
            while not poller.poll(0) and time.perf_counter() < deadline:
                os.sched_yield()
            data = os.read(rfd, READ_SIZE)
            if not data:
                return  # parent closed the pipe: retire
            pending = reader.feed(data)
        _replying = f"{reply_name}-{replies}"
        reply = _handle(pending.pop(0), _replying, scratch)
        if reply is None:
            return  # asked to exit
        if reply:
            _write(wfd, reply)
            replies += 1
        _replying = ""


def _handle(data: bytes, segment: str, scratch: _shm.Scratch) -> bytes | None:
    """The reply frame to one request (``b""``: none is due; ``None``: exit)."""
    try:
        kind, fn, args = _shm.decode(data)
    except BaseException as exc:
        msg = f"the worker could not unpickle the request: {type(exc).__name__}: {exc}"
        return _wire.frame((_wire.UNPICKLABLE, msg))
    if kind == _wire.EXIT:
        return None
    if kind == _wire.FORGET:
        _shared.forget(fn)
        return b""
    fn = getattr(fn, "_cohort_cpu_target", fn)
    if kind == _wire.CALL:
        try:
            reply: tuple[int, Any] = (_wire.OK, _shm.wrap(fn(*args)))
        except BaseException as exc:
            reply = (_wire.FAIL, RemoteFailure.capture(exc))
    else:
        reply = (_wire.OK, _run_chunk(fn, args))
    try:
        out = _wire.encode(reply)
        return out if isinstance(out, bytes) else _wire.finish(out, segment, scratch)
    except BaseException as exc:
        msg = (
            f"the result of {_wire.describe(fn)} could not be pickled in the worker: "
            f"{type(exc).__name__}: {exc}"
        )
        return _wire.frame((_wire.UNPICKLABLE, msg))


def _run_chunk(
    fn: Callable[..., object], items: Sequence[Any]
) -> tuple[list[object], RemoteFailure | None, float]:
    """Apply ``fn`` to each item; stop at the first failure (results so far are kept)."""
    out: list[object] = []
    failure = None
    t0 = time.perf_counter()
    try:
        # extend() keeps the results obtained before an exception, in a C loop.
        out.extend(map(fn, items))
    except BaseException as exc:
        failure = RemoteFailure.capture(exc)
    return out, failure, time.perf_counter() - t0


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view[:READ_SIZE])
        view = view[n:]


__all__ = ["worker_main"]
