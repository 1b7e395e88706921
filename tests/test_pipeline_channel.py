"""The bounded queue between pipeline stages (cohort.pipeline._channel)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cohort.pipeline._channel import Channel
from cohort.testing import wait_all_tasks_blocked

pytestmark = pytest.mark.virtual_clock


async def test_take_now_spans_chunks_and_numbers_items_in_order() -> None:
    ch = Channel(100, asyncio.get_running_loop())
    ch.put_nowait([0, 1, 2], ["a", "b", "c"])
    ch.put_nowait([3, 4], ["d", "e"])
    assert ch.take_now(4) == (0, [0, 1, 2, 3], ["a", "b", "c", "d"])
    assert ch.take_now(4) == (4, [4], ["e"])
    assert (ch.size, ch.head_seq) == (0, 5)


async def test_a_full_channel_makes_put_wait_until_a_take() -> None:
    ch = Channel(2, asyncio.get_running_loop())
    await ch.put([0, 1], ["a", "b"])
    blocked = asyncio.ensure_future(ch.put([2], ["c"]))
    await wait_all_tasks_blocked()
    assert not blocked.done()
    ch.take_now(1)
    await blocked
    assert ch.size == 2


async def test_close_wakes_the_takers_and_keeps_the_first_error() -> None:
    ch = Channel(2, asyncio.get_running_loop())
    taker = asyncio.ensure_future(ch.wait_readable())
    await wait_all_tasks_blocked()
    first, second = ValueError("first"), ValueError("second")
    ch.close(first)
    ch.close(second)
    await taker
    assert ch.closed
    assert ch.error is first


async def test_a_cancelled_putter_leaves_no_waiter_behind() -> None:
    ch = Channel(1, asyncio.get_running_loop())
    await ch.put([0], ["a"])
    putter = asyncio.ensure_future(ch.put([1], ["b"]))
    await wait_all_tasks_blocked()
    putter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await putter
    ch.take_now(1)
    await ch.put([2], ["c"])  # room again, and nobody stale in the way
    assert ch.take_now(5) == (1, [2], ["c"])


@given(st.lists(st.integers(1, 10), min_size=1, max_size=20), st.integers(1, 12))
def test_every_item_comes_out_once_in_order(sizes: list[int], take: int) -> None:
    async def run() -> list[int]:
        ch = Channel(1000, asyncio.get_running_loop())
        n = 0
        for size in sizes:
            ch.put_nowait(list(range(n, n + size)), list(range(n, n + size)))
            n += size
        out: list[int] = []
        while ch.size:
            seq, idxs, vals = ch.take_now(take)
            assert seq == len(out)
            assert idxs == vals
            out += idxs
        return out

    assert asyncio.run(run()) == list(range(sum(sizes)))
