"""Join decisions in durable runs: a resumed group takes the branch it took before."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import cohort
import cohort.durable as durable
from _ledger import Ledger


async def _race(db: Path, delays: dict[str, float], calls: list[str]) -> tuple[str, list[str]]:
    async def reply(name: str) -> str:
        calls.append(name)
        await asyncio.sleep(delays[name])
        return name

    async with (
        durable.run("r", store=db),
        cohort.TaskGroup(join=cohort.FirstWins(), name="race") as g,
    ):
        for name in delays:
            g.spawn(reply, name, name=name)
    return g.result, [o.status.value for o in g.outcomes]


@pytest.mark.virtual_clock
async def test_first_wins_replays_the_same_winner_and_does_not_rerun_losers(
    ledger: Ledger,
) -> None:
    db = ledger.target
    calls: list[str] = []
    first = await _race(db, {"a": 3.0, "b": 1.0, "c": 2.0}, calls)
    assert first == ("b", ["cancelled", "succeeded", "cancelled"])
    calls.clear()
    # Resumed with other timings, "a" would win a fresh race: the recorded one stands.
    again = await _race(db, {"a": 0.0, "b": 5.0, "c": 0.0}, calls)
    assert again == first
    assert calls == []
    store = ledger.open()
    [decision] = [d for d in store.load("r")[1] if d.kind == "winners"]
    store.close()
    assert (decision.path, json.loads(decision.value)) == ("race", ["race/b"])


@pytest.mark.virtual_clock
async def test_losers_not_yet_recorded_as_cancelled_are_not_rerun_after_the_winner(
    ledger: Ledger,
) -> None:
    db = ledger.target
    calls: list[str] = []
    await _race(db, {"a": 3.0, "b": 1.0, "c": 2.0}, calls)
    # A crash right after the winner's record: the losers' records and the decision
    # never reached the ledger.
    store = ledger.open()
    epoch = store.acquire("r")
    store.discard_steps("r", ["race/a", "race/c"])
    store.execute_in_commit(
        ledger.sql(f"DELETE FROM {ledger.table('decisions')} WHERE run_id = ?"), [("r",)]
    )
    store.flush("r", epoch)
    store.close()
    calls.clear()
    again = await _race(db, {"a": 0.0, "b": 5.0, "c": 0.0}, calls)
    assert again == ("b", ["cancelled", "succeeded", "cancelled"])
    assert calls == []  # the losers waited for the recorded winner and were cancelled


@pytest.mark.virtual_clock
async def test_quorum_replays_its_winners_in_their_recorded_completion_order(
    ledger: Ledger,
) -> None:
    db = ledger.target

    async def body(delays: list[float]) -> list[int]:
        async def reply(i: int) -> int:
            await asyncio.sleep(delays[i])
            return i

        async with (
            durable.run("r", store=db),
            cohort.TaskGroup(join=cohort.Quorum(3), name="q") as g,
        ):
            for i in range(6):
                g.spawn(reply, i, name=f"r{i}")
        return list(g.results)

    first = await body([6.0, 3.0, 5.0, 1.0, 4.0, 2.0])
    assert first == [3, 5, 1]
    assert await body([0.0] * 6) == first


@pytest.mark.virtual_clock
async def test_a_partial_timeout_stays_partial_on_replay(ledger: Ledger) -> None:
    db = ledger.target
    calls: list[int] = []

    async def body(delays: list[float]) -> tuple[list[int], list[str]]:
        async def work(i: int) -> int:
            calls.append(i)
            await asyncio.sleep(delays[i])
            return i

        async with (
            durable.run("r", store=db),
            cohort.TaskGroup(timeout=2.5, on_timeout="partial", name="g") as g,
        ):
            for i in range(4):
                g.spawn(work, i, name=f"w{i}")
        return list(g.results), [o.status.value for o in g.outcomes]

    first = await body([1.0, 5.0, 2.0, 9.0])
    assert first == ([0, 2], ["succeeded", "timed out", "succeeded", "timed out"])
    calls.clear()
    results, statuses = await body([0.0] * 4)  # would all finish now: they are not run
    assert results == [0, 2]
    assert statuses == ["succeeded", "cancelled", "succeeded", "cancelled"]
    assert calls == []
    store = ledger.open()
    kinds = sorted((d.path, d.kind) for d in store.load("r")[1])
    store.close()
    assert kinds == [("g", "end"), ("g", "timeout")]


@pytest.mark.virtual_clock
@pytest.mark.parametrize(("cancelled", "limit"), [("a", None), ("b", 1)])  # a task; queued
async def test_a_recorded_child_cancelled_before_its_first_step_does_not_hold_up_the_rest(
    tmp_path: Path, cancelled: str, limit: int | None
) -> None:
    db = tmp_path / "runs.db"
    calls: list[str] = []

    async def work(name: str, delay: float) -> str:
        calls.append(name)
        await asyncio.sleep(delay)
        return await durable.step(lambda: name, name="inner")  # never reached again

    async def body(cancel_first: bool) -> list[str]:
        async with durable.run("r", store=db), cohort.TaskGroup(name="g", limit=limit) as g:
            handles = {n: g.spawn(work, n, d, name=n) for n, d in [("a", 1.0), ("b", 2.0)]}
            g.spawn(work, "c", 3.0, name="c")
            if cancel_first:
                handles[cancelled].cancel()  # before its first step: its replay never begins
        return [o.status.value for o in g.outcomes]

    assert await body(False) == ["succeeded"] * 3
    # A crash before "c" was recorded: "a" and "b" replay, "c" runs again.
    store = durable.SQLiteStore(db)
    epoch = store.acquire("r")
    store.discard_steps("r", ["g/c"])
    store.execute_in_commit("DELETE FROM decisions WHERE run_id = ?", [("r",)])
    store.flush("r", epoch)
    store.close()
    calls.clear()
    async with asyncio.timeout(60):  # virtual seconds: a hang fails here
        statuses = await body(True)
    assert statuses == [
        "cancelled" if name == cancelled else "succeeded" for name in ("a", "b", "c")
    ]
    assert calls == ["c"]


@pytest.mark.virtual_clock
async def test_a_step_recorded_inside_a_loser_cut_short_sooner_on_resume_is_no_divergence(
    tmp_path: Path,
) -> None:
    db = tmp_path / "runs.db"

    async def slow() -> str:
        await durable.step(lambda: "sent", name="inner")  # recorded before the crash
        await asyncio.sleep(5)
        return "slow"

    async def fast() -> str:
        await asyncio.sleep(1)
        return "fast"

    async def body() -> object:
        async with (
            durable.run("r", store=db),
            cohort.TaskGroup(join=cohort.FirstWins(), name="g") as g,
        ):
            g.spawn(slow, name="slow")
            g.spawn(fast, name="fast")
        return g.result

    assert await body() == "fast"
    # A crash before the loser's end was recorded: its inner step was.
    store = durable.SQLiteStore(db)
    epoch = store.acquire("r")
    store.discard_steps("r", ["g/slow"])
    store.execute_in_commit("DELETE FROM decisions WHERE run_id = ?", [("r",)])
    store.flush("r", epoch)
    store.close()
    # Resumed, the loser is cut short before it reaches "inner": not a divergence.
    assert await body() == "fast"
