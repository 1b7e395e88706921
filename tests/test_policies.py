"""Join policies through their public seams (cohort._core._policies)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cohort
from _util import bad, ok

pytestmark = pytest.mark.virtual_clock


class Recorder(cohort.JoinPolicy):
    """Settles, recording the counts each hook saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int, int]] = []

    def _note(self, hook: str, group: cohort.GroupView) -> None:
        self.seen.append((hook, group.spawned, group.succeeded, group.failed))

    def on_spawn(self, group: cohort.GroupView, handle: cohort.ChildView) -> cohort.Decision:
        self._note("spawn", group)
        return cohort.Decision.CONTINUE

    def on_child_done(self, group: cohort.GroupView, handle: cohort.ChildView) -> cohort.Decision:
        self._note("failed" if handle.failed else "succeeded", group)
        return cohort.Decision.CONTINUE

    def on_body_done(self, group: cohort.GroupView) -> cohort.Decision:
        self._note("body", group)
        return cohort.Decision.CONTINUE


async def test_hooks_see_the_counts_in_order() -> None:
    policy = Recorder()
    async with cohort.TaskGroup(policy) as g:
        g.spawn(ok, 1, 1)
        g.spawn(bad, "x", 2)
    assert policy.seen == [
        ("spawn", 1, 0, 0),
        ("spawn", 2, 0, 0),
        ("body", 2, 0, 0),
        ("succeeded", 2, 1, 0),
        ("failed", 2, 1, 1),
    ]
    assert g.statistics().phase == "closed"


async def test_one_policy_serves_many_groups_at_once() -> None:
    quorum = cohort.Quorum(2)

    async def one(delays: list[float]) -> list[Any]:
        async with cohort.TaskGroup(quorum) as g:
            for i, d in enumerate(delays):
                g.spawn(ok, i, d)
        return g.results

    assert await cohort.gather(one([3, 1, 2]), one([1, 1, 5])) == ([1, 2], [0, 1])


async def test_results_limit_caps_completion_order_results_once_done() -> None:
    class FirstThree(cohort.Settle):
        results_order = "completion"
        results_limit = 3

        def on_child_done(
            self, group: cohort.GroupView, handle: cohort.ChildView
        ) -> cohort.Decision:
            return cohort.Decision.DONE if group.succeeded >= 3 else cohort.Decision.CONTINUE

    async with cohort.TaskGroup(FirstThree()) as g:
        for i in range(5):
            g.spawn(ok, i, 1)  # all finish in the same loop iteration
    assert len(g.results) == 3  # the three that made the decision, in completion order
    assert set(g.results) < set(range(5))
    assert [o.status for o in g.outcomes].count(cohort.ChildStatus.SUCCEEDED) == 5
    assert cohort.Quorum(2).results_limit == 2
    assert cohort.Gather().results_limit is None


async def test_statistics_is_a_frozen_snapshot() -> None:
    async with cohort.TaskGroup(limit=1, name="stats") as g:
        g.spawn(ok, 1, 1)
        g.spawn(ok, 2, 1)
        s = g.statistics()
        await asyncio.sleep(0.5)
        later = g.statistics()
    assert (s.name, s.phase, s.running, s.queued, s.spawned, s.children) == (
        "stats",
        "open",
        1,
        1,
        2,
        2,
    )
    assert (s.elapsed, later.elapsed) == (0, 0.5)
    end = g.statistics()
    assert (end.succeeded, end.failed, end.decision) == (2, 0, cohort.Decision.DONE)
    with pytest.raises(AttributeError):
        s.running = 5  # type: ignore[misc]
    assert cohort.TaskGroup().statistics().phase == "new"


class _SeesSuccesses(cohort.JoinPolicy):
    def __init__(self, sees: bool) -> None:
        if not sees:
            self.consults_on_success = False  # set on the instance, not the class
        self.seen: list[str] = []

    def on_child_done(self, group: cohort.GroupView, handle: cohort.ChildView) -> cohort.Decision:
        self.seen.append(handle.name)
        return cohort.Decision.CONTINUE


async def test_an_instance_that_sets_consults_on_success_is_read_on_its_own() -> None:
    for sees, expected in ((True, ["a"]), (False, []), (True, ["a"])):
        policy = _SeesSuccesses(sees)
        async with cohort.TaskGroup(join=policy) as g:
            g.spawn(ok, 1, 1, name="a")
        assert policy.seen == expected


class _Continues(cohort.JoinPolicy):
    def on_all_done(self, group: cohort.GroupView) -> cohort.Decision:
        return cohort.Decision.CONTINUE


def test_every_joiner_asks_a_policy_the_same_questions() -> None:
    from cohort._core import _policies

    class View:
        name = "v"
        spawned = succeeded = 1
        failed = pending = 0
        body_done = True
        timed_out = False
        results: list[Any] = [1]

        def errors_of_critical(self) -> list[Exception]:
            return []

    class Done:
        name = "c"
        critical = True
        status = cohort.ChildStatus.SUCCEEDED
        failed = False
        error = None

    gather, quorum = cohort.Gather(), cohort.Quorum(1)
    g_traits, q_traits = _policies.traits_of(gather), _policies.traits_of(quorum)
    assert g_traits is _policies.traits_of(cohort.Gather())  # once per class
    assert g_traits.lean
    assert not q_traits.lean
    # A success is shown to Quorum (it counts toward k), not to Gather.
    assert _policies.ask_child_done(gather, g_traits, View(), Done()) is cohort.Decision.CONTINUE
    assert _policies.ask_child_done(quorum, q_traits, View(), Done()) is cohort.Decision.DONE
    # on_all_done answering CONTINUE means DONE: nothing is left to wait for.
    cont = _Continues()
    assert _policies.ask_all_done(cont, _policies.traits_of(cont), View()) is cohort.Decision.DONE
    assert _policies.ask_timeout(gather, g_traits, View(), partial=True) is cohort.Decision.DONE
    assert _policies.ask_timeout(gather, g_traits, View(), partial=False) is cohort.Decision.FAIL
    assert _policies.fan_in_refusal(quorum) is None
    assert "on_spawn" in (_policies.fan_in_refusal(Recorder()) or "")
    assert "JoinPolicy" in (_policies.fan_in_refusal(object()) or "")
