"""Fault tests with real processes: each party a subprocess (tests/_redis_party.py)
recording its history as JSON lines; the test kills, pauses and resumes them."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from _util import popen_python
from cohort.redis import Coordinator

PARTY = Path(__file__).with_name("_redis_party.py")
BOUND = 10.0


class Resource:
    """A toy resource that checks fencing tokens: it refuses any token below the largest seen."""

    def __init__(self) -> None:
        self.highest = 0
        self.accepted: list[int] = []
        self.refused: list[int] = []

    def write(self, token: int) -> bool:
        if token < self.highest:
            self.refused.append(token)
            return False
        self.highest = token
        self.accepted.append(token)
        return True


def lock_holder(url: str, namespace: str) -> subprocess.Popen[str]:
    return popen_python(
        str(PARTY), url, namespace, "lock", "db", "0.3", "0.05",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip


def event(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, "the party process ended without saying more"
    record: dict[str, Any] = json.loads(line)
    return record


async def test_a_paused_holder_loses_its_lease_and_its_stale_writes_are_refused(
    redis_url: str, namespace: str
) -> None:
    resource = Resource()
    with lock_holder(redis_url, namespace) as holder:
        try:
            assert holder.stdin is not None
            first = event(holder)
            assert first["op"] == "acquired"
            assert resource.write(first["token"])
            holder.send_signal(signal.SIGSTOP)  # paused longer than its lease
            async with (
                Coordinator(redis_url, namespace=namespace, lease=5, poll=0.05) as coord,
                asyncio.timeout(BOUND),
                coord.lock("db") as lease,
            ):
                assert lease.token > first["token"]
                assert resource.write(lease.token)
                # The paused holder wakes up and tries to write with its old token.
                holder.send_signal(signal.SIGCONT)
                holder.stdin.write("write\n")
                holder.stdin.flush()
                history: list[dict[str, Any]] = []
                while not history or history[-1]["op"] != "lost":
                    history.append(await asyncio.to_thread(event, holder))
            for record in history[:-1]:
                assert record == {**record, "op": "write", "token": first["token"]}
                assert not resource.write(record["token"])  # stale: refused
            assert history[-1]["token"] == first["token"]
            assert "not renewed in time" in history[-1]["reason"]
            assert resource.accepted == [first["token"], lease.token]
        finally:
            holder.kill()


async def test_a_killed_holders_lock_is_granted_again_after_its_lease(
    redis_url: str, namespace: str
) -> None:
    with lock_holder(redis_url, namespace) as holder:
        try:
            first = event(holder)
            assert first["op"] == "acquired"
        finally:
            holder.send_signal(signal.SIGKILL)
    async with (
        Coordinator(redis_url, namespace=namespace, lease=5, poll=0.05) as coord,
        asyncio.timeout(BOUND),
        coord.lock("db") as lease,
    ):
        assert lease.token > first["token"]
