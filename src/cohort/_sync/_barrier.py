"""``Barrier``: a cyclic barrier with an optional action and dynamic parties.

Each waiter blocks on one plain future; the last arriver resolves them all
(no condition variable, no lock re-acquisition storm), so a generation costs
one future per party.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from cohort._exceptions import BrokenBarrierError
from cohort._observe._events import EVENTS
from cohort._validate import check_count

__all__ = ["Barrier", "BarrierStatistics"]

_get_running_loop = asyncio.get_running_loop  # one global lookup on hot paths


@dataclass(frozen=True, slots=True)
class BarrierStatistics:
    """A point-in-time view of a :class:`Barrier`."""

    parties: int
    """Arrivals that complete a generation."""
    n_waiting: int
    """Tasks blocked in the current generation."""
    generation: int
    """Generations completed so far (the index of the current one)."""
    broken: bool
    """Whether the barrier is broken (``wait()`` raises until ``reset()``)."""
    action_running: bool
    """Whether the last arriver of a generation is running the action."""


class Barrier:
    """A cyclic barrier: ``parties`` tasks meet, then all continue, generation after generation.

    ``await b.wait()`` returns the caller's arrival index in its generation
    (0 for the first, ``parties - 1`` for the last). The optional ``action``
    (sync or async, no arguments) runs once per generation in the last
    arriving task before anyone is released; tasks that arrive while an async
    action runs belong to the next generation.

    Nobody is left waiting forever: a waiter cancelled or timed out (cohort
    scope, ``asyncio.timeout``, anyio scope) before its generation completed,
    a failing action, or ``abort()`` breaks the barrier, and every other
    waiter of that generation gets :class:`cohort.BrokenBarrierError`. A broken
    barrier refuses ``wait()`` until ``reset()``. Once all parties arrived,
    the generation is complete: a waiter cancelled while the action runs or
    after release (before it resumed) breaks nothing, and ``abort()`` during
    an async action breaks the next generation, not the one being released.

    The last arriver does not block (with no action it returns at once), and
    an async action runs in it while the others wait. Actions of successive
    generations only overlap if more tasks than parties use the barrier and a
    whole new generation arrives while an action still runs.

    Parties can change between generations (Java's ``Phaser``):
    ``add_parties()`` to join, ``await arrive_and_leave()`` to arrive one last
    time without waiting and stop being counted.

    Args:
        parties: arrivals that complete a generation (>= 1).
        action: called (and awaited if it returns an awaitable) by the last
            arriver of each generation before the others are released. If it
            raises, the barrier breaks: the last arriver gets the action's
            error, the others ``BrokenBarrierError``.

    Example:
        ```python
        barrier = cohort.Barrier(len(shards), action=merge_partial_results)

        async def worker(shard: Shard) -> None:
            for step in range(steps):
                compute(shard, step)
                await barrier.wait()   # merge runs once, then all go on
        ```
    """

    __slots__ = (
        "_action",
        "_action_running",
        "_broken",
        "_generation",
        "_left",
        "_parties",
        "_waiters",
    )

    def __init__(
        self, parties: int, *, action: Callable[[], Awaitable[object] | object] | None = None
    ) -> None:
        self._parties = check_count("Barrier parties", parties)
        if action is not None and not callable(action):
            raise TypeError(f"Barrier action must be a callable or None, got {action!r}")
        self._action = action
        # The futures of the current generation, in arrival order. The list object
        # is swapped (never cleared) when a generation ends, so a waiter can tell
        # whether its own generation is still the current one by identity.
        self._waiters: list[asyncio.Future[int]] = []
        self._left = 0  # parties that arrived at the current generation and left
        self._generation = 0
        self._broken = False
        self._action_running = False

    def __repr__(self) -> str:
        state = " broken" if self._broken else ""
        return (
            f"<cohort.Barrier{state} parties={self._parties} "
            f"n_waiting={len(self._waiters)} generation={self._generation}>"
        )

    @property
    def parties(self) -> int:
        """Arrivals that complete a generation."""
        return self._parties

    @property
    def n_waiting(self) -> int:
        """Tasks blocked in the current generation."""
        return len(self._waiters)

    @property
    def broken(self) -> bool:
        """Whether the barrier is broken; ``reset()`` repairs it."""
        return self._broken

    async def wait(self) -> int:
        """Arrive and wait for the rest of this generation; return the arrival index.

        Raises:
            BrokenBarrierError: the barrier is broken, or broke while waiting.
            RuntimeError: every party left (``parties == 0``); call
                ``add_parties()`` first.
        """
        if self._broken or not self._parties:
            self._refuse("wait")
        waiters = self._waiters
        if len(waiters) + 1 >= self._parties:
            index = len(waiters) + self._left
            if self._action is None:
                self._trip(waiters)
            else:
                await self._trip_with_action(waiters, self._action)
            return index
        fut: asyncio.Future[int] = _get_running_loop().create_future()
        waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            # Cancelled while its generation still filled: break it, so that the
            # others do not wait for a party that will never come. Cancelled after
            # release (fut holds a result, the task had not resumed yet): nothing
            # to break, the generation is complete.
            if not fut.done() or fut.cancelled():
                fut.cancel()  # CancelledError thrown in by hand leaves fut pending
                if waiters is self._waiters:
                    self._break("a waiter was cancelled")
            raise

    async def arrive_and_leave(self) -> int:
        """Arrive at the current generation without waiting, then stop being a party.

        The generation completes as if the caller had waited (if it is the last
        arriver, it runs the action and releases the others); later generations
        need one party fewer. Returns the arrival index.

        Raises:
            BrokenBarrierError: the barrier is broken; the caller still stops
                being a party, so that a ``reset()`` barrier counts right.
            RuntimeError: there is no party left to remove.
        """
        if self._broken or not self._parties:
            if self._parties:
                self._parties -= 1
            self._refuse("arrive_and_leave")
        waiters = self._waiters
        index = len(waiters) + self._left
        self._parties -= 1
        if len(waiters) >= self._parties:
            if self._action is None:
                self._trip(waiters)
            else:
                await self._trip_with_action(waiters, self._action)
        else:
            self._left += 1
        return index

    def add_parties(self, n: int = 1) -> None:
        """Add ``n`` parties; the current generation then needs ``n`` more arrivals."""
        self._parties += check_count(f"{self!r}: add_parties(n)", n)

    def abort(self) -> None:
        """Break the barrier: every waiter gets ``BrokenBarrierError``, and so do later
        ``wait()`` calls until ``reset()``.

        A generation whose (async) action is already running is complete: it is
        released when the action returns.
        """
        self._break("abort() was called")

    def reset(self) -> None:
        """Break the current generation (its waiters get ``BrokenBarrierError``) and
        leave a fresh, unbroken barrier with the same parties."""
        if self._waiters:
            self._break("reset() was called")
        self._broken = False
        self._left = 0

    def statistics(self) -> BarrierStatistics:
        """Return parties, waiters, generation count and state."""
        return BarrierStatistics(
            parties=self._parties,
            n_waiting=len(self._waiters),
            generation=self._generation,
            broken=self._broken,
            action_running=self._action_running,
        )

    def _refuse(self, what: str) -> NoReturn:
        if self._broken:
            raise BrokenBarrierError(f"{self!r} is broken; call reset() before {what}()")
        raise RuntimeError(f"{self!r} has no parties left; call add_parties() before {what}()")

    def _start_generation(self, waiters: list[asyncio.Future[int]]) -> int:
        """The last party arrived: start the next generation before anything else runs."""
        # A waiter cancelled just before this arrival (its task has not run its
        # handler yet) was counted but will never pass: the generation breaks.
        for fut in waiters:
            if fut.cancelled():
                self._break("a waiter was cancelled")
                raise BrokenBarrierError(f"{self!r} broke: a waiter was cancelled")
        self._waiters = []
        left, self._left = self._left, 0
        return left

    def _trip(self, waiters: list[asyncio.Future[int]]) -> None:
        self._release(waiters, self._start_generation(waiters))

    async def _trip_with_action(
        self, waiters: list[asyncio.Future[int]], action: Callable[[], object]
    ) -> None:
        left = self._start_generation(waiters)
        self._action_running = True
        try:
            result = action()
            if inspect.isawaitable(result):
                await result
        except BaseException as exc:
            # The last arriver gets the action's error (cancellation included);
            # its generation and everyone already waiting for the next one get
            # BrokenBarrierError.
            self._break(f"the action raised {exc!r}", tripping=waiters)
            raise
        finally:
            self._action_running = False
        self._release(waiters, left)

    def _release(self, waiters: list[asyncio.Future[int]], left: int) -> None:
        self._generation += 1
        # Arrival indices count the parties that arrived and left before.
        for index, fut in enumerate(waiters, left):
            # Skips futures cancelled while an async action ran: their generation
            # was complete, so they break nothing.
            if not fut.done():
                fut.set_result(index)
        if EVENTS.on:
            EVENTS.log.debug("barrier generation tripped", barrier=repr(self), woken=len(waiters))

    def _break(self, reason: str, tripping: Sequence[asyncio.Future[int]] = ()) -> None:
        self._broken = True
        self._left = 0
        waiters, self._waiters = self._waiters, []
        for fut in (*tripping, *waiters):
            if not fut.done():
                # One instance per waiter: a shared one would collect every
                # waiter's traceback.
                fut.set_exception(BrokenBarrierError(f"{self!r} broke: {reason}"))
        if EVENTS.on:
            EVENTS.log.debug(
                "barrier broken",
                barrier=repr(self),
                reason=reason,
                waiters=len(tripping) + len(waiters),
            )
