"""cohort: asyncio-native structured concurrency.

Task groups with join policies, cancellation scopes and deadlines,
synchronisation primitives, a process bridge and a pipeline DSL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

from cohort._barrier import Barrier, BarrierStatistics
from cohort._combinators import gather, hedge, quorum, race, settle
from cohort._exceptions import (
    BrokenBarrierError,
    BulkheadFullError,
    CircuitOpenError,
    ClosedError,
    CohortError,
    PipelineError,
    PoolBrokenError,
    QuorumError,
    RemoteError,
    SerializationError,
    WorkerCrashedError,
)
from cohort._flags import EventFlags, EventFlagsStatistics
from cohort._flow import Flow, FlowError, FlowResult, Node
from cohort._group import TaskGroup
from cohort._handle import ChildStatus, Handle, Outcome
from cohort._latch import Latch, LatchStatistics
from cohort._linger import Linger, LingerStatistics
from cohort._observe import GroupStatistics, configure_logging, enable_events
from cohort._policies import (
    ChildView,
    Decision,
    FirstWins,
    Gather,
    GroupView,
    JoinPolicy,
    Quorum,
    Settle,
)
from cohort._public import publish as _publish
from cohort._resilience import (
    BreakerStatistics,
    Bulkhead,
    BulkheadStatistics,
    CircuitBreaker,
    CircuitState,
    HedgeBudget,
    KeyedBulkhead,
    RateLimiter,
)
from cohort._retry import RetryState, retry
from cohort._runtime import run
from cohort._scopes import (
    CancelScope,
    current_deadline,
    current_time,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
)
from cohort._stream import ResultStream, as_completed, map
from cohort._tree import GroupSnapshot, TaskTree, task_tree
from cohort.bridge import (
    Executor,
    PoolStatistics,
    ProcessPool,
    Shared,
    cpu,
    set_default_executor,
    to_process,
)
from cohort.pipeline import (
    DROP,
    DropType,
    ErrorRecord,
    Many,
    Pipeline,
    Report,
    Retry,
    Stage,
    StageStats,
    fork,
    stage,
)

__all__ = [
    "Barrier",
    "BarrierStatistics",
    "BreakerStatistics",
    "BrokenBarrierError",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadStatistics",
    "CancelScope",
    "ChildStatus",
    "ChildView",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "ClosedError",
    "CohortError",
    "DROP",
    "Decision",
    "DropType",
    "ErrorRecord",
    "EventFlags",
    "EventFlagsStatistics",
    "Executor",
    "FirstWins",
    "Flow",
    "FlowError",
    "FlowResult",
    "Gather",
    "GroupSnapshot",
    "GroupStatistics",
    "GroupView",
    "Handle",
    "HedgeBudget",
    "JoinPolicy",
    "KeyedBulkhead",
    "Latch",
    "LatchStatistics",
    "Linger",
    "LingerStatistics",
    "Many",
    "Node",
    "Outcome",
    "Pipeline",
    "PipelineError",
    "PoolBrokenError",
    "PoolStatistics",
    "ProcessPool",
    "Quorum",
    "QuorumError",
    "RateLimiter",
    "RemoteError",
    "Report",
    "ResultStream",
    "Retry",
    "RetryState",
    "SerializationError",
    "Settle",
    "Shared",
    "Stage",
    "StageStats",
    "TaskGroup",
    "TaskTree",
    "WorkerCrashedError",
    "as_completed",
    "configure_logging",
    "cpu",
    "current_deadline",
    "current_time",
    "enable_events",
    "fail_after",
    "fail_at",
    "fork",
    "gather",
    "hedge",
    "map",
    "move_on_after",
    "move_on_at",
    "quorum",
    "race",
    "retry",
    "run",
    "set_default_executor",
    "settle",
    "stage",
    "task_tree",
    "to_process",
]

_publish(globals(), "cohort")

if _TYPE_CHECKING:
    from cohort import testing as testing
else:

    def __getattr__(name: str) -> object:
        # `cohort.testing.run(...)` after a bare `import cohort`: the subpackage
        # is imported on first use (it is not needed at run time).
        if name == "testing":
            import cohort.testing

            return cohort.testing
        raise AttributeError(f"module 'cohort' has no attribute {name!r}")
