"""cohort.redis.Latch against a real redis-server: idempotent count-downs, joined parties."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import cohort
from _util import popen_python
from cohort.redis import Coordinator

FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 1.0}
BOUND = 10.0
PARTY = Path(__file__).with_name("_redis_party.py")


def coordinator(url: str, namespace: str, **kw: float) -> Coordinator:
    return Coordinator(url, namespace=namespace, **{**FAST, **kw})


async def test_opens_after_count_distinct_tokens_and_a_repeated_token_counts_once(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        waiter = asyncio.create_task(b.latch("loaded", 3).wait())
        latch = a.latch("loaded", 3)
        assert await latch.count_down("w1") == 2
        assert await latch.count_down("w1") == 2  # the same token again: no effect
        assert await latch.count_down("w2") == 1
        assert await latch.remaining() == 1
        assert not waiter.done()  # never open early
        assert await a.latch("loaded", 3, party="w3").count_down() == 0
        async with asyncio.timeout(BOUND):
            await waiter
        await b.latch("loaded", 3).wait()  # open stays open
        assert await latch.count_down("w2") == 0  # counted before: fine
        with pytest.raises(ValueError, match="below zero"):
            await latch.count_down("w4")


async def test_a_joined_party_killed_before_counting_down_breaks_the_latch_naming_it(
    redis_url: str, namespace: str
) -> None:
    with popen_python(
        str(PARTY), redis_url, namespace, "latch", "loaded", "2", "dead-one", "0.3", "0.05",
        stdout=subprocess.PIPE,
    ) as dead:  # fmt: skip
        try:
            assert dead.stdout is not None
            assert json.loads(dead.stdout.readline())["op"] == "join"
        finally:
            dead.send_signal(signal.SIGKILL)
    async with coordinator(redis_url, namespace) as a:
        latch = a.latch("loaded", 2)
        assert await latch.count_down("alive") == 1
        with pytest.raises(cohort.BrokenBarrierError, match="dead-one's lease lapsed"):
            async with asyncio.timeout(BOUND):
                await latch.wait()
        with pytest.raises(cohort.BrokenBarrierError, match="dead-one"):
            await latch.count_down("late")


async def test_leaving_the_block_without_counting_down_breaks_the_latch(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a:
        async with a.latch("ok", 1, party="good") as good:
            await good.count_down()
        await a.latch("ok", 1).wait()  # left after counting down: open, not broken
        with pytest.raises(ZeroDivisionError):
            async with a.latch("bad", 2, party="quitter"):
                1 / 0  # noqa: B018
        with pytest.raises(cohort.BrokenBarrierError, match="quitter left with ZeroDivisionError"):
            async with asyncio.timeout(BOUND):
                await a.latch("bad", 2).wait()


async def test_count_must_agree_and_bad_input_raises_at_the_call_site(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a:
        await a.latch("x", 2).count_down()
        await a.latch("zero", 0).wait()  # open from the start, as cohort.Latch(0)
        with pytest.raises(ValueError, match="same count"):
            await a.latch("x", 3).wait()
        with pytest.raises(TypeError, match="non-empty str"):
            await a.latch("x", 2).count_down("")
    with pytest.raises(ValueError, match="Latch count"):
        a.latch("y", -1)
    with pytest.raises(TypeError, match="Latch party"):
        a.latch("y", 1, party=3)  # type: ignore[arg-type]
