"""cohort.redis Group and Member against a real redis-server: join policies across processes."""

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
from cohort.redis import Coordinator, GroupDecided, Member

FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 1.0}
BOUND = 10.0
PARTY = Path(__file__).with_name("_redis_party.py")


def coordinator(url: str, namespace: str, **kw: float) -> Coordinator:
    return Coordinator(url, namespace=namespace, **{**FAST, **kw})


async def report(member: Member, value: object) -> None:
    async with member as m:
        await m.done(value)


async def wait_forever(member: Member, joined: asyncio.Event, seen: list[BaseException]) -> None:
    """A slow member: joins, then works until the group tells it to stop."""
    try:
        async with member:
            joined.set()
            await asyncio.Event().wait()
    except GroupDecided as exc:
        seen.append(exc)


async def test_gather_of_four_members_collects_every_value(redis_url: str, namespace: str) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        async with asyncio.timeout(BOUND), a.group("job", parties=4) as g:
            for i in range(4):
                await report(b.member("job", name=f"w{i}"), {"i": i})
        assert sorted(r["i"] for r in g.results) == [0, 1, 2, 3]
        assert (g.succeeded, g.failed, g.pending) == (4, 0, 0)
        assert "every member" in g.reason


async def test_quorum_decides_at_k_and_the_slow_members_are_cancelled_with_the_reason(
    redis_url: str, namespace: str
) -> None:
    seen: list[BaseException] = []
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        joined = [asyncio.Event(), asyncio.Event()]
        slow = [
            asyncio.create_task(wait_forever(b.member("q", name=f"slow{i}"), joined[i], seen))
            for i in range(2)
        ]
        async with asyncio.timeout(BOUND):
            async with a.group("q", parties=4, join=cohort.Quorum(2)) as g:
                for e in joined:
                    await e.wait()
                await report(b.member("q", name="fast0"), 10)
                await report(b.member("q", name="fast1"), 11)
            await asyncio.gather(*slow)
    assert g.results == [10, 11]
    assert len(seen) == 2
    for exc in seen:
        assert isinstance(exc, GroupDecided)
        assert exc.outcome == "done"
        assert "decided at fast1's report" in exc.reason


async def test_first_wins_takes_the_first_report_and_a_late_joiner_is_refused(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        async with asyncio.timeout(BOUND), a.group("fw", parties=3, join=cohort.FirstWins()) as g:
            await report(b.member("fw", name="winner"), "first")
        assert g.results == ["first"]
        with pytest.raises(GroupDecided, match="winner's report"):
            async with b.member("fw", name="late"):
                pytest.fail("a decided group admits no member")


async def test_settle_counts_a_failing_member_and_its_error_reaches_the_coordinator(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        async with asyncio.timeout(BOUND), a.group("s", parties=3, join=cohort.Settle()) as g:
            await report(b.member("s", name="ok"), 1)
            with pytest.raises(ZeroDivisionError):
                async with b.member("s", name="bad"):
                    1 / 0  # noqa: B018
            async with b.member("s", name="told") as m:
                await m.failed(KeyError("k"))
        assert g.results == [1]
        assert [type(e) for e in g.errors] == [cohort.RemoteError, cohort.RemoteError]
        assert isinstance(g.errors[0], cohort.RemoteError)
        assert g.errors[0].type_name == "ZeroDivisionError"
        assert "member told: 'k'" in str(g.errors[1])


async def test_gather_fails_fast_and_stops_the_other_members(
    redis_url: str, namespace: str
) -> None:
    seen: list[BaseException] = []
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        joined = asyncio.Event()
        slow = asyncio.create_task(wait_forever(b.member("g", name="slow"), joined, seen))
        with pytest.raises(ExceptionGroup) as caught:
            async with asyncio.timeout(BOUND), a.group("g", parties=3):
                await joined.wait()
                async with b.member("g", name="bad") as m:
                    await m.failed(ValueError("boom"))
                await asyncio.Event().wait()  # the decision cancels the block
        await slow
    assert "boom" in str(caught.value.exceptions[0])
    assert len(seen) == 1
    assert seen[0].outcome == "fail"  # type: ignore[attr-defined]


async def test_a_sigkilled_member_counts_as_failed_after_its_lease(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        async with asyncio.timeout(BOUND):
            with pytest.raises(cohort.QuorumError) as caught:
                async with a.group("k", parties=2, join=cohort.Quorum(2)):
                    with popen_python(
                        str(PARTY), redis_url, namespace, "member", "k", "dead-one", "0.3",
                        "0.05", stdout=subprocess.PIPE,
                    ) as dead:  # fmt: skip
                        try:
                            assert dead.stdout is not None
                            line = await asyncio.to_thread(dead.stdout.readline)
                            assert json.loads(line)["op"] == "join"
                        finally:
                            dead.send_signal(signal.SIGKILL)
                    await report(b.member("k", name="alive"), 1)
    error = caught.value.exceptions[0]
    assert isinstance(error, cohort.LeaseLost)
    assert "dead-one's lease lapsed" in str(error)
    assert caught.value.successes == [1]


async def test_the_deadline_raises_timeout_or_exits_partial_and_stops_the_members(
    redis_url: str, namespace: str
) -> None:
    seen: list[BaseException] = []
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        joined = asyncio.Event()
        slow = asyncio.create_task(wait_forever(b.member("t", name="slow"), joined, seen))
        with pytest.raises(TimeoutError, match="1 succeeded, 0 failed, 1 not reported"):
            async with asyncio.timeout(BOUND), a.group("t", parties=2, timeout=0.2):
                await report(b.member("t", name="quick"), 1)
        await slow
        assert seen[0].outcome == "fail"  # type: ignore[attr-defined]
        assert "deadline" in seen[0].reason  # type: ignore[attr-defined]
        async with asyncio.timeout(BOUND):
            async with a.group("p", parties=2, join=cohort.Settle(), timeout=0.2,
                               on_timeout="partial") as g:  # fmt: skip
                await report(b.member("p", name="quick"), 1)
        assert g.results == [1]
        assert g.timed_out


class SpawnCounter(cohort.JoinPolicy):
    def on_spawn(self, group: cohort.GroupView, handle: cohort.ChildView) -> cohort.Decision:
        return cohort.Decision.CONTINUE


class TwoStrikes(cohort.JoinPolicy):
    consults_on_success = False

    def on_child_done(self, group: cohort.GroupView, handle: cohort.ChildView) -> cohort.Decision:
        return cohort.Decision.FAIL if group.failed >= 2 else cohort.Decision.CONTINUE


async def test_a_custom_policy_decides_through_the_policy_hooks(
    redis_url: str, namespace: str
) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        with pytest.raises(ExceptionGroup, match="2 child"):
            async with asyncio.timeout(BOUND), a.group("c", parties=4, join=TwoStrikes()):
                for i in range(2):
                    async with b.member("c", name=f"bad{i}") as m:
                        await m.failed(RuntimeError(str(i)))


async def test_bad_input_raises_at_the_call_site(redis_url: str, namespace: str) -> None:
    async with coordinator(redis_url, namespace) as a, coordinator(redis_url, namespace) as b:
        with pytest.raises(TypeError, match="on_spawn"):
            a.group("x", parties=2, join=SpawnCounter())
        with pytest.raises(TypeError, match="JoinPolicy"):
            a.group("x", parties=2, join="all")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="Group parties"):
            a.group("x", parties=0)
        with pytest.raises(ValueError, match="on_timeout"):
            a.group("x", parties=1, on_timeout="ignore")
        with pytest.raises(TypeError, match="Member name"):
            a.member("x", name="")
        async with (
            asyncio.timeout(BOUND),
            a.group("x", parties=1) as g,
            b.member("x", name="only") as m,
        ):
            with pytest.raises(TypeError, match="cannot be encoded"):
                await m.done(object())
            with pytest.raises(ValueError, match="joined"):
                async with b.member("x", name="only"):
                    pass
            with pytest.raises(ValueError, match="all 1 members"):
                async with b.member("x", name="second"):
                    pass
            await m.done([1, "a"])
            with pytest.raises(RuntimeError, match="reported already"):
                await m.done(2)
        assert g.results == [[1, "a"]]
        with pytest.raises(ValueError, match="used before"):
            async with a.group("x", parties=1):
                pass
