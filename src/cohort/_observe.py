"""Observability: structured events through structlog, and a live task tree.

cohort never configures logging on import and emits nothing until asked:
``configure_logging()`` sets structlog up for an application and switches
cohort's events on; ``enable_events()`` switches them on for applications
that configure structlog themselves. While events are off, the cost in the
hot paths is one attribute test per child.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from cohort._group import TaskGroup

__all__ = ["GroupSnapshot", "TaskTree", "configure_logging", "enable_events", "task_tree"]


class _Events:
    """Holder of the on/off switch, read in hot paths as ``EVENTS.on``."""

    __slots__ = ("log", "on")

    def __init__(self) -> None:
        self.on = False
        self.log: Any = None


EVENTS = _Events()

# Every group that is open, for task_tree() (added at entry, removed at exit).
_live_groups: dict[TaskGroup, None] = {}


def enable_events(on: bool = True) -> None:
    """Switch cohort's structlog events (logger name ``cohort``) on or off."""
    EVENTS.on = on
    EVENTS.log = structlog.get_logger("cohort") if on else None


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Configure structlog for an application and switch cohort's events on.

    Args:
        level: the lowest level shown ("debug" shows every child event,
            "info" group summaries and failures).
        json: one JSON object per line (for log shippers) instead of the
            coloured console rendering.
    """
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    enable_events(True)


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
    import asyncio

    loop = asyncio.get_running_loop()
    now = loop.time()
    groups = [g for g in list(_live_groups) if g._loop is loop]
    by_task: dict[Any, list[TaskGroup]] = {}
    child_tasks: set[Any] = set()
    for g in groups:
        by_task.setdefault(g._task, []).append(g)
        child_tasks.update(h._task for h in g._handles if h._task is not None)
    roots = [g for g in groups if g._task not in child_tasks]

    def snap(g: TaskGroup) -> GroupSnapshot:
        children = []
        for h in g._handles:
            end = h._ended if h._ended is not None else now
            elapsed = None if h._started is None else end - h._started
            nested = tuple(snap(sub) for sub in by_task.get(h._task, ()) if h._task is not None)
            children.append(ChildSnapshot(h.name, h._status.value, elapsed, nested))
        return GroupSnapshot(
            g.name, repr(g._policy), g._phase, now - g._entered_at, tuple(children)
        )

    return TaskTree(tuple(snap(g) for g in roots))
