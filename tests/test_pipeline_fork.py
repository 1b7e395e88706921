"""cohort.fork: per-item fan-out to branches joined by a policy (cohort.pipeline._fork)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cohort

vc = pytest.mark.virtual_clock

cancelled: list[str] = []


def branch(name: str, delay: float, fail: bool = False) -> Any:
    async def fn(x: int) -> str:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise
        if fail:
            raise ValueError(f"{name} failed")
        return f"{name}:{x}"

    fn.__name__ = name
    return fn


@pytest.fixture(autouse=True)
def _reset() -> None:
    cancelled.clear()


@vc
async def test_gather_emits_every_branch_by_name() -> None:
    both = cohort.fork(branch("a", 1), branch("b", 2), workers=4)
    report = await both.run(range(3))
    assert report.outputs == [{"a": f"a:{i}", "b": f"b:{i}"} for i in range(3)]
    assert report.stages[0].name == "fork(a, b)"


@vc
async def test_gather_fails_the_item_when_a_branch_fails() -> None:
    both = cohort.fork(branch("a", 1), branch("b", 2, fail=True), on_error="skip")
    report = await both.run([1])
    assert report.failed == 1
    assert isinstance(report.errors[0].exception, ExceptionGroup)


@vc
async def test_settle_keeps_the_successes() -> None:
    either = cohort.fork(branch("a", 1, fail=True), branch("b", 2), join=cohort.Settle())
    report = await either.run([1])
    assert report.outputs == [{"b": "b:1"}]


@vc
async def test_quorum_cancels_the_losers_and_leaves_them_out() -> None:
    two = cohort.fork(
        branch("a", 1), branch("b", 3), branch("c", 2), join=cohort.Quorum(2), timeout=10
    )
    start = asyncio.get_running_loop().time()
    report = await two.run([5])
    assert report.outputs == [{"a": "a:5", "c": "c:5"}]
    assert cancelled == ["b"]
    assert asyncio.get_running_loop().time() - start == 2


@vc
async def test_first_wins_keeps_the_first() -> None:
    first = cohort.fork(branch("a", 2), branch("b", 1), join=cohort.FirstWins())
    report = await first.run([1])
    assert report.outputs == [{"b": "b:1"}]
    assert cancelled == ["a"]


@vc
async def test_a_fork_timeout_fails_the_item_or_keeps_the_partial_result() -> None:
    slow = cohort.fork(branch("a", 1), branch("b", 5), timeout=2, on_error="skip")
    report = await slow.run([1])
    assert isinstance(report.errors[0].exception, TimeoutError)
    partial = cohort.fork(
        branch("a", 1), branch("b", 5), timeout=2, on_timeout="partial", join=cohort.Settle()
    )
    report = await partial.run([1])
    assert report.outputs == [{"a": "a:1"}]


@vc
async def test_branch_stages_apply_their_own_retry() -> None:
    calls = 0

    @cohort.stage(retry=cohort.Retry(attempts=2, backoff=0))
    async def flaky(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError
        return x

    report = await cohort.fork(flaky, branch("b", 1)).run([3])
    assert report.outputs == [{"flaky": 3, "b": "b:3"}]


def test_duplicate_branch_names_are_refused() -> None:
    with pytest.raises(ValueError, match="named 'a'"):
        cohort.fork(branch("a", 1), branch("a", 2))
    renamed = cohort.fork(branch("a", 1), cohort.stage(name="a2")(branch("a", 2)))
    assert renamed.name == "fork(a, a2)"


def test_bad_fork_arguments_fail_at_the_call_site() -> None:
    with pytest.raises(ValueError, match="at least one"):
        cohort.fork()
    with pytest.raises(TypeError, match="JoinPolicy"):
        cohort.fork(branch("a", 1), join="all")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="batch"):
        cohort.fork(branch("a", 1), batch=3)
