"""The decision journal: clock reads, random draws, retries and breaker admissions that
decided a branch are taken again, as they were, when a durable run resumes."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import cohort
import cohort.durable as durable
from _ledger import Ledger


def _decisions(store: durable.Store) -> dict[tuple[str, str], object]:
    try:
        return {(d.path, d.kind): json.loads(d.value) for d in store.load("r")[1]}
    finally:
        store.close()


async def _stopped_after(body: asyncio.Task[object], reached: asyncio.Event) -> None:
    """Stop a run as a crash would, once it reached a point (what it buffered commits)."""
    await reached.wait()
    await asyncio.sleep(0)  # the loop iteration that commits what it journaled
    body.cancel()
    with pytest.raises(asyncio.CancelledError):
        await body


async def test_now_and_random_replay_the_values_that_decided_a_branch(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []
    branched = asyncio.Event()
    gate = asyncio.Event()

    async def body() -> tuple[float, float]:
        async with durable.run("r", store=ledger.target), cohort.TaskGroup(name="g") as g:

            async def decide() -> tuple[float, float]:
                t, x = durable.now(), durable.random()
                branch = "early" if t < 1e9 else "late"
                taken.append(f"{branch}/{'low' if x < 0.5 else 'high'}")
                branched.set()
                await gate.wait()
                return t, x

            child = g.spawn(decide)
        return child.result()

    monkeypatch.setattr(time, "time", lambda: 5e8)
    monkeypatch.setattr(random, "random", lambda: 0.25)
    first = asyncio.create_task(body())
    await _stopped_after(first, branched)
    # Resumed later, with another draw: the child runs again and takes the same branch.
    monkeypatch.setattr(time, "time", lambda: 2e9)
    monkeypatch.setattr(random, "random", lambda: 0.75)
    gate.set()
    assert await body() == (5e8, 0.25)
    assert taken == ["early/low", "early/low"]
    assert _decisions(ledger.open()) == {
        ("g/decide", "now-1"): 5e8,
        ("g/decide", "random-1"): 0.25,
        ("g", "end"): {"children": 1},
    }


async def test_now_and_random_are_counted_per_path_and_plain_outside_a_run(
    tmp_path: Path,
) -> None:
    assert 0.0 <= durable.random() < 1.0
    assert abs(durable.now() - time.time()) < 60  # the plain clock, not a recorded value

    async def body() -> list[float]:
        async with durable.run("r", store=tmp_path / "runs.db") as run:

            async def draws() -> list[float]:
                return [durable.random(), durable.random()]

            mine = [durable.random()]
            return mine + await run.step(draws) + [durable.random()]

    first = await body()
    assert len(set(first)) == 4
    store = durable.SQLiteStore(tmp_path / "runs.db")
    assert sorted(_decisions(store)) == [
        ("", "random-1"),
        ("", "random-2"),
        ("draws", "random-1"),
        ("draws", "random-2"),
    ]


_BRANCH = textwrap.dedent(
    """
    import asyncio, random, sys
    import cohort.durable as durable

    async def main(db):
        async with durable.run("r", store=db) as run:
            x = durable.random()
            branch = "low" if x < 0.5 else "high"
            print(branch, x, durable.now(), flush=True)
            await asyncio.sleep(0.01)  # the journal commits
            await run.step(lambda: branch, name=branch)

    random.seed(int(sys.argv[2]))
    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_branch_on_random_killed_after_it_takes_the_same_branch_on_resume(
    tmp_path: Path,
) -> None:
    program = tmp_path / "branch.py"
    program.write_text(_BRANCH)
    db = tmp_path / "runs.db"

    def run(seed: int, crash: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(program), str(db), str(seed)],
            env={**os.environ, "COHORT_DURABLE_CRASH": crash},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    random.seed(1)
    low = random.random()
    random.seed(2)
    assert low < 0.5 <= random.random()  # a fresh draw on resume would go the other way
    killed = run(1, "after-effect")  # killed in the branch's step, before its record
    assert killed.returncode == -9, killed.stderr
    resumed = run(2, "")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout == killed.stdout  # the same branch, draw and time
    assert killed.stdout.startswith("low ")
    store = durable.SQLiteStore(db)
    [step] = store.load("r")[0]
    store.close()
    assert (step.path, step.status) == ("low", "ok")


@pytest.mark.virtual_clock
async def test_a_retried_step_resumed_between_attempts_gets_only_the_attempts_left(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ledger.target
    calls: list[int] = []
    second_failed = asyncio.Event()
    policy = cohort.Retry(attempts=3, backoff=100.0, max_backoff=100.0, jitter=False)

    async def fetch() -> str:
        calls.append(len(calls) + 1)
        if len(calls) == 2:
            second_failed.set()
        if len(calls) < 3:
            raise ConnectionError(f"try {len(calls)}")
        raise ConnectionError("down for good")

    async def body() -> str:
        async with durable.run("r", store=db) as run:
            return await run.step(lambda: cohort.retry(fetch, policy=policy), name="fetch")

    loop = asyncio.get_running_loop()
    wall = [1000.0 - loop.time()]
    monkeypatch.setattr(time, "time", lambda: wall[0] + loop.time())  # on the virtual clock
    first = asyncio.create_task(body())
    await _stopped_after(first, second_failed)  # in the backoff before attempt 3
    assert calls == [1, 2]
    resumed_at = loop.time()
    wall[0] = 1160.0 - resumed_at  # resumed 60 s into attempt 2's 100 s backoff
    with pytest.raises(ConnectionError, match="down for good") as caught:
        await body()
    assert calls == [1, 2, 3]  # one attempt left, not three fresh ones
    assert loop.time() - resumed_at == pytest.approx(40.0)  # the backoff's end, not reset
    notes = caught.value.__notes__
    assert "failed 3 attempts; this is the last" in notes[0]
    assert "attempts 1-2 failed before the durable run resumed" in notes[1]
    assert "ConnectionError('try 2')" in notes[1]


@pytest.mark.virtual_clock
async def test_a_breaker_rejection_in_a_durable_run_takes_the_same_fallback_on_resume(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"
    calls: list[str] = []
    fell_back = asyncio.Event()
    gate = asyncio.Event()

    async def primary() -> str:
        calls.append("primary")
        return "fresh"

    async def fallback() -> str:
        calls.append("fallback")
        fell_back.set()
        await gate.wait()
        return "cached"

    async def body(breaker: cohort.CircuitBreaker) -> str:
        async with durable.run("r", store=db), cohort.TaskGroup(name="g") as g:

            async def fetch() -> str:
                try:
                    return await breaker.call(primary)
                except cohort.CircuitOpenError:
                    return await fallback()

            child = g.spawn(fetch)
        return child.result()

    tripped = cohort.CircuitBreaker(failures=1, recovery_timeout=60.0)
    with pytest.raises(ValueError):
        async with tripped:
            raise ValueError("the backend failed")
    first = asyncio.create_task(body(tripped))
    await _stopped_after(first, fell_back)
    gate.set()
    calls.clear()
    closed = cohort.CircuitBreaker(failures=1)  # the process restarted: a fresh breaker
    assert await body(closed) == "cached"
    assert calls == ["fallback"]  # the journaled rejection, not the breaker's state now
    assert closed.statistics().rejected == 1
    assert _decisions(durable.SQLiteStore(db))[("g/fetch", "breaker-1")] is False


@pytest.mark.virtual_clock
async def test_a_call_a_breaker_let_through_before_a_crash_is_let_through_on_resume(
    ledger: Ledger,
) -> None:
    db = ledger.target
    admitted = asyncio.Event()
    gate = asyncio.Event()

    async def primary() -> str:
        admitted.set()
        await gate.wait()
        return "fresh"

    async def body(breaker: cohort.CircuitBreaker) -> str:
        async with durable.run("r", store=db) as run:
            try:
                return await run.step(lambda: breaker.call(primary), name="fetch")
            except cohort.CircuitOpenError:
                return "fallback"

    first = asyncio.create_task(body(cohort.CircuitBreaker(failures=1)))
    await _stopped_after(first, admitted)
    gate.set()
    tripped = cohort.CircuitBreaker(failures=1, recovery_timeout=60.0)
    with pytest.raises(ValueError):
        async with tripped:
            raise ValueError("the backend failed")
    assert await body(tripped) == "fresh"  # open now, but it let this call through
    stats = tripped.statistics()
    assert (stats.rejected, stats.successes, stats.state) == (0, 1, cohort.CircuitState.OPEN)


async def test_a_node_resume_flow_reruns_draws_afresh_and_the_others_keep_theirs(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ledger.target
    flow = cohort.Flow("f", inputs=["x"])

    @flow.node
    async def kept(x: int) -> float:
        return durable.random()

    @flow.node
    async def again(kept: float) -> float:
        return durable.random()

    monkeypatch.setattr(random, "random", lambda: 0.25)
    first = await durable.run_flow(flow, run_id="r", store=db, x=0)
    assert (first[kept], first[again]) == (0.25, 0.25)
    monkeypatch.setattr(random, "random", lambda: 0.75)
    rerun = await durable.resume_flow(flow, "r", from_node="again", store=db)
    assert (rerun[kept], rerun[again]) == (0.25, 0.75)


@pytest.mark.virtual_clock
async def test_a_flow_node_retried_and_resumed_between_attempts_gets_only_the_attempts_left(
    ledger: Ledger,
) -> None:
    db = ledger.target
    calls: list[int] = []
    second = asyncio.Event()
    gate = asyncio.Event()
    flow = cohort.Flow("f", inputs=["x"])

    @flow.node(retry=cohort.Retry(attempts=2, backoff=1.0))
    async def flaky(x: int) -> int:
        calls.append(x)
        if len(calls) > 1:
            second.set()
            await gate.wait()
        raise ConnectionError(f"try {len(calls)}")

    first = asyncio.create_task(durable.run_flow(flow, run_id="r", store=db, x=0))
    await _stopped_after(first, second)  # in attempt 2: attempt 1's failure is journaled
    gate.set()
    with pytest.raises(cohort.FlowError) as caught:
        await durable.run_flow(flow, run_id="r", store=db, x=0)
    assert calls == [0, 0, 0]  # resumed: attempt 2 only
    error = caught.value.__cause__
    assert isinstance(error, ConnectionError)
    assert "failed 2 attempts; this is the last" in error.__notes__[0]


async def test_a_draw_in_a_plain_def_flow_node_is_journaled_from_its_thread_on_the_loop(
    tmp_path: Path,
) -> None:
    flow = cohort.Flow("f", inputs=["x"])

    @flow.node
    def in_a_thread(x: int) -> float:
        return durable.random()

    loop = asyncio.get_running_loop()
    loop.set_debug(True)  # a loop method called from another thread raises
    try:
        result = await durable.run_flow(flow, run_id="r", store=tmp_path / "runs.db", x=0)
    finally:
        loop.set_debug(False)
    decisions = _decisions(durable.SQLiteStore(tmp_path / "runs.db"))
    assert decisions == {("f/in_a_thread", "random-1"): result[in_a_thread]}
