"""cohort: asyncio-native structured concurrency."""

from __future__ import annotations

from cohort._exceptions import (
    BrokenBarrierError,
    ClosedError,
    CohortError,
    PipelineError,
    PoolBrokenError,
    QuorumError,
    RemoteError,
    SerializationError,
    WorkerCrashedError,
)

__all__ = [
    "BrokenBarrierError",
    "ClosedError",
    "CohortError",
    "PipelineError",
    "PoolBrokenError",
    "QuorumError",
    "RemoteError",
    "SerializationError",
    "WorkerCrashedError",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("cohort."):
        _obj.__module__ = "cohort"
del _name, _obj
