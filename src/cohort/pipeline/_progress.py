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


class Meter:
    """Rates over the time since the previous sample, on the loop's clock (the
    last sample of a run is usually shorter than an interval)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.previous: dict[str, int] = {}
        self.at = engine.started

    def rows(self) -> list[dict[str, Any]]:
        """One row per stage: in, out, in flight, errors and rate (items in per second)."""
        now = self.engine.loop.time()
        interval, self.at = now - self.at, now
        result = []
        for run in self.engine.runs:
            new = run.items_in - self.previous.get(run.name, 0)
            result.append(
                {
                    "stage": run.name,
                    "in": run.items_in,
                    "out": run.items_out,
                    "in_flight": run.items_in - run.processed,
                    "errors": run.failed,
                    "rate": new / interval if interval > 0 else 0.0,
                }
            )
            self.previous[run.name] = run.items_in
        return result

    def overall(self) -> str:
        """Items read and finished, the time so far; with the input's length, how
        much of it is finished and an estimate of the time left."""
        engine = self.engine
        read, total = engine.tally.read, engine.total
        finished = sum(engine.tally.counts)  # an output, dropped, done or failed
        elapsed = engine.loop.time() - engine.started
        if not total:
            return f"read={read} finished={finished} {elapsed:.1f}s"
        share = min(finished, total) / total
        eta = f" eta {elapsed / share - elapsed:.1f}s" if 0 < share < 1 else ""
        return f"read={read} finished={finished}/{total} ({share:.0%}) {elapsed:.1f}s{eta}"


def line(meter: Meter) -> str:
    parts = [
        f"{r['stage']} in={r['in']} out={r['out']} flight={r['in_flight']} "
        f"err={r['errors']} {r['rate']:.0f}/s"
        for r in meter.rows()
    ]
    return f"pipeline {meter.overall()} | " + " | ".join(parts)


async def _lines(engine: Engine, out: TextIO) -> None:
    meter = Meter(engine)
    try:
        while True:
            await asyncio.sleep(LINE_INTERVAL)
            print(line(meter), file=out, flush=True)
    finally:
        print(line(meter) + " (end)", file=out)


async def _live(engine: Engine, out: TextIO) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    meter = Meter(engine)

    def render() -> Table:
        table = Table(title=f"pipeline: {meter.overall()}")
        for column in ("stage", "in", "out", "in flight", "errors", "items/s"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for r in meter.rows():
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
