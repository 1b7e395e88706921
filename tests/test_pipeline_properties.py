"""Exactly-once accounting under random failures, drops, fan-outs, retries and cancellation."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cohort
import cohort.testing

# What a stage does with one item: ("ok"|"drop"|"fail"|"flaky"|"many", delay, fan-out)
Behaviour = tuple[str, float, int]

behaviours = st.tuples(
    st.sampled_from(["ok", "ok", "ok", "drop", "fail", "flaky", "many"]),
    st.sampled_from([0.0, 0.0, 0.1, 1.0]),
    st.integers(0, 3),
)


@dataclass
class Plan:
    first: list[Behaviour]
    second: list[Behaviour]
    workers: tuple[int, int]
    ordered: tuple[bool, bool]
    on_error: str
    cancel_at: float | None


plans = st.integers(0, 40).flatmap(
    lambda n: st.builds(
        Plan,
        first=st.lists(behaviours, min_size=n, max_size=n),
        second=st.lists(behaviours, min_size=n, max_size=n),
        workers=st.tuples(st.integers(1, 4), st.integers(1, 4)),
        ordered=st.tuples(st.booleans(), st.booleans()),
        on_error=st.sampled_from(["skip", "skip", "raise"]),
        cancel_at=st.one_of(st.none(), st.sampled_from([0.0, 0.05, 0.5, 2.0])),
    )
)


def make_stage(name: str, plan: list[Behaviour], workers: int, ordered: bool, on_error: Any) -> Any:
    tries: Counter[tuple[int, int]] = Counter()

    async def fn(item: tuple[int, int]) -> Any:
        index, sub = item
        action, delay, fan = plan[index]
        tries[item] += 1
        if delay:
            await asyncio.sleep(delay)
        if action == "drop":
            return cohort.DROP
        if action == "fail" or (action == "flaky" and tries[item] < 2):
            raise ValueError(f"{name} {item}")
        if action == "many":
            return cohort.Many([(index, sub * 10 + k) for k in range(fan)])
        return item

    fn.__name__ = name
    return cohort.stage(
        workers=workers,
        ordered=ordered,
        on_error=on_error,
        retry=cohort.Retry(attempts=2, backoff=0.01, on=(ValueError,)),
    )(fn)


async def execute(plan: Plan) -> tuple[cohort.Report[Any] | None, list[Any], BaseException | None]:
    pipe = make_stage("one", plan.first, plan.workers[0], plan.ordered[0], plan.on_error) | (
        make_stage("two", plan.second, plan.workers[1], plan.ordered[1], plan.on_error)
    )
    outputs: list[Any] = []
    stream = pipe.stream([(i, 0) for i in range(len(plan.first))])
    error: BaseException | None = None
    with cohort.move_on_after(plan.cancel_at if plan.cancel_at is not None else 1e9):
        try:
            async with stream as items:
                async for item in items:
                    outputs.append(item)
        except cohort.PipelineError as exc:
            error = exc
    assert len(asyncio.all_tasks()) == 1  # nothing left behind
    return stream.report, outputs, error


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans)
def test_every_item_ends_exactly_once(plan: Plan) -> None:
    report, outputs, error = cohort.testing.run(execute, plan)
    assert report is not None
    assert report.counts_add_up()
    n = len(plan.first)
    assert report.read <= n
    failed = {e.index for e in report.errors}
    assert report.failed == len(failed)
    out_indexes = Counter(index for index, _ in outputs)
    assert not failed & set(out_indexes)
    assert report.succeeded <= len(out_indexes)
    if error is not None:
        assert plan.on_error == "raise"
        assert report.failed >= 1
        return
    if plan.cancel_at is not None and report.cancelled:
        return
    # A complete run: every item accounted for, by exactly the expected fate.
    assert report.read == n
    assert report.cancelled == 0
    assert report.succeeded == len(out_indexes)
    assert len(outputs) == len(set(outputs))  # no duplicates, retries included
    if all(plan.ordered):
        assert [i for i, _ in outputs] == sorted(i for i, _ in outputs)
