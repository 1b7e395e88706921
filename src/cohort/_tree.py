"""``task_tree()``: a snapshot of the open task groups and their children.

Built from what groups and handles show publicly (``open_groups``,
``TaskGroup.statistics()``, ``Handle`` properties), so it can only read what
any monitoring code could.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from cohort._group import TaskGroup, open_groups

__all__ = ["GroupSnapshot", "TaskTree", "task_tree"]


@dataclass(frozen=True, slots=True)
class ChildSnapshot:
    """One child in ``task_tree()``."""

    name: str
    status: str
    elapsed: float | None
    groups: tuple[GroupSnapshot, ...] = ()


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
        lines.append(f"{indent}{branch}{child.name} {child.status}{elapsed}")
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
        child_tasks.update(h.task for h in g.handles if h.task is not None)
        child_tasks.update(g.light_children)
    roots = [g for g, host in groups if host not in child_tasks]

    def snap(g: TaskGroup) -> GroupSnapshot:
        children = []
        for h in g.handles:
            end = h.ended if h.ended is not None else now
            elapsed = None if h.started is None else end - h.started
            task = h.task
            nested = () if task is None else tuple(snap(sub) for sub in by_task.get(task, ()))
            children.append(ChildSnapshot(h.name, h.status.value, elapsed, nested))
        for task in g.light_children:  # start_soon children: no start time recorded
            nested = tuple(snap(sub) for sub in by_task.get(task, ()))
            children.append(ChildSnapshot(task.get_name(), "running", None, nested))
        stats = g.statistics()
        return GroupSnapshot(
            stats.name, repr(stats.policy), stats.phase, stats.elapsed, tuple(children)
        )

    return TaskTree(tuple(snap(g) for g in roots))
