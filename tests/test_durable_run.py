"""Durable runs: children and steps named by structural path, not re-run on resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import cohort
import cohort.durable as durable
from _ledger import Ledger
from _util import run_python


class Boom(Exception):
    pass


async def test_finished_children_are_not_run_again_on_resume(ledger: Ledger) -> None:
    db = ledger.target
    calls: list[str] = []

    async def work(i: int) -> int:
        calls.append(f"w{i}")
        await asyncio.sleep(0)
        return i * i

    async def body() -> list[int]:
        async with durable.run("nightly", store=db), cohort.TaskGroup(name="fan") as g:
            handles = [g.spawn(work, i, name=f"w{i}") for i in range(10)]
        return [h.result() for h in handles]

    assert await body() == [i * i for i in range(10)]
    assert sorted(calls) == sorted(f"w{i}" for i in range(10))
    calls.clear()
    assert await body() == [i * i for i in range(10)]
    assert calls == []


async def test_a_child_is_identified_by_its_path_not_its_start_order(ledger: Ledger) -> None:
    db = ledger.target

    async def value(v: str) -> str:
        return v

    async with durable.run("r", store=db), cohort.TaskGroup(name="g") as g:
        g.spawn(value, "A", name="a")
        g.spawn(value, "B", name="b")
    # The resumed code spawns them in the other order, with other arguments: each
    # gets its own recorded value, by name.
    async with durable.run("r", store=db), cohort.TaskGroup(name="g") as g:
        b = g.spawn(value, "changed", name="b")
        a = g.spawn(value, "changed", name="a")
    assert (a.result(), b.result()) == ("A", "B")


async def test_a_recorded_error_is_raised_again_as_the_same_type(ledger: Ledger) -> None:
    db = ledger.target
    calls: list[str] = []

    async def fails() -> None:
        calls.append("fails")
        raise Boom("disk on fire")

    for _ in range(2):
        with pytest.raises(ExceptionGroup) as caught:
            async with durable.run("r", store=db), cohort.TaskGroup(name="g") as g:
                g.spawn(fails)
        [error] = caught.value.exceptions
        assert type(error) is Boom
        assert str(error) == "disk on fire"
    assert calls == ["fails"]
    store = ledger.open()
    assert store.run("r") is not None
    assert store.run("r").state == "failed"  # type: ignore[union-attr]
    store.close()


async def test_a_duplicate_child_name_is_an_error_at_spawn(ledger: Ledger) -> None:
    async def work() -> None:
        pass

    async with durable.run("r", store=ledger.target), cohort.TaskGroup(name="g") as g:
        g.spawn(work)
        with pytest.raises(ValueError, match=r"'work' already exists in g.*pass name="):
            g.spawn(work)
        with pytest.raises(ValueError, match="already exists"):
            g.start_soon(work())  # the coroutine object is closed, not leaked
        g.spawn(work, name="work-2")


async def test_start_soon_children_are_durable_too(ledger: Ledger) -> None:
    db = ledger.target
    calls: list[int] = []

    async def work(i: int) -> int:
        calls.append(i)
        return i

    for _ in range(2):
        async with (
            durable.run("r", store=db),
            cohort.TaskGroup(join=cohort.Quorum(3), name="q") as g,
        ):
            for i in range(3):
                g.start_soon(work, i, name=f"c{i}")
        assert sorted(g.results) == [0, 1, 2]
    assert sorted(calls) == [0, 1, 2]


async def test_nested_groups_and_steps_have_paths_of_their_own(ledger: Ledger) -> None:
    db = ledger.target
    calls: list[str] = []

    async def leaf(tag: str) -> str:
        calls.append(tag)
        return tag

    async def branch(tag: str) -> list[str]:
        first = await durable.step(leaf, f"{tag}-first", name="first")
        async with cohort.TaskGroup(name="inner") as g:
            h = g.spawn(leaf, f"{tag}-leaf", name="leaf")
        return [first, h.result()]

    async def body() -> list[object]:
        async with durable.run("r", store=db) as run:
            top = await run.step(leaf, "top", name="top")
            async with cohort.TaskGroup(name="outer") as g:
                a = g.spawn(branch, "a", name="a")
                b = g.spawn(branch, "b", name="b")
            return [top, a.result(), b.result()]

    expected = ["top", ["a-first", "a-leaf"], ["b-first", "b-leaf"]]
    assert await body() == expected
    store = ledger.open()
    paths = sorted(s.path for s in store.load("r")[0])
    store.close()
    assert paths == [
        "outer/a",
        "outer/a/first",
        "outer/a/inner/leaf",
        "outer/b",
        "outer/b/first",
        "outer/b/inner/leaf",
        "top",
    ]
    calls.clear()
    assert await body() == expected
    assert calls == []


async def test_a_child_that_did_not_finish_runs_again_on_resume(ledger: Ledger) -> None:
    db = ledger.target
    calls: list[str] = []
    gate = asyncio.Event()

    async def quick() -> str:
        calls.append("quick")
        return "q"

    async def slow() -> str:
        calls.append("slow")
        await gate.wait()
        return "s"

    async def body() -> tuple[str, str]:
        async with durable.run("r", store=db), cohort.TaskGroup(name="g") as g:
            q = g.spawn(quick)
            s = g.spawn(slow)
        return q.result(), s.result()

    task = asyncio.create_task(body())
    while calls != ["quick", "slow"]:
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the loop iteration that commits quick's record
    task.cancel()  # as a crash would stop it: slow has no record
    with pytest.raises(asyncio.CancelledError):
        await task
    calls.clear()
    gate.set()
    assert await body() == ("q", "s")
    assert calls == ["slow"]


async def test_a_value_the_codec_cannot_encode_is_an_error_naming_its_path(
    ledger: Ledger,
) -> None:
    async def a_set() -> set[int]:
        return {1}

    with pytest.raises(ExceptionGroup) as caught:
        async with (
            durable.run("r", store=ledger.target, codec=durable.JsonCodec()),
            cohort.TaskGroup(name="g") as g,
        ):
            g.spawn(a_set, name="bad")
    [error] = caught.value.exceptions
    assert isinstance(error, durable.ValueEncodingError)
    assert "'g/bad'" in str(error)
    assert "JsonCodec()" in str(error)


async def test_the_json_codec_records_portable_values(ledger: Ledger) -> None:
    db = ledger.target
    for _ in range(2):
        async with durable.run("r", store=db, codec=durable.JsonCodec()) as run:
            value = await run.step(lambda: {"rows": [1, 2]}, name="count")
        assert value == {"rows": [1, 2]}
    store = ledger.open()
    [record] = store.load("r")[0]
    store.close()
    assert record.value == b'{"rows":[1,2]}'


async def test_outside_a_durable_run_groups_are_untouched_and_step_says_why() -> None:
    async with cohort.TaskGroup() as g:
        g.spawn(asyncio.sleep, 0)
        g.spawn(asyncio.sleep, 0)  # the same name twice: not durable, no check
    with pytest.raises(LookupError, match=r"no durable run is active.*durable.run"):
        await durable.step(asyncio.sleep, 0)


def test_import_cohort_does_not_load_the_durable_layer() -> None:
    code = "import sys, cohort\nprint('cohort.durable' in sys.modules, 'sqlite3' in sys.modules)"
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


async def test_the_idempotency_key_and_epoch_are_stable_per_path(ledger: Ledger) -> None:
    db = ledger.target
    keys: list[str] = []

    async def effect() -> int:
        keys.append(durable.idempotency_key())
        return durable.epoch()

    async with durable.run("r", store=db) as run:
        assert await run.step(effect, name="a") == 1
        await run.step(lambda: keys.append(durable.idempotency_key()), name="b")
    store = ledger.open()
    store.delete("r")
    store.close()
    async with durable.run("r", store=db) as run:
        await run.step(effect, name="a")
    assert keys[0] == keys[2] != keys[1]


async def test_write_rows_commits_its_rows_with_its_record_once(ledger: Ledger) -> None:
    db = ledger.target
    ledger.query("CREATE TABLE out (v INTEGER)")
    insert = ledger.sql("INSERT INTO out VALUES (?)")
    gate = asyncio.Event()

    async def body(block: bool) -> int:
        async with durable.run("r", store=db) as run:
            first = await run.write_rows(insert, [(1,), (2,)], name="a")
            second = await durable.write_rows(insert, [[3]], name="b")
            if block:
                await gate.wait()  # cancelled here, as a crash would stop it
            return first + second

    task = asyncio.create_task(body(True))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await body(False) == 3
    assert sorted(ledger.query("SELECT v FROM out")) == [(1,), (2,), (3,)]


async def test_write_rows_refuses_a_bad_statement_and_a_store_without_sql(
    ledger: Ledger, tmp_path: Path
) -> None:
    async with durable.run("r", store=ledger.target) as run:
        with pytest.raises(ValueError, match=r"nowhere.*check the statement"):
            await run.write_rows(ledger.sql("INSERT INTO nowhere VALUES (?)"), [(1,)], name="bad")

    class Elsewhere(durable.SQLiteStore):
        def execute_in_commit(self, sql: str, rows: list[tuple[object, ...]]) -> None:
            durable.Store.execute_in_commit(self, sql, rows)

    async with durable.run("r2", store=Elsewhere(tmp_path / "other.db")) as run:
        with pytest.raises(TypeError, match="cannot commit a sink's rows"):
            await run.write_rows("INSERT INTO t VALUES (?)", [(1,)], name="rows")
