"""Randomized trials of cohort.redis primitives with 8 parties, each with a coordinator (its
own connections) of its own, under faults; every history goes through the checker
(tests/_redis_history.py).

Two forms. In one process: a waiter cancelled, one party's connection black-holed,
delayed, dropped or refused through a TCP proxy (test_redis_proxy.Proxy), or the server
restarted. With each party a process of its own (tests/_redis_trial_party.py, kept from
trial to trial): those proxy faults, SIGKILL, SIGSTOP (mostly past the lease) then SIGCONT,
or a restart, drawn at random and sent at a random point after the victim joined, each
process's history read from its stdout.

A restart kills the test's own redis-server (own_redis_server: no other test or copy of the
suite meets it) and starts it empty on the same port; a barrier's or latch's restart comes
once every party saw the state (a party whose first call came after it would start a fresh
one and wait for the others forever), a lock's or semaphore's while the victim asks or
holds. Each party keeps one object per primitive for the trial. The checker
(_redis_history.check_restart) then asserts that no party that saw the old state gets a
grant (a token of the new server), a pass or an open from the fresh one.

A few trials run in the suite; the soak (`make soak`, pytest -m soak) runs
COHORT_REDIS_TRIALS (default 500) of each primitive in each form and prints the faults
drawn and the longest detection time (fault to the others' break or next grant; restart to
the last party's CoordinatorLost)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

import cohort
from _redis_history import (
    Record,
    Restart,
    check_barrier,
    check_bounds,
    check_latch,
    check_no_errors,
    check_restart,
    check_semaphore,
    restart_detection,
)
from _redis_server import RedisServer
from cohort.redis import Coordinator, LeaseLost
from cohort.redis._client import Connection, Primitive
from test_redis_proxy import Proxy

PARTIES = 8
FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 0.5}
OP_BOUND = 5.0  # lease + unreachable + polls, with room for a loaded machine
TRIAL_BOUND = 30.0
Trial = Callable[["Ctx"], Awaitable[list[str]]]


# What the proxy in front of one party's connection can do to it (see test_redis_proxy).
PROXY_FAULTS = ("black-hole", "delay", "drop", "refuse")
# The records a party makes only after a call on the primitive completed: the party saw
# the primitive's state (its epoch) by then (see _redis_history.saw_the_old_state).
SEEN = {"barrier": ("join", "wait"), "latch": ("join", "counted"), "lock": ("write",),
        "semaphore": ("write",)}  # fmt: skip


def hit(proxy: Proxy, fault: str, rng: random.Random) -> None:
    """Start ``fault`` on the connections through ``proxy``."""
    if fault == "black-hole":
        proxy.black_hole = True
    elif fault == "delay":  # below the lease: slow renewals; past it: a lost lease
        proxy.delay = rng.choice([0.005, 0.05, 0.15, 0.4])
    elif fault == "drop":  # a reset: the client connects again
        proxy.drop()
    elif fault == "refuse":  # a reset, and no connection comes through again
        proxy.refuse = True
        proxy.drop()


def restart_server(server: RedisServer, restart: Restart) -> None:
    """Kill the server (SIGKILL: no persistence, its state is gone) and start it empty on
    the same port, noting the times in ``restart``."""
    restart.kill()
    server.stop()
    restart.dead()
    restart.starting()
    server.start()
    restart.up()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


class Ctx:
    """One in-process trial: its server (its own: a restart disturbs no other test),
    namespace, random draws, proxy, the restart if one was drawn, and the history."""

    def __init__(self, server: RedisServer, namespace: str, rng: random.Random, proxy: Proxy,
                 faults: bool) -> None:  # fmt: skip
        self.server, self.namespace, self.rng, self.proxy = server, namespace, rng, proxy
        self.faults = faults
        self.restart = Restart()
        self.history: list[Record] = []
        self._restarting: asyncio.Future[None] | None = None

    def draw(self, *kinds: str) -> str:
        """A fault: ``kinds`` and restart always, the proxy's too with ``faults``."""
        fault: str = self.rng.choice([*kinds, "restart", *(PROXY_FAULTS if self.faults else ())])
        return fault

    def begin_restart(self) -> None:
        """Restart the server in a thread, while the parties go on."""
        loop = asyncio.get_running_loop()
        self._restarting = loop.run_in_executor(None, restart_server, self.server, self.restart)

    @property
    def restart_begun(self) -> bool:
        return self._restarting is not None

    async def restarted(self) -> None:
        if self._restarting is not None:
            await self._restarting

    def record(self, party: int, op: str, start: float, result: str, end: float = 0.0,
               **more: Any) -> None:  # fmt: skip
        self.history.append({"party": f"p{party}", "op": op, "start": start,
                             "end": end or time.monotonic(), "result": result, **more})  # fmt: skip

    def check(self, kind: str) -> list[str]:
        """What every trial checks besides its primitive's own rule."""
        bound = OP_BOUND + self.restart.took
        bad = check_bounds(self.history, bound) + check_no_errors(self.history)
        if self.restart.kill_at:
            bad += check_restart(self.history, self.restart, SEEN[kind])
        return bad


@contextlib.asynccontextmanager
async def _coordinators(ctx: Ctx, victim: int) -> Any:
    url = ctx.server.url
    async with contextlib.AsyncExitStack() as stack:
        coords = [
            await stack.enter_async_context(
                Coordinator(ctx.proxy.url if i == victim else url, namespace=ctx.namespace, **FAST)
            )
            for i in range(PARTIES)
        ]
        yield coords


async def barrier_trial(ctx: Ctx) -> list[str]:
    rounds, rng = 3, ctx.rng
    fault = ctx.draw("none", "cancel")
    victim, at_gen = rng.randrange(PARTIES), rng.randrange(rounds)
    joined, all_joined = 0, asyncio.Event()  # a restart comes once every party joined
    async with _coordinators(ctx, victim if fault in PROXY_FAULTS else -1) as cs:

        async def party(i: int) -> None:
            nonlocal joined
            b = cs[i].barrier("b", PARTIES, party=f"p{i}")
            with contextlib.suppress(cohort.BrokenBarrierError, cohort.CoordinatorLost):
                async with b:
                    ctx.record(i, "join", time.monotonic(), "ok")
                    joined += 1
                    if joined == PARTIES:
                        all_joined.set()
                    for gen in range(rounds):
                        start = time.monotonic()
                        result = "broken"
                        try:
                            if i == victim and gen == at_gen and fault == "cancel":
                                async with asyncio.timeout(rng.uniform(0, 0.02)):
                                    await b.wait()
                            else:
                                if i == victim and gen == at_gen and fault == "restart":
                                    await all_joined.wait()
                                    ctx.begin_restart()
                                elif i == victim and gen == at_gen:
                                    hit(ctx.proxy, fault, rng)
                                await b.wait()
                            result = "passed"
                        except TimeoutError:
                            result = "cancelled"  # it broke the barrier; the party stops
                            return
                        except cohort.CoordinatorLost:
                            result = "lost"
                            raise
                        finally:
                            ctx.record(i, "wait", start, result, gen=gen)

        async with asyncio.TaskGroup() as tg:
            for i in range(PARTIES):
                tg.create_task(party(i))
    await ctx.restarted()
    return check_barrier(ctx.history, PARTIES) + ctx.check("barrier")


async def _holds(ctx: Ctx, kind: str, permits: int) -> list[str]:
    """Lock (``permits`` 1) or semaphore trial: each party holds twice, writing its token
    to a resource that refuses a token below the largest it took; the victim's fault
    comes while it holds."""
    rng = ctx.rng
    fault = ctx.draw("none")
    victim = rng.randrange(PARTIES)
    highest = 0

    def write(i: int, token: int) -> None:
        nonlocal highest
        at = time.monotonic()
        ctx.record(i, "write", at, "accepted" if token >= highest else "refused", token=token)
        highest = max(highest, token)

    async with _coordinators(ctx, victim if fault in PROXY_FAULTS else -1) as cs:

        async def party(i: int) -> None:
            # One object for the trial: it keeps the epoch it saw.
            grant = cs[i].lock("l") if kind == "lock" else cs[i].semaphore("s", permits)
            for _ in range(2):
                start = end = time.monotonic()
                token = 0
                try:
                    async with grant as lease:
                        start, token = time.monotonic(), lease.token
                        write(i, token)
                        if i == victim and fault == "restart" and not ctx.restart_begun:
                            ctx.begin_restart()
                            await asyncio.sleep(rng.uniform(0, FAST["lease"]))
                        elif i == victim and fault not in ("none", "restart"):
                            hit(ctx.proxy, fault, rng)
                            if fault in ("black-hole", "refuse"):
                                await asyncio.Event().wait()  # cancelled by the lost lease
                            await asyncio.sleep(rng.uniform(0, FAST["lease"]))
                        await asyncio.sleep(0)
                        write(i, token)
                        end = time.monotonic()  # the block's end: the release comes after
                except (LeaseLost, cohort.CoordinatorLost):
                    ctx.record(i, "hold", start, "lost", token=token)
                    if token:
                        continue  # a lost lease: the party asks again
                    return  # the coordinator is lost: the party stops
                ctx.record(i, "hold", start, "held", end, token=token)

        async with asyncio.TaskGroup() as tg:
            for i in range(PARTIES):
                tg.create_task(party(i))
    await ctx.restarted()
    holds = [r for r in ctx.history if r["op"] == "hold"]
    bad = check_semaphore(holds, permits) + ctx.check(kind)
    if permits == 1:  # one grant at a time: fencing means something
        bad += check_holds(ctx.history, fault, "", 0.0, 0.0, FAST["lease"])
    return bad


async def lock_trial(ctx: Ctx) -> list[str]:
    return await _holds(ctx, "lock", 1)


async def semaphore_trial(ctx: Ctx) -> list[str]:
    return await _holds(ctx, "semaphore", ctx.rng.randint(1, 4))


async def latch_trial(ctx: Ctx) -> list[str]:
    rng, count = ctx.rng, PARTIES - 2
    fault = rng.choice(["none", "restart"])
    counted = 0
    async with _coordinators(ctx, -1) as cs:
        # One object per party, for its count-downs and its wait: it keeps the epoch it saw.
        latches = [c.latch("c", count) for c in cs]

        async def counter(i: int) -> None:
            nonlocal counted
            token = f"t{i % count}"
            for n in range(rng.randint(1, 2)):  # a repeated token counts once
                start = time.monotonic()
                try:
                    await latches[i].count_down(token)
                except cohort.CoordinatorLost:
                    ctx.record(i, "count_down", start, "lost", token=token)
                    return
                ctx.record(i, "count_down", start, "ok", token=token)
                ctx.record(i, "counted", start, "ok", token=token)
                if n == 0:
                    counted += 1
                    if counted == PARTIES and fault == "restart":  # every party saw the state
                        ctx.begin_restart()

        async def waiter(i: int) -> None:
            start = time.monotonic()
            try:
                await latches[i].wait()
            except cohort.CoordinatorLost:
                ctx.record(i, "wait", start, "lost")
                return
            ctx.record(i, "wait", start, "open")

        async with asyncio.TaskGroup() as tg:
            order = list(range(PARTIES))
            rng.shuffle(order)
            for i in order:
                tg.create_task(counter(i))  # the last two repeat the first two's tokens
                if i >= count:
                    tg.create_task(waiter(i))
    await ctx.restarted()
    return check_latch(ctx.history, count) + ctx.check("latch")


TRIALS: dict[str, Trial] = {
    "barrier": barrier_trial,
    "lock": lock_trial,
    "semaphore": semaphore_trial,
    "latch": latch_trial,
}


async def _run(kind: str, server: RedisServer, trials: int, seed: int, faults: bool) -> str:
    """``trials`` trials of ``kind`` in this process; every violation (a hung trial is
    one) after all of them; a line of counts."""
    rng = random.Random(seed)
    violations: list[str] = []
    restarts, hangs, began = 0, 0, time.monotonic()
    for n in range(trials):
        async with Proxy(_port(server.url)) as proxy:
            ctx = Ctx(server, f"trial-{seed}-{kind}-{n}", rng, proxy, faults)
            try:
                async with asyncio.timeout(TRIAL_BOUND):
                    bad = await TRIALS[kind](ctx)
            except TimeoutError:
                hangs += 1
                bad = [f"hung; the last records {ctx.history[-4:]}"]
            finally:
                await ctx.restarted()  # the next trial starts on a server that is up
        restarts += bool(ctx.restart.kill_at)
        violations += [f"{kind} trial {n} (seed {seed}): {b}" for b in bad]
    assert not violations, violations
    took = time.monotonic() - began
    return (f"{kind}: {trials} in-process trials x {PARTIES} parties, {restarts} restarts, "
            f"{len(violations)} violations, {hangs} hangs, {took:.0f} s")  # fmt: skip


@pytest.mark.parametrize("kind", sorted(TRIALS))
async def test_a_few_randomized_trials_are_safe(own_redis_server: RedisServer, kind: str) -> None:
    await _run(kind, own_redis_server, trials=2, seed=random.randrange(1 << 30), faults=False)


@pytest.mark.soak
@pytest.mark.timeout(0)  # 500 trials take minutes; each trial is bounded itself
@pytest.mark.parametrize("kind", sorted(TRIALS))
async def test_many_randomized_trials_with_faults_are_safe(
    own_redis_server: RedisServer, kind: str
) -> None:
    trials = int(os.environ.get("COHORT_REDIS_TRIALS", "500"))
    print("\n" + await _run(kind, own_redis_server, trials=trials, seed=1, faults=True))


# -- parties as processes: SIGKILL and SIGSTOP drawn inside the trials ---------------------

PARTY = Path(__file__).with_name("_redis_trial_party.py")
PROCESS_FAULTS = ("kill", "stop", "restart", *PROXY_FAULTS)
# The victim's record after which its fault comes (a little later, at random): by then it
# joined (a barrier or latch party that never joined would leave the others waiting).
TRIGGER = {"barrier": ("wait",), "latch": ("join",), "lock": ("ask", "write"),
           "semaphore": ("ask", "write")}  # fmt: skip


class Party:
    """One party process (tests/_redis_trial_party.py), kept for trial after trial."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, str(PARTY), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert await self.line() == {"op": "ready"}

    async def line(self) -> Record | None:
        assert self.process is not None
        assert self.process.stdout is not None
        raw = await self.process.stdout.readline()
        return cast(Record, json.loads(raw)) if raw else None

    def send(self, command: dict[str, Any]) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)

    async def stop(self) -> None:
        if self.process is not None:
            self.signal(signal.SIGKILL)
            await self.process.wait()
            self.process = None


@contextlib.asynccontextmanager
async def _party_processes(count: int) -> AsyncIterator[list[Party]]:
    parties = [Party(i) for i in range(count)]
    try:
        await asyncio.gather(*(p.start() for p in parties))
        yield parties
    finally:
        for p in parties:
            await p.stop()


def check_holds(history: list[Record], fault: str, victim: str, fault_at: float,
                stopped: float, lease: float) -> list[str]:  # fmt: skip
    """Fencing at a resource that sees the writes in time order and refuses a token below the
    largest it took: it never refuses a write of a grant that ended held; and a holder
    paused past its lease while holding gets LeaseLost."""
    held = {
        (r["party"], r["token"]) for r in history if r["op"] == "hold" and r["result"] == "held"
    }
    writes = sorted((r for r in history if r["op"] == "write"), key=lambda r: r["start"])
    highest, bad = 0, []
    for w in writes:
        if w["token"] < highest and (w["party"], w["token"]) in held:
            bad.append(f"{w['party']}'s write with token {w['token']} refused after {highest}, "
                       "yet its grant ended held")  # fmt: skip
        highest = max(highest, w["token"])
    if fault == "stop" and stopped > lease:
        for r in history:
            if (r["party"] == victim and r["op"] == "hold" and r["result"] == "held"
                    and r["start"] < fault_at < r["end"]):  # fmt: skip
                bad.append(f"{victim} paused {stopped:.2f} s (lease {lease}) inside its grant "
                           "and still ended it held")  # fmt: skip
    return bad


def check_latch_never_broke_open(history: list[Record]) -> list[str]:
    """An open latch never breaks: no trial has a wait that saw it open and one that saw it
    broken."""
    results = {r["result"] for r in history if r["op"] == "wait"}
    return (
        ["a waiter saw the latch open and another saw it broken"]
        if {"open", "broken"} <= (results)
        else []
    )


def detection(kind: str, history: list[Record], victim: str, fault_at: float) -> float | None:
    """How long after the fault the last other party learned of it (barrier, latch: broken),
    or the next other party got the lock; None where nobody had to."""
    others = [r for r in history if r["party"] != victim]
    if kind in ("barrier", "latch"):
        ends = [r["end"] for r in others if r["result"] == "broken" and r["end"] > fault_at]
        return max(ends) - fault_at if ends else None
    if kind == "lock":  # only where the victim held the lock when the fault came
        tokens = {r["token"] for r in history if r["party"] == victim and r["op"] == "write"
                  and r["start"] < fault_at}  # fmt: skip
        ended = {r["token"] for r in history if r["party"] == victim and r["op"] == "hold"
                 and r["end"] < fault_at}  # fmt: skip
        starts = [r["start"] for r in others if r["op"] == "hold"
                  and r["result"] == "held" and r["start"] > fault_at]  # fmt: skip
        return min(starts) - fault_at if tokens - ended and starts else None
    return None


async def process_trial(kind: str, server: RedisServer, namespace: str, rng: random.Random,
                        parties: list[Party], stats: dict[str, Any]) -> list[str]:  # fmt: skip
    """One trial, every party a process; a fault drawn from PROCESS_FAULTS on one of them
    (a restart hits them all)."""
    count, url = len(parties), server.url
    fault = rng.choice(["none", *PROCESS_FAULTS])
    victim = parties[rng.randrange(count - 2 if kind == "latch" else count)]
    permits = rng.randint(1, max(1, count // 2))
    lease = FAST["lease"]
    history: list[Record] = []
    triggered = asyncio.Event()
    seen: set[str] = set()
    restart = Restart()
    fault_at, stopped = 0.0, 0.0
    async with Proxy(_port(url)) as proxy:
        for p in parties:
            p.send({"kind": kind, "namespace": namespace, "index": p.index, "parties": count,
                    "url": proxy.url if p is victim and fault in PROXY_FAULTS else url,
                    "seed": rng.randrange(1 << 30), "permits": permits, "fast": FAST})  # fmt: skip

        async def collect(p: Party) -> None:
            while (record := await p.line()) is not None and record["op"] != "done":
                history.append(record)
                if fault == "restart" and kind in ("barrier", "latch"):
                    # Once every party saw the state: one that first comes after the
                    # restart starts a fresh one, and would wait for the others forever.
                    if record["op"] in SEEN[kind]:
                        seen.add(record["party"])
                    if len(seen) == count:
                        triggered.set()
                elif p is victim and record["op"] in TRIGGER[kind]:
                    triggered.set()

        async def inject() -> None:
            nonlocal fault_at, stopped
            await triggered.wait()
            await asyncio.sleep(rng.uniform(0, lease / 3))
            fault_at = time.monotonic()
            if fault == "kill":
                victim.signal(signal.SIGKILL)
            elif fault == "stop":  # paused past its lease, mostly
                victim.signal(signal.SIGSTOP)
                try:
                    await asyncio.sleep(rng.choice([0.5, 1.5, 2.5]) * lease)
                finally:
                    victim.signal(signal.SIGCONT)
                    stopped = time.monotonic() - fault_at
            elif fault == "restart":  # here, not in a thread: nothing cancels it half done
                restart_server(server, restart)
            elif fault != "none":
                hit(proxy, fault, rng)

        injector = asyncio.create_task(inject())
        hung = False
        try:
            async with asyncio.timeout(TRIAL_BOUND):
                await asyncio.gather(*(collect(p) for p in parties))
        except TimeoutError:
            hung = True
            stats.setdefault("hangs", []).append(1)
            mine = [r for r in history if r["party"] == f"p{victim.index}"]
            return [f"{kind} trial hung ({fault} on p{victim.index}); its history {mine}; "
                    f"the last records {history[-4:]}"]  # fmt: skip
        finally:
            injector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await injector
            for p in parties if hung else [victim] if fault == "kill" else []:
                await p.stop()  # a hung trial's parties start afresh: nothing of it leaks on
                await p.start()
    me = f"p{victim.index}"
    bad = check_bounds(history, OP_BOUND + stopped + restart.took) + check_no_errors(history)
    if restart.kill_at:
        bad += check_restart(history, restart, SEEN[kind])
        took = restart_detection(history, restart)
        if took is not None:
            stats.setdefault("restart detection", []).append(took)
    if kind == "barrier":
        bad += check_barrier(history, count)
    elif kind == "latch":
        bad += check_latch(history, count - 2) + check_latch_never_broke_open(history)
    else:
        holds = [r for r in history if r["op"] == "hold"]
        bad += check_semaphore(holds, 1 if kind == "lock" else permits)
        if kind == "lock" or permits == 1:  # one grant at a time: fencing means something
            bad += check_holds(history, fault, me, fault_at, stopped, lease)
    if fault_at and fault in ("kill", "stop", "black-hole", "refuse"):
        took = detection(kind, history, me, fault_at)
        if took is not None:
            stats.setdefault(f"{kind} detection", []).append(took)
    stats.setdefault(f"{kind} {fault}", []).append(1)
    return bad


async def _run_processes(
    kinds: list[str], server: RedisServer, trials: int, seed: int, count: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    stats: dict[str, Any] = {}
    violations: list[str] = []
    async with _party_processes(count) as parties:
        for kind in kinds:
            for n in range(trials):
                namespace = f"ptrial-{seed}-{kind}-{n}-{os.getpid()}"
                bad = await process_trial(kind, server, namespace, rng, parties, stats)
                violations += [f"{kind} process trial {n} (seed {seed}): {b}" for b in bad]
    assert not violations, violations  # after every trial: one bug hides no other
    return stats


def test_a_few_randomized_trials_with_party_processes_are_safe(
    own_redis_server: RedisServer,
) -> None:
    # Once, on asyncio (not once per loop of the suite): the parties run their own loops.
    seed = random.randrange(1 << 30)
    kinds = random.Random(seed).sample(sorted(TRIALS), 2)  # the soak runs them all
    asyncio.run(_run_processes(kinds, own_redis_server, trials=1, seed=seed, count=3))


@pytest.mark.soak
@pytest.mark.timeout(0)  # 500 trials take many minutes; each trial is bounded itself
@pytest.mark.parametrize("kind", sorted(TRIALS))
def test_many_randomized_trials_with_party_processes_are_safe(
    own_redis_server: RedisServer, kind: str
) -> None:
    trials = int(os.environ.get("COHORT_REDIS_TRIALS", "500"))
    began = time.monotonic()
    stats = asyncio.run(
        _run_processes([kind], own_redis_server, trials=trials, seed=1, count=PARTIES)
    )
    took = stats.get(f"{kind} detection", [])
    lost = stats.get("restart detection", [])
    bound = FAST["lease"] + 2 * FAST["poll"]
    faults = {k.split()[1]: len(v) for k, v in stats.items() if k.startswith(f"{kind} ")
              and k != f"{kind} detection"}  # fmt: skip
    print(
        f"\n{kind}: {trials} process trials x {PARTIES} parties, 0 violations, 0 hangs, "
        f"{time.monotonic() - began:.0f} s; faults {faults}; detection max "
        f"{max(took, default=0):.3f} s over {len(took)} (lease + 2 polls = {bound:.2f} s); "
        f"after a restart every party lost it within {max(lost, default=0):.3f} s "
        f"(over {len(lost)})"
    )


# -- the restart checker, and what it found ------------------------------------------------


def _restart_at(kill_at: float) -> Restart:
    return Restart(
        kill_at=kill_at, dead_at=kill_at + 0.2, up_at=kill_at + 0.3, fresh_from=1_000_000
    )


def test_the_checker_flags_a_grant_of_the_fresh_state_to_a_party_that_saw_the_old_one() -> None:
    before = {"party": "p0", "op": "write", "start": 1.0, "end": 1.0, "result": "sent",
              "token": 900_000}  # fmt: skip
    after = {"party": "p0", "op": "hold", "start": 3.0, "end": 3.5, "result": "held",
             "token": 1_000_100}  # fmt: skip
    fresh = {**after, "party": "p1"}  # p1 never saw the old state: a new epoch is its right
    assert check_restart([before, after, fresh], _restart_at(2.0), SEEN["lock"]) == [
        "p0 (it saw the state before the restart) hold held, token 1000100 of the restarted server"
    ]


def test_the_checker_flags_a_pass_or_an_open_by_a_wait_that_started_after_the_restart() -> None:
    joined = {"party": "p0", "op": "join", "start": 1.0, "end": 1.0, "result": "ok"}
    passed = {"party": "p0", "op": "wait", "gen": 1, "start": 2.5, "end": 2.6, "result": "passed"}
    opened = {"party": "p0", "op": "wait", "start": 2.5, "end": 2.6, "result": "open"}
    early = {**passed, "start": 1.5}  # it may have passed on the old server
    dying = {**passed, "start": 2.1}  # so may this one: the killed server not yet reaped
    bad = check_restart([joined, passed, opened, early, dying], _restart_at(2.0), ["join"])
    assert [b.split(" by ")[0] for b in bad] == [
        "p0 (it saw the state before the restart) saw generation 1 passed",
        "p0 (it saw the state before the restart) saw the latch open",
    ]


async def test_a_coordinator_that_saw_the_state_gets_no_grant_from_a_restarted_server(
    own_redis_server: RedisServer,
) -> None:
    """docs/semantics.md: a process that saw an epoch gets CoordinatorLost instead of
    starting over on an empty primitive that would admit extra holders. Here a second
    Semaphore(1) object of the same coordinator is admitted while the first still holds."""
    admitted = False
    url = own_redis_server.url  # a long lease: no renewal finds the loss before the ask
    async with Coordinator(url, namespace="restart", lease=10.0, poll=0.05) as coord:
        with contextlib.suppress(LeaseLost, cohort.CoordinatorLost):  # its release: gone
            async with coord.semaphore("s", 1):
                await asyncio.to_thread(own_redis_server.restart)
                with contextlib.suppress(cohort.CoordinatorLost):
                    async with asyncio.timeout(OP_BOUND), coord.semaphore("s", 1):
                        admitted = True
    assert not admitted, "a second holder of Semaphore(1) admitted by the empty server"


async def test_a_new_latch_object_of_a_coordinator_that_saw_the_state_is_lost_after_a_restart(
    own_redis_server: RedisServer,
) -> None:
    """A wait on a new object does not wait on a fresh count of the empty server; a
    coordinator that never saw the state starts afresh."""
    url = own_redis_server.url
    async with Coordinator(url, namespace="restart", **FAST) as coord:
        assert await coord.latch("c", 2).count_down("t1") == 1
        await asyncio.to_thread(own_redis_server.restart)
        with pytest.raises(cohort.CoordinatorLost, match="lost the state"):
            async with asyncio.timeout(OP_BOUND):
                await coord.latch("c", 2).wait()
        async with Coordinator(url, namespace="restart", **FAST) as fresh:
            assert await fresh.latch("c", 2).remaining() == 2
        with pytest.raises(cohort.CoordinatorLost, match="lost the state"):
            await coord.latch("c", 2).count_down("t2")


class _Scripted(Connection):
    """A connection whose script calls wait for replies the test gives, in any order."""

    def __init__(self) -> None:
        super().__init__("redis://127.0.0.1:1/0", "scripted", poll=0.05, unreachable=0.5)
        self.calls: list[tuple[object, asyncio.Future[list[Any]]]] = []
        self.called = asyncio.Event()

    async def call(self, lua: str, keys: Sequence[str], args: Sequence[object]) -> list[Any]:
        reply: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.calls.append((args[0], reply))
        self.called.set()
        return await reply


class _Latchish(Primitive):
    kind = "latch"


@pytest.mark.parametrize("objects", ["one object", "two objects"])
async def test_a_first_call_answered_with_another_epoch_than_the_coordinator_saw_is_lost(
    objects: str,
) -> None:
    """A call sent before the coordinator saw an epoch (a latch's first wait beside its first
    count-down), retried onto a restarted server, comes back with the new server's epoch:
    CoordinatorLost, not a wait on a fresh count that nobody will count down."""
    connection = _Scripted()
    prims = [_Latchish(connection, "c") for _ in range(1 if objects == "one object" else 2)]

    async def sent(count: int) -> None:
        while len(connection.calls) < count:
            connection.called.clear()
            await connection.called.wait()

    early = asyncio.create_task(prims[0].run("lua", [], []))
    await sent(1)
    first = asyncio.create_task(prims[-1].run("lua", [], []))
    await sent(2)
    assert [seen for seen, _ in connection.calls] == ["", ""]
    connection.calls[1][1].set_result(["old-epoch"])
    assert await first == ["old-epoch"]
    connection.calls[0][1].set_result(["new-epoch"])  # the restarted server's
    with pytest.raises(cohort.CoordinatorLost, match="created again"):
        await early
    later = asyncio.create_task(_Latchish(connection, "c").run("lua", [], []))
    await sent(3)
    assert connection.calls[2][0] == "old-epoch"  # every object sends what the coordinator saw
    later.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await later
