"""Leases: a grant that lives while its holder renews it, and what losing it does.

The server decides when a lease ends (its own clock, ``PEXPIRE``). The holder
renews every third of the lease and keeps a conservative local deadline: the
time it *sent* the last renewal that succeeded, plus the lease. Past that
deadline, or when a renewal finds the grant gone, the lease is lost: the
holder's scope is cancelled, and the block raises ``LeaseLost``. A holder can
only learn of the loss late (a paused process learns when it runs again);
what makes it safe is the fencing token checked by the resource.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from cohort._exceptions import CoordinatorLost

__all__ = ["Lease", "Renewer", "join_party"]


class Lease:
    """One grant of a ``cohort.redis`` primitive, as its holder sees it."""

    __slots__ = ("_reason", "name", "token")

    def __init__(self, name: str, token: int) -> None:
        self.name = name
        self.token = token
        """The grant's fencing token: larger than every token granted before it.
        Pass it to the resource, which refuses a token smaller than one it saw."""
        self._reason = ""

    def __repr__(self) -> str:
        lost = f" lost={self._reason!r}" if self._reason else ""
        return f"<cohort.redis.Lease {self.name!r} token={self.token}{lost}>"

    @property
    def lost(self) -> bool:
        """Whether the lease was lost (then the holder's block was cancelled)."""
        return bool(self._reason)

    @property
    def reason(self) -> str:
        """Why the lease was lost; ``''`` while it holds."""
        return self._reason

    def mark_lost(self, reason: str) -> None:
        if not self._reason:
            self._reason = reason


class Renewer:
    """Renews one lease until stopped; calls ``on_lost`` once if it is lost.

    Nothing runs between renewals: a timer fires every third of the lease and
    starts one renewal task, so a grant released before its first renewal
    (the common, short hold) costs one timer and no task.
    """

    def __init__(
        self,
        lease: Lease,
        seconds: float,
        renew: Callable[[], Awaitable[bool]],
        on_lost: Callable[[str], None],
        granted_at: float,
    ) -> None:
        self.lease = lease
        self.seconds = seconds
        self._renew = renew
        self._on_lost = on_lost
        self.deadline = granted_at + seconds
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.lost_to: CoordinatorLost | None = None  # why, when the server itself was lost
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(self._due(), self._fire)

    def _due(self) -> float:
        return min(self._loop.time() + self.seconds / 3, self.deadline)

    def _fire(self) -> None:
        self._timer = None
        if not self._stopped:
            self._task = self._loop.create_task(
                self._once(), name=f"cohort.redis renew {self.lease.name}"
            )

    async def stop(self) -> None:
        self._stopped = True
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _lose(self, reason: str) -> None:
        self.lease.mark_lost(reason)
        self._on_lost(reason)

    async def _once(self) -> None:
        sent = self._loop.time()
        if sent >= self.deadline:
            self._lose(f"the lease of {self.seconds:g} s was not renewed in time")
            return
        try:
            async with asyncio.timeout_at(self.deadline):
                held = await self._renew()
        except TimeoutError:
            self._lose(f"the lease of {self.seconds:g} s was not renewed in time")
            return
        except CoordinatorLost as exc:
            self.lost_to = exc
            self._lose(f"the coordinator was lost: {exc}")
            return
        if not held:
            self._lose("the lease lapsed on the server (another holder may have it now)")
            return
        self.deadline = sent + self.seconds
        self._task = None
        if not self._stopped:
            self._timer = self._loop.call_at(self._due(), self._fire)


async def join_party(
    name: str, seconds: float, join: Awaitable[object], renew: Callable[[], Awaitable[bool]]
) -> Renewer:
    """Join a primitive as a party under a lease (``join``: its join script, not
    started yet, so the lease is timed from before it is sent) and renew it.

    A party that loses its lease has nothing to stop here: the server counts it
    gone and breaks the primitive for the others, who learn it from the server.
    """
    sent = asyncio.get_running_loop().time()
    await join
    return Renewer(Lease(name, 0), seconds, renew, _nothing_to_stop, sent)


def _nothing_to_stop(reason: str) -> None:
    pass
