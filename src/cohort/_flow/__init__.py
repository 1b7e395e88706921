"""Flows: DAGs of async nodes, each started when its own join policy says so.

Private: users import these names from ``cohort``.
"""
