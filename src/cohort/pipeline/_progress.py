"""``progress=True``: a live per-stage display on a terminal, a periodic line otherwise.

The display runs as an optional child of the run's task group, so it stops
with the run. On a terminal it uses rich (``pip install rich``) when it is
installed; elsewhere, or without rich, it writes one plain line per interval
to stderr.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from cohort.pipeline._engine import Engine

__all__ = ["progress_task"]

LINE_INTERVAL = 2.0  # seconds between plain progress lines
LIVE_INTERVAL = 0.25  # seconds between terminal refreshes


def progress_task(stream: TextIO | None = None) -> Callable[[Engine], Awaitable[None]]:
    """The coroutine function the engine runs beside its workers to show progress."""
    out = stream if stream is not None else sys.stderr
    if out.isatty():
        try:
            import rich  # noqa: F401
        except ImportError:
            pass
        else:
            return lambda engine: _live(engine, out)
    return lambda engine: _lines(engine, out)


def rows(engine: Engine, previous: dict[str, int], interval: float) -> list[dict[str, Any]]:
    """One row per stage: in, out, in flight, errors and rate (items in per second)."""
    result = []
    for run in engine.runs:
        result.append(
            {
                "stage": run.name,
                "in": run.items_in,
                "out": run.items_out,
                "in_flight": run.items_in - run.processed,
                "errors": run.failed,
                "rate": (run.items_in - previous.get(run.name, 0)) / interval,
            }
        )
        previous[run.name] = run.items_in
    return result


def line(engine: Engine, table: list[dict[str, Any]]) -> str:
    parts = [
        f"{r['stage']} in={r['in']} out={r['out']} flight={r['in_flight']} "
        f"err={r['errors']} {r['rate']:.0f}/s"
        for r in table
    ]
    return f"pipeline read={engine.tally.read} | " + " | ".join(parts)


async def _lines(engine: Engine, out: TextIO) -> None:
    previous: dict[str, int] = {}
    try:
        while True:
            await asyncio.sleep(LINE_INTERVAL)
            print(line(engine, rows(engine, previous, LINE_INTERVAL)), file=out, flush=True)
    finally:
        print(line(engine, rows(engine, previous, LINE_INTERVAL)) + " (end)", file=out)


async def _live(engine: Engine, out: TextIO) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    previous: dict[str, int] = {}

    def render() -> Table:
        table = Table(title=f"pipeline: {engine.tally.read} read")
        for column in ("stage", "in", "out", "in flight", "errors", "items/s"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for r in rows(engine, previous, LIVE_INTERVAL):
            table.add_row(
                r["stage"],
                str(r["in"]),
                str(r["out"]),
                str(r["in_flight"]),
                str(r["errors"]),
                f"{r['rate']:.0f}",
            )
        return table

    with Live(render(), console=Console(file=out), auto_refresh=False) as live:
        try:
            while True:
                await asyncio.sleep(LIVE_INTERVAL)
                live.update(render(), refresh=True)
        finally:
            live.update(render(), refresh=True)
