"""cohort.redis.RWLock against a real redis-server: shared readers, one writer,
writer preference, a cancelled waiting writer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from cohort.redis import Coordinator

FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 1.0}
BOUND = 10.0


def coordinator(url: str, namespace: str, **kw: float) -> Coordinator:
    return Coordinator(url, namespace=namespace, **{**FAST, **kw})


async def _until_writers_wait(url: str, namespace: str, n: int) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        while await client.zcard(f"{{cohort:{namespace}:rwlock:cfg}}:writers") != n:
            await asyncio.sleep(0.005)
    finally:
        await client.aclose()


async def test_readers_share_and_a_writer_waits_for_all_of_them(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        order: list[str] = []
        async with asyncio.timeout(BOUND):
            async with a.rwlock("cfg").reader as r1, b.rwlock("cfg").reader as r2:
                assert r1.token != r2.token  # both hold at once
                writer = asyncio.create_task(_write(b, order))
                await _until_writers_wait(redis_url, namespace, 1)
                order.append("readers leave")
            await writer
        assert order == ["readers leave", "writer"]


async def _write(coord: Coordinator, order: list[str]) -> int:
    async with coord.rwlock("cfg").writer as lease:
        order.append("writer")
        return lease.token


async def test_a_waiting_writer_goes_before_readers_that_come_after_it(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        order: list[str] = []

        async def read(name: str) -> None:
            async with b.rwlock("cfg").reader:
                order.append(name)

        async with asyncio.timeout(BOUND):
            async with a.rwlock("cfg").reader:
                writer = asyncio.create_task(_write(b, order))
                await _until_writers_wait(redis_url, namespace, 1)
                late = asyncio.create_task(read("late reader"))
                for _ in range(5):
                    await asyncio.sleep(0)
                assert not late.done()
                order.append("first reader leaves")
            await asyncio.gather(writer, late)
        assert order == ["first reader leaves", "writer", "late reader"]


async def test_a_writer_cancelled_while_waiting_lets_the_readers_in(
    redis_url: str, namespace: str
) -> None:
    # poll=60, lease=60: only the wake-up sent by the cancelled writer can admit the reader
    # within the bound (and nothing re-marks the lock as waited on behind the test's back).
    slow = {"poll": 60.0, "lease": 60.0}
    async with (
        coordinator(redis_url, namespace, **slow) as a,
        coordinator(redis_url, namespace, **slow) as b,
    ):
        client = aioredis.Redis.from_url(redis_url)
        waiting = f"{{cohort:{namespace}:rwlock:cfg}}:waiting"
        try:
            async with asyncio.timeout(BOUND), a.rwlock("cfg").reader:
                writer = asyncio.create_task(_write(a, []))
                await _until_writers_wait(redis_url, namespace, 1)
                await client.delete(waiting)
                order: list[str] = []
                reader = asyncio.create_task(_read(b, order))
                while not await client.exists(waiting):  # the reader was refused
                    await asyncio.sleep(0.005)
                assert not reader.done()
                writer.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await writer
                await reader  # admitted while the first reader still holds
                assert order == ["reader"]
        finally:
            await client.aclose()


async def _read(coord: Coordinator, order: list[str]) -> None:
    async with coord.rwlock("cfg").reader:
        order.append("reader")


async def test_writers_exclude_each_other_with_growing_tokens(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        order: list[str] = []
        async with asyncio.timeout(BOUND):
            tokens = await asyncio.gather(*(_write(c, order) for c in (a, b, a, b)))
        assert len(set(tokens)) == 4
