"""One party of the randomized cohort.redis trials, in a process of its own.

``python tests/_redis_trial_party.py`` says ``{"op": "ready"}``, then runs one
trial per JSON line read on stdin (``kind``, ``url``, ``namespace``,
``party``, ``parties``, ``seed``, ``fast``, and ``permits`` for a semaphore)
and prints its history as JSON lines (``party``, ``op``, ``gen``/``token``,
``start``/``end`` from ``time.monotonic()``, which every process of the
machine shares, and ``result``), then ``{"op": "done"}``. It stays up for the
next trial, so a trial costs no interpreter start; the test may SIGKILL or
SIGSTOP it at any point. An operation is announced (``result: "sent"``)
before it goes on the wire, so the checker counts it even if the process dies
before its reply.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

import cohort
from cohort.redis import Coordinator


def say(**record: Any) -> None:
    print(json.dumps(record), flush=True)


async def work(rng: random.Random) -> None:
    """Some work between two steps: mostly a few loop turns, sometimes long enough for a
    fault to come in the middle of it."""
    pause = rng.choice([0.0, 0.0, 0.05, 0.15])
    if pause:
        await asyncio.sleep(pause)
    for _ in range(rng.randint(0, 3)):
        await asyncio.sleep(0)


def outcome(exc: BaseException) -> str:
    if isinstance(exc, cohort.BrokenBarrierError):
        return "broken"
    if isinstance(exc, cohort.LeaseLost | cohort.CoordinatorLost):
        return "lost"
    return f"error {exc!r}"


async def barrier(coord: Coordinator, me: str, cmd: dict[str, Any], rng: random.Random) -> None:
    b = coord.barrier("b", cmd["parties"], party=me)
    try:
        async with b:
            for gen in range(3):
                start = time.monotonic()
                say(party=me, op="wait", gen=gen, start=start, end=start, result="sent")
                try:
                    await b.wait()
                    result = "passed"
                except Exception as exc:
                    result = outcome(exc)
                say(party=me, op="wait", gen=gen, start=start, end=time.monotonic(), result=result)
                if result != "passed":
                    return
    except Exception as exc:
        say(party=me, op="leave", start=0, end=0, result=outcome(exc))


async def holder(coord: Coordinator, me: str, cmd: dict[str, Any], rng: random.Random) -> None:
    kind = cmd["kind"]
    # One object for the trial: it keeps the epoch it saw (a restarted server: CoordinatorLost).
    grant = coord.lock("l") if kind == "lock" else coord.semaphore("s", cmd["permits"])
    for _ in range(2):
        asked = time.monotonic()
        say(party=me, op="ask", start=asked, end=asked, result="sent")
        start = end = 0.0
        token = 0
        try:
            async with grant as lease:
                start, token = time.monotonic(), lease.token
                say(party=me, op="write", token=lease.token, start=start, end=start, result="sent")
                await work(rng)
                at = time.monotonic()
                say(party=me, op="write", token=lease.token, start=at, end=at, result="sent")
                end = time.monotonic()
        except Exception as exc:
            say(
                party=me, op="hold", start=start or asked, end=time.monotonic(), result=outcome(exc)
            )
            if not isinstance(exc, cohort.LeaseLost):
                return
            continue
        say(party=me, op="hold", token=token, start=start, end=end, result="held", asked=asked)


async def latch(coord: Coordinator, me: str, cmd: dict[str, Any], rng: random.Random) -> None:
    parties, index = cmd["parties"], cmd["index"]
    count = parties - 2
    try:
        if index < count:  # a counter joins as a party: its lapse breaks the latch
            latch = coord.latch("c", count, party=me)
            async with latch:
                at = time.monotonic()
                say(party=me, op="join", start=at, end=at, result="ok")
                await work(rng)
                start = time.monotonic()
                say(party=me, op="count_down", token=f"t{index}", start=start, end=start,
                    result="sent")  # fmt: skip
                await latch.count_down(f"t{index}")
        else:  # the others repeat a counter's token (a new one would be a ValueError), then wait
            latch = coord.latch("c", count)  # one object: it keeps the epoch it saw
            token = f"t{(index - count) % count}"  # with 3 parties: count 1, both repeat t0
            start = time.monotonic()
            say(party=me, op="count_down", token=token, start=start, end=start, result="sent")
            await latch.count_down(token)
            say(party=me, op="counted", token=token, start=start, end=time.monotonic(),
                result="ok")  # fmt: skip
        start = time.monotonic()
        try:
            await latch.wait()
            result = "open"
        except Exception as exc:
            result = outcome(exc)
        say(party=me, op="wait", start=start, end=time.monotonic(), result=result)
    except Exception as exc:
        say(party=me, op="count_down_error", start=0, end=0, result=outcome(exc))


ROLES = {"barrier": barrier, "lock": holder, "semaphore": holder, "latch": latch}


async def trial(cmd: dict[str, Any]) -> None:
    me = f"p{cmd['index']}"
    rng = random.Random(cmd["seed"])
    try:
        async with Coordinator(cmd["url"], namespace=cmd["namespace"], **cmd["fast"]) as coord:
            await ROLES[cmd["kind"]](coord, me, cmd, rng)
    except Exception as exc:
        say(party=me, op="coordinator", start=0, end=0, result=outcome(exc))


async def main() -> None:
    say(op="ready")
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        await trial(json.loads(line))
        say(op="done")


if __name__ == "__main__":
    asyncio.run(main())
