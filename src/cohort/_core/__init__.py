"""The core of cohort: cancel scopes, task groups and their join policies, and
the helpers built on one group (gather, race, map, ``run``).

Private: users import these names from ``cohort``. The layers above read the
core through its modules (``cohort._core._group``...), never through another
object's private names.
"""
