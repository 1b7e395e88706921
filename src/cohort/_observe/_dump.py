"""Dumps: the task tree, each task's await point and the hang analysis, on a signal.

``enable_dump()`` installs a SIGUSR1 handler (Python runs it on the main
thread between bytecodes, so it also runs while a coroutine blocks the loop
in ``time.sleep`` or a lock wait) that writes ``dump()`` to a per-process
file in a directory of the user's own (``request_dump(pid)`` and
``cohort ps|tree|why PID`` know where), or to stderr. The file is written
whole and renamed into place, so a reader never sees half a dump.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from types import FrameType

from cohort._core._tree import task_tree
from cohort._observe._hangs import hang_report
from cohort._validate import check_seconds

__all__ = ["dump", "dump_path", "enable_dump", "request_dump"]


def dump_path(pid: int | None = None) -> Path:
    """Where ``enable_dump()`` of process ``pid`` (this one by default) writes its dump."""
    folder = Path(tempfile.gettempdir()) / f"cohort-dumps-{os.getuid()}"
    return folder / f"{os.getpid() if pid is None else pid}.txt"


def dump(loop: asyncio.AbstractEventLoop | None = None, *, frame: FrameType | None = None) -> str:
    """The dump as text: sections ``== tree ==``, ``== tasks ==`` and ``== why ==``.

    Call it on the loop's thread (``loop`` defaults to the running one). In a
    signal handler, ``frame`` is where the loop's thread was interrupted: it is
    shown as the task that runs now.
    """
    loop = loop or asyncio.get_running_loop()
    report = hang_report(loop)
    running = asyncio.current_task(loop)
    lines = [f"cohort dump of process {os.getpid()} at {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    lines += ["== tree ==", str(task_tree())]
    lines.append("== tasks ==")
    if running is not None:
        where = traceback.extract_stack(frame)[-1] if frame is not None else None
        at = f"{where.filename}:{where.lineno} in {where.name}" if where else "(running)"
        lines.append(f"{running.get_name()}: running now at {at}")
    for wait in report.waits:
        state = f", cancelling {wait.cancelling}" if wait.cancelling else ""
        lines.append(f"{wait.task}: {wait.kind} at {wait.where}{state}")
        lines += [f"    {step}" for step in wait.chain]
    lines += ["== why ==", str(report)]
    return "\n".join(lines) + "\n"


def enable_dump(path: str | os.PathLike[str] | None = None) -> Path | None:
    """On SIGUSR1, write ``dump()`` of the running loop to ``path`` (``"-"``: stderr).

    Call it from a coroutine on the main thread. ``path`` defaults to
    ``dump_path()``, where ``request_dump(pid)`` and ``cohort ps PID`` read it.
    Returns the file written (None for stderr). The handler stays until the
    process ends or SIGUSR1 is given another handler.
    """
    loop = asyncio.get_running_loop()
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("enable_dump() installs a signal handler: call it on the main thread")
    target = None if path == "-" else Path(path) if path is not None else dump_path()

    def handler(signum: int, frame: FrameType | None) -> None:
        text = dump(loop, frame=frame) if loop.is_running() else "(the loop is not running)\n"
        if target is None:
            sys.stderr.write(text)
            sys.stderr.flush()
            return
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.{os.getpid()}")
        scratch.write_text(text, encoding="utf-8")
        os.replace(scratch, target)

    signal.signal(signal.SIGUSR1, handler)
    return target


def request_dump(pid: int, *, timeout: float = 5.0) -> str:
    """Ask process ``pid`` (which called ``enable_dump()``) for its dump and return it.

    Raises:
        ProcessLookupError: no process ``pid``.
        TimeoutError: no dump came within ``timeout`` seconds (the process did not
            call ``enable_dump()``, or writes elsewhere, or its main thread is
            stuck in C code that does not return to Python).
    """
    timeout = check_seconds("request_dump timeout", timeout, zero=False, inf=False)
    target = dump_path(pid)
    target.unlink(missing_ok=True)  # the dump that comes is the one asked for
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return target.read_text(encoding="utf-8")
        except FileNotFoundError:
            time.sleep(0.02)
    raise TimeoutError(
        f"process {pid} wrote no dump to {target} within {timeout} s: did it call "
        "cohort.enable_dump()?"
    )
