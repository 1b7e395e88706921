"""``task_tree()``: a snapshot of the open task groups and their children.

Built from what groups show (``open_groups``, ``TaskGroup.statistics()``, and
``TaskGroup._tree_rows()``: the public properties of each child's handle, and
the task of each ``start_soon`` child that runs without one).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from cohort._core._group import TaskGroup, open_groups

__all__ = ["GroupSnapshot", "TaskTree", "task_tree"]


@dataclass(frozen=True, slots=True)
class ChildSnapshot:
    """One child in ``task_tree()``."""

    name: str
    status: str
    elapsed: float | None
    groups: tuple[GroupSnapshot, ...] = ()
    #: why cohort cancelled it (``str()`` of its ``CancelReason``), for a cancelled child
    cancel_reason: str | None = None


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """One open group in ``task_tree()``."""

    name: str
    policy: str
    phase: str
    elapsed: float
    children: tuple[ChildSnapshot, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class TaskTree:
    """A snapshot of the open groups and their children; ``str()`` renders it."""

    groups: tuple[GroupSnapshot, ...]

    def __str__(self) -> str:
        if not self.groups:
            return "(no open task groups)"
        lines: list[str] = []
        for group in self.groups:
            _render_group(group, "", lines)
        return "\n".join(lines)


def _render_group(group: GroupSnapshot, indent: str, lines: list[str]) -> None:
    lines.append(f"{indent}{group.name} [{group.policy}] {group.phase} {group.elapsed:.3f}s")
    for i, child in enumerate(group.children):
        last = i == len(group.children) - 1
        branch, pad = ("└── ", "    ") if last else ("├── ", "│   ")
        elapsed = "" if child.elapsed is None else f" {child.elapsed:.3f}s"
        why = "" if child.cancel_reason is None else f" ({child.cancel_reason})"
        lines.append(f"{indent}{branch}{child.name} {child.status}{elapsed}{why}")
        for sub in child.groups:
            _render_group(sub, indent + pad, lines)


def task_tree() -> TaskTree:
    """Snapshot every open task group on the running loop, nested as they run.

    For finding what hangs: ``print(cohort.task_tree())`` shows each group with
    its policy, phase and age, and each child with its status and age.
    """
    loop = asyncio.get_running_loop()
    now = loop.time()
    groups = open_groups(loop)
    by_task: dict[asyncio.Task[Any], list[TaskGroup]] = {}
    child_tasks: set[asyncio.Task[Any]] = set()
    for g, host in groups:
        by_task.setdefault(host, []).append(g)
        child_tasks.update(row[4] for row in g._tree_rows() if row[4] is not None)
    roots = [g for g, host in groups if host not in child_tasks]

    def snap(g: TaskGroup) -> GroupSnapshot:
        children = []
        for name, status, started, ended, task, reason in g._tree_rows():
            end = ended if ended is not None else now
            elapsed = None if started is None else end - started
            nested = () if task is None else tuple(snap(sub) for sub in by_task.get(task, ()))
            why = None if reason is None else str(reason)
            children.append(ChildSnapshot(name, status.value, elapsed, nested, why))
        stats = g.statistics()
        return GroupSnapshot(
            stats.name, repr(stats.policy), stats.phase, stats.elapsed, tuple(children)
        )

    return TaskTree(tuple(snap(g) for g in roots))
