"""A group's child as its handle shows it (cohort._core._handle)."""

from __future__ import annotations

import asyncio

import pytest

import cohort
from _util import bad, ok

pytestmark = pytest.mark.virtual_clock


async def test_a_handle_shows_when_and_how_its_child_ended() -> None:
    async with cohort.TaskGroup(cohort.Settle(), limit=2) as g:
        good = g.spawn(ok, "v", 1)
        failing = g.spawn(bad, "boom", 2)
        queued = g.spawn(ok, "late", 1)
        assert good.task is not None
        assert good.started == 0
        assert queued.task is None
        assert queued.outcome().started is None
        assert queued.status is cohort.ChildStatus.PENDING
    assert (good.status, good.failed, good.error, good.started, good.ended) == (
        cohort.ChildStatus.SUCCEEDED,
        False,
        None,
        0,
        1,
    )
    assert failing.failed
    assert isinstance(failing.error, ValueError)
    assert (queued.started, queued.ended) == (1, 2)  # started when the first slot freed
    assert good.task is None  # a finished handle holds no task


async def test_timeouts_own_and_the_groups() -> None:
    async with cohort.TaskGroup(cohort.Settle(), timeout=5, on_timeout="partial") as g:
        own = g.spawn(ok, 1, 10, timeout=2)
        by_group = g.spawn(ok, 2, 10)
    assert own.status is by_group.status is cohort.ChildStatus.TIMED_OUT
    assert own.failed
    assert isinstance(own.error, TimeoutError)
    assert not by_group.failed
    assert by_group.error is None
    assert g.errors == [own.error]


async def test_a_cancelled_child_has_not_failed() -> None:
    async with cohort.TaskGroup() as g:
        h = g.spawn(asyncio.sleep, 10)
        await asyncio.sleep(1)
        assert h.cancel()
    assert (h.status, h.failed, h.error, h.ended) == (cohort.ChildStatus.CANCELLED, False, None, 1)
    with pytest.raises(asyncio.CancelledError):
        h.result()
    assert not h.cancel()  # already done


async def test_two_handles_of_one_child_are_equal_and_outlive_the_group() -> None:
    async with cohort.TaskGroup(cohort.Settle()) as g:
        h = g.spawn(ok, "v", 1)
        other = g.spawn(bad, "boom", 1)
    assert g.handles == [h, other]
    assert h != other
    assert len({h, *g.handles}) == 2
    assert (h.status, h.result(), h.outcome().value, h.cancel()) == (
        cohort.ChildStatus.SUCCEEDED,
        "v",
        "v",
        False,
    )
    assert await other.wait() == other.outcome()
