"""Awaited-by edges for asyncio's call-graph tools (Python 3.14+).

``python -m asyncio pstree PID`` (and ``ps``, ``asyncio.capture_call_graph``)
draw a task under the task that awaits it. A task a group's task waits for in
``__aexit__`` is not awaited directly (the group waits on a future its
children's done callbacks set), so without an edge each child would show as
a root of its own. ``asyncio.TaskGroup`` registers one edge per child with
``asyncio.future_add_to_awaited_by(child_task, parent_task)`` and removes it
when the child ends; cohort's groups do the same through these two names.

Before 3.14 both are ``None`` and the group pays one ``is not None`` test per
child. Where they exist they are asyncio's own functions (C, no Python call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["add_awaited_by", "discard_awaited_by"]

_Edge = Callable[["asyncio.Future[Any]", "asyncio.Future[Any]"], None]

#: ``add_awaited_by(child_task, waiting_task)``: ``child_task`` is awaited by
#: ``waiting_task`` (a group's child by the task that entered the group).
#: ``None`` before Python 3.14.
add_awaited_by: _Edge | None = getattr(asyncio, "future_add_to_awaited_by", None)
#: ``discard_awaited_by(child_task, waiting_task)``: that edge is gone (the child
#: ended). ``None`` before Python 3.14.
discard_awaited_by: _Edge | None = getattr(asyncio, "future_discard_from_awaited_by", None)
if add_awaited_by is None or discard_awaited_by is None:  # both or neither
    add_awaited_by = discard_awaited_by = None
