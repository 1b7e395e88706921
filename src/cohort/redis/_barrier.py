"""``Barrier``: a cyclic barrier of parties in several processes, each under a lease."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from cohort._exceptions import BrokenBarrierError
from cohort._sync._barrier import BarrierStatistics
from cohort.redis._client import Connection, Primitive, Watch
from cohort.redis._lease import Renewer, join_party
from cohort.redis._scripts import (
    BARRIER_ARRIVE,
    BARRIER_BREAK,
    BARRIER_CHECK,
    BARRIER_JOIN,
    BARRIER_LEAVE,
    BARRIER_RELEASE,
    BARRIER_RENEW,
    BARRIER_RESET,
    BARRIER_STATS,
)

__all__ = ["Barrier"]


class Barrier(Primitive):
    """A cyclic barrier whose ``parties`` may live in different processes and machines.

    A party joins with ``async with barrier:`` (a lease of ``lease`` seconds,
    renewed in the background while the block runs), then calls
    ``await barrier.wait()`` once per generation; it returns the caller's
    arrival index (0 first). The optional ``action`` runs in the last arriver
    before the others are released, as for :class:`cohort.Barrier`.

    Nobody waits forever: a joined party whose lease lapses on the server (its
    process died, hung or lost its connection) breaks the barrier, and every
    waiter gets :class:`cohort.BrokenBarrierError` naming that party, within
    the lease plus two poll intervals. So do a failing action, a waiter
    cancelled before its generation completed, a party leaving its block with
    an exception, and ``abort()``. A broken barrier refuses ``wait()`` until
    ``reset()``. Every process must give the same ``parties``.

    Obtained from :meth:`cohort.redis.Coordinator.barrier`. One object is one
    party: create one per task that takes part.
    """

    kind = "barrier"

    def __init__(
        self,
        connection: Connection,
        name: str,
        parties: int,
        *,
        lease: float,
        action: Callable[[], Awaitable[object] | object] | None,
        party: str | None,
    ) -> None:
        super().__init__(connection, name)
        self.parties = parties
        self.party = party or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lease = lease
        self._action = action
        self._keys = [f"{self.tag}:state", f"{self.tag}:members", f"{self.tag}:arrived"]
        self._renewer: Renewer | None = None
        self._nonce = f"{uuid.uuid4().hex}-"  # arrival ids: this prefix and a count
        self._arrivals = 0

    def __repr__(self) -> str:
        return f"<cohort.redis.Barrier {self.name!r} parties={self.parties} party={self.party!r}>"

    async def _op(self, lua: str, *more: object) -> list[Any]:
        lease_ms = max(1, round(self._lease * 1000))
        args = [self.party, lease_ms, self.parties, self.channel, *(more or ("",))]
        try:
            return await self.run(lua, self._keys, args)
        except Exception as exc:
            if str(exc).startswith("COHORT_PARTIES"):
                raise ValueError(
                    f"{self!r}: {str(exc).split(' ', 1)[1]}; every process must give the same "
                    "parties"
                ) from None
            raise

    async def __aenter__(self) -> Self:
        if self._renewer is not None:
            raise RuntimeError(f"{self!r} is already joined: one object is one party")

        async def renew() -> bool:
            reply = await self._op(BARRIER_RENEW)
            return bool(reply[1])

        self._renewer = await join_party(self.name, self._lease, self._op(BARRIER_JOIN), renew)
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
        if exc is not None and not isinstance(exc, BrokenBarrierError):
            await asyncio.shield(self._op(BARRIER_BREAK, f"party {self.party} left: {exc!r}"))
        await asyncio.shield(self._op(BARRIER_LEAVE))

    async def wait(self) -> int:
        """Arrive and wait for the rest of this generation; return the arrival index.

        Raises:
            BrokenBarrierError: the barrier is broken, or broke while waiting
                (the message says why: which party's lease lapsed, the action's
                error, a cancelled waiter, ``abort()``).
            RuntimeError: the caller has not joined (``async with barrier:``).
            CoordinatorLost: the server is unreachable or lost its state.
        """
        if self._renewer is None:
            raise RuntimeError(f"{self!r}: join first, `async with barrier: await barrier.wait()`")
        connection = self.connection
        watch = connection.watch(self.channel)
        try:
            # Cancelled anywhere from here on, even while its arrival is on the wire
            # (counted or not, perhaps completing the generation), the party breaks the
            # barrier: it will not arrive again, and nobody may wait for it forever.
            try:
                # An id of this arrival: if the reply is lost and the call sent again, the
                # server answers the retry as it did the arrival, not as a new one.
                self._arrivals += 1
                _, status, gen, index, reason = await self._op(
                    BARRIER_ARRIVE,
                    "1" if self._action is not None else "",
                    f"{self._nonce}{self._arrivals}",
                )
                if status == "broken":
                    raise BrokenBarrierError(f"{self!r} is broken: {reason}; call reset() first")
                if status == "passed":
                    return int(index)
                if status == "action":
                    await self._run_action(gen)
                    return int(index)
                await self._outcome(watch, int(gen))
                return int(index)
            except asyncio.CancelledError:
                why = f"party {self.party} was cancelled while it waited"
                await asyncio.shield(self._op(BARRIER_BREAK, why))
                raise
        finally:
            connection.unwatch(self.channel, watch)

    async def _outcome(self, watch: Watch, gen: int) -> None:
        """Wait until generation ``gen`` passed (return) or broke (raise). The message that
        ends it says which; the state is read only when no such message came for a poll
        interval (a lost message, or a lapsed lease that no script noticed yet: reading
        the state makes the server notice) or the subscription was made again."""
        connection = self.connection
        loop = asyncio.get_running_loop()
        passed, broken = f"passed {gen}", f"broken {gen} "
        read_at = loop.time() + connection.poll  # not put off by other messages
        while True:
            if not watch.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(read_at):
                        await watch.wait()
            read = loop.time() >= read_at
            for message in watch.messages:
                if message == passed:
                    return
                if message is None:
                    read = True
                elif message.startswith(broken):
                    raise BrokenBarrierError(f"{self!r} broke: {message[len(broken) :]}")
            watch.clear()
            if read:
                read_at = loop.time() + connection.poll
                _, status, reason, _ = await self._op(BARRIER_CHECK, gen)
                if status == "passed":
                    return
                if status == "broken":
                    raise BrokenBarrierError(f"{self!r} broke: {reason}")

    async def _run_action(self, gen: int) -> None:
        action = self._action
        assert action is not None
        try:
            result = action()
            if inspect.isawaitable(result):
                await result
        except BaseException as exc:
            why = f"the action raised {exc!r} in party {self.party}"
            await asyncio.shield(self._op(BARRIER_BREAK, why))
            raise
        _, status, reason = await self._op(BARRIER_RELEASE, gen)
        if status == "broken":
            raise BrokenBarrierError(f"{self!r} broke while its action ran: {reason}")

    async def abort(self) -> None:
        """Break the barrier: every waiter, in every process, gets ``BrokenBarrierError``."""
        await self._op(BARRIER_BREAK, f"abort() was called by party {self.party}")

    async def reset(self) -> None:
        """Break the current generation if it has waiters, and start a fresh, unbroken one."""
        await self._op(BARRIER_RESET)

    async def statistics(self) -> BarrierStatistics:
        """A point-in-time view from the server, as :meth:`cohort.Barrier.statistics`:
        ``n_waiting`` counts the parties arrived in the current generation, in
        every process; ``generation`` the generations completed."""
        _, gen, arrived, broken, tripping, _members = await self._op(BARRIER_STATS)
        return BarrierStatistics(
            parties=self.parties,
            n_waiting=int(arrived),
            generation=int(gen),
            broken=bool(broken),
            action_running=bool(tripping),
        )
