"""Flows: DAGs of async nodes, each started when its own join policy says so.

Private: users import these names from ``cohort`` (which loads ``_graph``).
``_graph`` declares a flow (``Flow``, ``Node``), ``_run`` runs it once,
``_invoke`` calls one node, ``_join`` asks a node's join policy, ``_render``
draws the graph and ``_result`` holds what a run gives back. ``_extras`` (the
bridge and the pipeline, for cpu nodes and ``Flow.as_stage``) is loaded by
this package on first use, so that a flow of async nodes imports neither;
so is ``durable`` (``cohort.durable``, for ``Flow.run(run_id=)`` and
``Flow.resume``), so that a flow not run durably imports no SQLite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cohort import durable as durable
    from cohort._flow import _extras as _extras


def __getattr__(name: str) -> object:
    # The arrows to the bridge and the pipeline, taken when a flow first needs them.
    if name == "_extras":
        import cohort._flow._extras

        return cohort._flow._extras
    if name == "durable":  # the durable layer, for Flow.run(run_id=) and Flow.resume
        import cohort.durable

        return cohort.durable
    raise AttributeError(f"module 'cohort._flow' has no attribute {name!r}")
