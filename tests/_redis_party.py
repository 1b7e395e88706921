"""A party of a cohort.redis primitive in a process of its own, for the fault tests.

``python tests/_redis_party.py URL NAMESPACE ROLE ...`` prints one JSON line per
event (its history: party, op, generation/token, result, monotonic start/end)
and flushes, so the test can act (SIGKILL, SIGSTOP) at a known point.

Roles:
* ``barrier NAME PARTIES PARTY LEASE POLL ROUNDS``: join, then ``wait()`` ROUNDS
  times (``-1``: join and hang without waiting).
* ``latch NAME COUNT PARTY LEASE POLL``: join as a party, print, hang (never count down).
* ``semaphore NAME PERMITS LEASE POLL``: take a permit, print the token, hang.
* ``member GROUP NAME LEASE POLL``: join the group as NAME, print, hang (never report).
* ``group GROUP PARTIES LEASE POLL``: open the group (Gather), print, wait for the
  decision, print how ``async with`` ended (``exit``: the exception's type and text).
* ``lock NAME LEASE POLL``: take the lock, print the token, then write to the
  toy resource through stdin/stdout: prints ``write TOKEN`` each time a line
  comes in on stdin, until the lease is lost.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import cohort
from cohort.redis import Coordinator


def say(**event: object) -> None:
    print(json.dumps({**event, "t": time.monotonic()}), flush=True)


async def barrier(url: str, ns: str, name: str, parties: int, party: str, lease: float,
                  poll: float, rounds: int) -> None:  # fmt: skip
    async with Coordinator(url, namespace=ns, lease=lease, poll=poll, unreachable=2) as coord:
        b = coord.barrier(name, parties, party=party)
        async with b:
            say(party=party, op="join")
            if rounds < 0:
                await asyncio.Event().wait()
            for gen in range(rounds):
                start = time.monotonic()
                try:
                    index = await b.wait()
                except cohort.BrokenBarrierError as exc:
                    say(party=party, op="wait", gen=gen, start=start, result="broken",
                        error=str(exc))  # fmt: skip
                    return
                say(party=party, op="wait", gen=gen, start=start, result=index)


async def lock(url: str, ns: str, name: str, lease: float, poll: float) -> None:
    async with Coordinator(url, namespace=ns, lease=lease, poll=poll, unreachable=2) as coord:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        try:
            async with coord.lock(name) as lease_:
                say(op="acquired", token=lease_.token)
                while await reader.readline():
                    say(op="write", token=lease_.token)
        except cohort.LeaseLost as exc:
            say(op="lost", token=exc.token, reason=exc.reason)


async def semaphore(url: str, ns: str, name: str, permits: int, lease: float, poll: float) -> None:
    async with (
        Coordinator(url, namespace=ns, lease=lease, poll=poll, unreachable=2) as coord,
        coord.semaphore(name, permits) as lease_,
    ):
        say(op="acquired", token=lease_.token)
        await asyncio.Event().wait()


async def latch(url: str, ns: str, name: str, count: int, party: str, lease: float,
                poll: float) -> None:  # fmt: skip
    async with (
        Coordinator(url, namespace=ns, lease=lease, poll=poll, unreachable=2) as coord,
        coord.latch(name, count, party=party),
    ):
        say(party=party, op="join")
        await asyncio.Event().wait()


async def member(url: str, ns: str, group: str, name: str, lease: float, poll: float) -> None:
    async with (
        Coordinator(url, namespace=ns, lease=lease, poll=poll, unreachable=2) as coord,
        coord.member(group, name=name),
    ):
        say(party=name, op="join")
        await asyncio.Event().wait()


async def coordinate(url: str, ns: str, name: str, parties: int, lease: float, poll: float) -> None:
    async with Coordinator(url, namespace=ns, lease=lease, poll=poll, unreachable=2) as coord:
        try:
            async with coord.group(name, parties=parties):
                say(op="open")
        except Exception as exc:
            say(op="exit", result=type(exc).__name__, message=str(exc))
        else:
            say(op="exit", result="done")


def main() -> None:
    url, ns, role, *rest = sys.argv[1:]
    if role == "barrier":
        name, parties, party, lease, poll, rounds = rest
        coro = barrier(url, ns, name, int(parties), party, float(lease), float(poll), int(rounds))
    elif role == "latch":
        name, count, party, lease, poll = rest
        coro = latch(url, ns, name, int(count), party, float(lease), float(poll))
    elif role == "group":
        name, parties, lease, poll = rest
        coro = coordinate(url, ns, name, int(parties), float(lease), float(poll))
    elif role == "member":
        group, name, lease, poll = rest
        coro = member(url, ns, group, name, float(lease), float(poll))
    elif role == "semaphore":
        name, permits, lease, poll = rest
        coro = semaphore(url, ns, name, int(permits), float(lease), float(poll))
    else:
        name, lease, poll = rest
        coro = lock(url, ns, name, float(lease), float(poll))
    asyncio.run(coro)


if __name__ == "__main__":
    main()
