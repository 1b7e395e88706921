"""Pipelines: structlog events per stage and progress display (cohort.pipeline._progress)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

import cohort
from cohort.pipeline._progress import progress_task

vc = pytest.mark.virtual_clock


@vc
async def test_stage_events_carry_stage_and_index(events: list[MutableMapping[str, Any]]) -> None:
    @cohort.stage(on_error="skip", retry=cohort.Retry(attempts=2, backoff=0))
    async def pick(x: int) -> Any:
        if x == 1:
            return cohort.DROP
        if x == 2:
            raise ValueError("two")
        return x

    await pick.run(range(4))
    kinds = [e["event"] for e in events if e["event"].startswith("pipeline")]
    assert kinds[0] == "pipeline.started"
    assert kinds[-1] == "pipeline.finished"
    for kind in ("stage.started", "item.dropped", "item.retried", "item.failed", "stage.finished"):
        assert f"pipeline.{kind}" in kinds
    failed = next(e for e in events if e["event"] == "pipeline.item.failed")
    assert (failed["stage"], failed["index"]) == ("pick", 2)
    dropped = next(e for e in events if e["event"] == "pipeline.item.dropped")
    assert dropped["index"] == 1
    finished = next(e for e in events if e["event"] == "pipeline.finished")
    assert (finished["read"], finished["succeeded"], finished["failed"]) == (4, 2, 1)


async def test_no_pipeline_events_unless_enabled() -> None:
    @cohort.stage
    async def same(x: int) -> int:
        return x

    with capture_logs() as logs:
        await same.run(range(3))
    assert logs == []


@vc
async def test_progress_writes_periodic_lines_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @cohort.stage(workers=2)
    async def slow(x: int) -> int:
        await asyncio.sleep(1)
        return x

    report = await slow.run(range(10), progress=True)
    assert report.succeeded == 10
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3  # at 2 s and 4 s, and a last one at the end
    assert lines[0].startswith("pipeline read=")
    assert "slow in=" in lines[0]
    assert lines[-1].endswith("(end)")
    assert "out=10" in lines[-1]
    # finished items of the known total, time so far, time left at this pace
    assert " finished=" in lines[0]
    assert "/10 (" in lines[0]
    assert " eta " in lines[0]
    assert " finished=10/10 (100%) 5.0s | " in lines[2]


@vc
async def test_progress_shows_share_finished_and_time_left(
    capsys: pytest.CaptureFixture[str],
) -> None:
    @cohort.stage(workers=2)
    async def slow(x: int) -> int:
        await asyncio.sleep(0.9)  # pairs finish at 0.9, 1.8, 2.7, 3.6, 4.5 s
        return x

    await slow.run(range(10), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert " finished=4/10 (40%) 2.0s eta 3.0s | " in lines[0]
    assert " finished=8/10 (80%) 4.0s eta 1.0s | " in lines[1]
    assert " finished=10/10 (100%) 4.5s | " in lines[2]
    # each rate is over the time since the previous line: 4 calls started
    # between 0 and 2 s, 4 more (of 0.9 s each) between 2 and 4 s
    assert lines[0].endswith(" 3/s")
    assert lines[1].endswith(" 2/s")


@vc
async def test_progress_without_a_length_shows_what_is_read_and_finished(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    @cohort.stage
    async def slow(x: int) -> int:
        await asyncio.sleep(0.9)
        return x

    await slow.run(numbers(), progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("pipeline read=3 finished=2 2.0s | ")
    assert lines[-1].startswith("pipeline read=3 finished=3 2.7s | ")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@vc
async def test_progress_on_a_terminal_draws_a_live_table() -> None:
    pytest.importorskip("rich")
    term = FakeTerminal()

    @cohort.stage(workers=2)
    async def slow(x: int) -> int:
        await asyncio.sleep(1)
        return x

    from cohort.pipeline._engine import Engine

    engine = Engine(slow._plans(), collect=True, stream=False)
    await engine.execute(range(4), progress_task(term))
    drawn = term.getvalue()
    assert "slow" in drawn
    assert "items/s" in drawn


async def test_the_report_shows_no_latency_for_a_stage_that_saw_no_item() -> None:
    @cohort.stage
    async def never(x: int) -> int:
        return x

    report = await never.run([])
    line = str(report).splitlines()[1]
    assert "p50 - p99 - " in line
    assert "nan" not in str(report)
