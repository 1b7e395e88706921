"""Leased grants: ``Lock`` and ``Semaphore`` (and the two sides of ``RWLock``).

Each is one acquire script (retried when woken or every poll), a lease renewed
by a timer, a scope cancelled when the lease is lost, and one release script.
Every grant carries a fencing token."""

from __future__ import annotations

import asyncio
import os
from types import TracebackType
from typing import Any

from cohort._core._scopes import CancelScope
from cohort._exceptions import CoordinatorLost, LeaseLost
from cohort.redis._client import Connection, Primitive, Watch
from cohort.redis._lease import Lease, Renewer
from cohort.redis._scripts import (
    LOCK_ACQUIRE,
    LOCK_RELEASE,
    LOCK_RENEW,
    RW_READ_ACQUIRE,
    RW_READ_RELEASE,
    RW_READ_RENEW,
    RW_WRITE_ACQUIRE,
    RW_WRITE_RELEASE,
    RW_WRITE_RENEW,
    SEM_ACQUIRE,
    SEM_COUNT,
    SEM_RELEASE,
    SEM_RENEW,
)

__all__ = ["Leased", "Lock", "RWLock", "Semaphore"]


class _Holding:
    """One task's hold on the lock: its lease, its renewer, the scope it cancels."""

    __slots__ = ("holder", "lease", "renewer", "scope")

    def __init__(self, holder: str, lease: Lease, renewer: Renewer, scope: CancelScope) -> None:
        self.holder = holder
        self.lease = lease
        self.renewer = renewer
        self.scope = scope


class Leased:
    """The machinery every leased grant shares (see ``Lock`` for the semantics)."""

    kind = ""
    _acquire_lua = LOCK_ACQUIRE
    _renew_lua = LOCK_RENEW
    _release_lua = LOCK_RELEASE
    _limit = 0  # passed to every script (a semaphore's permits)

    def __init__(self, connection: Connection, name: str, *, lease: float) -> None:
        self._prim = _Keys(connection, name, self.kind)
        self._lease = lease
        self._held: dict[asyncio.Task[object], _Holding] = {}

    def __repr__(self) -> str:
        return f"<cohort.redis.{type(self).__name__} {self._prim.name!r} lease={self._lease:g}s>"

    @property
    def name(self) -> str:
        return self._prim.name

    def _error(self, exc: Exception) -> Exception:
        """A script's error, as the caller should see it."""
        return exc

    async def _run(self, lua: str, holder: str, lease_ms: int, waiting_ms: int) -> list[Any]:
        prim = self._prim
        args = [holder, lease_ms, prim.channel, waiting_ms, self._limit]
        try:
            return await prim.run(lua, prim.keys, args)
        except CoordinatorLost:
            raise
        except Exception as exc:
            raise self._error(exc) from None

    async def __aenter__(self) -> Lease:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError(f"cohort.redis.{type(self).__name__} must be used from a task")
        if task in self._held:
            raise RuntimeError(f"{self!r} is already held by this task: it is not reentrant")
        prim = self._prim
        holder = os.urandom(12).hex()
        lease_ms = max(1, round(self._lease * 1000))
        # A waiter re-tries at least every poll: its mark outlives two of them.
        waiting_ms = max(1, round(prim.connection.poll * 3000))
        loop = asyncio.get_running_loop()
        event: Watch | None = None  # watched only once the grant was refused
        try:
            while True:
                if event is not None:
                    event.clear()
                sent = loop.time()
                try:
                    reply = await self._run(self._acquire_lua, holder, lease_ms, waiting_ms)
                    _, token, pttl = reply
                except asyncio.CancelledError:
                    # The grant may have been made before the reply was lost: give it back.
                    await asyncio.shield(self._give_back(holder))
                    raise
                if token:
                    break
                if event is None:
                    # Watch for a release, then read the state again: no wake-up is missed.
                    event = prim.connection.watch(prim.channel)
                    continue
                wait = prim.connection.poll if pttl < 0 else min(pttl / 1000, prim.connection.poll)
                try:
                    await prim.connection.pause(event, wait)
                except asyncio.CancelledError:
                    # Take back the waiting mark (a waiting writer holds readers off).
                    await asyncio.shield(self._give_back(holder))
                    raise
        finally:
            if event is not None:
                prim.connection.unwatch(prim.channel, event)
        lease = Lease(prim.name, int(token))
        scope = CancelScope()

        async def renew() -> bool:
            _, held = await self._run(self._renew_lua, holder, lease_ms, 0)
            return bool(held)

        renewer = Renewer(lease, self._lease, renew, lambda _reason: scope.cancel(), sent)
        scope.__enter__()
        self._held[task] = _Holding(holder, lease, renewer, scope)
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        holding = self._held.pop(task) if task is not None else None
        if holding is None:
            raise RuntimeError(f"{self!r} is not held by this task")
        # The scope first: a loss found from here on cancels nothing (the block is over).
        holding.scope.__exit__(exc_type, exc, tb)
        await holding.renewer.stop()
        lease = holding.lease
        released = False
        if not lease.lost:
            released = await self._give_back(holding.holder)
            if not released:
                lease.mark_lost("the lease had lapsed on the server before the release")
        if lease.lost:
            raise LeaseLost(
                f"{self!r} lost the lease of grant {lease.token}: {lease.reason}",
                name=self.name,
                token=lease.token,
                reason=lease.reason,
            )

    async def _give_back(self, holder: str) -> bool:
        _, released = await self._run(self._release_lua, holder, 0, 0)
        return bool(released)


class Lock(Leased):
    """A lock shared by every process that names it on the same server and namespace.

    ``async with lock as lease:`` waits for the lock, then holds it under a
    lease of ``lease`` seconds (timed by the server), renewed in the background
    while the block runs. ``lease.token`` is the grant's fencing token: it is
    larger than the token of every earlier grant of this lock, so a resource
    that remembers the largest token it saw and refuses smaller ones never
    accepts a write from a holder whose lease lapsed (a paused process, a slow
    network).

    If the lease is lost (a renewal finds the grant gone, or none succeeded
    within the lease), the block is cancelled at its next ``await`` and the
    ``async with`` statement raises :class:`cohort.LeaseLost`; the exception
    the block was leaving with, if any, is its ``__context__``. A block that
    ends while its lease holds releases the lock and wakes the next waiter.

    Obtained from :meth:`cohort.redis.Coordinator.lock`. One object may be used
    by several tasks at once: each ``async with`` is a grant of its own.
    """

    kind = "lock"


class Semaphore(Leased):
    """At most ``permits`` holders at once, across every process that names it.

    ``async with sem as lease:`` waits for a permit, then holds it under a
    lease of its own, renewed in the background, exactly as for
    :class:`Lock` (which is a semaphore of one permit): a holder that dies
    gives its permit back when its lease lapses on the server, a holder that
    loses its lease has its block cancelled and gets :class:`cohort.LeaseLost`,
    and each grant carries a fencing token larger than every earlier grant's.
    Never more than ``permits`` grants hold at once (counted by the server,
    at its time). Every process must give the same ``permits`` (``ValueError``).

    Obtained from :meth:`cohort.redis.Coordinator.semaphore`.
    """

    kind = "semaphore"
    _acquire_lua = SEM_ACQUIRE
    _renew_lua = SEM_RENEW
    _release_lua = SEM_RELEASE

    def __init__(self, connection: Connection, name: str, permits: int, *, lease: float) -> None:
        super().__init__(connection, name, lease=lease)
        self.permits = permits
        self._limit = permits

    def __repr__(self) -> str:
        return (
            f"<cohort.redis.Semaphore {self.name!r} permits={self.permits} lease={self._lease:g}s>"
        )

    def _error(self, exc: Exception) -> Exception:
        if str(exc).startswith("COHORT_PERMITS"):
            return ValueError(
                f"{self!r}: {str(exc).split(' ', 1)[1]}; every process must give the same permits"
            )
        return exc

    async def holders(self) -> int:
        """How many grants hold a permit now (leases lapsed on the server not counted)."""
        _, count = await self._run(SEM_COUNT, "", 0, 0)
        return int(count)


class _Reading(Leased):
    kind = "rwlock"

    def __repr__(self) -> str:
        return f"<cohort.redis.RWLock {self.name!r} reader lease={self._lease:g}s>"

    _acquire_lua = RW_READ_ACQUIRE
    _renew_lua = RW_READ_RENEW
    _release_lua = RW_READ_RELEASE


class _Writing(Leased):
    kind = "rwlock"

    def __repr__(self) -> str:
        return f"<cohort.redis.RWLock {self.name!r} writer lease={self._lease:g}s>"

    _acquire_lua = RW_WRITE_ACQUIRE
    _renew_lua = RW_WRITE_RENEW
    _release_lua = RW_WRITE_RELEASE


class RWLock:
    """A reader-writer lock shared by every process that names it: many readers or one writer.

    ``async with rw.reader as lease:`` shares it with other readers; ``async
    with rw.writer as lease:`` holds it alone. Each grant is a lease with a
    fencing token, exactly as for :class:`Lock` (a lost lease cancels the
    block and raises :class:`cohort.LeaseLost`; a dead holder's grant ends
    with its lease). Writer-preferring: while a writer waits, no new reader is
    admitted (a waiting writer marks itself for three poll intervals, renewed
    by each retry, so a dead waiter holds readers off for at most that long).
    Cancellation-safe: a writer cancelled while it waits takes its mark back
    and wakes the readers it held off; a grant made as the caller was
    cancelled is given back.

    Obtained from :meth:`cohort.redis.Coordinator.rwlock`.
    """

    def __init__(self, connection: Connection, name: str, *, lease: float) -> None:
        self.name = name
        self.reader: Leased = _Reading(connection, name, lease=lease)
        self.writer: Leased = _Writing(connection, name, lease=lease)

    def __repr__(self) -> str:
        return f"<cohort.redis.RWLock {self.name!r}>"


class _Keys(Primitive):
    def __init__(self, connection: Connection, name: str, kind: str) -> None:
        self.kind = kind
        super().__init__(connection, name)
        # A lock's owner / a semaphore's holders; the waiting mark; a read-write lock's
        # readers and waiting writers.
        self.keys = [
            f"{self.tag}:owner",
            f"{self.tag}:waiting",
            f"{self.tag}:readers",
            f"{self.tag}:writers",
        ]
