"""``Latch``: a one-shot count-down shared by processes, idempotent per token."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from types import TracebackType
from typing import Any, Self

from cohort._exceptions import BrokenBarrierError
from cohort.redis._client import Connection, Primitive
from cohort.redis._lease import Renewer, join_party
from cohort.redis._scripts import (
    LATCH_CHECK,
    LATCH_DOWN,
    LATCH_JOIN,
    LATCH_LEAVE,
    LATCH_RENEW,
)

__all__ = ["Latch"]


class Latch(Primitive):
    """A count-down latch whose count-downs and waiters may live in different processes.

    ``await latch.wait()`` returns once ``count`` distinct tokens counted down
    (``await latch.count_down(token)``); once open it stays open, as for
    :class:`cohort.Latch`. A count-down is idempotent per token: the same token
    again (a retry after a lost reply, a restarted worker) counts once. The
    token defaults to this object's ``party``, so one object counts once.

    A party that will count down may join first (``async with latch:``, a
    lease renewed in the background): if its lease lapses before it counted
    down (its process died or hung), or it leaves the block without counting
    down, the latch breaks and every waiter gets
    :class:`cohort.BrokenBarrierError` naming it, within the lease plus two
    poll intervals, instead of waiting forever. Every process must give the
    same ``count`` (``ValueError``).

    Obtained from :meth:`cohort.redis.Coordinator.latch`.
    """

    kind = "latch"

    def __init__(
        self, connection: Connection, name: str, count: int, *, lease: float, party: str | None
    ) -> None:
        super().__init__(connection, name)
        self.count = count
        self.party = party or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = lease
        self._keys = [f"{self.tag}:state", f"{self.tag}:done", f"{self.tag}:members"]
        self._renewer: Renewer | None = None

    def __repr__(self) -> str:
        return f"<cohort.redis.Latch {self.name!r} count={self.count} party={self.party!r}>"

    async def _op(self, lua: str, who: str, arg: str = "") -> list[Any]:
        lease_ms = max(1, round(self._lease * 1000))
        args = [who, lease_ms, self.count, self.channel, arg]
        try:
            return await self.run(lua, self._keys, args)
        except Exception as exc:
            if str(exc).startswith("COHORT_COUNT"):
                raise ValueError(
                    f"{self!r}: {str(exc).split(' ', 1)[1]}; every process must give the same count"
                ) from None
            raise

    async def __aenter__(self) -> Self:
        if self._renewer is not None:
            raise RuntimeError(f"{self!r} is already joined: one object is one party")

        async def renew() -> bool:
            _, held = await self._op(LATCH_RENEW, self.party)
            return bool(held)

        join = self._op(LATCH_JOIN, self.party)
        self._renewer = await join_party(self.name, self._lease, join, renew)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await renewer.stop()
        why = f"left with {exc!r}" if exc is not None else "left"
        reason = f"party {self.party} {why} before it counted down"
        await asyncio.shield(self._op(LATCH_LEAVE, self.party, reason))

    async def count_down(self, token: str | None = None) -> int:
        """Count ``token`` (default: this object's party) down once; return the count left.

        Raises:
            ValueError: the latch is open already and ``token`` did not count
                down before (more count-downs than ``count``).
            BrokenBarrierError: the latch broke (a joined party's lease lapsed).
            CoordinatorLost: the server is unreachable or lost its state.
        """
        if token is not None and (not isinstance(token, str) or not token):
            raise TypeError(f"{self!r}: count_down(token) needs a non-empty str, got {token!r}")
        _, status, remaining, reason = await self._op(LATCH_DOWN, token or self.party)
        if status == "broken":
            raise BrokenBarrierError(f"{self!r} is broken: {reason}")
        if status == "over":
            raise ValueError(
                f"{self!r}: count_down({token or self.party!r}) would go below zero; "
                "create the latch with the number of count-downs it should expect"
            )
        return int(remaining)

    async def remaining(self) -> int:
        """Count-downs still needed before the latch opens (0 once open)."""
        _, _, remaining, _ = await self._op(LATCH_CHECK, "")
        return int(remaining)

    async def wait(self) -> None:
        """Wait until the latch is open (returns at once if it is).

        Raises:
            BrokenBarrierError: the latch broke before it opened, naming why.
            CoordinatorLost: the server is unreachable or lost its state.
        """
        connection = self.connection
        event = connection.watch(self.channel)
        try:
            while True:
                event.clear()
                _, status, remaining, reason = await self._op(LATCH_CHECK, "")
                if status == "broken":
                    raise BrokenBarrierError(f"{self!r} broke: {reason}")
                if remaining == 0:
                    return
                await connection.pause(event, connection.poll)
        finally:
            connection.unwatch(self.channel, event)
