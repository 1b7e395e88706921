"""Durable pipelines: a pipeline run inside a ``cohort.durable`` run, resumable item by item.

``run_durable(pipeline, source, name=...)`` runs each stage through a thin
wrapper that carries the item's source offset with its value and records, in
the run's item ledger, the stage each item reached (one row per item moved,
committed with the run's group commit, not a step per item per stage). A
resumed run re-reads the source: an item every stage finished is skipped and
counted as it ended before (output or dropped), an item that reached stage
``k`` enters stage ``k + 1`` with its recorded value. ``sql_sink(...)`` is a
transactional sink stage: its rows are committed with the ledger row of the
item, so they are written exactly once across kill -9.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from cohort.durable import ItemLedger, current_run
from cohort.pipeline._options import StageOptions
from cohort.pipeline._pipeline import Pipeline
from cohort.pipeline._report import Report
from cohort.pipeline._retry import DROP, Many
from cohort.pipeline._stage import Stage

__all__ = ["run_durable", "sql_sink"]

# (offset, stage reached, value): what flows between the wrapped stages.
_Item = tuple[int, int, Any]


class _Sink:
    """The function of a ``sql_sink`` stage: it only runs inside ``run_durable``."""

    def __init__(self, sql: str, rows: Callable[[Any], Iterable[Any]] | None) -> None:
        self.sql = sql
        self.rows = rows

    async def __call__(self, item: Any) -> Any:
        raise RuntimeError(
            "a sql_sink stage writes in a durable run's commits: run its pipeline with "
            "cohort.pipeline.run_durable(pipeline, source, name=...) inside "
            "cohort.durable.run(...)"
        )

    def __repr__(self) -> str:
        return f"sql_sink({self.sql!r})"


def sql_sink(
    sql: str,
    rows: Callable[[Any], Iterable[Any]] | None = None,
    *,
    name: str = "sink",
    workers: int = 1,
) -> Stage[Any, Any]:
    """A transactional sink stage for ``run_durable``: each item's rows
    (``rows(item)``, an iterable of parameter tuples; default: the item itself
    is one row) are written with ``executemany(sql, ...)`` in the run's SQLite
    database, in the same transaction as the ledger row saying the item
    passed this stage: exactly once, kill -9 included. The stage emits the item
    unchanged. The statement is checked when the first rows are written."""
    if not isinstance(sql, str) or not sql.strip():
        raise TypeError(f"sql_sink takes an SQL statement (str), got {sql!r}")
    if rows is not None and not callable(rows):
        raise TypeError(f"rows= takes a function item -> iterable of rows, got {rows!r}")
    return Stage(_Sink(sql, rows), _options(name, workers))


def _options(name: str, workers: int) -> StageOptions:
    return StageOptions(name=name, workers=workers)


def _wrap(s: Stage[Any, Any], index: int, ledger: ItemLedger) -> Stage[Any, Any]:
    """Stage ``index`` (1-based) of a durable pipeline: items carry their offset."""
    fn = s.fn
    if isinstance(fn, _Sink):
        sql, rows_of = fn.sql, fn.rows

        async def write(item: _Item) -> _Item:
            offset, reached, value = item
            if reached >= index:
                return item
            rows = [value] if rows_of is None else list(rows_of(value))
            ledger.write(offset, index, value, sql, [tuple(r) for r in rows])
            return (offset, index, value)

        write.__name__ = s.name
        return Stage(write, s.options)
    invoke = s.engine_call()
    name = s.name

    async def call(item: _Item) -> Any:
        offset, reached, value = item
        if reached >= index:
            return item
        result = await invoke(value)
        if result is DROP:
            ledger.drop(offset, index)
            return DROP
        if isinstance(result, Many):
            raise TypeError(
                f"stage {name!r} of a durable pipeline returned cohort.Many: a durable "
                "pipeline records one value per source item; return a list instead"
            )
        ledger.reach(offset, index, result)
        return (offset, index, result)

    call.__name__ = name
    return Stage(call, dataclasses.replace(s.options, cpu=False, executor=None))


async def run_durable(
    pipeline: Pipeline[Any, Any],
    source: Iterable[Any] | AsyncIterable[Any],
    *,
    name: str = "pipeline",
    collect: bool = True,
    progress: bool = False,
) -> Report[Any]:
    """Run ``pipeline`` over ``source`` in the current durable run, as the pipeline
    named ``name`` there: each item's progress is recorded in the run's item
    ledger, and a resumed run re-reads ``source`` (it must yield the same items in
    the same order), skips the items every stage finished, and starts the others
    at the first stage they had not finished. The report counts the skipped
    items as they ended before (``read``, ``succeeded``, ``dropped``, and their
    recorded ``outputs``); ``stages`` counts this run's work only.

    Stages run at least once per item (an item whose result was not committed
    when the process died runs that stage again); ``sql_sink`` stages write
    exactly once. Batch stages and stages emitting several values per item
    (``cohort.Many``, generators) are refused."""
    run = current_run()
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"run_durable takes a cohort Pipeline, got {pipeline!r}")
    stages = pipeline.stages
    for s in stages:
        if s.options.batch is not None or s.kind == "agen":
            raise ValueError(
                f"stage {s.name!r} cannot run in a durable pipeline: it "
                + ("batches items" if s.options.batch is not None else "emits several values")
                + "; a durable pipeline records one value per source item and stage"
            )
    last = len(stages)
    ledger = run.item_ledger(name, last, keep_last=collect)
    recorded = ledger.recorded
    outputs: dict[int, Any] = {}
    counts = {"read": 0, "ok": 0, "dropped": 0}

    def admit(offset: int, value: Any) -> _Item | None:
        record = recorded.get(offset)
        if record is None:
            return (offset, 0, value)
        stage, dropped, recorded_value = record
        if stage < last and not dropped:
            return (offset, stage, recorded_value)
        counts["read"] += 1  # finished before: counted as it ended
        if dropped:
            counts["dropped"] += 1
        else:
            counts["ok"] += 1
            if collect:
                outputs[offset] = recorded_value
        return None

    feed: Iterator[_Item] | AsyncIterator[_Item]
    if isinstance(source, AsyncIterable):

        async def afeed() -> AsyncIterator[_Item]:
            offset = 0
            async for value in source:
                item = admit(offset, value)
                offset += 1
                if item is not None:
                    yield item

        feed = afeed()
    else:
        feed = (i for i in (admit(o, v) for o, v in enumerate(source)) if i is not None)
    wrapped = [_wrap(s, i + 1, ledger) for i, s in enumerate(stages)]
    durable_pipe: Pipeline[Any, Any] = functools.reduce(operator.or_, wrapped)
    report = await durable_pipe.run(feed, collect=collect, progress=progress)
    merged: list[Any] | None = None
    if report.outputs is not None:
        items = [(o, v) for o, _, v in report.outputs]
        if outputs:
            items += outputs.items()
            if all(s.options.ordered for s in stages):
                items.sort(key=operator.itemgetter(0))
        merged = [v for _, v in items]
    errors = [
        dataclasses.replace(e, item=e.item[2])
        if isinstance(e.item, tuple) and len(e.item) == 3
        else e
        for e in report.errors
    ]
    return dataclasses.replace(
        report,
        outputs=merged,
        errors=errors,
        read=report.read + counts["read"],
        succeeded=report.succeeded + counts["ok"],
        dropped=report.dropped + counts["dropped"],
        extra={**report.extra, "resumed_items": counts["read"]},
    )
