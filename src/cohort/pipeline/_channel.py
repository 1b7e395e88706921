"""The bounded queue between two stages, moving items in chunks.

Items travel as chunks: two parallel lists, source indexes and values. A
chunk is put whole (a put waits only while the queue holds ``capacity`` items
or more, so the queue may briefly overshoot by one chunk: memory stays
bounded by capacity + one chunk per producer). A taker takes up to ``n``
items, splitting or merging chunks; the engine picks ``n`` so that the items
present are shared between the idle workers.

Every item taken gets a sequence number (its position in the queue's total
order, implicit: ``head_seq`` counts the items taken so far), which the
reorder window of an ordered stage uses.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["CHUNK", "Channel"]

Chunk = tuple[list[int], list[Any]]
CHUNK = 64  # most items moved at once: what a stage's worker takes, what the feeder puts


class Channel:
    """A bounded FIFO of items between stages (single event loop, not thread-safe)."""

    __slots__ = (
        "_chunks",
        "_getters",
        "_head",
        "_loop",
        "_putters",
        "_woken",
        "capacity",
        "closed",
        "error",
        "head_seq",
        "size",
    )

    def __init__(self, capacity: int, loop: asyncio.AbstractEventLoop) -> None:
        self._chunks: deque[Chunk] = deque()
        self._head = 0  # items of the first chunk already taken (no slicing per take)
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._woken = 0
        self._loop = loop
        self.capacity = capacity
        self.size = 0
        self.head_seq = 0
        self.closed = False
        self.error: BaseException | None = None

    def idle(self) -> int:
        """Takers waiting or just woken, plus the caller: how many share what is there."""
        return len(self._getters) + self._woken + 1

    def put_nowait(self, idxs: list[int], vals: list[Any]) -> None:
        self._chunks.append((idxs, vals))
        self.size += len(idxs)
        if self._getters:
            self._wake_getter()

    def _wake_getter(self) -> None:
        # One at a time: a taker that leaves items behind wakes the next one
        # (take_now), so a put does not wake takers that would find nothing.
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._woken += 1
                return

    async def put(self, idxs: list[int], vals: list[Any]) -> None:
        """Append a chunk, waiting while the queue is full."""
        while self.size >= self.capacity:
            fut = self._loop.create_future()
            self._putters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                # Workers are only cancelled when the whole run stops.
                if fut in self._putters:
                    self._putters.remove(fut)
                raise
        self.put_nowait(idxs, vals)
        putters = self._putters
        if putters and self.size < self.capacity:
            fut = putters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def wait_readable(self) -> None:
        """Wait until something is put or the channel closes."""
        fut = self._loop.create_future()
        self._getters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._woken -= 1
            elif fut in self._getters:
                self._getters.remove(fut)
            raise
        self._woken -= 1

    def take_now(self, n: int) -> tuple[int, list[int], list[Any]]:
        """Take up to ``n`` items (there must be some): (first sequence number, indexes, values)."""
        chunks = self._chunks
        idxs, vals = chunks[0]
        pos = self._head
        k = len(idxs) - pos
        if k > n:
            # Part of the first chunk: remember how far, rather than re-slicing the
            # rest at every take (slow stages take one item at a time).
            self._head = pos + n
            idxs = idxs[pos : pos + n]
            vals = vals[pos : pos + n]
            k = n
        else:
            chunks.popleft()
            self._head = 0
            if pos:
                idxs = idxs[pos:]
                vals = vals[pos:]
            while k < n and chunks:
                more_i, more_v = chunks[0]
                need = n - k
                if len(more_i) <= need:
                    chunks.popleft()
                    idxs.extend(more_i)
                    vals.extend(more_v)
                    k += len(more_i)
                else:
                    idxs.extend(more_i[:need])
                    vals.extend(more_v[:need])
                    self._head = need
                    k = n
        seq = self.head_seq
        self.head_seq = seq + k
        self.size -= k
        if self.size and self._getters:
            self._wake_getter()
        putters = self._putters
        if putters and self.size < self.capacity:
            fut = putters.popleft()
            if not fut.done():
                fut.set_result(None)
        return seq, idxs, vals

    def close(self, error: BaseException | None = None) -> None:
        """No more puts; takers drain what is left, then see the end (or ``error``)."""
        self.closed = True
        if error is not None and self.error is None:
            self.error = error
        getters = self._getters
        while getters:
            fut = getters.popleft()
            if not fut.done():
                fut.set_result(None)
                self._woken += 1
