"""The feeder's reading: the source, in chunks, into the first stage's channel.

Each item read gets the next source index (``Tally.read``). Items the source
yielded before it raised were read: they go in and end like the others.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, Iterator
from typing import Any

from cohort._core import _scopes
from cohort.pipeline._channel import CHUNK, Channel
from cohort.pipeline._tally import Tally

__all__ = ["read_async", "read_sync"]


async def read_sync(it: Iterator[Any], first: Channel, tally: Tally) -> None:
    """Read a plain iterable, ``CHUNK`` items at a time."""
    while True:
        vals: list[Any] = []
        try:
            # extend() keeps what the source yielded before it raised: those
            # items were read, so they go in and end like any other.
            vals.extend(itertools.islice(it, CHUNK))
        except (Exception, asyncio.CancelledError):
            if vals:
                await _put_read(first, vals, tally)
            raise
        if not vals:
            return
        await _put_read(first, vals, tally)


async def _put_read(first: Channel, vals: list[Any], tally: Tally) -> None:
    start = tally.read
    tally.read = start + len(vals)
    await first.put(list(range(start, tally.read)), vals)


async def read_async(source: AsyncIterable[Any], first: Channel, tally: Tally) -> None:
    """Read an async iterable: item by item while the first stage has room, else in chunks."""
    idxs: list[int] = []
    vals: list[Any] = []
    try:
        async for value in source:
            idxs.append(tally.read)
            vals.append(value)
            tally.read += 1
            # Hand items over at once while the first stage has room (it may be
            # idle); accumulate a chunk while it is busy.
            if len(idxs) >= CHUNK or first.size < first.capacity:
                await first.put(idxs, vals)
                idxs, vals = [], []
    except asyncio.CancelledError as exc:
        if idxs and _scopes.stray(exc, "the source") is not None:
            await first.put(idxs, vals)  # read before the source failed: they end too
        raise
    except Exception:
        if idxs:
            await first.put(idxs, vals)
        raise
    if idxs:
        await first.put(idxs, vals)
