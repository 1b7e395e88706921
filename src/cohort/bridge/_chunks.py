"""Chunked ``map``/``imap`` for every executor: chunk sizes, taking items, streaming results.

One streaming loop serves ``ProcessPool`` and ``DaskExecutor``: an executor
only says how to submit a chunk, wait for the next finished one, read its
result and cancel what is still in flight (:class:`ChunkRunner`). So both
bound what is in flight the same way and both cancel it when the consumer
leaves early.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from typing import Any, Generic, Protocol, TypeVar

from cohort._validate import check_count, check_flag

Token = TypeVar("Token")


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


def check_map_arguments(iterable: object, chunksize: object, ordered: object) -> None:
    """What every executor's ``map``/``imap`` checks at the call, before anything runs."""
    check_count("chunksize", chunksize, none=True)
    check_flag("ordered", ordered)
    check_iterable(iterable)


def check_iterable(iterable: object) -> None:
    """A clear error at the call when ``map``/``imap`` gets something it cannot iterate."""
    if isinstance(iterable, str | bytes):
        raise TypeError(
            f"map()/imap() got a {type(iterable).__name__} as the items, which would feed "
            "one character at a time; pass a list of them"
        )
    if not isinstance(iterable, Iterable | AsyncIterable):
        raise TypeError(f"map()/imap() need an iterable or async iterable, got {iterable!r}")


class ChunkRunner(Protocol, Generic[Token]):
    """What the streaming loop needs from an executor, for one ``map``/``imap``."""

    def submit(self, fn: Any, items: Sequence[Any]) -> Token:
        """Start computing ``[fn(x) for x in items]``; a token for the chunk."""
        ...

    async def next_done(self, inflight: collections.deque[Token], ordered: bool) -> Token:
        """Remove and return the next finished chunk (the oldest one if ``ordered``)."""
        ...

    async def result(self, token: Token) -> tuple[list[Any], BaseException | None, float | None]:
        """A finished chunk's values, the error that stopped it (after those values)
        and the seconds it took in the worker, if known. Raises if it failed as a whole."""
        ...

    async def cancel(self, tokens: list[Token]) -> None:
        """Stop the chunks still in flight (the consumer left or something failed)."""
        ...


async def stream_chunks(
    runner: ChunkRunner[Token],
    fn: Any,
    iterable: Iterable[Any] | AsyncIterable[Any],
    sizer: ChunkSizer,
    window: int,
    ordered: bool,
) -> AsyncGenerator[list[Any], None]:
    """Yield each chunk's results with at most ``window`` chunks in flight.

    Memory stays flat however long the input: it is read only as far as the
    window reaches. Whatever ends the loop (the end, an error, the consumer
    leaving, a cancellation), the chunks still in flight are cancelled.
    """
    take = taker(iterable)
    inflight: collections.deque[Token] = collections.deque()
    exhausted = False
    try:
        while True:
            while not exhausted and len(inflight) < window:
                items = await take(sizer.next())
                if items:
                    inflight.append(runner.submit(fn, items))
                else:
                    exhausted = True
            if not inflight:
                return
            token = await runner.next_done(inflight, ordered)
            values, failure, elapsed = await runner.result(token)
            if elapsed is not None:
                sizer.observe(len(values) + (failure is not None), elapsed)
            if values:
                yield values
            if failure is not None:
                raise failure
    finally:
        if inflight:
            await runner.cancel(list(inflight))


async def iterate_items(chunks: AsyncGenerator[list[Any], None]) -> AsyncGenerator[Any, None]:
    """``imap``: the items of each chunk; closing it closes the chunk stream at once."""
    async with contextlib.aclosing(chunks):
        async for values in chunks:
            for v in values:
                yield v


async def collect_items(chunks: AsyncGenerator[list[Any], None]) -> list[Any]:
    """``map``: every item, in whole chunks (no per-item await on the hot path)."""
    out: list[Any] = []
    async with contextlib.aclosing(chunks):
        async for values in chunks:
            out += values
    return out
