"""cohort.Latch: a one-shot countdown."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest

import cohort
from _util import until
from cohort.testing import VirtualClockLoop


async def test_count_down_to_zero_releases_every_waiter() -> None:
    latch = cohort.Latch(3)
    waiters = [asyncio.create_task(latch.wait()) for _ in range(4)]
    await until(lambda: latch.statistics().n_waiting == 4)
    latch.count_down()
    latch.count_down(1)
    assert latch.statistics() == cohort.LatchStatistics(count=1, n_waiting=4)
    latch.count_down()
    await asyncio.gather(*waiters)
    assert latch.count == 0
    await latch.wait()  # stays open


async def test_zero_latch_is_open_from_the_start() -> None:
    latch = cohort.Latch(0)
    await latch.wait()
    assert repr(latch) == "<cohort.Latch open n_waiting=0>"


def test_bad_counts_raise_value_error_and_change_nothing() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        cohort.Latch(-1)
    latch = cohort.Latch(2)
    with pytest.raises(
        ValueError, match=r"count=2 n_waiting=0>: count_down\(n\) must be an int >= 1"
    ):
        latch.count_down(0)
    with pytest.raises(ValueError, match="below zero"):
        latch.count_down(3)
    assert latch.count == 2
    latch.count_down(2)
    with pytest.raises(ValueError, match="below zero"):
        latch.count_down()
    assert latch.count == 0


async def test_cancelled_waiter_leaves_nothing_behind() -> None:
    latch = cohort.Latch(1)
    waiter = asyncio.create_task(latch.wait())
    await until(lambda: latch.statistics().n_waiting == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert latch.statistics() == cohort.LatchStatistics(count=1, n_waiting=0)
    latch.count_down()


@pytest.mark.virtual_clock
async def test_timeouts_from_asyncio_and_cohort_scopes() -> None:
    loop = asyncio.get_running_loop()
    latch = cohort.Latch(1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(3):
            await latch.wait()
    assert loop.time() == 3
    with pytest.raises(TimeoutError), cohort.fail_after(2):
        await latch.wait()
    assert loop.time() == 5
    assert latch.statistics().n_waiting == 0


async def test_task_group_children_let_coordinator_continue_after_n() -> None:
    latch = cohort.Latch(3)
    finish = asyncio.Event()
    order: list[str] = []

    async def child(i: int) -> None:
        order.append(f"ready {i}")
        latch.count_down()
        await finish.wait()

    async with asyncio.TaskGroup() as tg:
        for i in range(3):
            tg.create_task(child(i))
        await latch.wait()
        order.append("coordinator")
        finish.set()
    assert order[-1] == "coordinator"


async def test_cohort_task_group_children_count_down_for_coordinator() -> None:
    latch = cohort.Latch(3)
    finish = asyncio.Event()

    async def child(i: int) -> int:
        latch.count_down()
        await finish.wait()
        return i

    async with cohort.TaskGroup() as g:
        for i in range(3):
            g.spawn(child, i)
        await latch.wait()  # all three reached the point; none has finished
        assert latch.count == 0
        finish.set()
    assert sorted(g.results) == [0, 1, 2]


async def test_debug_event_when_latch_opens(events: list[MutableMapping[str, Any]]) -> None:
    latch = cohort.Latch(1)
    latch.count_down()
    assert [(e["event"], e["woken"]) for e in events] == [("latch opened", 0)]


# anyio's asyncio backend on the virtual clock: its timeouts take no real time.
_VIRTUAL = {"loop_factory": VirtualClockLoop}


def test_works_inside_anyio_on_asyncio_backend() -> None:
    async def main() -> int:
        latch = cohort.Latch(2)

        async def child() -> None:
            await anyio.sleep(0)
            latch.count_down()

        async with anyio.create_task_group() as tg:
            tg.start_soon(latch.wait)
            for _ in range(2):
                tg.start_soon(child)
        with anyio.move_on_after(0.01) as scope:
            await cohort.Latch(1).wait()
        assert scope.cancelled_caught
        return latch.count

    assert anyio.run(main, backend="asyncio", backend_options=_VIRTUAL) == 0
