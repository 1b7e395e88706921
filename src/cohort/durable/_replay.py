"""Replay of a durable run's record: what a run knows of each task group and flow,
and the wrapper that replays a recorded child in its recorded completion order."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from cohort._core._group import TaskGroup

__all__ = ["FlowReplay", "GroupState", "Replay", "after_replays", "cancel_self"]


class GroupState:
    """What a run knows of one task group: its path, and its replay of the record."""

    __slots__ = (
        "completed",
        "ended",
        "group",
        "next_seq",
        "ok_order",
        "path",
        "slots",
        "timeout_seq",
    )

    def __init__(self, group: TaskGroup, path: tuple[str, ...], next_seq: int) -> None:
        self.group = group
        self.path = path
        self.next_seq = next_seq
        # seq -> a future done once that recorded child has replayed
        self.slots: dict[int, asyncio.Future[None]] = {}
        self.ok_order: list[str] = []  # paths that succeeded, in completion order
        self.timeout_seq: int | None = None  # a recorded partial timeout fired here
        self.completed = False
        self.ended = False  # the record says this group closed (a new child diverges)

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq


class FlowReplay:
    """What a run knows of one flow it runs: the path of its nodes, and the
    replay of their recorded completions (in order)."""

    __slots__ = ("next_seq", "path", "slots")

    def __init__(self, path: tuple[str, ...], next_seq: int) -> None:
        self.path = path
        self.next_seq = next_seq
        # seq -> a future done once that recorded node has replayed
        self.slots: dict[int, asyncio.Future[None]] = {}

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq


class Replay(Coroutine[Any, Any, Any]):
    """A recorded child's replay (``_replay_child``), which sets ``slot`` when it ends,
    even when it never began: a child cancelled before its first step (its task
    cancelled, or dropped from its group's queue) is closed without running, and
    the children recorded after it must not wait for it."""

    __slots__ = ("_coro", "_slot")

    def __init__(self, coro: Coroutine[Any, Any, Any], slot: asyncio.Future[None]) -> None:
        self._coro = coro
        self._slot = slot

    def _release(self) -> None:
        if not self._slot.done():
            self._slot.set_result(None)

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, *exc: Any) -> Any:
        try:
            return self._coro.throw(*exc)
        except BaseException:
            self._release()  # it ended (thrown into before it began: without running)
            raise

    def close(self) -> None:
        self._coro.close()
        self._release()

    def __await__(self) -> Any:
        return self._coro.__await__()

    @property
    def cr_frame(self) -> Any:  # seen by the hang analysis, as a coroutine's
        return getattr(self._coro, "cr_frame", None)

    @property
    def cr_await(self) -> Any:
        return getattr(self._coro, "cr_await", None)


async def after_replays(slots: list[asyncio.Future[None]]) -> None:
    """Wait until these recorded children have replayed and their group has seen them
    end: a replayed child's slot is set just before it returns, so one more turn of
    the loop runs its task's done callbacks (the group's bookkeeping) first."""
    if not slots:
        return
    for slot in slots:
        if not slot.done():
            await asyncio.shield(slot)
    await asyncio.sleep(0)


async def cancel_self() -> None:
    """End the current task as cancelled (a real cancellation, not a stray one)."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)
