"""TaskGroup.start_soon: spawn() without a handle, with every guarantee of spawn().

The property test at the end runs random groups twice, once with spawn() only
and once with start_soon() for some children, and checks that both end the
same way at the same (virtual) time.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cohort
import cohort.testing
from cohort.testing import wait_all_tasks_blocked

virtual_clock = pytest.mark.virtual_clock


async def sleep_then(delay: float, log: list[str], name: str, fail: bool = False) -> str:
    await asyncio.sleep(delay)
    log.append(name)
    if fail:
        raise ValueError(f"{name} failed")
    return name


@virtual_clock
async def test_children_run_and_are_joined_without_handles() -> None:
    log: list[str] = []
    async with cohort.TaskGroup() as g:
        for i in range(3):
            assert g.start_soon(sleep_then, i, log, f"c{i}") is None  # type: ignore[func-returns-value]
        assert g.statistics().running == 3
    assert log == ["c0", "c1", "c2"]
    assert cohort.current_time() == 2
    assert (g.handles, g.results, g.errors) == ([], [], [])
    stats = g.statistics()
    assert (stats.children, stats.spawned, stats.succeeded, stats.failed) == (3, 3, 3, 0)


@virtual_clock
async def test_a_failure_fails_the_group_cancels_the_rest_and_gets_a_handle() -> None:
    log: list[str] = []
    with pytest.raises(ExceptionGroup) as caught:
        async with cohort.TaskGroup() as g:
            g.start_soon(sleep_then, 1, log, "fails", True)
            g.start_soon(sleep_then, 5, log, "slow", name="slow")
            kept = g.spawn(sleep_then, 5, log, "kept")
    assert [str(e) for e in caught.value.exceptions] == ["fails failed"]
    assert cohort.current_time() == 1
    assert kept.status is cohort.ChildStatus.CANCELLED
    by_name = {h.name: h.status for h in g.handles}
    assert by_name["slow"] is cohort.ChildStatus.CANCELLED
    failed = [h for h in g.handles if h.status is cohort.ChildStatus.FAILED]
    assert [str(h.error) for h in failed] == ["fails failed"]
    assert failed[0].started == 0  # recorded for start_soon children too
    assert failed[0].ended == 1
    assert log == ["fails"]


@virtual_clock
async def test_the_group_timeout_and_cancel_reach_them() -> None:
    async with cohort.TaskGroup(timeout=1, on_timeout="partial") as g:
        g.start_soon(asyncio.sleep, 10, name="sleeper")
    assert cohort.current_time() == 1
    assert [(h.name, h.status) for h in g.handles] == [("sleeper", cohort.ChildStatus.TIMED_OUT)]

    async with cohort.TaskGroup() as g:
        g.start_soon(asyncio.sleep, 10)
        await asyncio.sleep(2)
        g.cancel()
    assert cohort.current_time() == 3
    assert [h.status for h in g.handles] == [cohort.ChildStatus.CANCELLED]


@virtual_clock
async def test_policies_that_look_at_each_success_and_limits_work_with_start_soon() -> None:
    log: list[str] = []
    async with cohort.TaskGroup(join=cohort.Quorum(2)) as g:
        for i in (3, 1, 2):
            g.start_soon(sleep_then, i, log, f"c{i}")
    assert g.results == ["c1", "c2"]
    assert cohort.current_time() == 2

    async with cohort.TaskGroup(limit=1) as g:
        for i in range(3):
            g.start_soon(sleep_then, 1, log, f"l{i}")
        assert g.statistics().queued == 2
    assert cohort.current_time() == 5
    assert g.handles == []  # queued, then succeeded: no record kept


@virtual_clock
async def test_task_tree_shows_running_start_soon_children() -> None:
    release = asyncio.Event()
    async with cohort.TaskGroup(name="g") as g:
        g.start_soon(release.wait, name="waits")
        await wait_all_tasks_blocked()
        (root,) = cohort.task_tree().groups
        assert [(c.name, c.status, c.elapsed) for c in root.children] == [("waits", "running", 0.0)]
        release.set()
    assert str(cohort.task_tree()) == "(no open task groups)"


async def test_bad_input_and_a_closed_group_raise_as_spawn_does() -> None:
    async with cohort.TaskGroup() as g:
        with pytest.raises(TypeError, match="async callable or a coroutine object"):
            g.start_soon(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="returned int, not a coroutine"):
            g.start_soon(lambda: 1)  # type: ignore[arg-type, return-value]
    with pytest.raises(RuntimeError, match="it has exited"):
        g.start_soon(asyncio.sleep, 0)


async def test_events_on_gives_start_soon_children_their_events(
    events: list[MutableMapping[str, Any]],
) -> None:
    async with cohort.TaskGroup(name="g") as g:
        g.start_soon(asyncio.sleep, 0, name="c")
    assert [e["event"] for e in events if e.get("child") == "c"] == [
        "child started",
        "child succeeded",
    ]


# -- start_soon ends a group exactly as spawn does --------------------------------------


@dataclass(frozen=True)
class Child:
    delay: int
    fails: bool
    critical: bool
    light: bool  # start_soon instead of spawn (critical children only)


children = st.lists(
    st.builds(Child, st.integers(0, 4), st.booleans(), st.booleans(), st.booleans()),
    max_size=6,
)


def run_group(
    specs: list[Child], policy: str, light: bool, timeout: int | None
) -> tuple[str, float, tuple[int, int, int]]:
    async def main() -> tuple[str, float, tuple[int, int, int]]:
        log: list[str] = []
        join = cohort.Settle() if policy == "settle" else cohort.Gather()
        g = cohort.TaskGroup(join=join, timeout=timeout, on_timeout="partial")
        try:
            async with g:
                for i, c in enumerate(specs):
                    args = (c.delay, log, f"c{i}", c.fails)
                    if light and c.light and c.critical:
                        g.start_soon(sleep_then, *args, name=f"c{i}")
                    else:
                        g.spawn(sleep_then, *args, name=f"c{i}", critical=c.critical)
            ended = "ok"
        except BaseException as exc:
            ended = f"{type(exc).__name__}: {sorted(str(e) for e in exc.exceptions)}"  # type: ignore[attr-defined]
        stats = g.statistics()
        return ended, cohort.current_time(), (stats.spawned, stats.succeeded, stats.failed)

    return cohort.testing.run(main)


@settings(max_examples=80, deadline=None)
@given(
    specs=children,
    policy=st.sampled_from(["gather", "settle"]),
    timeout=st.sampled_from([None, 2]),
)
def test_start_soon_ends_every_group_as_spawn_does(
    specs: list[Child], policy: str, timeout: int | None
) -> None:
    assert run_group(specs, policy, True, timeout) == run_group(specs, policy, False, timeout)
