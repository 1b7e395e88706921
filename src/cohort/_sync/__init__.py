"""Synchronisation within one event loop: barriers, event flags, latches.

Private: users import these names from ``cohort``.
"""
