"""cohort.bridge: CPU-bound work in other processes, cancellable like any other child.

``ProcessPool`` is the embedded executor; ``DaskExecutor`` runs the same calls
on a Dask cluster (optional extra ``cohort[dask]``). ``to_process`` and
``@cpu`` use the default executor: a per-loop ``ProcessPool`` unless
``set_default_executor`` chose another.
"""

from __future__ import annotations

from cohort._public import publish as _publish
from cohort.bridge._dask import DaskExecutor
from cohort.bridge._default import (
    CpuFunction,
    cpu,
    default_executor,
    set_default_executor,
    to_process,
)
from cohort.bridge._executor import Executor
from cohort.bridge._pool import PoolStatistics, ProcessPool
from cohort.bridge._shared import Shared

__all__ = [
    "CpuFunction",
    "DaskExecutor",
    "Executor",
    "PoolStatistics",
    "ProcessPool",
    "Shared",
    "cpu",
    "default_executor",
    "set_default_executor",
    "to_process",
]

_publish(globals(), "cohort.bridge")
