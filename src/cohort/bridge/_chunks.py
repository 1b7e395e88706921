"""Chunking for ``map``/``imap``: how many items per chunk, and taking them from the input."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from typing import Any


class ChunkSizer:
    """Chooses chunk sizes: doubling until a chunk's cost is measured, then ~5 ms of work each.

    With a known length, the first chunk is 1/64 of a worker's share (so a wrong
    guess costs at most ~1.5% of balance) and no chunk exceeds a quarter of it,
    so every worker stays busy until the end.
    """

    TARGET = 0.005

    def __init__(self, fixed: int | None, total: int | None, workers: int) -> None:
        self.fixed = fixed
        if total:
            self.cap = max(1, math.ceil(total / (4 * workers)))
            self.next_guess = max(1, total // (64 * workers))
        else:
            self.cap = 8192
            self.next_guess = 1
        self.per_item: float | None = None

    def next(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.per_item is None:
            size = self.next_guess
            self.next_guess = min(self.cap, size * 2)
            return min(size, self.cap)
        return max(1, min(self.cap, int(self.TARGET / max(self.per_item, 1e-8))))

    def observe(self, n: int, elapsed: float) -> None:
        if n:
            cost = elapsed / n
            self.per_item = cost if self.per_item is None else 0.5 * (self.per_item + cost)


def taker(
    iterable: Iterable[Any] | AsyncIterable[Any],
) -> Callable[[int], Awaitable[Sequence[Any]]]:
    """``take(n)``: the next up-to-n items of a sync or async iterable.

    Lists, tuples and ranges are sliced rather than iterated: a slice of a range
    is a range, which pickles in a few bytes however many items it holds.
    """
    if type(iterable) in (list, tuple, range):
        seq: Sequence[Any] = iterable  # type: ignore[assignment]
        pos = 0

        async def take_slice(n: int) -> Sequence[Any]:
            nonlocal pos
            chunk = seq[pos : pos + n]
            pos += len(chunk)
            return chunk

        return take_slice
    if isinstance(iterable, AsyncIterable):
        ait = aiter(iterable)

        async def take_async(n: int) -> list[Any]:
            out: list[Any] = []
            async for x in ait:
                out.append(x)
                if len(out) >= n:
                    break
            return out

        return take_async
    it = iter(iterable)

    async def take(n: int) -> list[Any]:
        return list(itertools.islice(it, n))

    return take
