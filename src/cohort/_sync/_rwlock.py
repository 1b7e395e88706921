"""``RWLock``: many readers or one writer, writer-preferring, cancellation-safe."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

__all__ = ["RWLock", "RWLockStatistics"]

_get_running_loop = asyncio.get_running_loop  # one global lookup on hot paths


@dataclass(frozen=True, slots=True)
class RWLockStatistics:
    """A point-in-time view of a :class:`RWLock`."""

    readers: int
    """Tasks holding it to read."""
    writer: bool
    """Whether a task holds it to write."""
    readers_waiting: int
    """Tasks blocked in ``async with rw.reader``."""
    writers_waiting: int
    """Tasks blocked in ``async with rw.writer``."""


class _Side:
    __slots__ = ("_acquire", "_release", "_what")

    def __init__(
        self, what: str, acquire: Callable[[], Awaitable[None]], release: Callable[[], None]
    ) -> None:
        self._what = what
        self._acquire = acquire
        self._release = release

    def __repr__(self) -> str:
        return f"<cohort.RWLock {self._what}>"

    async def __aenter__(self) -> None:
        await self._acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._release()


class RWLock:
    """A reader-writer lock: ``async with rw.reader:`` shares it, ``async with rw.writer:``
    holds it alone.

    Writer-preferring: once a writer waits, no new reader is admitted, so a
    stream of readers cannot starve writers; waiting writers go one at a time,
    first come first served, and when none waits every waiting reader is
    admitted at once. Cancellation-safe: a waiter cancelled (or timed out)
    leaves nothing behind, a writer cancelled while it waited lets in the
    readers it held off, and a grant made just as its waiter was cancelled is
    handed on. Not reentrant: a task holding it to read that asks to write
    waits for itself.

    Example:
        ```python
        rw = cohort.RWLock()
        config: dict[str, str] = {}


        async def read(key: str) -> str | None:
            async with rw.reader:
                return config.get(key)


        async def update(key: str, value: str) -> None:
            async with rw.writer:
                config[key] = value
        ```
    """

    __slots__ = ("_read_waiters", "_readers", "_write_waiters", "_writer", "reader", "writer")

    def __init__(self) -> None:
        self._readers = 0
        self._writer = False
        # Insertion-ordered (FIFO) with O(1) removal of a cancelled waiter.
        self._read_waiters: dict[asyncio.Future[None], None] = {}
        self._write_waiters: dict[asyncio.Future[None], None] = {}
        self.reader = _Side("reader", self._acquire_read, self._release_read)
        """``async with rw.reader:`` holds the lock shared with other readers."""
        self.writer = _Side("writer", self._acquire_write, self._release_write)
        """``async with rw.writer:`` holds the lock alone."""

    def __repr__(self) -> str:
        state = "writing" if self._writer else f"readers={self._readers}"
        return (
            f"<cohort.RWLock {state} readers_waiting={len(self._read_waiters)} "
            f"writers_waiting={len(self._write_waiters)}>"
        )

    def statistics(self) -> RWLockStatistics:
        """Return who holds it and how many wait on each side."""
        return RWLockStatistics(
            readers=self._readers,
            writer=self._writer,
            readers_waiting=len(self._read_waiters),
            writers_waiting=len(self._write_waiters),
        )

    async def _acquire_read(self) -> None:
        if not self._writer and not self._write_waiters:
            self._readers += 1
            return
        fut: asyncio.Future[None] = _get_running_loop().create_future()
        self._read_waiters[fut] = None
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release_read()  # granted as it was cancelled: hand it on
            else:
                self._read_waiters.pop(fut, None)
            raise

    async def _acquire_write(self) -> None:
        if not self._writer and not self._readers and not self._write_waiters:
            self._writer = True
            return
        fut: asyncio.Future[None] = _get_running_loop().create_future()
        self._write_waiters[fut] = None
        try:
            await fut
        except asyncio.CancelledError:
            self._write_waiters.pop(fut, None)
            if fut.done() and not fut.cancelled():
                self._release_write()  # granted as it was cancelled: hand it on
            else:
                self._wake()  # the readers this writer held off may go in
            raise

    def _release_read(self) -> None:
        if self._readers <= 0:
            raise RuntimeError(f"{self!r}: reader released but not held")
        self._readers -= 1
        if self._readers == 0:
            self._wake()

    def _release_write(self) -> None:
        if not self._writer:
            raise RuntimeError(f"{self!r}: writer released but not held")
        self._writer = False
        self._wake()

    def _wake(self) -> None:
        """Grant whatever the state allows: the first waiting writer, else every reader."""
        if self._writer:
            return
        writers = self._write_waiters
        while writers:
            if self._readers:
                return  # the writer waits for the readers to leave; new ones wait too
            fut = next(iter(writers))
            del writers[fut]
            if not fut.done():
                fut.set_result(None)
                self._writer = True
                return
        readers, self._read_waiters = self._read_waiters, {}
        for fut in readers:
            if not fut.done():
                fut.set_result(None)
                self._readers += 1
