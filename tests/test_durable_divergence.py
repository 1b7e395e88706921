"""Durable runs resumed by code whose structure changed: divergence is reported, not hidden."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import cohort
import cohort.durable as durable
from _ledger import Ledger


async def _value(v: str) -> str:
    return v


async def _fan(db: Path, names: list[str], **options: object) -> dict[str, str]:
    async with (
        durable.run("r", store=db, **options),  # type: ignore[arg-type]
        cohort.TaskGroup(name="fan") as g,
    ):
        handles = {n: g.spawn(_value, n, name=n) for n in names}
    return {n: h.result() for n, h in handles.items()}


async def test_a_recorded_path_the_resumed_code_never_reaches_fails_the_run_at_exit(
    ledger: Ledger,
) -> None:
    db = ledger.target
    await _fan(db, ["a", "b", "c"])
    with pytest.raises(durable.DivergenceError, match=r"1 recorded step\(s\).*fan/c"):
        await _fan(db, ["a", "b"])
    # Discarding drops the stale record: the next resume no longer misses it.
    assert await _fan(db, ["a", "b"], on_divergence="discard") == {"a": "a", "b": "b"}
    assert await _fan(db, ["a", "b"]) == {"a": "a", "b": "b"}


async def test_a_new_child_in_a_group_the_record_shows_closed_is_refused_at_spawn(
    ledger: Ledger,
) -> None:
    db = ledger.target
    await _fan(db, ["a", "b"])
    with pytest.raises(ExceptionGroup) as caught:  # raised by spawn in the group's body
        await _fan(db, ["a", "new", "b"])
    [error] = caught.value.exceptions
    assert isinstance(error, durable.DivergenceError)
    message = str(error)
    assert "new child 'fan/new'" in message
    assert "closed without it" in message
    assert 'on_divergence="discard"' in message
    store = ledger.open()
    assert "fan/new" not in {s.path for s in store.load("r")[0]}
    store.close()


async def test_a_new_child_runs_with_on_divergence_discard(ledger: Ledger) -> None:
    db = ledger.target
    await _fan(db, ["a", "b"])
    got = await _fan(db, ["a", "new", "b"], on_divergence="discard")
    assert got == {"a": "a", "new": "new", "b": "b"}
    assert await _fan(db, ["a", "new", "b"]) == got  # now recorded: no divergence


async def test_a_child_without_a_record_in_a_group_that_never_closed_runs(
    ledger: Ledger,
) -> None:
    db = ledger.target
    gate = asyncio.Event()
    started = asyncio.Event()

    async def slow() -> str:
        started.set()
        await gate.wait()
        return "slow"

    async def crashed() -> None:
        async with durable.run("r", store=db), cohort.TaskGroup(name="fan") as g:
            g.spawn(_value, "a", name="a")
            g.spawn(slow, name="slow")

    task = asyncio.create_task(crashed())
    await started.wait()
    await asyncio.sleep(0)  # the loop iteration that commits a's record
    task.cancel()  # as a crash would stop it: the group never closed
    with pytest.raises(asyncio.CancelledError):
        await task
    # The unrecorded child may simply not have finished: it runs, as may a new one.
    assert await _fan(db, ["a", "slow", "new"]) == {"a": "a", "slow": "slow", "new": "new"}
