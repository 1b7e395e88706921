"""A small pipeline for ``cohort run``: word statistics for each input line.

    printf 'hello world\\nasync is fun\\n' | cohort run examples/cli_pipeline.py:pipeline

prints one JSON object per line. ``shout`` is a one-stage pipeline for JSON
input (``--json-lines``, objects with a ``"text"`` key); ``strict`` fails on
a line holding ``boom`` under ``on_error="raise"``; ``lenient`` skips it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import cohort


@cohort.stage(workers=4)
async def words(line: str) -> list[str]:
    await asyncio.sleep(0)  # stands in for real async work (a lookup, a request)
    return line.split()


@cohort.stage
async def summarize(ws: list[str]) -> dict[str, Any]:
    return {"words": len(ws), "longest": max(ws, key=len, default="")}


@cohort.stage
async def shout(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "text": str(record["text"]).upper()}


async def _check(line: str) -> str:
    if "boom" in line:
        raise ValueError(f"cannot handle {line!r}")
    return line


check_strict = cohort.stage(name="check", on_error="raise")(_check)
check_lenient = cohort.stage(name="check", on_error="skip")(_check)

pipeline = words | summarize
strict = check_strict | pipeline
lenient = check_lenient | pipeline
