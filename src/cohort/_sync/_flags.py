"""``EventFlags``: a group of named flags with AND/OR waits, as in RTOS event-flag groups.

Semantics follow ThreadX ``tx_event_flags_get``, FreeRTOS
``xEventGroupWaitBits``/``xEventGroupSync`` and uC/OS-III ``OSFlagPend``.

How it stays cheap: the state is one int (a bit per name). Waiters are indexed
by bit so that ``set()`` and ``clear()`` only look at waiters that can change:

* an OR waiter (``wait_any``, ``wait_clear_any``) is listed under every bit it
  names: any change of one of them satisfies it;
* an AND waiter (``wait_all``, ``wait_clear_all``) is listed under one bit
  that still blocks it (a clear bit for ``wait_all``, a set bit for
  ``wait_clear_all``). Only a change of that bit can satisfy it; if others
  still block it, it moves to one of those (the "watched literal" trick of
  SAT solvers). ``clear()`` never touches ``wait_all`` waiters and ``set()``
  never touches ``wait_clear_*`` waiters;
* a wait for one flag that does not consume (the plain-event case) is a bare
  future in a per-bit dict: setting the bit releases them all unevaluated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from cohort._observe._events import EVENTS

__all__ = ["EventFlags", "EventFlagsStatistics"]

_get_running_loop = asyncio.get_running_loop  # one global lookup on hot paths

# Waiter modes.
_ALL_SET = 0
_ANY_SET = 1
_ALL_CLEAR = 2
_ANY_CLEAR = 3

_Bucket = dict["_Waiter", None]  # insertion-ordered set: FIFO per flag, O(1) removal


@dataclass(frozen=True, slots=True)
class EventFlagsStatistics:
    """A point-in-time view of an :class:`EventFlags` group."""

    names: tuple[str, ...]
    """Every flag of the group, in declaration order."""
    set_flags: frozenset[str]
    """The flags set now."""
    n_waiting: int
    """Tasks blocked in a wait (or ``sync``) on the group."""


class _Waiter:
    __slots__ = ("batch", "consume", "consumed", "fut", "gave_up", "mask", "mode", "watch")

    # Set when released as a consumer: consumed (the bits it cleared), batch (the
    # consumers released by the same set()) and gave_up. Left unset otherwise,
    # which keeps the per-wait cost down.
    consumed: int
    batch: list[_Waiter]
    gave_up: bool

    def __init__(
        self, fut: asyncio.Future[frozenset[str]], mask: int, mode: int, consume: bool
    ) -> None:
        self.fut = fut
        self.mask = mask
        self.mode = mode
        self.consume = consume
        self.watch = 0  # the bits it is listed under; 0 once it left the index


class _Flag:
    """One flag: its bit and its plain waiters (single-flag, non-consuming set-waits)."""

    __slots__ = ("bit", "waiters")

    def __init__(self, bit: int) -> None:
        self.bit = bit
        # Swapped for a fresh dict when the flag is set: a cancelled waiter's
        # pop() then misses harmlessly.
        self.waiters: dict[asyncio.Future[frozenset[str]], None] = {}


class EventFlags:
    """A group of named flags that tasks can set, clear and wait on in combinations.

    The names are fixed at construction (a typo is a ``KeyError`` naming the
    known flags, not a flag nobody ever sets). Waits return the snapshot of set
    flags taken at the moment they were satisfied, before any clearing.

    * ``wait_all`` (AND) is atomic: only a state in which every name is set at
      once satisfies it, never names seen set at different moments.
    * ``clear=True`` consumes. One ``set()`` is evaluated against one snapshot:
      every waiter it satisfies is released, several consuming waiters of the
      same flag included (ThreadX); the flags they consumed are cleared
      afterwards. ``wait_all`` consumes all its names; ``wait_any`` consumes
      the names it asked for that were set in the snapshot (the others were
      clear anyway). Flags are not a queue: for exactly-one-consumer, use a
      queue or a semaphore.
    * A waiter cancelled or timed out (cohort scope, ``asyncio.timeout``)
      consumes nothing and leaves nothing behind; one satisfied but cancelled
      before it resumed gives back what it consumed (those flags are set
      again), unless another waiter released by the same ``set()`` consumed
      them too and did resume.
    * ``set()`` and ``clear()`` cost grows with the waiters they can affect,
      not with all waiters. Waiters released together resume in no promised
      order (FIFO among the waits of one kind on one flag).
    * A wait already satisfied returns at once, without yielding to the loop
      (as ``asyncio.Event.wait`` does). Timeouts come from scopes around the
      wait; there is no ``timeout=`` argument.

    Args:
        *names: the flag names (at least one, no duplicates); all start clear.

    Raises:
        ValueError: no names, or a name given twice.

    Example:
        ```python
        flags = cohort.EventFlags("config", "db", "cache")

        async def start() -> None:
            flags.set("config")
            ...

        await flags.wait_all("config", "db")            # both set at once
        seen = await flags.wait_any("db", "cache", clear=True)
        ```
    """

    __slots__ = (
        "_bit_of",
        "_cache",
        "_flags",
        "_names",
        "_on_clear",
        "_on_set",
        "_single",
        "_state",
    )

    def __init__(self, *names: str) -> None:
        if not names:
            raise ValueError("EventFlags needs at least one flag name, e.g. EventFlags('ready')")
        bad = [name for name in names if not isinstance(name, str)]
        if bad:
            raise TypeError(
                f"EventFlags takes flag names (str), got {bad[0]!r}: "
                "write EventFlags('ready', 'done')"
            )
        if len(set(names)) != len(names):
            dupes = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"EventFlags names must be unique; given more than once: {dupes}")
        self._names = names
        self._bit_of = {name: 1 << i for i, name in enumerate(names)}
        # ("name",) -> bit: the fast paths look up their *names tuple directly.
        self._flags = [_Flag(bit) for bit in self._bit_of.values()]  # by bit position
        # ("name",) -> its _Flag: the fast paths look up their *names tuple as is.
        self._single: dict[tuple[str, ...], _Flag] = {
            (name,): flag for name, flag in zip(names, self._flags, strict=True)
        }
        self._state = 0
        # Waiters by bit (see the module docstring); the plain single-flag
        # waits are in self._flags[i].waiters.
        self._on_set: dict[int, _Bucket] = {}
        self._on_clear: dict[int, _Bucket] = {}
        self._cache: tuple[int, frozenset[str]] = (0, frozenset())

    def __repr__(self) -> str:
        state = self._state
        on = ", ".join(n for n in self._names if state & self._bit_of[n])
        off = ", ".join(n for n in self._names if not state & self._bit_of[n])
        return f"<cohort.EventFlags set=[{on}] clear=[{off}] n_waiting={self._count_waiting()}>"

    @property
    def names(self) -> tuple[str, ...]:
        """Every flag name, in declaration order."""
        return self._names

    # -- state -------------------------------------------------------------

    def set(self, *names: str) -> None:
        """Set flags and release every waiter the new state satisfies.

        Raises:
            KeyError: an unknown name (the message lists the known ones).
            ValueError: no names.
        """
        self._set_bits(self._mask(names, "set"))

    def clear(self, *names: str) -> None:
        """Clear flags and release the ``wait_clear_*`` waiters this satisfies.

        Raises:
            KeyError: an unknown name (the message lists the known ones).
            ValueError: no names (to clear every flag: ``clear(*flags.names)``).
        """
        self._clear_bits(self._mask(names, "clear"))

    def is_set(self, name: str) -> bool:
        """Whether the flag ``name`` is set."""
        return bool(self._state & self._mask((name,), "is_set"))

    def snapshot(self) -> frozenset[str]:
        """The names of the flags set now."""
        return self._names_of(self._state)

    def statistics(self) -> EventFlagsStatistics:
        """Return the names, the flags set and how many tasks wait."""
        return EventFlagsStatistics(self._names, self.snapshot(), self._count_waiting())

    # -- waits -------------------------------------------------------------

    async def wait_all(self, *names: str, clear: bool = False) -> frozenset[str]:
        """Wait until every one of ``names`` is set at the same moment.

        Args:
            *names: the flags to wait for (at least one).
            clear: consume: clear ``names`` once satisfied (also on an
                immediate match).

        Returns:
            The set flags at the moment the wait was satisfied, before clearing.
        """
        flag = self._single.get(names)
        if flag is None or clear or self._state & flag.bit:
            return await self._wait_for(names, _ALL_SET, clear, "wait_all")
        # One flag, clear, not consuming: the plain-event fast path, inlined
        # (a nested coroutine would cost more than the rest of the wait).
        fut: asyncio.Future[frozenset[str]] = _get_running_loop().create_future()
        flag.waiters[fut] = None
        try:
            return await fut
        except asyncio.CancelledError:
            # Still listed only if cancelled while waiting.
            flag.waiters.pop(fut, None)
            raise

    async def wait_any(self, *names: str, clear: bool = False) -> frozenset[str]:
        """Wait until at least one of ``names`` is set.

        Args:
            *names: the flags to wait for (at least one).
            clear: consume: clear those of ``names`` that are set in the
                snapshot that satisfied the wait.

        Returns:
            The set flags at the moment the wait was satisfied, before clearing.
        """
        flag = self._single.get(names)
        if flag is None or clear or self._state & flag.bit:
            return await self._wait_for(names, _ANY_SET, clear, "wait_any")
        # One flag, clear, not consuming: the plain-event fast path, inlined
        # (a nested coroutine would cost more than the rest of the wait).
        fut: asyncio.Future[frozenset[str]] = _get_running_loop().create_future()
        flag.waiters[fut] = None
        try:
            return await fut
        except asyncio.CancelledError:
            # Still listed only if cancelled while waiting.
            flag.waiters.pop(fut, None)
            raise

    async def wait_clear_all(self, *names: str) -> frozenset[str]:
        """Wait until every one of ``names`` is clear at the same moment; return the snapshot."""
        mask = self._mask(names, "wait_clear_all")
        if not self._state & mask:
            return self._names_of(self._state)
        return await self._wait(mask, _ALL_CLEAR, False)

    async def wait_clear_any(self, *names: str) -> frozenset[str]:
        """Wait until at least one of ``names`` is clear; return the snapshot."""
        mask = self._mask(names, "wait_clear_any")
        if self._state & mask != mask:
            return self._names_of(self._state)
        return await self._wait(mask, _ANY_CLEAR, False)

    async def sync(
        self, *, set: str | Iterable[str], wait_all: str | Iterable[str], clear: bool = True
    ) -> frozenset[str]:
        """Set flags and wait for all of ``wait_all`` in one atomic step (a rendezvous).

        Like FreeRTOS ``xEventGroupSync``: each task sets its own flag and waits
        for everyone's; the ``set`` that completes the group releases every
        task of the rendezvous against the same snapshot, and (``clear=True``,
        the default) the ``wait_all`` flags are then cleared so the rendezvous
        can be used again.

        A caller cancelled while it waits leaves its own ``set`` flags set (they
        were set before it blocked, as in FreeRTOS) and consumes nothing.

        Returns:
            The set flags at the moment the rendezvous completed, before clearing.

        Example:
            ```python
            flags = cohort.EventFlags("a", "b", "c")
            # in task a:
            await flags.sync(set="a", wait_all=("a", "b", "c"))
            ```
        """
        set_bits = self._mask(_as_names(set), "sync")
        mask = self._mask(_as_names(wait_all), "sync")
        if (self._state | set_bits) & mask == mask:
            snap = self._set_bits(set_bits, mask if clear else 0)
            return self._names_of(snap)
        self._set_bits(set_bits)
        return await self._wait(mask, _ALL_SET, clear)

    # -- internals ---------------------------------------------------------

    def _mask(self, names: tuple[str, ...], what: str) -> int:
        bit_of = self._bit_of
        if len(names) == 1 and (bit := bit_of.get(names[0])) is not None:
            return bit
        if not names:
            raise ValueError(f"{self!r}: {what}() needs at least one flag name")
        mask = 0
        for name in names:
            bit = bit_of.get(name)
            if bit is None:
                raise KeyError(
                    f"{self!r} has no flag {name!r}; known flags: {', '.join(self._names)}"
                )
            mask |= bit
        return mask

    def _count_waiting(self) -> int:
        """Tasks still waiting (cancelled ones not yet unlisted excluded); O(waiters)."""
        futs = {f for flag in self._flags for f in flag.waiters}
        for index in (self._on_set, self._on_clear):
            futs.update(w.fut for bucket in index.values() for w in bucket)
        return sum(not f.done() for f in futs)

    def _names_of(self, bits: int) -> frozenset[str]:
        cached_bits, frozen = self._cache
        if cached_bits != bits:
            frozen = frozenset(n for n, bit in self._bit_of.items() if bits & bit)
            self._cache = (bits, frozen)
        return frozen

    def _take_now(self, state: int, consume: int) -> frozenset[str]:
        """An immediate match: snapshot first, then consume."""
        snap = self._names_of(state)
        if consume:
            self._clear_bits(consume)
        return snap

    async def _wait_for(
        self, names: tuple[str, ...], mode: int, consume: bool, what: str
    ) -> frozenset[str]:
        """``wait_all``/``wait_any`` beyond the fast path: any names, consuming or not."""
        mask = self._mask(names, what)
        state = self._state
        if mode == _ALL_SET:
            if state & mask == mask:
                return self._take_now(state, mask if consume else 0)
        elif state & mask:
            return self._take_now(state, state & mask if consume else 0)
        return await self._wait(mask, mode, consume)

    async def _wait(self, mask: int, mode: int, consume: bool) -> frozenset[str]:
        fut: asyncio.Future[frozenset[str]] = _get_running_loop().create_future()
        waiter = _Waiter(fut, mask, mode, consume)
        state = self._state
        if mode == _ALL_SET:
            blocking = mask & ~state
            self._index(waiter, blocking & -blocking, self._on_set)
        elif mode == _ALL_CLEAR:
            blocking = mask & state
            self._index(waiter, blocking & -blocking, self._on_clear)
        else:
            self._index(waiter, mask, self._on_set if mode == _ANY_SET else self._on_clear)
        try:
            return await fut
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise

    def _index(self, waiter: _Waiter, bits: int, index: dict[int, _Bucket]) -> None:
        waiter.watch = bits
        while bits:
            bit = bits & -bits
            bits ^= bit
            bucket = index.get(bit)
            if bucket is None:
                index[bit] = {waiter: None}
            else:
                bucket[waiter] = None

    def _unlist(self, waiter: _Waiter, bits: int, index: dict[int, _Bucket]) -> None:
        """Take ``waiter`` out of the buckets of ``bits``."""
        while bits:
            bit = bits & -bits
            bits ^= bit
            bucket = index.get(bit)
            if bucket is not None:
                bucket.pop(waiter, None)

    def _abandon(self, waiter: _Waiter) -> None:
        """A waiting task was cancelled: leave nothing behind, give back what it consumed."""
        if waiter.watch:
            # Still waiting: nothing was consumed.
            index = self._on_clear if waiter.mode >= _ALL_CLEAR else self._on_set
            self._unlist(waiter, waiter.watch, index)
            waiter.watch = 0
            return
        if not waiter.consume or waiter.fut.cancelled():
            return
        # Released and consuming, but cancelled before it resumed: give back the
        # flags that no other consumer of the same set() still holds.
        waiter.gave_up = True
        held = 0
        for other in waiter.batch:
            if not other.gave_up:
                held |= other.consumed
        if give_back := waiter.consumed & ~held:
            self._set_bits(give_back)

    def _set_bits(self, bits: int, consume: int = 0) -> int:
        """Set ``bits``, release what the snapshot satisfies, then clear what was consumed.

        ``consume`` adds the caller's own consumption (``sync``). Returns the snapshot.
        """
        old = self._state
        snap = old | bits
        self._state = snap
        fresh = bits & ~old
        woken = 0
        if fresh:
            woken = self._release_plain(fresh, snap)
        if fresh and self._on_set:
            released, consumed = self._release_on_set(fresh, snap)
            woken += released
            consume |= consumed
        if consume:
            self._state = snap & ~consume
            # Only bits that were set before this call went from set to clear;
            # the ones set and consumed in this same step look unchanged.
            if gone := consume & old:
                woken += self._release_on_clear(gone)
        if EVENTS.on:
            EVENTS.log.debug(
                "event flags set",
                flags=repr(self),
                names=sorted(self._names_of(bits)),
                consumed=sorted(self._names_of(consume)),
                woken=woken,
            )
        return snap

    def _release_plain(self, fresh: int, snap: int) -> int:
        """Release the plain waiters of the ``fresh`` flags: all of them, unevaluated."""
        flags = self._flags
        frozen: frozenset[str] | None = None
        woken = 0
        while fresh:
            bit = fresh & -fresh
            fresh ^= bit
            flag = flags[bit.bit_length() - 1]
            waiters = flag.waiters
            if waiters:
                flag.waiters = {}
                if frozen is None:
                    frozen = self._names_of(snap)
                woken += len(waiters)
                for fut in waiters:
                    if fut.done():  # cancelled: its task will find it unlisted
                        woken -= 1
                    else:
                        fut.set_result(frozen)
        return woken

    def _release_on_set(self, fresh: int, snap: int) -> tuple[int, int]:
        """Release the set-waiters listed under ``fresh`` bits that ``snap`` satisfies.

        Returns how many were released and the bits they consume.
        """
        on_set = self._on_set
        frozen = self._names_of(snap)
        consumers: list[_Waiter] = []
        woken = consume = 0
        while fresh:
            bit = fresh & -fresh
            fresh ^= bit
            bucket = on_set.pop(bit, None)
            if not bucket:
                continue
            for waiter in bucket:
                mask = waiter.mask
                if waiter.mode == _ANY_SET or snap & mask == mask or waiter.fut.done():
                    if waiter.watch != bit:
                        self._unlist(waiter, waiter.watch ^ bit, on_set)
                    waiter.watch = 0
                    fut = waiter.fut
                    # Done while listed means cancelled (its task has not run
                    # _abandon yet): dropped, without a result.
                    if not fut.done():
                        fut.set_result(frozen)
                        woken += 1
                        if waiter.consume:
                            waiter.consumed = mask & snap
                            waiter.gave_up = False
                            consume |= waiter.consumed
                            consumers.append(waiter)
                else:  # an AND waiter still blocked: watch another missing bit
                    blocking = mask & ~snap
                    self._index(waiter, blocking & -blocking, on_set)
        for waiter in consumers:
            waiter.batch = consumers
        return woken, consume

    def _clear_bits(self, bits: int) -> None:
        old = self._state
        self._state = old & ~bits
        woken = 0
        if (gone := old & bits) and self._on_clear:
            woken = self._release_on_clear(gone)
        if EVENTS.on:
            EVENTS.log.debug(
                "event flags cleared",
                flags=repr(self),
                names=sorted(self._names_of(bits)),
                woken=woken,
            )

    def _release_on_clear(self, gone: int) -> int:
        """Release the clear-waiters listed under ``gone`` bits that the state satisfies."""
        on_clear = self._on_clear
        snap = self._state
        frozen = self._names_of(snap)
        woken = 0
        while gone:
            bit = gone & -gone
            gone ^= bit
            bucket = on_clear.pop(bit, None)
            if not bucket:
                continue
            for waiter in bucket:
                if waiter.mode == _ANY_CLEAR or not snap & waiter.mask or waiter.fut.done():
                    if waiter.watch != bit:
                        self._unlist(waiter, waiter.watch ^ bit, on_clear)
                    waiter.watch = 0
                    fut = waiter.fut
                    if not fut.done():  # else cancelled while listed: dropped
                        fut.set_result(frozen)
                        woken += 1
                else:  # an AND waiter still blocked: watch another set bit
                    blocking = waiter.mask & snap
                    self._index(waiter, blocking & -blocking, on_clear)
        return woken


def _as_names(names: str | Iterable[str]) -> tuple[str, ...]:
    return (names,) if isinstance(names, str) else tuple(names)
