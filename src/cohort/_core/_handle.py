"""``Handle``: the public view of one child of a task group.

A child's handle is its group's record of it (``cohort._core._child``): the
group makes one per child that ``spawn`` returns or ``g.handles`` lists. It
keeps working after the group has exited; cancelling a child goes through it
(its task, or, while it is queued, the group's ``on_cancel``).
"""

from __future__ import annotations

# ChildStatus and Outcome are shown here too: the handle's module is where
# the layers above look for a child's public types.
from cohort._core._child import ChildStatus, Handle, Outcome

__all__ = ["ChildStatus", "Handle", "Outcome"]
