"""``Lock``: a mutual-exclusion lease on a Redis server, with a fencing token per grant."""

from __future__ import annotations

import asyncio
import os
from types import TracebackType

from cohort._core._scopes import CancelScope
from cohort._exceptions import LeaseLost
from cohort.redis._client import Connection, Primitive
from cohort.redis._lease import Lease, Renewer
from cohort.redis._scripts import LOCK_ACQUIRE, LOCK_RELEASE, LOCK_RENEW

__all__ = ["Lock"]


class _Holding:
    """One task's hold on the lock: its lease, its renewer, the scope it cancels."""

    __slots__ = ("holder", "lease", "renewer", "scope")

    def __init__(self, holder: str, lease: Lease, renewer: Renewer, scope: CancelScope) -> None:
        self.holder = holder
        self.lease = lease
        self.renewer = renewer
        self.scope = scope


class Lock:
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

    def __init__(self, connection: Connection, name: str, *, lease: float) -> None:
        self._prim = _LockKeys(connection, name)
        self._lease = lease
        self._held: dict[asyncio.Task[object], _Holding] = {}

    def __repr__(self) -> str:
        return f"<cohort.redis.Lock {self._prim.name!r} lease={self._lease:g}s>"

    @property
    def name(self) -> str:
        return self._prim.name

    async def __aenter__(self) -> Lease:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("cohort.redis.Lock must be used from an asyncio task")
        if task in self._held:
            raise RuntimeError(f"{self!r} is already held by this task: it is not reentrant")
        prim = self._prim
        holder = os.urandom(12).hex()
        lease_ms = max(1, round(self._lease * 1000))
        # A waiter re-tries at least every poll: its mark outlives two of them.
        waiting_ms = max(1, round(prim.connection.poll * 3000))
        loop = asyncio.get_running_loop()
        event: asyncio.Event | None = None  # watched only once the lock was found held
        try:
            while True:
                if event is not None:
                    event.clear()
                sent = loop.time()
                try:
                    _, token, pttl = await prim.run(
                        LOCK_ACQUIRE, prim.keys, [holder, lease_ms, prim.channel, waiting_ms]
                    )
                except asyncio.CancelledError:
                    # The grant may have been made before the reply was lost: give it back.
                    await asyncio.shield(self._give_back(holder))
                    raise
                if token:
                    break
                if event is None:
                    # Watch for the release, then read the state again: no wake-up is missed.
                    event = prim.connection.watch(prim.channel)
                    continue
                wait = prim.connection.poll if pttl < 0 else min(pttl / 1000, prim.connection.poll)
                await prim.connection.pause(event, wait)
        finally:
            if event is not None:
                prim.connection.unwatch(prim.channel, event)
        lease = Lease(prim.name, int(token))
        scope = CancelScope()

        async def renew() -> bool:
            _, held = await prim.run(LOCK_RENEW, prim.keys, [holder, lease_ms, prim.channel, 0])
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
        prim = self._prim
        _, released = await prim.run(LOCK_RELEASE, prim.keys, [holder, 0, prim.channel, 0])
        return bool(released)


class _LockKeys(Primitive):
    kind = "lock"

    def __init__(self, connection: Connection, name: str) -> None:
        super().__init__(connection, name)
        self.owner = f"{self.tag}:owner"
        self.keys = [self.owner, f"{self.tag}:waiting"]
