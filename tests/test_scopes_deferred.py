"""A task group's own scope, deferred until needed (cohort._core._scopes.defer)."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

import cohort
from cohort.testing import VirtualClockLoop

pytestmark = pytest.mark.virtual_clock


async def test_a_group_entered_with_a_cancellation_pending_catches_only_its_own() -> None:
    """As ``asyncio.timeout``: a cancellation pending when the group was entered
    (caught and not uncancelled) is not the group's; the group's own is caught."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):  # swallowed, not uncancelled
        await asyncio.sleep(0)
    assert task.cancelling() == 1
    async with cohort.TaskGroup() as g:
        g.cancel()
        await asyncio.sleep(0)
        pytest.fail("the group's cancellation did not reach its body")
    assert task.cancelling() == 1
    task.uncancel()


async def test_a_deferred_scope_entered_late_in_a_child_keeps_the_inherited_deadline() -> None:
    """A group opened in a child of a group with a timeout (nothing on the child's
    stack) keeps that deadline in force once its scope is entered late."""
    seen: list[float] = []

    async def child() -> None:
        async with cohort.TaskGroup():
            with cohort.CancelScope():  # enters the group's deferred scope first
                seen.append(cohort.current_deadline())
            seen.append(cohort.current_deadline())

    start = asyncio.get_running_loop().time()
    async with cohort.TaskGroup(timeout=10) as g:
        g.spawn(child)
    assert seen == [start + 10, start + 10]


async def test_a_deferred_scope_under_another_scope_takes_its_deadline_when_entered_late() -> None:
    async with cohort.TaskGroup():
        assert cohort.current_deadline() == math.inf
    with cohort.move_on_after(5) as outer:
        async with cohort.TaskGroup() as g:
            with cohort.CancelScope():
                assert cohort.current_deadline() == outer.deadline
            g.cancel()
            await asyncio.sleep(0)
    assert not outer.cancelled_caught


def test_a_group_opened_inside_an_anyio_shield_still_cancels_its_body() -> None:
    """The anyio scope in force where the group was opened is kept with its deferred
    scope: that shield lies outside the group and holds nothing of it back."""
    anyio = pytest.importorskip("anyio")
    reached: list[str] = []

    async def main() -> None:
        with anyio.CancelScope(shield=True):
            async with cohort.TaskGroup() as g:
                g.cancel()
                await asyncio.sleep(100)
                reached.append("after the sleep")
            reached.append("after the group")

    anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualClockLoop})
    assert reached == ["after the group"]
