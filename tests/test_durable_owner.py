"""One owner at a time, with real processes: a stopped owner fenced off by a takeover."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cohort.durable as durable

_OWNER = textwrap.dedent(
    """
    import asyncio, sys
    import cohort.durable as durable

    async def main(db):
        async with durable.run("r", store=db) as run:
            await run.step(lambda: "early", name="early")
            run.flush()
            print("owned", run.epoch, flush=True)
            await asyncio.to_thread(sys.stdin.readline)
            await run.step(lambda: "late", name="late")
            await asyncio.sleep(0)  # the group commit at the end of this iteration

    try:
        asyncio.run(main(sys.argv[1]))
    except durable.FencedError as exc:
        print("fenced:", exc, flush=True)
        sys.exit(3)
    """
)


async def _take_over(db: Path) -> None:
    with pytest.raises(durable.RunBusyError, match="steal=True"):
        async with durable.run("r", store=db):
            pass
    async with durable.run("r", store=db, steal=True) as run:
        assert run.epoch == 2  # the fencing token moved on
        assert await run.step(lambda: "x", name="early") == "early"  # recorded
        await run.step(lambda: "taken over", name="new-owner")


async def _wait_for_owner(db: Path) -> None:
    async with durable.run("r", store=db, wait=60) as run:
        assert run.epoch == 2
        assert await run.step(lambda: "x", name="early") == "early"
        assert await run.step(lambda: "x", name="late") == "late"


def test_a_stopped_owner_resumed_after_a_takeover_never_commits(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdin is not None
        assert owner.stdout is not None
        assert owner.stdout.readline() == "owned 1\n"
        os.kill(owner.pid, signal.SIGSTOP)
        try:
            asyncio.run(_take_over(db))
        finally:
            os.kill(owner.pid, signal.SIGCONT)
        owner.stdin.write("\n")
        owner.stdin.flush()
        assert owner.wait(timeout=60) == 3
        assert "epoch 1 no longer owns it" in owner.stdout.read()
    store = durable.SQLiteStore(db)
    paths = sorted(s.path for s in store.load("r")[0])
    record = store.run("r")
    store.close()
    assert paths == ["early", "new-owner"]  # nothing of the stopped owner after takeover
    assert record is not None
    assert (record.epoch, record.state) == (2, "done")


def test_a_second_opener_waits_for_the_live_owner_to_finish(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdin is not None
        assert owner.stdout is not None
        assert owner.stdout.readline() == "owned 1\n"
        owner.stdin.write("\n")  # the owner finishes while we wait for it
        owner.stdin.flush()
        asyncio.run(_wait_for_owner(db))
        assert owner.wait(timeout=60) == 0
