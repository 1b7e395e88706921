"""cohort.redis Group and Member under faults: the coordinator's lease lapses (its process
paused, its connection black-holed), the server restarts, a member's lease lapses. Every
side learns within its bound; nothing hangs."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import cohort
from _redis_server import RedisServer
from _util import popen_python
from cohort.redis import Coordinator, GroupDecided, Member
from test_redis_proxy import cut_and_direct

FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 1.0}
BOUND = 10.0
PARTY = Path(__file__).with_name("_redis_party.py")


async def work_until_stopped(member: Member, joined: asyncio.Event) -> BaseException:
    """A member that joins, then works until something stops it; returns what did."""
    try:
        async with member:
            joined.set()
            await asyncio.Event().wait()
    except (GroupDecided, cohort.LeaseLost, cohort.CoordinatorLost) as exc:
        return exc
    pytest.fail(f"{member!r} left its block with nothing to stop it")


async def test_a_black_holed_coordinator_is_decided_without_it_and_every_side_stops(
    redis_url: str, namespace: str
) -> None:
    async with cut_and_direct(redis_url, namespace, BOUND, FAST) as (proxy, cut, ok):
        joined = [asyncio.Event(), asyncio.Event()]
        members = [
            asyncio.create_task(work_until_stopped(ok.member("g", name=f"m{i}"), joined[i]))
            for i in range(2)
        ]
        with pytest.raises((cohort.CoordinatorLost, cohort.LeaseLost)):
            async with cut.group("g", parties=2):
                for event in joined:
                    await event.wait()
                proxy.black_hole = True
        stopped = await asyncio.gather(*members)
    for exc in stopped:
        assert isinstance(exc, GroupDecided)
        assert exc.outcome == "fail"
        assert "coordinating process's lease lapsed" in exc.reason


async def test_a_paused_coordinator_process_is_decided_without_it_and_learns_on_waking(
    redis_url: str, namespace: str
) -> None:
    with popen_python(
        str(PARTY), redis_url, namespace, "group", "g", "2", "0.3", "0.05",
        stdout=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdout is not None
        stdout = process.stdout
        try:
            assert json.loads(await asyncio.to_thread(stdout.readline))["op"] == "open"
            async with Coordinator(redis_url, namespace=namespace, **FAST) as ok:
                joined = [asyncio.Event(), asyncio.Event()]
                members = [
                    asyncio.create_task(work_until_stopped(ok.member("g", name=f"m{i}"), joined[i]))
                    for i in range(2)
                ]
                for event in joined:
                    await event.wait()
                process.send_signal(signal.SIGSTOP)  # past its lease: the members go on alone
                async with asyncio.timeout(BOUND):
                    stopped = await asyncio.gather(*members)
            process.send_signal(signal.SIGCONT)
            end = json.loads(await asyncio.wait_for(asyncio.to_thread(stdout.readline), BOUND))
        finally:
            process.send_signal(signal.SIGCONT)
            process.kill()
    for exc in stopped:
        assert isinstance(exc, GroupDecided)
        assert exc.outcome == "fail"
        assert "coordinating process's lease lapsed" in exc.reason
    assert end["op"] == "exit"
    assert end["result"] in ("LeaseLost", "CoordinatorLost")
    assert "decided without this coordinator" in end["message"] or end["result"] != "LeaseLost"


async def test_a_server_restart_during_a_group_reaches_every_side_as_coordinator_lost(
    own_redis_server: RedisServer, namespace: str
) -> None:
    url = own_redis_server.url
    async with (
        Coordinator(url, namespace=namespace, **FAST) as a,
        Coordinator(url, namespace=namespace, **FAST) as b,
        asyncio.timeout(BOUND),
    ):
        joined = [asyncio.Event(), asyncio.Event()]
        members = [
            asyncio.create_task(work_until_stopped(b.member("g", name=f"m{i}"), joined[i]))
            for i in range(2)
        ]
        with pytest.raises(cohort.CoordinatorLost):
            async with a.group("g", parties=2):
                for event in joined:
                    await event.wait()
                await asyncio.to_thread(own_redis_server.restart)
        stopped = await asyncio.gather(*members)
    for exc in stopped:
        assert isinstance(exc, cohort.CoordinatorLost)


async def test_a_black_holed_member_counts_as_failed_under_the_policy(
    redis_url: str, namespace: str
) -> None:
    async with cut_and_direct(redis_url, namespace, BOUND, FAST) as (proxy, cut, ok):
        joined = asyncio.Event()
        async with ok.group("s", parties=2, join=cohort.Settle()) as g:
            lost = asyncio.create_task(work_until_stopped(cut.member("s", name="cut"), joined))
            await joined.wait()
            proxy.black_hole = True
            async with ok.member("s", name="fine") as m:
                await m.done(1)
        victim = await lost
    assert g.results == [1]
    assert len(g.errors) == 1
    assert isinstance(g.errors[0], cohort.LeaseLost)
    assert "cut's lease lapsed" in str(g.errors[0])
    assert isinstance(victim, (cohort.LeaseLost, cohort.CoordinatorLost))
