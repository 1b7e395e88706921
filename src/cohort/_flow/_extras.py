"""What a flow needs of the bridge and the pipeline: calls in worker processes for
``cpu=True``/``executor=`` nodes, and ``@cohort.stage`` for ``Flow.as_stage``.

Loaded by the package on first use (``cohort._flow.__getattr__``), so that a flow
of async nodes imports neither layer (nor multiprocessing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cohort.bridge import default_executor, to_process
from cohort.bridge._default import by_reference
from cohort.pipeline import stage

__all__ = ["cpu_target", "default_executor", "stage", "to_process"]


def cpu_target(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What a worker process is sent for a cpu node: a reference to ``fn`` by its
    module and name, as ``@cohort.cpu`` sends its function."""
    return by_reference(fn)
