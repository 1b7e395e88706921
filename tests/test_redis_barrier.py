"""cohort.redis.Barrier against a real redis-server: generations, actions, lapsed parties."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import cohort
from _redis_server import RedisServer
from _util import popen_python
from cohort.redis import Coordinator
from cohort.redis import _scripts as scripts
from cohort.redis._scripts import BARRIER_CHECK

FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 1.0}
BOUND = 10.0
PARTY = Path(__file__).with_name("_redis_party.py")


def coordinator(url: str, namespace: str, **kw: float) -> Coordinator:
    return Coordinator(url, namespace=namespace, **{**FAST, **kw})


async def test_parties_in_separate_coordinators_pass_generation_after_generation(
    redis_url: str, namespace: str
) -> None:
    coords = [coordinator(redis_url, namespace) for _ in range(3)]
    ran: list[int] = []
    log: list[tuple[str, int]] = []

    async def party(coord: Coordinator, me: str) -> list[int]:
        indices = []
        async with coord:
            b = coord.barrier("phase", 3, party=me, action=lambda: ran.append(1))
            async with b:
                for gen in range(4):
                    log.append((me, gen))
                    indices.append(await b.wait())
        return indices

    async with asyncio.timeout(BOUND):
        results = await asyncio.gather(*(party(c, f"p{i}") for i, c in enumerate(coords)))
        async with coords[0]:
            stats = await coords[0].barrier("phase", 3).statistics()
    assert (stats.generation, stats.n_waiting, stats.broken, stats.parties) == (4, 0, False, 3)
    assert len(ran) == 4  # one action per generation
    for gen in range(4):
        assert sorted(r[gen] for r in results) == [0, 1, 2]


async def test_a_party_killed_while_joined_breaks_the_barrier_naming_it(
    redis_url: str, namespace: str
) -> None:
    with popen_python(
        str(PARTY), redis_url, namespace, "barrier", "phase", "3", "dead-one", "0.3", "0.05",
        "-1", stdout=subprocess.PIPE,
    ) as dead:  # fmt: skip
        try:
            assert dead.stdout is not None
            assert json.loads(dead.stdout.readline())["op"] == "join"
        finally:
            dead.send_signal(signal.SIGKILL)
    async with coordinator(redis_url, namespace) as a:
        waiters = [a.barrier("phase", 3, party=f"w{i}") for i in range(2)]

        async def wait(w: cohort.redis.Barrier) -> BaseException:
            async with w:
                with pytest.raises(cohort.BrokenBarrierError) as info:
                    await w.wait()
                return info.value

        async with asyncio.timeout(BOUND):
            errors = await asyncio.gather(*(wait(w) for w in waiters))
    for error in errors:
        assert "dead-one's lease lapsed" in str(error)


async def test_a_failing_action_breaks_the_barrier_for_the_others(
    redis_url: str, namespace: str
) -> None:
    calls = []

    def boom() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("action failed")

    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        first = a.barrier("phase", 2, party="first")
        last = b.barrier("phase", 2, party="last", action=boom)
        async with first, last:
            waiting = asyncio.create_task(first.wait())
            await _until_arrived(a, namespace, 1)
            with pytest.raises(ZeroDivisionError):
                await last.wait()
            with pytest.raises(cohort.BrokenBarrierError, match="action raised"):
                await waiting
            with pytest.raises(cohort.BrokenBarrierError, match="reset"):
                await first.wait()
            assert (await first.statistics()).broken
            await first.reset()
            assert not (await first.statistics()).broken
            async with asyncio.timeout(BOUND):
                both = await asyncio.gather(first.wait(), last.wait())
            assert sorted(both) == [0, 1]
            assert len(calls) == 2


async def _until_arrived(coord: Coordinator, namespace: str, n: int) -> None:
    client = aioredis.Redis.from_url(coord.url)
    key = f"{{cohort:{namespace}:barrier:phase}}:arrived"
    try:
        async with asyncio.timeout(BOUND):
            while await client.hlen(key) < n:
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()


async def test_a_cancelled_waiter_breaks_the_barrier(redis_url: str, namespace: str) -> None:
    async with coordinator(redis_url, namespace) as a:
        one, two = a.barrier("phase", 3, party="one"), a.barrier("phase", 3, party="two")
        async with one, two:
            t1 = asyncio.create_task(one.wait())
            t2 = asyncio.create_task(two.wait())
            await _until_arrived(a, namespace, 2)
            assert (await one.statistics()).n_waiting == 2
            t1.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t1
            with pytest.raises(cohort.BrokenBarrierError, match="one was cancelled"):
                async with asyncio.timeout(BOUND):
                    await t2


async def test_a_waiter_cancelled_while_its_arrival_is_on_the_wire_still_breaks_the_barrier(
    redis_url: str, namespace: str
) -> None:
    """The last party is cancelled while its arrival script is in flight: counted
    or not, it will not arrive again, so the others never wait for it forever."""
    async with coordinator(redis_url, namespace) as a:
        one, two, three = (a.barrier("phase", 3, party=p) for p in ("one", "two", "three"))
        async with one, two, three:
            t2 = asyncio.create_task(two.wait())
            t3 = asyncio.create_task(three.wait())
            await _until_arrived(a, namespace, 2)
            t1 = asyncio.create_task(one.wait())
            await asyncio.sleep(0)  # t1 sends its arrival and awaits the reply
            t1.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t1
            async with asyncio.timeout(BOUND):
                outcomes = await asyncio.gather(t2, t3, return_exceptions=True)
                if not any(isinstance(o, cohort.BrokenBarrierError) for o in outcomes):
                    # The arrival counted and the generation passed: the next one breaks.
                    again = (two.wait(), three.wait())
                    outcomes = await asyncio.gather(*again, return_exceptions=True)
            assert all(isinstance(o, cohort.BrokenBarrierError) for o in outcomes), outcomes


async def test_parties_must_agree_and_must_join_first(redis_url: str, namespace: str) -> None:
    async with coordinator(redis_url, namespace) as a:
        b3 = a.barrier("phase", 3)
        with pytest.raises(RuntimeError, match="join first"):
            await b3.wait()
        async with b3:
            with pytest.raises(ValueError, match="same parties"):
                async with a.barrier("phase", 4):
                    pass
    with pytest.raises(ValueError, match="parties"):
        a.barrier("x", 0)
    with pytest.raises(TypeError, match="action"):
        a.barrier("x", 2, action=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", ["restart", "stop"])
async def test_every_waiter_gets_coordinator_lost_when_the_server_restarts_or_goes_away(
    own_redis_server: RedisServer, namespace: str, fault: str
) -> None:
    url = own_redis_server.url
    fast = {"unreachable": 0.4}  # how long a waiter retries a server that went away
    async with coordinator(url, namespace, **fast) as a, coordinator(url, namespace, **fast) as b:
        parties = [a.barrier("phase", 3, party="p0"), b.barrier("phase", 3, party="p1")]

        async def wait(p: cohort.redis.Barrier) -> BaseException:
            with pytest.raises(cohort.CoordinatorLost) as info:
                async with p:
                    await p.wait()
            return info.value

        waiters = [asyncio.create_task(wait(p)) for p in parties]
        await _until_arrived(a, namespace, 2)
        if fault == "restart":
            own_redis_server.restart()  # empty: the barrier's state is gone
        else:
            own_redis_server.stop()
        async with asyncio.timeout(BOUND):
            errors = await asyncio.gather(*waiters)
    expected = "lost the state" if fault == "restart" else "did not answer"
    for error in errors:
        assert expected in str(error)
    if fault == "restart":
        # A third party arriving at the restarted server does not pass alone with a fresh
        # state that forgot the others: its own old object raises too; only a new
        # coordinator starts a new epoch, where it waits for 3 parties again.
        async with coordinator(url, namespace) as c:
            late = c.barrier("phase", 3, party="p2")
            async with late:
                waiting = asyncio.create_task(late.wait())
                await _until_arrived(c, namespace, 1)
                assert not waiting.done()
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting


async def test_every_waiter_sees_a_lapsed_lease_at_its_first_check_after_the_lapse(
    redis_url: str, namespace: str
) -> None:
    """The bound "lease + 2 polls", counted rather than timed: on the server's clock, no
    waiter's check after the dead party's lease expiry reports anything but the break
    (a waiter checks at least every poll, so it learns within one poll of the expiry)."""
    with popen_python(
        str(PARTY), redis_url, namespace, "barrier", "phase", "3", "dead-one", "0.3", "0.05",
        "-1", stdout=subprocess.PIPE,
    ) as dead:  # fmt: skip
        try:
            assert dead.stdout is not None
            assert json.loads(dead.stdout.readline())["op"] == "join"
        finally:
            dead.send_signal(signal.SIGKILL)
            dead.wait()
    client = aioredis.Redis.from_url(redis_url)
    members = f"{{cohort:{namespace}:barrier:phase}}:members"
    raw = await client.hget(members, "dead-one")
    assert raw is not None
    expiry = int(raw)  # server ms; nobody renews it now
    await client.aclose()
    checks: dict[str, list[tuple[str, int]]] = {}
    async with coordinator(redis_url, namespace) as a:
        waiters = [a.barrier("phase", 3, party=f"w{i}") for i in range(2)]
        for w in waiters:
            seen: list[tuple[str, int]] = []
            checks[w.party] = seen
            op = w._op

            async def spy(lua: str, *more: object, op: Any = op, seen: Any = seen) -> Any:
                reply = await op(lua, *more)
                if lua is BARRIER_CHECK:
                    seen.append((reply[1], int(reply[3])))
                return reply

            w._op = spy  # type: ignore[method-assign]

        async def wait(w: cohort.redis.Barrier) -> None:
            async with w:
                with pytest.raises(cohort.BrokenBarrierError, match="dead-one's lease lapsed"):
                    await w.wait()

        async with asyncio.timeout(BOUND):
            await asyncio.gather(*(wait(w) for w in waiters))
    for seen in checks.values():
        late = [status for status, now in seen if now > expiry]
        assert late in ([], ["broken"]), seen  # the first check after the expiry saw the break
        assert seen, "the waiters arrived before the expiry and checked while they waited"


async def test_an_arrival_whose_reply_was_lost_is_answered_as_passed_when_sent_again(
    redis_url: str, namespace: str
) -> None:
    # The arrival reaches the server and completes the generation; its reply is lost with
    # the connection; the call is sent again on a new one. It must not count as an arrival
    # in the next generation (where it would wait for parties that have gone on).
    from test_redis_proxy import cut_and_direct

    async with cut_and_direct(redis_url, namespace, BOUND) as (proxy, cut, ok):
        a, b = ok.barrier("b", 2, party="a"), cut.barrier("b", 2, party="b")
        async with a, b:
            waiting = asyncio.create_task(a.wait())
            while (await a.statistics()).n_waiting < 1:  # a's arrival counted
                await asyncio.sleep(0.01)
            proxy.mute_replies = True
            arriving = asyncio.create_task(b.wait())
            assert await waiting == 0  # b's arrival completed generation 0
            proxy.mute_replies = False
            proxy.drop()  # b's reply is lost; its call goes again on a new connection
            assert await arriving == 1
            assert (await a.statistics()).generation == 1


def _spy_scripts(barrier: cohort.redis.Barrier) -> list[str]:
    """The scripts ``barrier`` runs from now on, by name."""
    names = {id(lua): name for name, lua in vars(scripts).items() if name.startswith("BARRIER_")}
    ran: list[str] = []
    op = barrier._op

    async def spy(lua: str, *more: object) -> Any:
        ran.append(names[id(lua)])
        return await op(lua, *more)

    barrier._op = spy  # type: ignore[method-assign]
    return ran


async def test_a_waiter_learns_that_its_generation_passed_or_broke_from_the_message_alone(
    redis_url: str, namespace: str
) -> None:
    """One round trip per party per round: the message that ends a generation says how
    (passed, or broken and why), so a woken waiter reads no state (polls never come here)."""
    slow = {"poll": 60.0, "lease": 60.0}
    async with (
        coordinator(redis_url, namespace, **slow) as a,
        coordinator(redis_url, namespace, **slow) as b,
    ):
        first, last = a.barrier("phase", 2, party="first"), b.barrier("phase", 2, party="last")
        ran = {"first": _spy_scripts(first), "last": _spy_scripts(last)}
        async with first, last, asyncio.timeout(BOUND):
            for _ in range(3):
                waiting = asyncio.create_task(first.wait())
                await _until_arrived(a, namespace, 1)
                assert await last.wait() == 1
                assert await waiting == 0
            waiting = asyncio.create_task(first.wait())
            await _until_arrived(a, namespace, 1)
            await last.abort()
            with pytest.raises(
                cohort.BrokenBarrierError, match=r"abort\(\) was called by party last"
            ):
                await waiting
    assert ran["first"] == ["BARRIER_JOIN", *["BARRIER_ARRIVE"] * 4, "BARRIER_LEAVE"], ran
    assert ran["last"] == [
        "BARRIER_JOIN",
        *["BARRIER_ARRIVE"] * 3,
        "BARRIER_BREAK",
        "BARRIER_LEAVE",
    ]


async def test_a_message_about_another_generation_does_not_end_a_wait(
    redis_url: str, namespace: str
) -> None:
    slow = {"poll": 60.0, "lease": 60.0}
    async with (
        coordinator(redis_url, namespace, **slow) as a,
        coordinator(redis_url, namespace, **slow) as b,
    ):
        first, last = a.barrier("phase", 2, party="first"), b.barrier("phase", 2, party="last")
        async with first, last, asyncio.timeout(BOUND):
            await asyncio.gather(first.wait(), last.wait())  # generation 0 passed
            waiting = asyncio.create_task(first.wait())
            await _until_arrived(a, namespace, 1)
            seen = first.connection.watch(first.channel)
            client = aioredis.Redis.from_url(redis_url)
            try:
                for stale in ("passed 0", "broken 0 long ago", "passed 2", "broken 7 later"):
                    await client.publish(first.channel, stale)
                await client.publish(first.channel, "sentinel")
            finally:
                await client.aclose()
            while "sentinel" not in seen.messages:  # the waiter was woken by every one
                await seen.wait()
                await asyncio.sleep(0)
            for _ in range(5):
                await asyncio.sleep(0)
            assert not waiting.done()
            assert await last.wait() == 1
            assert await waiting == 0


async def test_messages_about_other_generations_do_not_put_off_a_waiters_poll(
    redis_url: str, namespace: str
) -> None:
    """A waiter reads the state every poll from its arrival, however many other messages
    come: a stream of them (each sent once the waiter got the one before) never holds off
    the read that would find a lapsed lease."""
    async with coordinator(redis_url, namespace, poll=0.05) as a:
        first = a.barrier("phase", 2, party="first")
        ran = _spy_scripts(first)
        seen = first.connection.watch(first.channel)
        client = aioredis.Redis.from_url(redis_url)
        try:
            async with first, asyncio.timeout(BOUND):
                waiting = asyncio.create_task(first.wait())
                while "BARRIER_CHECK" not in ran:
                    seen.clear()
                    await client.publish(first.channel, "passed 41")
                    await seen.wait()
                    await asyncio.sleep(0)  # the waiter sees it too
                waiting.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiting
        finally:
            await client.aclose()
