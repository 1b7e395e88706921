"""Structured events and the live task tree (cohort._observe._events)."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from structlog.testing import capture_logs

import cohort
from cohort.testing import wait_all_tasks_blocked


async def ok(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def boom() -> None:
    raise ValueError("boom")


async def test_no_events_unless_enabled() -> None:
    with capture_logs() as logs:
        async with cohort.TaskGroup() as g:
            g.spawn(ok, 1)
    assert logs == []


async def test_group_and_child_events_carry_their_fields(
    events: list[dict[str, object]],
) -> None:
    async with cohort.TaskGroup(name="outer", join=cohort.Settle()) as g:
        g.spawn(ok, 1, name="one")
        g.spawn(boom, name="bad")
    names = [e["event"] for e in events]
    assert names[0] == "group entered"
    assert names[-1] == "group exited"
    assert names.count("child started") == 2
    done = {e["child"]: e for e in events if e["event"] in ("child succeeded", "child failed")}
    assert done["one"]["group"] == "outer"
    assert done["bad"]["error"] == "ValueError('boom')"
    assert done["bad"]["log_level"] == "info"
    exit_event = events[-1]
    assert exit_event["succeeded"] == 1
    assert exit_event["failed"] == 1
    assert exit_event["policy"] == "Settle()"
    assert isinstance(exit_event["elapsed"], float)


async def test_nested_group_names_its_parent(events: list[dict[str, object]]) -> None:
    async def inner() -> None:
        async with cohort.TaskGroup(name="inner") as g:
            g.spawn(ok, 2)

    async with cohort.TaskGroup(name="outer") as g:
        g.spawn(inner)
    entered = [e for e in events if e["event"] == "group entered"]
    assert [(e["group"], e["parent"]) for e in entered] == [("outer", None), ("inner", "outer")]


async def test_a_group_names_the_group_whose_body_or_child_it_runs_in(
    events: list[dict[str, object]],
) -> None:
    async def in_child() -> None:
        async with cohort.TaskGroup(name="child-outer") as g:
            async with cohort.TaskGroup(name="child-inner") as g2:
                g2.spawn(ok, 1)
            g.spawn(ok, 2)

    async with cohort.TaskGroup(name="top") as g:
        async with cohort.TaskGroup(name="body") as g2:
            g2.spawn(in_child)
        g.spawn(ok, 3)
    exited = {e["group"]: e["parent"] for e in events if e["event"] == "group exited"}
    assert exited == {
        "top": None,
        "body": "top",
        "child-outer": "body",
        "child-inner": "child-outer",
    }


@pytest.mark.virtual_clock
async def test_timed_out_and_cancelled_children_are_reported(
    events: list[dict[str, object]],
) -> None:
    async with cohort.TaskGroup(timeout=1, on_timeout="partial", name="g") as g:
        g.spawn(asyncio.sleep, 5, name="slow")
    (ev,) = [e for e in events if e["event"] == "child timed out"]
    assert ev["child"] == "slow"
    assert ev["elapsed"] == 1


@pytest.mark.virtual_clock
async def test_task_tree_shows_the_stuck_child() -> None:
    stuck = asyncio.Event()

    async def hangs() -> None:
        await stuck.wait()

    async def inner() -> None:
        async with cohort.TaskGroup(name="inner", join=cohort.Quorum(1)) as g:
            g.spawn(hangs, name="waits-forever")

    async with cohort.TaskGroup(name="outer") as g:
        g.spawn(ok, 1, name="quick")
        g.spawn(inner, name="runs-inner")
        await asyncio.sleep(3)
        await wait_all_tasks_blocked()
        tree = cohort.task_tree()
        (root,) = tree.groups
        assert root.name == "outer"
        by_name = {c.name: c for c in root.children}
        assert by_name["quick"].status == "succeeded"
        (nested,) = by_name["runs-inner"].groups
        assert nested.policy == "Quorum(1)"
        (stuck_child,) = nested.children
        assert (stuck_child.name, stuck_child.status, stuck_child.elapsed) == (
            "waits-forever",
            "running",
            3.0,
        )
        text = str(tree)
        assert "waits-forever running 3.000s" in text
        assert text.splitlines()[0].startswith("outer [Gather()]")
        stuck.set()
    assert str(cohort.task_tree()) == "(no open task groups)"


def test_configure_logging_validates_level() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        cohort.configure_logging("chatty")


def test_configure_logging_json_renders_events(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        cohort.configure_logging("debug", json=True)

        async def main() -> None:
            async with cohort.TaskGroup(name="j") as g:
                g.spawn(ok, 1)

        cohort.testing.run(main)
    finally:
        cohort.enable_events(False)
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert '"event": "group exited"' in err
    assert '"group": "j"' in err
