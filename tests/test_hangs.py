"""A seeded-hang suite: programs that hang on purpose, each detected and its culprit named.

Every scenario runs on the virtual clock: the hung tasks are started, the
test waits until every task is blocked (``wait_all_tasks_blocked``), then
reads ``cohort.hang_report()`` (or lets a ``Watchdog`` find the hang on the
loop's clock) and checks that the report names the task that hangs, what it
waits on, and whom it waits for. The hung tasks are cancelled at the end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

import cohort
from cohort.testing import wait_all_tasks_blocked

pytestmark = pytest.mark.virtual_clock

Spawn = Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[Any]]


@asynccontextmanager
async def hung() -> AsyncIterator[Spawn]:
    """Start named tasks; once the block's body ends, cancel and reap them."""
    tasks: list[asyncio.Task[Any]] = []

    def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        tasks.append(task)
        return task

    try:
        yield spawn
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def report() -> cohort.HangReport:
    await wait_all_tasks_blocked()
    return cohort.hang_report()


def wait_of(r: cohort.HangReport, task: str) -> cohort.Wait:
    wait = r.of(task)
    assert wait is not None, f"{task} not in the report:\n{r}"
    return wait


async def forever() -> None:
    await asyncio.Event().wait()


async def crew(barrier: Any, late: str, n: int) -> None:
    async def worker(i: int) -> None:
        if f"worker-{i}" == late:
            await forever()
        await barrier.wait()

    async with cohort.TaskGroup(name="crew") as g:
        for i in range(n):
            g.spawn(worker, i, name=f"worker-{i}")


async def test_a_missing_barrier_party_is_named() -> None:
    async with hung() as spawn:
        spawn(crew(cohort.Barrier(8), "worker-3", 8), "main")
        r = await report()
    wait = wait_of(r, "worker-0")
    assert wait.kind == "Barrier"
    assert wait.detail.startswith("Barrier 7/8, missing 1: not arrived: worker-3 (at ")
    assert wait.waits_for == ("worker-3",)
    assert wait_of(r, "worker-3").kind == "asyncio.Event"


async def test_a_missing_asyncio_barrier_party_is_named() -> None:
    async with hung() as spawn:
        spawn(crew(asyncio.Barrier(3), "worker-1", 3), "main")
        r = await report()
    wait = wait_of(r, "worker-2")
    assert wait.detail.startswith("asyncio.Barrier 2/3, missing 1: not arrived: worker-1")


async def test_a_lost_wake_up_is_a_wait_on_an_event_never_set() -> None:
    event = asyncio.Event()
    event.set()
    event.clear()  # the wake-up came before the waiter waited, and was lost

    async def waiter() -> None:
        await event.wait()

    async with hung() as spawn:
        spawn(waiter(), "waiter")
        r = await report()
    wait = wait_of(r, "waiter")
    assert wait.kind == "asyncio.Event"
    assert "never set" in wait.detail
    assert wait.where.endswith("in waiter")


async def holds(lock: Any, then: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    async with lock:
        await then()


async def test_a_lock_never_released_names_its_holder() -> None:
    lock = asyncio.Lock()
    async with hung() as spawn:
        spawn(holds(lock, forever), "holder")
        await wait_all_tasks_blocked()
        spawn(holds(lock, forever), "blocked")
        r = await report()
    wait = wait_of(r, "blocked")
    assert wait.kind == "asyncio.Lock"
    assert wait.waits_for == ("holder",)
    assert wait.detail.startswith("asyncio.Lock held by holder")
    assert r.cycles == ()


async def test_a_bulkhead_never_released_names_its_holder() -> None:
    bulkhead = cohort.Bulkhead(1, max_queue=5, name="db")
    async with hung() as spawn:
        spawn(holds(bulkhead, forever), "holder")
        await wait_all_tasks_blocked()
        for i in range(2):
            spawn(holds(bulkhead, forever), f"caller-{i}")
        r = await report()
    wait = wait_of(r, "caller-1")
    assert wait.kind == "Bulkhead"
    assert wait.detail.startswith("Bulkhead 'db' held by holder; 2 waiting")


async def test_a_semaphore_used_up_names_every_holder() -> None:
    sem = asyncio.Semaphore(2)
    async with hung() as spawn:
        for i in range(2):
            spawn(holds(sem, forever), f"holder-{i}")
        await wait_all_tasks_blocked()
        spawn(holds(sem, forever), "blocked")
        r = await report()
    assert wait_of(r, "blocked").waits_for == ("holder-0", "holder-1")


async def crossed(first: Any, second: Any, ready: asyncio.Event, other: asyncio.Event) -> None:
    async with first:
        ready.set()
        await other.wait()
        async with second:
            pass


@pytest.mark.parametrize(
    "make", [asyncio.Lock, lambda: cohort.Bulkhead(1, max_queue=1)], ids=["locks", "bulkheads"]
)
async def test_a_deadlock_of_two_guards_is_a_cycle(make: Callable[[], Any]) -> None:
    a, b = make(), make()
    a_in, b_in = asyncio.Event(), asyncio.Event()
    async with hung() as spawn:
        spawn(crossed(a, b, a_in, b_in), "left")
        spawn(crossed(b, a, b_in, a_in), "right")
        r = await report()
    assert r.cycles == (("left", "right"),)
    assert wait_of(r, "left").waits_for == ("right",)
    assert "deadlock: left -> right -> left" in str(r)


async def test_a_deadlock_of_three_is_one_cycle() -> None:
    locks = [asyncio.Lock() for _ in range(3)]
    entered = [asyncio.Event() for _ in range(3)]
    async with hung() as spawn:
        for i in range(3):
            spawn(crossed(locks[i], locks[(i + 1) % 3], entered[i], entered[(i + 1) % 3]), f"t{i}")
        r = await report()
    assert r.cycles == (("t0", "t1", "t2"),)


async def test_an_unreachable_quorum_says_how_many_more_and_who_is_stuck() -> None:
    async def ok() -> int:
        return 1

    async def body() -> None:
        async with cohort.TaskGroup(join=cohort.Quorum(2), name="replicas") as g:
            g.spawn(ok, name="fast")
            g.spawn(forever, name="slow-1")
            g.spawn(forever, name="slow-2")

    async with hung() as spawn:
        spawn(body(), "reader")
        r = await report()
    wait = wait_of(r, "reader")
    assert wait.kind == "TaskGroup"
    assert wait.detail.startswith(
        "group 'replicas' Quorum(2) needs 1 more, 2 children stuck in: slow-1 (asyncio.Event at "
    )
    assert wait.waits_for == ("slow-1", "slow-2")


async def test_a_gather_group_names_the_child_it_waits_for() -> None:
    async def body() -> None:
        async with cohort.TaskGroup(name="page") as g:
            g.spawn(asyncio.sleep, 0, name="quick")
            g.spawn(forever, name="reviews")

    async with hung() as spawn:
        spawn(body(), "handler")
        r = await report()
    assert wait_of(r, "handler").waits_for == ("reviews",)
    assert "Gather() waits, 1 children stuck in: reviews" in wait_of(r, "handler").detail


async def test_a_latch_never_counted_down_shows_its_count() -> None:
    latch = cohort.Latch(3)
    latch.count_down()
    async with hung() as spawn:
        spawn(latch.wait(), "starter")
        r = await report()
    wait = wait_of(r, "starter")
    assert wait.kind == "Latch"
    assert wait.detail == "Latch count 2, 1 waiting for count_down()"


async def test_event_flags_never_set_show_which_flags_are_awaited() -> None:
    flags = cohort.EventFlags("db", "cache", "config")
    flags.set("db")
    async with hung() as spawn:
        spawn(flags.wait_all("db", "cache"), "boot")
        spawn(flags.wait_any("config"), "reload")
        r = await report()
    assert wait_of(r, "boot").detail == (
        "EventFlags waiting for all of ['cache', 'db']; set now: ['db']"
    )
    assert "any of ['config']" in wait_of(r, "reload").detail


async def test_a_stalled_consumer_blocks_its_producer_on_a_full_queue() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)

    async def producer() -> None:
        for i in range(10):
            await queue.put(i)

    async def consumer() -> None:
        await queue.get()
        await forever()  # stuck on its first item

    async with hung() as spawn:
        spawn(producer(), "producer")
        spawn(consumer(), "consumer")
        r = await report()
    assert wait_of(r, "producer").detail.startswith("put asyncio.Queue (size 1)")
    assert any(step.startswith("test_a_stalled_consumer") for step in wait_of(r, "consumer").chain)


async def test_a_consumer_whose_producer_died_waits_on_an_empty_queue() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    async with hung() as spawn:
        spawn(queue.get(), "consumer")
        r = await report()
    assert wait_of(r, "consumer").detail == "get from an empty asyncio.Queue (size 0)"


async def test_awaiting_a_stuck_task_names_it() -> None:
    async with hung() as spawn:
        stuck = spawn(forever(), "stuck")

        async def caller() -> None:
            await stuck

        spawn(caller(), "caller")
        r = await report()
    assert wait_of(r, "caller").waits_for == ("stuck",)
    assert wait_of(r, "caller").detail == "awaits task stuck"


async def test_a_condition_never_notified() -> None:
    cond = asyncio.Condition()

    async def waiter() -> None:
        async with cond:
            await cond.wait()

    async with hung() as spawn:
        spawn(waiter(), "waiter")
        r = await report()
    assert wait_of(r, "waiter").detail == "asyncio.Condition never notified; 1 waiting"


async def test_a_task_that_swallowed_its_cancellation_shows_it() -> None:
    async def stubborn() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            await forever()  # ignores the cancellation and waits again

    async with hung() as spawn:
        task = spawn(stubborn(), "stubborn")
        await wait_all_tasks_blocked()
        task.cancel()
        r = await report()
        assert wait_of(r, "stubborn").cancelling == 1
        assert "(cancelling: 1)" in str(wait_of(r, "stubborn"))
        task.uncancel()


async def test_a_sleeping_task_is_shown_but_never_a_hang() -> None:
    hangs: list[cohort.HangReport] = []
    async with hung() as spawn, cohort.Watchdog(1.0, hang_after=2.0, on_hang=hangs.append):
        spawn(asyncio.sleep(100), "napper")
        await asyncio.sleep(10)
        assert wait_of(cohort.hang_report(), "napper").kind == "sleep"
    assert hangs == []


async def test_the_watchdog_finds_a_hang_within_twice_hang_after() -> None:
    loop = asyncio.get_running_loop()
    found = asyncio.Event()
    hangs: list[cohort.HangReport] = []

    def on_hang(r: cohort.HangReport) -> None:
        hangs.append(r)
        found.set()

    async with hung() as spawn, cohort.Watchdog(1.0, hang_after=5.0, on_hang=on_hang, log=False):
        start = loop.time()
        spawn(crew(cohort.Barrier(3), "worker-2", 3), "main")
        with cohort.fail_after(100):
            await found.wait()
        assert loop.time() - start <= 10.0  # loop (virtual) time, not wall time
    first = hangs[0]
    assert wait_of(first, "worker-0").waits_for == ("worker-2",)
    assert wait_of(first, "worker-0").since is not None


async def test_the_watchdog_reports_a_deadlock_once() -> None:
    hangs: list[cohort.HangReport] = []
    a, b = asyncio.Lock(), asyncio.Lock()
    a_in, b_in = asyncio.Event(), asyncio.Event()
    wd = cohort.Watchdog(1.0, hang_after=2.0, on_hang=hangs.append, log=False)
    async with hung() as spawn, wd:
        spawn(crossed(a, b, a_in, b_in), "left")
        spawn(crossed(b, a, b_in, a_in), "right")
        await asyncio.sleep(20)  # virtual time: the watchdog looks ten times
    cycles = [c for r in hangs for c in r.cycles]
    assert cycles == [("left", "right")]
    assert list(wd.hangs) == hangs


async def test_time_sleep_in_a_coroutine_is_a_stall_naming_the_coroutine() -> None:
    reported = threading.Event()
    seen: list[cohort.StallReport] = []
    now = [0.0]

    def on_stall(r: cohort.StallReport) -> None:
        seen.append(r)
        reported.set()

    async def blocking_handler() -> None:
        now[0] += 1.0
        while not reported.is_set():
            time.sleep(0.001)  # noqa: ASYNC251 (the bug this seeds)

    wd = cohort.Watchdog(0.02, on_stall=on_stall, clock=lambda: now[0], log=False)
    async with wd:
        await blocking_handler()
    assert seen[0].where.endswith("in blocking_handler")


async def test_no_task_no_wait() -> None:
    r = cohort.hang_report()
    assert r.waits == ()
    assert str(r) == "(no task waits)"
