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
    "stage",
]

_publish(globals(), "cohort.pipeline")
