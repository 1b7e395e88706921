"""cohort.redis.EventFlags against a real redis-server: set/clear, wait all/any, consume."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cohort.redis import Coordinator

FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 1.0}
BOUND = 10.0


def coordinator(url: str, namespace: str, **kw: float) -> Coordinator:
    return Coordinator(url, namespace=namespace, **{**FAST, **kw})


async def test_wait_all_and_wait_any_across_coordinators(redis_url: str, namespace: str) -> None:
    # poll=60 on the waiters: only the wake-up messages can release them within the bound.
    async with (
        coordinator(redis_url, namespace) as a,
        coordinator(redis_url, namespace, poll=60) as b,
    ):
        setter = a.event_flags("job", "ready", "done", "failed")
        waiter = b.event_flags("job", "ready", "done", "failed")
        all_of = asyncio.create_task(waiter.wait_all("ready", "done"))
        any_of = asyncio.create_task(waiter.wait_any("done", "failed"))
        await setter.set("ready")
        assert await setter.snapshot() == {"ready"}
        assert not all_of.done()
        assert not any_of.done()
        await setter.set("done")
        async with asyncio.timeout(BOUND):
            assert await all_of == {"ready", "done"}
            assert await any_of == {"ready", "done"}
        await setter.clear("ready")
        assert not await setter.is_set("ready")
        assert await setter.is_set("done")


async def test_consuming_waiters_each_take_one_setting(redis_url: str, namespace: str) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        consumers = [
            asyncio.create_task(c.event_flags("q", "item").wait_all("item", clear=True))
            for c in (a, b, a)
        ]
        flags = a.event_flags("q", "item")
        async with asyncio.timeout(BOUND):
            for settings in range(1, 4):
                # The consumers still waiting, taken before the setting: one of them may take
                # it (and end) before set() returns.
                pending = [c for c in consumers if not c.done()]
                await flags.set("item")
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                assert await flags.snapshot() == frozenset()  # consumed
                assert sum(c.done() for c in consumers) == settings  # by exactly one
        assert all(c.result() == {"item"} for c in consumers)


async def test_a_consumption_whose_reply_was_lost_is_answered_again_and_takes_no_second_setting(
    redis_url: str, namespace: str
) -> None:
    # The consuming wait reaches the server and takes the setting; its reply is lost with
    # the connection; the call is sent again on a new one. It must return what it took,
    # not consume the next setting (which would lose one setting of the two).
    from test_redis_proxy import cut_and_direct

    async with cut_and_direct(redis_url, namespace, BOUND) as (proxy, cut, ok):
        flags = ok.event_flags("q", "item", "other")
        await flags.set("item", "other")
        proxy.mute_replies = True
        consumer = asyncio.create_task(
            cut.event_flags("q", "item", "other").wait_all("item", clear=True)
        )
        while "item" in await flags.snapshot():  # consumed on the server, the reply muted
            await asyncio.sleep(0.01)
        proxy.mute_replies = False
        proxy.drop()  # the reply is lost; the call goes again on a new connection
        await flags.set("item")  # a second setting, for another consumer
        assert await consumer == {"item", "other"}  # what the first consumption saw
        assert await flags.snapshot() == {"item", "other"}  # the second setting is still there


async def test_a_consuming_wait_cancelled_after_its_script_took_the_setting_gives_it_back(
    redis_url: str, namespace: str
) -> None:
    # The consuming wait reaches the server and takes the setting; its reply is held back;
    # the waiter is cancelled. The setting must go back, as the in-process EventFlags does.
    from test_redis_proxy import cut_and_direct

    async with cut_and_direct(redis_url, namespace, BOUND) as (proxy, cut, ok):
        flags = ok.event_flags("q", "item", "other")
        await flags.set("item")
        proxy.mute_replies = True
        consumer = asyncio.create_task(
            cut.event_flags("q", "item", "other").wait_any("item", "other", clear=True)
        )
        while "item" in await flags.snapshot():  # consumed on the server, the reply muted
            await asyncio.sleep(0.01)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        while "item" not in await flags.snapshot():  # given back (the reply still muted)
            await asyncio.sleep(0.01)
        assert await flags.snapshot() == {"item"}  # only what it took: not "other"
        proxy.mute_replies = False
        proxy.drop()


async def test_unknown_names_and_empty_waits_raise_at_the_call_site(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a:
        flags = a.event_flags("job", "ready")
        with pytest.raises(KeyError, match="no flag 'nope'"):
            await flags.set("nope")
        with pytest.raises(ValueError, match="at least one flag name"):
            await flags.wait_any()
    with pytest.raises(ValueError, match="unique"):
        a.event_flags("job", "x", "x")
    with pytest.raises(ValueError, match="at least one"):
        a.event_flags("job")
