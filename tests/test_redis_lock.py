"""cohort.redis.Lock against a real redis-server: leases, fencing tokens, lost leases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

import cohort
from _redis_server import RedisServer
from cohort.redis import Coordinator, LeaseLost

# Short leases and polls keep the suite fast; every wait is bounded by a timeout
# that fails the test instead of hanging it (no durations are asserted).
FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 1.0}
BOUND = 10.0


def coordinator(url: str, namespace: str, **kw: float) -> Coordinator:
    return Coordinator(url, namespace=namespace, **{**FAST, **kw})


async def test_each_grant_carries_a_larger_fencing_token(redis_url: str, namespace: str) -> None:
    async with coordinator(redis_url, namespace) as coord:
        lock = coord.lock("db")
        tokens = []
        for _ in range(5):
            async with lock as lease:
                tokens.append(lease.token)
                assert not lease.lost
    assert tokens == sorted(set(tokens))


async def test_a_second_process_waits_until_the_holder_releases_and_is_woken(
    redis_url: str, namespace: str
) -> None:
    # poll=60: only the release message can wake the waiter within the bound.
    async with (
        coordinator(redis_url, namespace) as a,
        coordinator(redis_url, namespace, poll=60, lease=60) as b,
    ):
        held, order = asyncio.Event(), []

        async def first() -> None:
            async with a.lock("db") as lease:
                held.set()
                order.append(("a", lease.token))
                await _until_waiting(redis_url, namespace)  # b found the lock held
                order.append(("a leaves", 0))

        async def second() -> None:
            await held.wait()
            async with b.lock("db") as lease:
                order.append(("b", lease.token))

        async with asyncio.timeout(BOUND):
            await asyncio.gather(first(), second())
        assert [what for what, _ in order] == ["a", "a leaves", "b"]
        assert order[2][1] > order[0][1]


async def _until_waiting(url: str, namespace: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        while not await client.exists(f"{{cohort:{namespace}:lock:db}}:waiting"):
            await asyncio.sleep(0.005)
    finally:
        await client.aclose()


async def test_losing_the_lease_cancels_the_block_and_raises_lease_lost(
    redis_url: str, namespace: str
) -> None:
    reached_after = False
    async with coordinator(redis_url, namespace) as coord:
        lock = coord.lock("db")
        with pytest.raises(LeaseLost) as info:
            async with asyncio.timeout(BOUND), lock as lease:
                # Another party takes the grant away (as an expiry would).
                other = aioredis.Redis.from_url(redis_url)
                await other.delete(f"{{cohort:{namespace}:lock:db}}:owner")
                await other.aclose()
                await asyncio.Event().wait()  # cancelled by the loss, not by the timeout
                reached_after = True
        assert not reached_after
        assert info.value.token == lease.token
        assert info.value.name == "db"
        assert lease.lost
        assert "lapsed on the server" in lease.reason
        # The lock is free again, with a larger token.
        async with lock as again:
            assert again.token > lease.token


async def test_a_loss_seen_only_at_release_raises_lease_lost(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace, lease=30) as coord:
        with pytest.raises(LeaseLost, match="before the release"):
            async with coord.lock("db"):
                other = aioredis.Redis.from_url(redis_url)
                await other.delete(f"{{cohort:{namespace}:lock:db}}:owner")
                await other.aclose()


async def test_an_error_in_the_block_releases_the_lock(redis_url: str, namespace: str) -> None:
    async with coordinator(redis_url, namespace, poll=60) as coord:
        lock = coord.lock("db")
        with pytest.raises(ZeroDivisionError):
            async with lock:
                1 / 0  # noqa: B018
        async with asyncio.timeout(BOUND), lock as lease:
            assert lease.token > 0


async def test_the_fencing_token_does_not_go_back_after_the_server_lost_its_state(
    own_redis_server: RedisServer, namespace: str
) -> None:
    async with coordinator(own_redis_server.url, namespace) as coord, coord.lock("db") as before:
        pass
    own_redis_server.restart()  # an empty server: the counter is gone
    async with coordinator(own_redis_server.url, namespace) as coord, coord.lock("db") as after:
        pass
    assert after.token > before.token


async def test_a_primitive_whose_state_was_lost_raises_coordinator_lost(
    own_redis_server: RedisServer, namespace: str
) -> None:
    async with coordinator(own_redis_server.url, namespace, unreachable=5) as coord:
        lock = coord.lock("db")
        async with lock:
            pass
        own_redis_server.restart()
        with pytest.raises(cohort.CoordinatorLost, match="lost the state"):
            async with asyncio.timeout(BOUND), lock:
                pass


async def test_an_unreachable_server_raises_coordinator_lost_within_the_bound(
    own_redis_server: RedisServer, namespace: str
) -> None:
    async with coordinator(own_redis_server.url, namespace) as coord:
        lock = coord.lock("db")
        own_redis_server.stop()
        with pytest.raises(cohort.CoordinatorLost, match="did not answer"):
            async with asyncio.timeout(BOUND), lock:
                pass


async def test_a_holder_whose_server_goes_away_loses_its_lease(
    own_redis_server: RedisServer, namespace: str
) -> None:
    async with coordinator(own_redis_server.url, namespace) as coord:
        with pytest.raises(LeaseLost) as info:
            async with asyncio.timeout(BOUND), coord.lock("db"):
                own_redis_server.stop()
                await asyncio.Event().wait()
        assert "not renewed in time" in info.value.reason or "coordinator" in info.value.reason


def test_bad_arguments_raise_at_the_call_site() -> None:
    with pytest.raises(ValueError, match="lease"):
        Coordinator("redis://127.0.0.1:1", namespace="x", lease=0)
    with pytest.raises(TypeError, match="namespace"):
        Coordinator("redis://127.0.0.1:1", namespace="")
    coord = Coordinator("redis://127.0.0.1:1", namespace="x")
    with pytest.raises(TypeError, match="name"):
        coord.lock("")
    with pytest.raises(ValueError, match="Lock lease"):
        coord.lock("db", lease=-1)


async def test_a_lock_used_outside_its_open_coordinator_says_so() -> None:
    coord = Coordinator("redis://127.0.0.1:1", namespace="x")
    with pytest.raises(RuntimeError, match="async with Coordinator"):
        async with coord.lock("db"):
            pass


def test_without_redis_py_the_import_error_names_the_extra() -> None:
    from _util import run_python

    code = (
        "import sys\nsys.modules['redis'] = None\n"
        "try:\n    import cohort.redis\nexcept ImportError as e:\n    print(e)\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert "pip install 'cohort[redis]'" in result.stdout


async def test_a_waiter_cancelled_while_it_waits_leaves_the_lock_working(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        async with a.lock("db"):
            waiter = asyncio.create_task(b.lock("db").__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        async with asyncio.timeout(BOUND), b.lock("db") as lease:
            assert lease.token > 0
