"""cohort: asyncio-native structured concurrency.

Task groups with join policies, cancellation scopes and deadlines,
synchronisation primitives, a process bridge and a pipeline DSL.
"""

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
from cohort._group import ChildStatus, Handle, Outcome, TaskGroup
from cohort._policies import Decision, FirstWins, Gather, JoinPolicy, Quorum, Settle
from cohort._scopes import (
    CancelScope,
    current_deadline,
    current_time,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
)

__all__ = [
    "BrokenBarrierError",
    "CancelScope",
    "ChildStatus",
    "ClosedError",
    "CohortError",
    "Decision",
    "FirstWins",
    "Gather",
    "Handle",
    "JoinPolicy",
    "Outcome",
    "PipelineError",
    "PoolBrokenError",
    "Quorum",
    "QuorumError",
    "RemoteError",
    "SerializationError",
    "Settle",
    "TaskGroup",
    "WorkerCrashedError",
    "current_deadline",
    "current_time",
    "fail_after",
    "fail_at",
    "move_on_after",
    "move_on_at",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("cohort."):
        _obj.__module__ = "cohort"
del _name, _obj
