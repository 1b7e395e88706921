"""Why cohort cancelled: ``cancel_reason(exc)``, ``Outcome.cancel_reason``, events, the tree."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import signal
import sys
from typing import Any

import pytest

import cohort
from cohort import CancelReason, ChildStatus
from cohort.testing import wait_all_tasks_blocked

pytestmark = pytest.mark.virtual_clock

THIS_FILE = __file__


async def waits_and_tells(seen: dict[str, CancelReason | None], key: str) -> None:
    """Sleeps until cancelled; records the reason of the CancelledError it catches."""
    try:
        await asyncio.sleep(100)
    except asyncio.CancelledError as exc:
        seen[key] = cohort.cancel_reason(exc)
        raise


async def fails(after: float = 0) -> None:
    await asyncio.sleep(after)
    raise ValueError("bad input")


async def value(v: int, after: float = 0) -> int:
    await asyncio.sleep(after)
    return v


def line_below() -> int:
    return sys._getframe(1).f_lineno + 1


# -- scopes --------------------------------------------------------------------------


async def test_a_scope_deadline_names_the_scope_and_where_it_was_entered() -> None:
    seen: dict[str, CancelReason | None] = {}
    line = line_below()
    with cohort.move_on_after(1.5):
        await waits_and_tells(seen, "body")
    reason = seen["body"]
    assert reason is not None
    assert reason.kind == "deadline"
    assert reason.source == "cohort.move_on_after(1.5)"
    assert reason.where == f"{THIS_FILE}:{line}"
    assert (
        str(reason)
        == f"the deadline of cohort.move_on_after(1.5) entered at {THIS_FILE}:{line} passed"
    )


async def test_fail_after_timeout_error_carries_the_deadline_reason() -> None:
    with pytest.raises(TimeoutError) as info, cohort.fail_after(2):
        await asyncio.sleep(100)
    reason = cohort.cancel_reason(info.value)
    assert reason is not None
    assert reason.kind == "deadline"
    assert reason.source == "cohort.fail_after(2)"


async def test_a_scope_cancelled_by_hand_says_so() -> None:
    seen: dict[str, CancelReason | None] = {}
    with cohort.CancelScope() as scope:
        asyncio.get_running_loop().call_soon(scope.cancel)
        await waits_and_tells(seen, "body")
    reason = seen["body"]
    assert reason is not None
    assert reason.kind == "scope cancelled"


async def test_a_bare_task_cancel_has_no_reason() -> None:
    seen: dict[str, CancelReason | None] = {}
    task = asyncio.create_task(waits_and_tells(seen, "t"))
    await wait_all_tasks_blocked()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen["t"] is None
    assert cohort.cancel_reason(ValueError()) is None


async def test_a_deadline_that_fires_builds_its_reason_only_when_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[object] = []
    real = cohort.CancelScope._build_reason

    def counting(scope: cohort.CancelScope) -> CancelReason:
        built.append(scope)
        return real(scope)

    monkeypatch.setattr(cohort.CancelScope, "_build_reason", counting)
    caught: list[asyncio.CancelledError] = []
    for _ in range(3):
        with cohort.move_on_after(1):
            try:
                await asyncio.sleep(100)
            except asyncio.CancelledError as exc:
                caught.append(exc)
                raise
    assert built == []
    first = cohort.cancel_reason(caught[0])
    assert first is not None
    assert first.kind == "deadline"
    assert cohort.cancel_reason(caught[0]) is first  # built once, the same each time
    assert len(built) == 1


async def test_a_deadline_reason_shows_and_pickles_as_the_reason_itself() -> None:
    with cohort.move_on_after(1):
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError as exc:
            caught = exc
            raise
    reason = cohort.cancel_reason(caught)
    assert reason is not None
    assert str(caught) == str(reason) == reason.message
    assert repr(caught) == f"CancelledError({reason!r})"
    copied = pickle.loads(pickle.dumps(caught))
    assert copied.args == (reason,)
    assert cohort.cancel_reason(copied) == reason


async def test_a_scope_cancelled_by_hand_keeps_its_name_when_its_deadline_moves() -> None:
    seen: dict[str, CancelReason | None] = {}
    with cohort.move_on_after(5) as scope:
        scope.cancel()
        scope.deadline = math.inf  # after the cancellation: the reason names the scope as it was
        await waits_and_tells(seen, "body")
    reason = seen["body"]
    assert reason is not None
    assert reason.kind == "scope cancelled"
    assert reason.source == "cohort.move_on_after(5)"


# -- groups --------------------------------------------------------------------------


async def test_a_failed_sibling_is_the_reason_of_the_others_and_of_the_body() -> None:
    seen: dict[str, CancelReason | None] = {}
    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup(name="crew") as g:
            g.spawn(waits_and_tells, seen, "waiter", name="waiter")
            g.spawn(fails, 1, name="bad")
            await waits_and_tells(seen, "body")
    for key in ("waiter", "body"):
        reason = seen[key]
        assert reason is not None
        assert reason.kind == "sibling failed"
        assert reason.child == "bad"
        assert reason.source == "crew"
        assert isinstance(reason.error, ValueError)
        assert str(reason) == "sibling 'bad' failed: ValueError('bad input')"
    waiter = g.outcomes[0]
    assert waiter.status is ChildStatus.CANCELLED
    assert waiter.cancel_reason == seen["waiter"]
    assert g.outcomes[1].cancel_reason is None


async def test_a_sibling_refused_by_a_breaker_is_a_rejection(
    events: list[dict[str, Any]],
) -> None:
    seen: dict[str, CancelReason | None] = {}
    breaker = cohort.CircuitBreaker(failures=1, name="db")

    async def trip() -> None:
        async with breaker:
            raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await trip()

    async def guarded() -> None:
        await asyncio.sleep(1)
        await breaker.call(value, 1)

    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup(name="calls") as g:
            g.spawn(waits_and_tells, seen, "other")
            g.spawn(guarded, name="guarded")
    reason = seen["other"]
    assert reason is not None
    assert reason.kind == "rejected"
    assert reason.child == "guarded"
    assert isinstance(reason.error, cohort.CircuitOpenError)
    (exited,) = [e for e in events if e["event"] == "group exited"]
    assert exited["cancel_reason"] == str(reason)


async def test_first_wins_names_the_winner() -> None:
    seen: dict[str, CancelReason | None] = {}
    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        g.spawn(waits_and_tells, seen, "loser", name="loser")
        g.spawn(value, 7, 1, name="fast")
    reason = seen["loser"]
    assert reason is not None
    assert reason.kind == "winner"
    assert reason.child == "fast"
    assert g.outcomes[0].cancel_reason == reason


async def test_quorum_met_is_the_reason_of_the_rest() -> None:
    seen: dict[str, CancelReason | None] = {}
    async with cohort.TaskGroup(join=cohort.Quorum(2)) as g:
        g.spawn(value, 1, 1, name="a")
        g.spawn(value, 2, 2, name="b")
        g.spawn(waits_and_tells, seen, "slow", name="slow")
    reason = seen["slow"]
    assert reason is not None
    assert reason.kind == "quorum"
    assert reason.child == "b"
    assert "Quorum(2)" in str(reason)


async def test_the_group_timeout_is_the_reason_and_outcomes_keep_it() -> None:
    seen: dict[str, CancelReason | None] = {}
    async with cohort.TaskGroup(timeout=3, on_timeout="partial", name="slowpoke") as g:
        g.spawn(waits_and_tells, seen, "child", name="child")
        g.start_soon(waits_and_tells, seen, "other", name="other")
    reason = seen["child"]
    assert reason is not None
    assert reason.kind == "group timed out"
    assert str(reason) == "group 'slowpoke' timed out after 3.0 s"
    assert [o.status for o in g.outcomes] == [ChildStatus.TIMED_OUT, ChildStatus.TIMED_OUT]
    assert [o.cancel_reason for o in g.outcomes] == [reason, reason]


async def test_group_cancel_and_handle_cancel_give_their_reasons() -> None:
    seen: dict[str, CancelReason | None] = {}
    async with cohort.TaskGroup(limit=2) as g:
        h = g.spawn(waits_and_tells, seen, "by handle", name="by-handle")
        g.spawn(waits_and_tells, seen, "by group", name="by-group")
        queued = g.spawn(value, 1, name="queued")
        await wait_all_tasks_blocked()
        queued.cancel()  # still waiting for a slot
        h.cancel()
        await wait_all_tasks_blocked()
        g.cancel()
    by_handle, by_group = seen["by handle"], seen["by group"]
    assert by_handle is not None
    assert by_handle.kind == "handle cancelled"
    assert by_handle.child == "by-handle"
    assert by_group is not None
    assert by_group.kind == "group cancelled"
    reasons = [o.cancel_reason for o in g.outcomes]
    assert reasons[0] == by_handle
    assert reasons[1] == by_group
    assert reasons[2] is not None
    assert reasons[2].kind == "handle cancelled"


async def test_a_nested_group_passes_the_reason_on_to_its_children() -> None:
    seen: dict[str, CancelReason | None] = {}

    async def inner() -> None:
        async with cohort.TaskGroup(name="inner") as g:
            g.spawn(waits_and_tells, seen, "grandchild")

    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup(name="outer") as g:
            g.spawn(inner, name="inner-runner")
            g.spawn(fails, 1, name="bad")
    reason = seen["grandchild"]
    assert reason is not None
    assert reason.kind == "sibling failed"
    assert reason.child == "bad"


async def test_a_deadline_around_a_group_reaches_its_children() -> None:
    seen: dict[str, CancelReason | None] = {}
    with cohort.move_on_after(1):
        async with cohort.TaskGroup() as g:
            g.spawn(waits_and_tells, seen, "child")
    reason = seen["child"]
    assert reason is not None
    assert reason.kind == "deadline"
    assert reason.source == "cohort.move_on_after(1)"


async def test_a_cancellation_held_back_by_a_shield_keeps_its_reason() -> None:
    seen: dict[str, CancelReason | None] = {}

    async def shielded() -> None:
        with cohort.CancelScope(shield=True):
            await asyncio.sleep(2)  # the sibling fails meanwhile: held back
        await waits_and_tells(seen, "after shield")

    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup() as g:
            g.spawn(shielded)
            g.spawn(fails, 1, name="bad")
    reason = seen["after shield"]
    assert reason is not None
    assert reason.kind == "sibling failed"


async def test_the_reason_survives_awaiting_another_task() -> None:
    seen: dict[str, CancelReason | None] = {}

    async def awaits_a_task() -> None:
        inner = asyncio.ensure_future(waits_and_tells(seen, "inner"))
        try:
            await inner
        except asyncio.CancelledError as exc:
            seen["outer"] = cohort.cancel_reason(exc)
            raise

    async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
        g.spawn(awaits_a_task)
        g.spawn(value, 1, 1, name="w")
    assert seen["inner"] == seen["outer"]
    assert seen["outer"] is not None
    assert seen["outer"].kind == "winner"


async def test_events_and_the_task_tree_show_the_reason(
    events: list[dict[str, Any]],
) -> None:
    async with cohort.TaskGroup(name="g") as g:
        h = g.spawn(asyncio.sleep, 100, name="sleeper")
        await wait_all_tasks_blocked()
        h.cancel()
        await wait_all_tasks_blocked()
        tree = cohort.task_tree()
        (child,) = tree.groups[0].children
        assert child.cancel_reason == "child 'sleeper' was cancelled by its handle"
        assert "(child 'sleeper' was cancelled by its handle)" in str(tree)
    (ev,) = [e for e in events if e["event"] == "child cancelled"]
    assert ev["cancel_reason"] == "child 'sleeper' was cancelled by its handle"


# -- shutdown ------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT stands for Ctrl-C on POSIX")
@pytest.mark.parametrize("use_uvloop", [False, True])
def test_ctrl_c_in_cohort_run_is_the_shutdown_reason(use_uvloop: bool) -> None:
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("asyncio.Runner handles Ctrl-C only with Python's default handler")
    seen: dict[str, CancelReason | None] = {}

    async def child(started: asyncio.Event) -> None:
        started.set()
        await waits_and_tells(seen, "child")

    async def main() -> None:
        started = asyncio.Event()
        async with cohort.TaskGroup() as g:
            g.spawn(child, started)
            await started.wait()
            os.kill(os.getpid(), signal.SIGINT)
            await waits_and_tells(seen, "main")

    with pytest.raises(KeyboardInterrupt):
        cohort.run(main, on_interrupt="raise", uvloop=use_uvloop)
    for key in ("main", "child"):
        reason = seen[key]
        assert reason is not None, key
        assert reason.kind == "shutdown", key
