"""cohort: asyncio-native structured concurrency.

Task groups with join policies, cancellation scopes and deadlines,
synchronisation primitives, a process bridge and a pipeline DSL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

__version__ = "0.1.0"

from cohort._core._combinators import gather, hedge, quorum, race, settle
from cohort._core._group import TaskGroup
from cohort._core._handle import ChildStatus, Handle, Outcome
from cohort._core._policies import (
    ChildView,
    Decision,
    FirstWins,
    Gather,
    GroupView,
    JoinPolicy,
    Quorum,
    Settle,
)
from cohort._core._runtime import run
from cohort._core._scopes import (
    CancelScope,
    current_deadline,
    current_time,
    fail_after,
    fail_at,
    move_on_after,
    move_on_at,
)
from cohort._exceptions import (
    BrokenBarrierError,
    BulkheadFullError,
    CircuitOpenError,
    ClosedError,
    CohortError,
    CoordinatorLost,
    LeaseLost,
    PipelineError,
    PoolBrokenError,
    QuorumError,
    RemoteError,
    SerializationError,
    WorkerCrashedError,
)
from cohort._observe._events import GroupStatistics, configure_logging, enable_events
from cohort._observe._reasons import CancelReason, cancel_reason
from cohort._public import publish as _publish

__all__ = [
    "Barrier",
    "BarrierStatistics",
    "BreakerStatistics",
    "BrokenBarrierError",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadStatistics",
    "CancelReason",
    "CancelScope",
    "ChildStatus",
    "ChildView",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "ClosedError",
    "CohortError",
    "CoordinatorLost",
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
    "HangReport",
    "HedgeBudget",
    "JoinPolicy",
    "KeyedBulkhead",
    "Latch",
    "LatchStatistics",
    "LeaseLost",
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
    "RWLock",
    "RWLockStatistics",
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
    "StageStatistics",
    "StageStats",
    "StallReport",
    "TaskGroup",
    "TaskTree",
    "Wait",
    "Watchdog",
    "WorkerCrashedError",
    "as_completed",
    "cancel_reason",
    "configure_logging",
    "cpu",
    "current_deadline",
    "current_time",
    "dump",
    "enable_dump",
    "enable_events",
    "fail_after",
    "fail_at",
    "fork",
    "gather",
    "hang_report",
    "hedge",
    "instrument",
    "map",
    "move_on_after",
    "move_on_at",
    "quorum",
    "race",
    "request_dump",
    "retry",
    "run",
    "set_default_executor",
    "settle",
    "stage",
    "task_tree",
    "to_process",
    "uninstrument",
    "watchdog",
]

# Task groups, scopes, policies and the helpers built on them come with cohort.
# The process bridge, pipelines, Flow, retries and resilience guards, the
# synchronisation primitives, result streams and the task tree are imported at
# the first use of one of their names, so that `import cohort` stays light (no
# multiprocessing, tempfile or structlog); type checkers see plain imports.
_LAZY = {
    "cohort._sync._barrier": ("Barrier", "BarrierStatistics"),
    "cohort._sync._flags": ("EventFlags", "EventFlagsStatistics"),
    "cohort._flow._graph": ("Flow", "FlowError", "FlowResult", "Node"),
    "cohort._sync._latch": ("Latch", "LatchStatistics"),
    "cohort._sync._rwlock": ("RWLock", "RWLockStatistics"),
    "cohort._resilience._linger": ("Linger", "LingerStatistics"),
    "cohort._resilience._breaker": ("BreakerStatistics", "CircuitBreaker", "CircuitState"),
    "cohort._resilience._bulkhead": ("Bulkhead", "BulkheadStatistics", "KeyedBulkhead"),
    "cohort._resilience._hedge": ("HedgeBudget",),
    "cohort._resilience._limiter": ("RateLimiter",),
    "cohort._core._retry": ("Retry", "RetryState", "retry"),
    "cohort._core._stream": ("ResultStream", "as_completed", "map"),
    "cohort._core._tree": ("GroupSnapshot", "TaskTree", "task_tree"),
    "cohort._observe._dump": ("dump", "enable_dump", "request_dump"),
    "cohort._observe._hangs": ("HangReport", "Wait", "hang_report"),
    "cohort._observe._otel": ("instrument", "uninstrument"),
    "cohort._observe._watchdog": ("StallReport", "Watchdog", "watchdog"),
    "cohort.bridge": (
        "Executor",
        "PoolStatistics",
        "ProcessPool",
        "Shared",
        "cpu",
        "set_default_executor",
        "to_process",
    ),
    "cohort.pipeline": (
        "DROP",
        "DropType",
        "ErrorRecord",
        "Many",
        "Pipeline",
        "Report",
        "Stage",
        "StageStatistics",
        "StageStats",
        "fork",
        "stage",
    ),
}
_LAZY_NAMES = {name: module for module, names in _LAZY.items() for name in names}

_publish(globals(), "cohort", [n for n in __all__ if n not in _LAZY_NAMES])

if _TYPE_CHECKING:
    from cohort import testing as testing
    from cohort._core._retry import Retry, RetryState, retry
    from cohort._core._stream import ResultStream, as_completed, map
    from cohort._core._tree import GroupSnapshot, TaskTree, task_tree
    from cohort._flow._graph import Flow, FlowError, FlowResult, Node
    from cohort._observe._dump import dump, enable_dump, request_dump
    from cohort._observe._hangs import HangReport, Wait, hang_report
    from cohort._observe._otel import instrument, uninstrument
    from cohort._observe._watchdog import StallReport, Watchdog, watchdog
    from cohort._resilience._breaker import BreakerStatistics, CircuitBreaker, CircuitState
    from cohort._resilience._bulkhead import Bulkhead, BulkheadStatistics, KeyedBulkhead
    from cohort._resilience._hedge import HedgeBudget
    from cohort._resilience._limiter import RateLimiter
    from cohort._resilience._linger import Linger, LingerStatistics
    from cohort._sync._barrier import Barrier, BarrierStatistics
    from cohort._sync._flags import EventFlags, EventFlagsStatistics
    from cohort._sync._latch import Latch, LatchStatistics
    from cohort._sync._rwlock import RWLock, RWLockStatistics
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
        Stage,
        StageStatistics,
        StageStats,
        fork,
        stage,
    )
else:

    def __getattr__(name: str) -> object:
        # A layer's names are imported (and shown as cohort's) on first use;
        # `cohort.testing.run(...)` after a bare `import cohort` likewise.
        import importlib

        if name == "testing":
            return importlib.import_module("cohort.testing")
        module = _LAZY_NAMES.get(name)
        if module is None:
            raise AttributeError(f"module 'cohort' has no attribute {name!r}")
        namespace = vars(importlib.import_module(module))
        names = _LAZY[module]
        loaded = {n: namespace[n] for n in names}
        _publish(loaded, "cohort", names)
        globals().update(loaded)
        return loaded[name]

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__) | {"testing"})
