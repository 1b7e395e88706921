"""cohort.RWLock: shared readers, one writer, writer preference, cancellation safety."""

from __future__ import annotations

import asyncio

import pytest

import cohort

BOUND = 10.0  # fails the test instead of hanging it; no duration is asserted


async def _yield(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_readers_share_and_a_writer_waits_for_all_of_them() -> None:
    rw = cohort.RWLock()
    order: list[str] = []
    async with rw.reader, rw.reader:
        assert rw.statistics().readers == 2

        async def write() -> None:
            async with rw.writer:
                order.append("writer")

        writer = asyncio.create_task(write())
        await _yield()
        assert rw.statistics().writers_waiting == 1
        order.append("readers leave")
    await writer
    assert order == ["readers leave", "writer"]
    assert rw.statistics() == cohort.RWLockStatistics(0, False, 0, 0)


async def test_a_waiting_writer_goes_before_readers_that_come_after_it() -> None:
    rw = cohort.RWLock()
    order: list[str] = []

    async def use(side: str) -> None:
        async with getattr(rw, side):
            order.append(side)
            await _yield(1)

    async with rw.reader:
        tasks = [asyncio.create_task(use(s)) for s in ("writer", "reader", "writer", "reader")]
        await _yield()
        assert rw.statistics().readers_waiting == 2  # held off by the waiting writers
    await asyncio.gather(*tasks)
    assert order == ["writer", "writer", "reader", "reader"]


async def test_a_writer_cancelled_while_waiting_lets_the_readers_in() -> None:
    rw = cohort.RWLock()
    async with rw.reader:

        async def write() -> None:
            async with rw.writer:
                pytest.fail("the writer was cancelled before the readers left")

        writer = asyncio.create_task(write())
        await _yield()
        entered = asyncio.Event()

        async def read() -> None:
            async with rw.reader:
                entered.set()

        reader = asyncio.create_task(read())
        await _yield()
        assert not entered.is_set()
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
        async with asyncio.timeout(BOUND):
            await reader  # admitted while the first reader still holds
    assert rw.statistics() == cohort.RWLockStatistics(0, False, 0, 0)


async def test_a_grant_made_as_its_waiter_is_cancelled_is_handed_on() -> None:
    rw = cohort.RWLock()
    got: list[str] = []

    async def use(side: str, name: str) -> None:
        async with getattr(rw, side):
            got.append(name)

    async with rw.writer:
        first = asyncio.create_task(use("writer", "first"))
        second = asyncio.create_task(use("writer", "second"))
        await _yield()
    # The release granted `first`; cancel it before it runs: the grant goes to `second`.
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    async with asyncio.timeout(BOUND):
        await second
    assert got == ["second"]
    assert rw.statistics() == cohort.RWLockStatistics(0, False, 0, 0)


async def test_a_timed_out_reader_leaves_nothing_behind() -> None:
    rw = cohort.RWLock()
    async with rw.writer:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0), rw.reader:
                pass
        assert rw.statistics().readers_waiting == 0
    async with rw.reader:
        assert rw.statistics().readers == 1


def test_release_without_holding_is_an_error() -> None:
    rw = cohort.RWLock()
    with pytest.raises(RuntimeError, match="not held"):
        rw._release_write()
    with pytest.raises(RuntimeError, match="not held"):
        rw._release_read()
