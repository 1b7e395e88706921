"""cohort.pipeline: the pipeline DSL (``@cohort.stage``, ``|``, ``cohort.fork``).

Stages are functions with options; ``a | b | c`` composes them into an
immutable ``Pipeline`` run by long-lived workers per stage connected by
bounded queues, all inside one task group. Every item read from the source
ends exactly once as output(s), dropped, done, failed or cancelled, and the
``Report`` says which. The names are re-exported from ``cohort``.

Example:
    ```python
    @cohort.stage(workers=32, timeout=2.0, retry=cohort.Retry(attempts=3, backoff=0.05))
    async def fetch(url: str) -> bytes:
        return await http_get(url)

    @cohort.stage(cpu=True, workers=2)
    def parse(raw: bytes) -> dict[str, int]:
        return {"size": len(raw)}

    report = await (fetch | parse).run(urls)
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cohort._public import publish as _publish
from cohort.pipeline._fork import fork
from cohort.pipeline._options import StageOptions
from cohort.pipeline._pipeline import Pipeline, PipelineStream
from cohort.pipeline._report import ErrorRecord, Report, StageStatistics, StageStats
from cohort.pipeline._retry import DROP, DropType, Many, Retry
from cohort.pipeline._stage import Stage, stage

__all__ = [
    "DROP",
    "DropType",
    "ErrorRecord",
    "Many",
    "Pipeline",
    "PipelineStream",
    "Report",
    "Retry",
    "Stage",
    "StageOptions",
    "StageStatistics",
    "StageStats",
    "fork",
    "run_durable",
    "sql_sink",
    "stage",
]

if TYPE_CHECKING:
    from cohort.pipeline._durable import run_durable, sql_sink

_DURABLE = ("run_durable", "sql_sink")  # they load cohort.durable (sqlite3): on first use


def __getattr__(name: str) -> object:
    if name not in _DURABLE:
        raise AttributeError(f"module 'cohort.pipeline' has no attribute {name!r}")
    import importlib

    namespace = vars(importlib.import_module("cohort.pipeline._durable"))
    loaded = {n: namespace[n] for n in _DURABLE}
    _publish(loaded, "cohort.pipeline", _DURABLE)
    globals().update(loaded)
    return loaded[name]


_publish(globals(), "cohort.pipeline", [n for n in __all__ if n not in _DURABLE])
