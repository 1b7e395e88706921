"""The worker process: read a request, run it, write the reply, repeat.

Kept small and free of heavy imports, because a replacement worker's start
time is part of cancel latency. The worker talks to its parent over two
pipes of its own (no shared queue), so killing it mid-write can only
corrupt its own channel.

It exits on its own when the parent goes away: a watchdog thread polls the
request pipe for hang-up (the parent's write end closed, which also happens
when the parent is SIGKILLed) even while the main thread is busy running a
call. Whichever thread sees it first removes the pool's shared memory and
ends the process; creating a segment and that clean-up exclude each other
(``_creating``), so no segment is made after the clean-up looked.

With ``ProcessPool(heartbeat=...)`` a third thread writes a byte to a pipe of
its own at a fixed interval; the parent reads it only while a call runs.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from cohort.bridge import _shared, _shm, _wire
from cohort.bridge._wire import READ_SIZE, FrameReader, RemoteFailure, Traced, trace_context

POLL_AFTER_REPLY = 100e-6  # seconds to spin for the next request before blocking
HANGUP_GRACE = 5.0  # seconds a hung-up pipe waits for the parent's exit to be visible

# Held while this process creates a segment; taken for good by the clean-up at exit.
_creating = threading.Lock()
_pidfd: int | None = None  # the parent's, where the kernel has pidfds


def worker_main(
    requests: Any,
    replies: Any,
    parent_pid: int,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    prefix: str,
    family: str,
    beats: Any = None,
    beat_every: float = 0.0,
) -> None:
    """Entry point of a worker process (``requests``/``replies`` are pipe connections;
    ``prefix`` starts the names of the pool's shared-memory segments, ``family``
    those of this worker's; ``beats``, if given, the pipe connection a thread
    writes a heartbeat to every ``beat_every`` seconds)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    if hasattr(os, "setpgid"):
        # A process group of its own: killing the worker kills what its calls
        # started too (a subprocess.run() in the call), not only the worker.
        os.setpgid(0, 0)
    rfd, wfd = requests.fileno(), replies.fileno()
    os.set_blocking(rfd, True)
    os.set_blocking(wfd, True)
    _shared.keep_only(prefix)
    _start_watchdog(rfd, parent_pid, prefix)
    if beats is not None:
        _start_heartbeat(beats, beat_every)
    try:
        if initializer is not None:
            try:
                initializer(*initargs)
            except BaseException as exc:
                _write(wfd, _wire.frame((_wire.INIT_FAILED, RemoteFailure.capture(exc))))
                return
        _write(wfd, _wire.frame((_wire.READY, os.getpid())))
        _serve(rfd, wfd, family)
    except (OSError, EOFError):  # a pipe hung up or broke: the parent closed it or is gone
        _on_hangup(parent_pid, prefix)


def _exit_with_group(prefix: str) -> NoReturn:
    """The parent is gone: remove the pool's shared memory, take down what this
    worker's calls started, then exit. Never returns; a second caller (the
    other thread) waits here until the process ends."""
    _creating.acquire()  # a segment being made is finished first; none after this
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
    global _pidfd
    try:
        pidfd: int | None = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        _exit_with_group(prefix)  # gone before this worker got going: what it left goes too
    except (AttributeError, OSError):
        pidfd = None
    _pidfd = pidfd

    def watch() -> None:
        poller = select.poll()
        poller.register(rfd, 0)  # only POLLHUP/POLLERR, never wakes for data
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)  # readable once the parent exited
        while True:
            events = poller.poll(None if pidfd is not None else 1000)
            if not _alive(parent_pid) or any(fd == pidfd for fd, _ in events):
                _exit_with_group(prefix)
            if events:  # the request pipe hung up
                _on_hangup(parent_pid, prefix)
                poller.unregister(rfd)  # the parent lives: the main thread retires

    threading.Thread(target=watch, name="cohort-parent-watchdog", daemon=True).start()


def _start_heartbeat(beats: Any, every: float) -> None:
    """Write one byte to ``beats`` every ``every`` seconds, from a thread of its own.

    The parent reads these while a call is in flight; silence means the
    process stopped (SIGSTOP, a debugger) or a call holds the GIL in C code,
    since this thread needs the GIL to run. A call that releases the GIL
    (``time.sleep``, ``os.read``, most I/O) leaves it ticking.
    """
    fd = beats.fileno()
    os.set_blocking(fd, False)

    def tick() -> None:
        while True:
            time.sleep(every)
            try:
                os.write(fd, b".")
            except BlockingIOError:
                pass  # full: the parent reads only while a call is in flight
            except OSError:
                return  # the parent is gone; the watchdog ends the process
            if beats.closed:  # never: keeps the connection (and its fd) open
                return

    threading.Thread(target=tick, name="cohort-heartbeat", daemon=True).start()


def _on_hangup(parent_pid: int, prefix: str) -> None:
    """A pipe to the parent hung up (end of file) or broke: if the parent is gone,
    clean up and exit (no return); else return, and the worker retires.

    The pipes close a moment before a killed parent's exit can be seen, so
    the parent gets ``HANGUP_GRACE`` to be seen gone.
    """
    if _pidfd is not None:
        with contextlib.suppress(OSError):
            if select.select([_pidfd], [], [], HANGUP_GRACE)[0]:
                _exit_with_group(prefix)
        return
    deadline = time.monotonic() + HANGUP_GRACE
    while _alive(parent_pid):
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)
    _exit_with_group(prefix)


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


def _serve(rfd: int, wfd: int, family: str) -> None:
    """Answer requests until told to exit (``EOFError`` at the request pipe's end).

    Large replies go through shared memory: the scratch segment
    ``_shm.reply_scratch(family)`` when the parent copies them out, else a new
    segment ``_shm.reply_segment(family, n)`` for the n-th reply; the parent
    can derive both names to clean up after a crash, and empties the scratch
    when it has been idle a while.
    """
    global _replying, _scratch_name
    replies = 0
    scratch = _shm.Scratch(_shm.reply_scratch(family))
    _scratch_name = scratch.name
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
                raise EOFError("the parent closed the request pipe")
            pending = reader.feed(data)
        _replying = _shm.reply_segment(family, replies)
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
    small = False
    if kind == _wire.CALL:
        try:
            value = fn(*args)
            small = _shm.small(value)
            reply: tuple[int, Any] = (_wire.OK, _shm.compact(value) if small else _shm.wrap(value))
        except BaseException as exc:
            reply = (_wire.FAIL, RemoteFailure.capture(exc))
    else:
        reply = (_wire.OK, _run_chunk(fn, args))
    try:
        out = _wire.encode(reply, small=small)
        if isinstance(out, bytes):
            return out
        with _creating:
            return _wire.finish(out, segment, scratch)
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
        if type(fn) is Traced:  # the caller's trace context, attached once per chunk
            with trace_context(fn.carrier):
                out.extend(map(fn.target(), items))
        else:
            out.extend(map(fn, items))
    except BaseException as exc:
        failure = RemoteFailure.capture(exc)
    return out, failure, time.perf_counter() - t0


def _write(fd: int, data: bytes) -> None:
    n = os.write(fd, data)  # all of it, usually: the pipe holds _wire.PIPE_SIZE
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view) :]


__all__ = ["worker_main"]
