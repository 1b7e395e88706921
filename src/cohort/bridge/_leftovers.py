"""What a pool releases even when it is dropped without ``aclose()``.

The loop holds a pool only weakly (``weakly``), so a pool nobody references
is collected; its finalizer (``reclaim``) then kills its workers, takes their
pipes off the loop and releases its shared objects (``Leftovers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from cohort.bridge import _shm
from cohort.bridge._procs import Worker, terminate_all
from cohort.bridge._shared import Shared


def weakly(method: Callable[..., None]) -> Callable[..., None]:
    """``method``, called through a weak reference to its object (a no-op once it is gone)."""
    ref = weakref.WeakMethod(method)

    def call(*args: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args)

    return call


class Leftovers:
    """What a pool must release even if it is dropped without ``aclose()``: its
    workers and its shared objects."""

    __slots__ = ("__weakref__", "loop", "prefix", "shared", "tell_forget", "what", "workers")

    def __init__(self, workers: set[Worker], what: str, prefix: str) -> None:
        self.workers = workers
        self.what = what
        self.prefix = prefix
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tell_forget: Callable[[], None] | None = None  # the pool's, held weakly
        self.shared: weakref.WeakValueDictionary[str, Shared[Any]] = weakref.WeakValueDictionary()

    def release_shared(self) -> None:
        for handle in list(self.shared.values()):
            handle.release()


def forget_shared(leftovers_ref: weakref.ref[Leftovers], key: _shm.Key) -> None:
    """A shared object was released: remove its segment, and tell the workers to drop it."""
    name = key[0]
    _shm.unlink(name)
    leftovers = leftovers_ref()
    if leftovers is None:
        return
    leftovers.shared.pop(name, None)
    told = False
    for w in list(leftovers.workers):
        if w.live:
            w.forget.append(name)
            told = True
    # Idle workers are told at once, from the loop (this may run in a finalizer,
    # in the middle of anything, even in another thread).
    loop = leftovers.loop
    if told and loop is not None and leftovers.tell_forget is not None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: no worker to tell
            loop.call_soon_threadsafe(leftovers.tell_forget)


def reclaim(leftovers: Leftovers) -> None:
    """The pool was garbage-collected while open (or the interpreter exits): kill its
    workers, take their pipes off the loop, and say so, as asyncio does for transports."""
    leftovers.release_shared()
    workers = leftovers.workers
    if not workers:
        return
    warnings.warn(
        f"unclosed {leftovers.what}: its workers were killed when it was garbage-collected; "
        "use `async with cohort.ProcessPool(...)` or `await pool.aclose()`",
        ResourceWarning,
        stacklevel=1,
    )
    kill_now(leftovers.loop, workers)


def kill_now(loop: asyncio.AbstractEventLoop | None, workers: set[Worker]) -> None:
    """Kill and reap ``workers`` at once, their pipes taken off ``loop`` before they close."""
    if loop is not None and not loop.is_closed():
        fds = [(w.rfd, w.process.sentinel, w.wfd) for w in workers]
        if asyncio._get_running_loop() is loop or not loop.is_running():
            forget_fds(loop, fds)
        else:
            loop.call_soon_threadsafe(forget_fds, loop, fds)
    terminate_all(workers)


def forget_fds(loop: asyncio.AbstractEventLoop, fds: list[tuple[int, int, int]]) -> None:
    for rfd, sentinel, wfd in fds:
        for fd in (rfd, sentinel):
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(fd)
        with contextlib.suppress(OSError, ValueError):
            loop.remove_writer(wfd)
