"""Flows: DAGs of async nodes, each started when its own join policy says so.

Private: users import these names from ``cohort``. ``_graph`` declares a flow
(``Flow``, ``Node``), ``_run`` runs it once, ``_invoke`` calls one node,
``_join`` asks a node's join policy, ``_render`` draws the graph and
``_result`` holds what a run gives back.
"""

from cohort._flow._graph import Flow, Node
from cohort._flow._result import FlowError, FlowResult

__all__ = ["Flow", "FlowError", "FlowResult", "Node"]
