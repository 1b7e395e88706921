"""Logical hangs: which task waits on what, for whom, and the waits-for cycles.

Nothing is registered ahead: the report reads each task's await chain
(``cr_await`` from the task's coroutine down), names the innermost frame that
belongs to a known waiting place (cohort's Barrier, Latch, EventFlags,
Bulkhead, RateLimiter, a TaskGroup's exit, a pipeline channel; asyncio's
Lock, Semaphore, Event, Condition, Barrier, Queue, sleep; an awaited task),
and reads that object's state through its public API. Who *holds* a lock, a
semaphore or a bulkhead is read from the ``async with`` blocks a task is
suspended in: the bound ``__aexit__`` that CPython keeps on a suspended
coroutine's stack (``gc.get_referents``). So the primitives pay nothing on
their fast paths, and holders taken by a bare ``acquire()`` are not seen.

The task-to-child naming comes from ``open_groups`` and each group's public
``handles``: a ``start_soon`` child without a handle is shown by its task name.
"""

from __future__ import annotations

import asyncio
import gc
import linecache
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from cohort._core._group import TaskGroup, open_groups

__all__ = ["HangReport", "HangTracker", "Wait", "hang_report"]

# (module, qualname prefix) of frames that are a waiting place, with its kind.
_PLACES: tuple[tuple[str, str, str], ...] = (
    ("cohort._sync._barrier", "Barrier.", "Barrier"),
    ("cohort._sync._latch", "Latch.", "Latch"),
    ("cohort._sync._flags", "EventFlags.", "EventFlags"),
    ("cohort._resilience._bulkhead", "Bulkhead.", "Bulkhead"),
    ("cohort._resilience._limiter", "RateLimiter.", "RateLimiter"),
    ("cohort._core._group", "TaskGroup.", "TaskGroup"),
    ("cohort.pipeline._channel", "Channel.", "Channel"),
    ("asyncio.locks", "Lock.", "asyncio.Lock"),
    ("asyncio.locks", "Semaphore.", "asyncio.Semaphore"),
    ("asyncio.locks", "BoundedSemaphore.", "asyncio.Semaphore"),
    ("asyncio.locks", "Event.", "asyncio.Event"),
    ("asyncio.locks", "Condition.", "asyncio.Condition"),
    ("asyncio.locks", "Barrier.", "asyncio.Barrier"),
    ("asyncio.queues", "Queue.", "asyncio.Queue"),
    ("asyncio.tasks", "sleep", "sleep"),
)
# Kinds whose holders are found from the `async with` blocks tasks are suspended in.
_HELD = ("Bulkhead", "asyncio.Lock", "asyncio.Semaphore", "asyncio.Condition")
_QUIET = ("sleep",)  # waits that are not hangs however long they last


@dataclass(frozen=True, slots=True)
class Wait:
    """One task's wait: where it is suspended and what, or whom, it waits for."""

    task: str
    """The task's name (the child's name where a group knows it)."""
    kind: str
    """What it waits on: ``Barrier``, ``Bulkhead``, ``asyncio.Lock``, ``task``, ... or ``?``."""
    detail: str
    """One line: ``Barrier 7/8, missing 1: worker-3 has not arrived``."""
    where: str
    """The innermost frame outside cohort and asyncio: ``file:line in function``."""
    chain: tuple[str, ...]
    """The coroutine chain, outermost first, ``function (file:line)`` each."""
    waits_for: tuple[str, ...] = ()
    """The tasks it waits for: holders, children, parties that have not arrived."""
    since: float | None = None
    """Loop time at which a watchdog first saw this wait (None: not tracked)."""
    cancelling: int = 0
    """``Task.cancelling()``: cancellation requests pending on the task."""

    def __str__(self) -> str:
        state = f" (cancelling: {self.cancelling})" if self.cancelling else ""
        return f"{self.task}{state}: {self.detail} at {self.where}"


@dataclass(frozen=True, slots=True)
class HangReport:
    """Every task's wait and the waits-for cycles among them; ``str()`` renders it."""

    waits: tuple[Wait, ...]
    cycles: tuple[tuple[str, ...], ...] = field(default=())
    """Each deadlock as task names, ``a -> b -> a`` read as "a waits for b, b for a"."""

    def of(self, task: str) -> Wait | None:
        """The wait of the task named ``task``, if it waits."""
        return next((w for w in self.waits if w.task == task), None)

    def __str__(self) -> str:
        if not self.waits:
            return "(no task waits)"
        lines = [str(w) for w in self.waits]
        lines += ["deadlock: " + " -> ".join((*c, c[0])) for c in self.cycles]
        return "\n".join(lines)


# -- reading a task ----------------------------------------------------------------


def _frames(task: asyncio.Task[Any]) -> tuple[list[tuple[Any, FrameType]], Any]:
    """The (awaitable, frame) pairs of the task's await chain, and the last awaited object."""
    out: list[tuple[Any, FrameType]] = []
    obj: Any = task.get_coro()
    while obj is not None:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
        frame = frame or getattr(obj, "ag_frame", None)
        if frame is None:
            break
        out.append((obj, frame))
        nxt = getattr(obj, "cr_await", None)
        if nxt is None:
            nxt = getattr(obj, "gi_yieldfrom", None) or getattr(obj, "ag_await", None)
        if nxt is None or not (
            hasattr(nxt, "cr_frame") or hasattr(nxt, "gi_frame") or hasattr(nxt, "ag_frame")
        ):
            return out, nxt
        obj = nxt
    return out, None


def _where(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _place(frame: FrameType) -> str | None:
    module = frame.f_globals.get("__name__", "")
    qualname = frame.f_code.co_qualname
    for mod, prefix, kind in _PLACES:
        if module == mod and qualname.startswith(prefix):
            return kind
    return None


def _internal(frame: FrameType) -> bool:
    module = str(frame.f_globals.get("__name__", ""))
    return module.startswith(("cohort.", "asyncio."))


def _awaited_future(last: Any) -> asyncio.Future[Any] | None:
    """The future behind the iterator a coroutine awaits (``await task`` or a future)."""
    if isinstance(last, asyncio.Future):
        return last
    if last is None:
        return None
    for ref in gc.get_referents(last):
        if isinstance(ref, asyncio.Future):
            return ref
    return None


def _held(coros: list[Any]) -> list[Any]:
    """The objects whose ``async with`` blocks these suspended coroutines are in."""
    held: list[Any] = []
    for coro in coros:
        for ref in gc.get_referents(coro):
            if getattr(ref, "__name__", None) == "__aexit__":
                owner = getattr(ref, "__self__", None)
                if owner is not None:
                    held.append(owner)
    return held


@dataclass(slots=True)
class _TaskInfo:
    task: asyncio.Task[Any]
    name: str
    kind: str
    obj: Any
    frame: FrameType | None
    where: str
    chain: tuple[str, ...]
    awaited: asyncio.Future[Any] | None
    held: list[Any]


def _read(task: asyncio.Task[Any], name: str) -> _TaskInfo:
    pairs, last = _frames(task)
    kind, obj, place = "?", None, None
    # The innermost run of frames in waiting places, named by its outermost frame:
    # asyncio.Barrier.wait waits in a Condition, but the caller waits on the barrier.
    for _, frame in reversed(pairs):
        found = _place(frame)
        if found is not None:
            kind, obj, place = found, frame.f_locals.get("self"), frame
        elif place is not None:
            break
    outside = [frame for _, frame in pairs if not _internal(frame)]
    here = outside[-1] if outside else (pairs[-1][1] if pairs else None)
    where = _where(here) if here is not None else "(not started)"
    chain = tuple(f"{f.f_code.co_qualname} ({f.f_code.co_filename}:{f.f_lineno})" for _, f in pairs)
    awaited = _awaited_future(last) if place is None else None
    if awaited is not None:
        kind = "task" if isinstance(awaited, asyncio.Task) else "future"
    held = _held([coro for coro, _ in pairs])
    return _TaskInfo(task, name, kind, obj, place, where, chain, awaited, held)


# -- the report --------------------------------------------------------------------


def _names(loop: asyncio.AbstractEventLoop) -> tuple[dict[Any, str], dict[Any, TaskGroup]]:
    """Task -> child name, and task -> the group it is a child of."""
    names: dict[Any, str] = {}
    parent: dict[Any, TaskGroup] = {}
    for group, _host in open_groups(loop):
        for handle in group.handles:
            task = handle.task
            if task is not None:
                names[task] = handle.name
                parent[task] = group
    return names, parent


def hang_report(loop: asyncio.AbstractEventLoop | None = None) -> HangReport:
    """What every task on the loop waits on, for whom, and the deadlocks among them.

    Call it on the loop (``loop`` defaults to the running one); the calling
    task is left out. ``str()`` of the result is a readable report.
    """
    loop = loop or asyncio.get_running_loop()
    current = asyncio.current_task(loop) if loop.is_running() else None
    names, parent = _names(loop)
    infos = [
        _read(t, names.get(t) or t.get_name())
        for t in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name())
        if t is not current and not t.done()
    ]
    by_task = {info.task: info for info in infos}
    holders: dict[int, list[_TaskInfo]] = {}
    for info in infos:
        for obj in info.held:
            holders.setdefault(id(obj), []).append(info)
    waits = tuple(_explain(info, infos, by_task, holders, parent) for info in infos)
    return HangReport(waits, _cycles(waits))


def _explain(
    info: _TaskInfo,
    infos: list[_TaskInfo],
    by_task: dict[Any, _TaskInfo],
    holders: dict[int, list[_TaskInfo]],
    parent: dict[Any, TaskGroup],
) -> Wait:
    kind, obj = info.kind, info.obj
    waits_for: tuple[str, ...] = ()
    same = [i for i in infos if i.obj is not None and i.obj is obj]
    if kind == "asyncio.Condition" and info.chain and ".wait" in info.chain[-1]:
        detail = f"asyncio.Condition never notified; {len(same)} waiting"
    elif kind in _HELD:
        # A task entering `async with` has its __aexit__ on the stack already: one
        # that waits on this very object is a waiter, not a holder.
        held_by = [h for h in holders.get(id(obj), ()) if h.obj is not obj]
        waits_for = tuple(h.name for h in held_by)
        label = f"{kind} {getattr(obj, 'name', '')!r}" if kind == "Bulkhead" else kind
        who = (
            ", ".join(waits_for) if waits_for else "a holder that is not suspended in `async with`"
        )
        detail = f"{label} held by {who}; {len(same)} waiting"
    elif kind == "Barrier" or kind == "asyncio.Barrier":
        parties = int(getattr(obj, "parties", 0))
        arrived = len(same)
        missing = max(0, parties - arrived)
        groups = {parent.get(i.task) for i in same} - {None}
        siblings = [i for i in infos if i not in same and parent.get(i.task) in groups]
        # Parties are most likely the siblings that run the waiters' own function.
        codes = {_qualname(i.task) for i in same}
        alike = [i for i in siblings if _qualname(i.task) in codes]
        others = alike or siblings
        waits_for = tuple(i.name for i in others)
        names = ", ".join(f"{i.name} (at {i.where})" for i in others) or "no sibling task"
        detail = f"{kind} {arrived}/{parties}, missing {missing}: not arrived: {names}"
    elif kind == "Latch":
        detail = f"Latch count {getattr(obj, 'count', '?')}, {len(same)} waiting for count_down()"
    elif kind == "EventFlags":
        wanted = _flag_names(info)
        have = sorted(obj.snapshot()) if obj is not None else []
        detail = f"EventFlags waiting for {wanted}; set now: {have or 'none'}"
    elif kind == "TaskGroup" and isinstance(obj, TaskGroup):
        children = [i for i in infos if parent.get(i.task) is obj]
        waits_for = tuple(i.name for i in children)
        detail = _group_detail(obj, children)
    elif kind == "asyncio.Event":
        detail = f"asyncio.Event never set; {len(same)} waiting"
    elif kind == "asyncio.Queue":
        verb = "get from an empty" if "get" in (info.chain[-1] if info.chain else "") else "put"
        detail = f"{verb} asyncio.Queue (size {obj.qsize() if obj is not None else '?'})"
    elif kind == "Channel":
        detail = "a pipeline stage's channel: the next stage does not take items, or none come"
    elif kind == "task" and info.awaited is not None:
        target = by_task.get(info.awaited)
        waits_for = (target.name,) if target else (info.awaited.get_name(),)  # type: ignore[attr-defined]
        detail = f"awaits task {waits_for[0]}"
    elif kind == "sleep":
        detail = "asyncio.sleep"
    else:
        detail = f"{kind} {obj!r}" if obj is not None else "an unknown awaitable"
    task = info.task
    return Wait(
        info.name, kind, detail, info.where, info.chain, waits_for,
        cancelling=task.cancelling(),
    )  # fmt: skip


def _qualname(task: asyncio.Task[Any]) -> str:
    return str(getattr(task.get_coro(), "__qualname__", ""))


def _flag_names(info: _TaskInfo) -> str:
    frame = info.frame
    while frame is not None:
        names = frame.f_locals.get("names")
        if isinstance(names, tuple):
            mode = "all of" if "all" in frame.f_code.co_name else "any of"
            return f"{mode} {sorted(names)}"
        frame = frame.f_back
    return "flags"


def _group_detail(group: TaskGroup, children: list[_TaskInfo]) -> str:
    policy = group.policy
    stuck = "; ".join(f"{c.name} ({c.kind} at {c.where})" for c in children) or "none"
    k = getattr(policy, "k", None)
    if isinstance(k, int):
        more = max(0, k - group.succeeded)
        head = f"{policy!r} needs {more} more"
    else:
        head = f"{policy!r} waits"
    return f"group {group.name!r} {head}, {len(children)} children stuck in: {stuck}"


def _cycles(waits: tuple[Wait, ...]) -> tuple[tuple[str, ...], ...]:
    """Elementary cycles of the waits-for graph, each once, from its smallest name."""
    graph = {w.task: list(w.waits_for) for w in waits if w.kind in (*_HELD, "task")}
    found: set[tuple[str, ...]] = set()

    def walk(path: list[str]) -> Iterator[tuple[str, ...]]:
        for nxt in graph.get(path[-1], ()):
            if nxt == path[0]:
                yield tuple(path)
            elif nxt not in path and nxt > path[0]:
                yield from walk([*path, nxt])

    for start in sorted(graph):
        found.update(walk([start]))
    return tuple(sorted(found))


class HangTracker:
    """Remembers since when each wait lasts; reports the ones past ``hang_after`` once."""

    def __init__(self, hang_after: float) -> None:
        self.hang_after = hang_after
        self._since: dict[tuple[int, str, str], float] = {}
        self._reported: set[tuple[int, str, str]] = set()
        self._cycles: set[tuple[str, ...]] = set()

    def look(self, loop: asyncio.AbstractEventLoop) -> HangReport | None:
        """A report of the waits newly past ``hang_after`` and new cycles, or None."""
        now = loop.time()
        report = hang_report(loop)
        since: dict[tuple[int, str, str], float] = {}
        hung: list[Wait] = []
        for w in report.waits:
            key = (hash(w.task), w.kind, w.where)
            start = since[key] = self._since.get(key, now)
            if w.kind in _QUIET or w.kind == "?":
                continue
            if now - start >= self.hang_after and key not in self._reported:
                self._reported.add(key)
                hung.append(_with_since(w, start))
        self._since = since
        self._reported &= since.keys()
        cycles = tuple(c for c in report.cycles if c not in self._cycles)
        self._cycles = set(report.cycles)
        if not hung and not cycles:
            return None
        return HangReport(tuple(hung), cycles)


def _with_since(w: Wait, since: float) -> Wait:
    return Wait(w.task, w.kind, w.detail, w.where, w.chain, w.waits_for, since, w.cancelling)


def source_line(where: str) -> str:
    """The source line at ``file:line in function`` (for dumps), or ''."""
    path, _, rest = where.rpartition(":")
    line = rest.split(" ", 1)[0]
    return linecache.getline(path, int(line)).strip() if line.isdigit() else ""
