"""``TaskGroup.start_soon``: a child without a handle, recorded only if it does not succeed.

The guarantees shared with ``spawn`` are also checked by the tests of
test_group.py that take the ``how`` fixture; these are the ones of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Generator, MutableMapping
from typing import Any

import pytest

import cohort
from _util import bad, closed, now, ok
from cohort import ChildStatus, Decision
from cohort.testing import wait_all_tasks_blocked

S = ChildStatus
vc = pytest.mark.virtual_clock


async def forever() -> None:
    await asyncio.Event().wait()


@vc
async def test_only_children_that_did_not_succeed_are_recorded_in_spawn_order() -> None:
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        g.spawn(ok, "a", 1, name="a")
        assert g.start_soon(ok, "b", 1, name="b") is None  # type: ignore[func-returns-value]
        g.start_soon(bad, "c", 2, name="c")
        g.spawn(ok, "d", 1, name="d")
        g.start_soon(bad, "e", 1, name="e")  # fails first, listed after c
    assert g.results == ["a", "d"]
    assert [(o.name, o.status) for o in g.outcomes] == [
        ("a", S.SUCCEEDED),
        ("c", S.FAILED),
        ("d", S.SUCCEEDED),
        ("e", S.FAILED),
    ]
    assert [h.name for h in g.handles] == ["a", "c", "d", "e"]
    assert [str(e) for e in g.errors] == ["c", "e"]
    c = g.outcomes[1]
    assert (c.started, c.ended, c.critical) == (0, 2, True)
    stats = g.statistics()
    assert (stats.children, stats.spawned, stats.succeeded, stats.failed) == (5, 5, 3, 2)


async def test_an_unnamed_child_is_named_after_its_coroutine() -> None:
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        g.start_soon(bad, "x", 0)
    (outcome,) = g.outcomes
    assert outcome.name == "bad"


@vc
async def test_a_failure_fails_gather_and_the_cancelled_siblings_are_recorded() -> None:
    with pytest.raises(ExceptionGroup) as info:
        async with cohort.TaskGroup() as g:
            g.start_soon(ok, "fine", 0)
            g.start_soon(forever, name="forever")
            g.start_soon(bad, "x", 1, name="bad")
    assert [str(e) for e in info.value.exceptions] == ["x"]
    assert [(o.name, o.status) for o in g.outcomes] == [
        ("forever", S.CANCELLED),
        ("bad", S.FAILED),
    ]
    assert now() == 1


async def test_an_optional_child_never_fails_the_group() -> None:
    async with cohort.TaskGroup() as g:
        g.start_soon(bad, "optional", 0, critical=False)
        g.start_soon(ok, 1, 0, critical=False)
        g.start_soon(ok, 2, 0)
    assert [str(e) for e in g.errors] == ["optional"]
    assert [o.critical for o in g.outcomes] == [False]
    stats = g.statistics()
    assert (stats.children, stats.spawned, stats.succeeded, stats.failed) == (3, 1, 1, 0)


async def test_optional_children_alone_are_cancelled_when_the_body_ends() -> None:
    async with cohort.TaskGroup() as g:
        g.start_soon(forever, critical=False, name="background")
        await asyncio.sleep(0)
    assert [(o.name, o.status) for o in g.outcomes] == [("background", S.CANCELLED)]


@vc
async def test_a_quorum_keeps_the_values_that_made_it() -> None:
    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        g.start_soon(ok, "slow", 2, name="slow")
        g.start_soon(ok, "fast", 1, name="fast")
    assert g.result == "fast"
    assert [(o.name, o.status) for o in g.outcomes] == [("slow", S.CANCELLED)]
    assert now() == 1


@vc
async def test_limit_holds_and_children_start_in_spawn_order() -> None:
    running = 0
    peak = 0
    started: list[int] = []

    async def work(i: int) -> None:
        nonlocal running, peak
        started.append(i)
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(1)
        running -= 1

    async with cohort.TaskGroup(limit=2) as g:
        for i in range(5):
            g.start_soon(work, i)
    assert (peak, started, now()) == (2, [0, 1, 2, 3, 4], 3)
    assert g.outcomes == []
    assert g.statistics().succeeded == 5


@vc
async def test_a_child_timeout_is_recorded_as_timed_out() -> None:
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        g.start_soon(ok, 1, 1, timeout=2)
        g.start_soon(ok, 2, 5, timeout=1, name="slow")
    assert [(o.name, o.status) for o in g.outcomes] == [("slow", S.TIMED_OUT)]
    assert isinstance(g.errors[0], TimeoutError)


async def test_a_child_that_cancelled_itself_is_a_failure() -> None:
    async def cancelled_elsewhere() -> None:
        future = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(future.cancel)
        await future

    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        g.start_soon(cancelled_elsewhere)
    assert [o.status for o in g.outcomes] == [S.FAILED]
    assert "raised CancelledError without being cancelled" in str(g.errors[0])


@vc
async def test_cancelling_the_group_cancels_children_in_spawn_order() -> None:
    order: list[str] = []

    async def child(name: str) -> None:
        try:
            await forever()
        finally:
            order.append(name)

    async with cohort.TaskGroup() as g:
        for i, name in enumerate("abcd"):
            if i % 2:
                g.start_soon(child, name, name=name)
            else:
                g.spawn(child, name, name=name)
        await wait_all_tasks_blocked()
        g.cancel()
    assert order == ["a", "b", "c", "d"]
    assert [o.name for o in g.outcomes] == ["a", "b", "c", "d"]


async def test_a_policy_that_reads_every_child_sees_start_soon_children() -> None:
    seen: list[tuple[str, str]] = []

    class Watch(cohort.JoinPolicy):
        def on_spawn(self, group: cohort.GroupView, handle: cohort.ChildView) -> Decision:
            seen.append(("spawned", handle.name))
            return Decision.CONTINUE

        def on_child_done(self, group: cohort.GroupView, handle: cohort.ChildView) -> Decision:
            seen.append((handle.status.value, handle.name))
            return Decision.DONE if group.succeeded == 2 else Decision.CONTINUE

    async with cohort.TaskGroup(join=Watch()) as g:
        g.start_soon(ok, 1, 0, name="one")
        g.start_soon(ok, 2, 0, name="two")
        g.start_soon(forever, name="forever")
    # Decided after two successes: the child then cancelled is not consulted.
    assert seen == [
        ("spawned", "one"),
        ("spawned", "two"),
        ("spawned", "forever"),
        ("succeeded", "one"),
        ("succeeded", "two"),
    ]
    assert [(o.name, o.status) for o in g.outcomes] == [("forever", S.CANCELLED)]


@vc
async def test_task_tree_shows_running_children_and_their_groups() -> None:
    stuck = asyncio.Event()

    async def inner() -> None:
        async with cohort.TaskGroup(name="inner") as g:
            g.start_soon(stuck.wait, name="waits")

    async with cohort.TaskGroup(name="outer") as g:
        g.start_soon(ok, 1, 0, name="quick")
        g.start_soon(inner, name="runs-inner")
        g.start_soon(stuck.wait)
        await asyncio.sleep(3)
        await wait_all_tasks_blocked()
        (root,) = cohort.task_tree().groups
        assert [(c.name, c.status, c.elapsed) for c in root.children] == [
            ("runs-inner", "running", 3.0),
            ("Event.wait", "running", 3.0),
        ]
        (nested,) = root.children[0].groups
        assert [(c.name, c.status) for c in nested.children] == [("waits", "running")]
        stuck.set()


async def test_children_report_events(events: list[MutableMapping[str, Any]]) -> None:
    async with cohort.TaskGroup(name="g", join=cohort.Settle()) as g:
        g.start_soon(ok, 1, 0, name="one")
        g.start_soon(bad, "x", 0, name="bad")
    child_events = [(e["event"], e["child"]) for e in events if "child" in e]
    assert sorted(child_events) == [
        ("child failed", "bad"),
        ("child started", "bad"),
        ("child started", "one"),
        ("child succeeded", "one"),
    ]
    assert g.outcomes[0].name == "bad"
    assert len(g.outcomes) == 1


async def test_refused_children_are_closed() -> None:
    group = cohort.TaskGroup()
    coro = ok(1, 0)
    with pytest.raises(RuntimeError, match="enter it"):
        group.start_soon(coro)
    assert closed(coro)
    async with group as g:
        with pytest.raises(TypeError, match="async function"):
            g.start_soon(lambda: 1)  # type: ignore[arg-type, return-value]
        with pytest.raises(TypeError, match="coroutine object and arguments"):
            g.start_soon(ok(1), 2)
        with pytest.raises(TypeError, match="async callable"):
            g.start_soon(42)  # type: ignore[arg-type]
        coro = ok(1, 0)
        with pytest.raises(ValueError, match="timeout"):
            g.start_soon(coro, timeout=-1)
        assert closed(coro)
    coro = ok(1, 0)
    with pytest.raises(RuntimeError, match="exited"):
        g.start_soon(coro)
    assert closed(coro)


async def test_start_soon_from_another_thread_raises() -> None:
    errors: list[BaseException] = []

    async with cohort.TaskGroup() as g:

        def other_thread() -> None:
            try:
                g.start_soon(forever)
            except RuntimeError as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1
    assert "outside its event loop's thread" in str(errors[0])
    assert g.statistics().children == 0


@vc
async def test_unnamed_children_that_did_not_succeed_are_recorded_with_spawn_order_and_times() -> (
    None
):
    # Unnamed, critical, under Gather: children the group runs without a record
    # until they end, then records as the named ones are.
    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup() as g:
            start = now()
            g.spawn(ok, "a", 1)
            g.start_soon(bad, "b", 3)
            g.start_soon(ok, "c", 1)
            g.start_soon(bad, "d", 2)  # fails first: Gather cancels b
    assert [(o.name, o.status, o.started, o.ended) for o in g.outcomes] == [
        ("ok", S.SUCCEEDED, start, start + 1),
        ("bad", S.CANCELLED, start, start + 2),
        ("bad", S.FAILED, start, start + 2),
    ]
    assert [str(e) for e in g.errors] == ["d"]
    assert g.outcomes[1].cancel_reason is not None


@vc
async def test_an_unnamed_childs_end_is_told_when_events_were_switched_on_while_it_ran(
    events: list[MutableMapping[str, Any]],
) -> None:
    release = asyncio.Event()
    cohort.enable_events(False)
    async with cohort.TaskGroup(name="g") as g:
        g.start_soon(release.wait)
        await wait_all_tasks_blocked()
        cohort.enable_events()
        release.set()
    assert [(e["event"], e.get("child")) for e in events if "child" in e] == [
        ("child succeeded", "Event.wait")
    ]
    assert g.outcomes == []


class _Wrapped(Coroutine[Any, None, Any]):
    """A coroutine that is not a native one (as a compiled extension may make)."""

    def __init__(self, inner: Coroutine[Any, None, Any]) -> None:
        self.inner = inner

    def send(self, value: None) -> Any:
        return self.inner.send(value)

    def throw(self, *args: Any) -> Any:
        return self.inner.throw(*args)

    def close(self) -> None:
        self.inner.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self.inner.__await__()


async def test_a_function_returning_another_kind_of_coroutine_runs_as_a_plain_child() -> None:
    async def doubled(x: int, seen: list[int]) -> None:
        seen.append(2 * x)

    seen: list[int] = []
    async with cohort.TaskGroup() as g:
        g.start_soon(lambda: _Wrapped(doubled(1, seen)))
        g.start_soon(lambda x: _Wrapped(doubled(x, seen)), 2)
    assert sorted(seen) == [2, 4]
    assert (g.succeeded, g.outcomes) == (2, [])


@vc
async def test_a_named_child_without_a_record_shows_its_tasks_name_and_is_recorded_by_it() -> None:
    renamed = asyncio.Event()

    async def waits() -> None:
        task = asyncio.current_task()
        assert task is not None
        assert task.get_name() == "waits"
        await asyncio.sleep(1)
        task.set_name("renamed")
        renamed.set()
        await asyncio.sleep(10)

    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup(name="g") as g:
            g.start_soon(waits, name="waits")
            g.start_soon(bad, "x", 5, name="fails")
            await renamed.wait()
            await asyncio.sleep(1)
            (root,) = cohort.task_tree().groups
            assert [(c.name, c.elapsed) for c in root.children] == [("renamed", 2), ("fails", 2)]
    assert [(o.name, o.status, o.started, o.ended) for o in g.outcomes] == [
        ("waits", S.CANCELLED, 0, 5),
        ("fails", S.FAILED, 0, 5),
    ]
