"""cohort.redis.Semaphore against a real redis-server: at most n holders, per-permit leases."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from _util import popen_python
from cohort.redis import Coordinator, LeaseLost

FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 1.0}
BOUND = 10.0
PARTY = Path(__file__).with_name("_redis_party.py")


def coordinator(url: str, namespace: str, **kw: float) -> Coordinator:
    return Coordinator(url, namespace=namespace, **{**FAST, **kw})


async def test_never_more_than_permits_holders_across_coordinators(
    redis_url: str, namespace: str
) -> None:
    coords = [coordinator(redis_url, namespace) for _ in range(3)]
    inside, most, tokens = 0, 0, []

    async def user(coord: Coordinator) -> None:
        nonlocal inside, most
        for _ in range(4):
            async with coord.semaphore("gpu", 2) as lease:
                inside += 1
                most = max(most, inside)
                tokens.append(lease.token)
                for _ in range(3):
                    await asyncio.sleep(0)
                inside -= 1

    async with asyncio.timeout(BOUND):
        for c in coords:
            await c.__aenter__()
        try:
            await asyncio.gather(*(user(c) for c in coords for _ in range(2)))
        finally:
            for c in coords:
                await c.__aexit__(None, None, None)
    assert most == 2
    assert len(tokens) == 24
    assert len(set(tokens)) == 24  # each grant its own fencing token


async def test_a_killed_holders_permit_comes_back_after_its_lease(
    redis_url: str, namespace: str
) -> None:
    with popen_python(
        str(PARTY), redis_url, namespace, "semaphore", "gpu", "1", "0.3", "0.05",
        stdout=subprocess.PIPE,
    ) as dead:  # fmt: skip
        try:
            assert dead.stdout is not None
            first = json.loads(dead.stdout.readline())
            assert first["op"] == "acquired"
        finally:
            dead.send_signal(signal.SIGKILL)
    async with (
        coordinator(redis_url, namespace, lease=5) as coord,
        asyncio.timeout(BOUND),
        coord.semaphore("gpu", 1) as lease,
    ):
        assert lease.token > first["token"]
        assert await coord.semaphore("gpu", 1).holders() == 1


async def test_losing_a_permits_lease_cancels_the_block_and_raises_lease_lost(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as coord:
        with pytest.raises(LeaseLost, match="lapsed on the server"):
            async with asyncio.timeout(BOUND), coord.semaphore("gpu", 2):
                other = aioredis.Redis.from_url(redis_url)
                await other.delete(f"{{cohort:{namespace}:semaphore:gpu}}:owner")
                await other.aclose()
                await asyncio.Event().wait()  # cancelled by the loss, not by the timeout


async def test_a_cancelled_waiter_leaves_the_semaphore_working(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a:
        sem = a.semaphore("gpu", 1)
        async with sem:
            waiter = asyncio.create_task(sem.__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with asyncio.timeout(BOUND), sem as lease:
            assert lease.token > 0
            assert await sem.holders() == 1
        assert await sem.holders() == 0


async def test_permits_must_agree_across_processes(redis_url: str, namespace: str) -> None:
    async with coordinator(redis_url, namespace) as a:
        async with a.semaphore("gpu", 2):
            pass
        with pytest.raises(ValueError, match="same permits"):
            async with a.semaphore("gpu", 3):
                pass
    with pytest.raises(ValueError, match="Semaphore permits"):
        a.semaphore("x", 0)
    with pytest.raises(ValueError, match="Semaphore lease"):
        a.semaphore("x", 1, lease=0)
