"""cohort.Flow: wiring checked at definition, who starts when, who is cancelled, results.

Timing semantics on the virtual clock: every assertion on times is exact.
"""

from __future__ import annotations

import asyncio
import functools
import gc
from typing import Any, assert_type

import pytest

import _flow_funcs as ff
import cohort
from _util import now
from cohort.testing import wait_all_tasks_blocked

vc = pytest.mark.virtual_clock


def timed(log: dict[str, tuple[float, float]], name: str, seconds: float, value: Any) -> Any:
    """An async node body that sleeps ``seconds`` and records when it ran."""

    async def body(**_: Any) -> Any:
        start = now()
        try:
            await asyncio.sleep(seconds)
        finally:
            log[name] = (start, now())
        return value

    return body


def diamond() -> tuple[cohort.Flow, dict[str, tuple[float, float]]]:
    log: dict[str, tuple[float, float]] = {}
    flow = cohort.Flow("diamond", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        await asyncio.sleep(1)
        return x + 1

    @flow.node
    async def b(a: int) -> int:
        await asyncio.sleep(2)
        return a * 10

    @flow.node
    async def c(a: int) -> int:
        await asyncio.sleep(3)
        return a * 100

    @flow.node
    async def d(b: int, c: int) -> int:
        log["d"] = (now(), now())
        return b + c

    return flow, log


@vc
async def test_values_flow_along_the_edges_and_a_join_waits_for_all() -> None:
    flow, log = diamond()
    result = await flow.run(x=1)
    assert result["d"] == 220
    assert log["d"][0] == 4.0  # a (1 s), then b and c together (3 s)
    assert result.outcome("b").status is cohort.ChildStatus.SUCCEEDED
    assert (result.outcome("c").started, result.outcome("c").ended) == (1.0, 4.0)
    assert result.values == {"a": 2, "b": 20, "c": 200, "d": 220}


@vc
async def test_a_node_starts_when_its_own_policy_is_met_not_level_by_level() -> None:
    flow = cohort.Flow("eager", inputs=["x"])
    started: dict[str, float] = {}

    @flow.node
    async def fast(x: int) -> int:
        await asyncio.sleep(1)
        return x

    @flow.node
    async def slow(x: int) -> int:
        await asyncio.sleep(5)
        return x

    @flow.node
    async def after_fast(fast: int) -> int:
        started["after_fast"] = now()
        return fast

    @flow.node
    async def both(slow: int, after_fast: int) -> int:
        started["both"] = now()
        return slow + after_fast

    result = await flow.run(x=2)
    assert started == {"after_fast": 1.0, "both": 5.0}
    assert result[both] == 4


@vc
async def test_quorum_starts_at_the_kth_success_and_cancels_the_unneeded_rest() -> None:
    flow = cohort.Flow("recs", inputs=["user"])
    log: dict[str, tuple[float, float]] = {}
    for name, seconds in (("s1", 1.0), ("s2", 2.0), ("s3", 9.0)):
        flow.node(name=name)(_with_user(timed(log, name, seconds, name)))

    @flow.node(join=cohort.Quorum(2))
    async def merged(s1: str | None, s2: str | None, s3: str | None) -> list[str]:
        log["merged"] = (now(), now())
        return [s for s in (s1, s2, s3) if s is not None]

    result = await flow.run(user="u")
    assert result[merged] == ["s1", "s2"]
    assert log["merged"][0] == 2.0
    assert result.outcome("s3").status is cohort.ChildStatus.CANCELLED
    assert log["s3"] == (0.0, 2.0)  # cancelled the moment the quorum was met


def _with_user(body: Any) -> Any:
    async def node(user: str) -> Any:
        return await body()

    return node


@vc
async def test_an_upstream_another_node_still_needs_is_not_cancelled() -> None:
    flow = cohort.Flow("shared", inputs=["x"])
    log: dict[str, tuple[float, float]] = {}
    flow.node(name="quick")(_with_x(timed(log, "quick", 1.0, 1)))
    flow.node(name="slow")(_with_x(timed(log, "slow", 4.0, 4)))

    @flow.node(join=cohort.FirstWins())
    async def first(quick: int | None, slow: int | None) -> int:
        return quick if quick is not None else slow or 0

    @flow.node
    async def needs_slow(slow: int) -> int:
        return slow * 2

    result = await flow.run(x=0)
    assert result[first] == 1
    assert result[needs_slow] == 8
    assert log["slow"] == (0.0, 4.0)  # ran to its end: needs_slow waited for it


def _with_x(body: Any) -> Any:
    async def node(x: int) -> Any:
        return await body()

    return node


@vc
async def test_settle_passes_outcomes_and_runs_after_every_upstream_ended() -> None:
    flow = cohort.Flow("settle", inputs=["x"])

    @flow.node
    async def ok(x: int) -> int:
        await asyncio.sleep(1)
        return x

    @flow.node
    async def bad(x: int) -> int:
        await asyncio.sleep(2)
        raise ValueError("bad")

    @flow.node(join=cohort.Settle())
    async def report(ok: cohort.Outcome, bad: cohort.Outcome) -> str:
        assert now() == 2.0
        return f"{ok.status.value} {ok.value} / {bad.status.value} {bad.error!r}"

    result = await flow.run(x=5)
    assert result[report] == "succeeded 5 / failed ValueError('bad')"


@vc
async def test_a_failed_critical_node_fails_the_flow_and_cancels_the_rest() -> None:
    flow = cohort.Flow("fails", inputs=["x"])
    log: dict[str, tuple[float, float]] = {}
    flow.node(name="long")(_with_x(timed(log, "long", 10.0, 1)))

    @flow.node
    async def broken(x: int) -> int:
        await asyncio.sleep(1)
        raise KeyError("missing")

    @flow.node
    async def joined(long: int, broken: int) -> int:
        return long + broken

    with pytest.raises(cohort.FlowError, match="node 'broken' failed: KeyError") as info:
        await flow.run(x=1)
    assert isinstance(info.value.__cause__, KeyError)
    assert info.value.node == "broken"
    assert log["long"] == (0.0, 1.0)  # cancelled at once
    outcomes = info.value.result.outcomes
    assert outcomes["joined"].status is cohort.ChildStatus.FAILED  # never ran
    assert outcomes["long"].status is cohort.ChildStatus.CANCELLED


@vc
async def test_a_quorum_tolerates_failures_until_it_cannot_be_met() -> None:
    flow = cohort.Flow("q", inputs=["fail"])

    def source(name: str, seconds: float) -> Any:
        async def node(fail: list[str]) -> str:
            await asyncio.sleep(seconds)
            if name in fail:
                raise RuntimeError(name)
            return name

        return node

    for name, seconds in (("r1", 1), ("r2", 2), ("r3", 3)):
        flow.node(name=name)(source(name, seconds))

    @flow.node(join=cohort.Quorum(2))
    async def read(r1: str | None, r2: str | None, r3: str | None) -> str:
        return ",".join(r for r in (r1, r2, r3) if r)

    assert (await flow.run(fail=["r1"]))[read] == "r2,r3"
    with pytest.raises(cohort.FlowError, match="r2"):
        await flow.run(fail=["r1", "r2"])  # cannot reach 2: fails at 2 s, r3 cancelled
    assert now() == 3.0 + 2.0


@vc
async def test_an_optional_node_may_fail_or_be_cut_short() -> None:
    flow = cohort.Flow("page", inputs=["key"])

    @flow.node(critical=False)
    async def reviews(key: str) -> int:
        await asyncio.sleep(1)
        raise ConnectionError("down")

    @flow.node(critical=False)
    async def ads(key: str) -> str:
        await asyncio.sleep(100)
        return "ad"

    @flow.node
    async def render(key: str, reviews: int | None) -> str:
        return f"{key}: {reviews}"

    result = await flow.run(key="k")
    assert result[render] == "k: None"  # its optional input failed: None
    assert now() == 1.0  # not waiting for the optional ads
    assert result.outcome(ads).status is cohort.ChildStatus.CANCELLED
    assert isinstance(result.outcome(reviews).error, ConnectionError)
    assert result.get(ads, "none") == "none"
    with pytest.raises(LookupError, match="ads"):
        result[ads]


@vc
async def test_run_timeout_raises_or_returns_what_finished() -> None:
    flow, _ = diamond()
    with pytest.raises(TimeoutError):
        await flow.run(x=1, timeout=2.5)
    assert now() == 2.5
    result = await flow.run(x=1, timeout=3.5, on_timeout="partial")
    assert result.values == {"a": 2, "b": 20}
    assert result.outcome("c").status is cohort.ChildStatus.CANCELLED
    assert result.outcome("d").status is cohort.ChildStatus.PENDING


@vc
async def test_node_timeout_and_retry_with_attempts_in_the_outcome() -> None:
    flow = cohort.Flow("retry", inputs=["x"])
    calls: list[float] = []

    @flow.node(timeout=1.0, retry=cohort.Retry(attempts=3, backoff=0.5, jitter=False))
    async def flaky(x: int) -> int:
        calls.append(now())
        if len(calls) < 3:
            await asyncio.sleep(5)  # times out
        return x

    result = await flow.run(x=3)
    assert result[flaky] == 3
    assert calls == [0.0, 1.5, 3.5]
    assert result.outcome(flaky).attempts == 3


@vc
async def test_map_over_a_collection_with_a_limit() -> None:
    flow = cohort.Flow("mapreduce", inputs=["n"])

    @flow.node
    async def parts(n: int) -> list[int]:
        return list(range(n))

    @flow.node(map_over="parts", limit=2)
    async def square(parts: int) -> int:
        await asyncio.sleep(1)
        return parts * parts

    @flow.node
    async def reduce(square: list[int]) -> int:
        return sum(square)

    result = await flow.run(n=5)
    assert result[square] == [0, 1, 4, 9, 16]
    assert result[reduce] == 30
    assert now() == 3.0  # 5 elements, 2 at a time


async def test_cpu_nodes_map_over_partitions_in_worker_processes() -> None:
    flow = cohort.Flow("count", inputs=["data", "parts"])
    flow.node(cpu=True)(ff.partition)
    flow.node(name="count", cpu=True, map_over="partition")(ff.count)
    flow.node(cpu=True)(ff.total)
    async with cohort.ProcessPool(2) as pool:
        cohort.set_default_executor(pool)
        try:
            result = await flow.run(data=list(range(3000)), parts=4)
        finally:
            cohort.set_default_executor(None)
    assert result["total"] == 1000
    assert len(result["count"]) == 4


@vc
async def test_the_same_flow_runs_concurrently_and_cancelling_leaves_nothing() -> None:
    flow, _ = diamond()
    results = await asyncio.gather(*(flow.run(x=i) for i in range(5)))
    assert [r["d"] for r in results] == [110 * (i + 1) for i in range(5)]
    before = len(asyncio.all_tasks())
    task = asyncio.ensure_future(flow.run(x=1))
    await asyncio.sleep(1.5)
    assert len(asyncio.all_tasks()) > before + 1  # the run and its nodes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_all_tasks_blocked()
    assert len(asyncio.all_tasks()) == before


@vc
async def test_nodes_running_when_the_caller_cancels_the_run_end_cancelled_not_failed(
    events: list[Any],
) -> None:
    """The run's task cancelled while it waits for its nodes: the nodes it cuts
    short are cancelled by the run, not stray cancellations (failures)."""
    flow, _ = diamond()
    task = asyncio.ensure_future(flow.run(x=1))
    await asyncio.sleep(1.5)  # b and c run
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    done = {e["node"]: e["status"] for e in events if e["event"] == "flow.node_done"}
    assert done == {"a": "succeeded", "b": "cancelled", "c": "cancelled"}


@vc
async def test_task_tree_shows_a_running_flow_and_events_are_emitted(
    events: list[Any],
) -> None:
    flow, _ = diamond()
    task = asyncio.ensure_future(flow.run(x=1))
    await asyncio.sleep(1.5)
    tree = str(cohort.task_tree())
    assert "flow diamond" in tree
    assert "b" in tree
    await task
    done = [(e["node"], e["status"]) for e in events if e["event"] == "flow.node_done"]
    assert done == [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded"), ("d", "succeeded")]


@vc
async def test_a_flow_as_a_pipeline_stage() -> None:
    flow, _ = diamond()
    d = flow.nodes[-1]
    per_item = flow.as_stage(input="x", output=d, workers=4)
    report = await per_item.run([1, 2, 3])
    assert report.outputs == [220, 330, 440]


def test_to_mermaid_draws_inputs_nodes_and_join_policies() -> None:
    flow = cohort.Flow("m", inputs=["x"])
    flow.node(name="a")(_with_x(timed({}, "a", 0, 1)))
    flow.node(name="b")(_with_x(timed({}, "b", 0, 1)))

    @flow.node(join=cohort.Quorum(1), critical=False)
    async def c(a: int | None, b: int | None) -> int:
        return 0

    text = flow.to_mermaid()
    assert text.splitlines()[0] == "flowchart TD"
    assert "  x([x])" in text
    assert '  a -->|"Quorum(1)"| c' in text
    assert "optional" in text


def test_wiring_mistakes_are_errors_at_definition() -> None:
    flow = cohort.Flow("bad", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        return x

    with pytest.raises(ValueError, match=r"node 'b' takes 'later'.*declare nodes before"):

        @flow.node
        async def b(later: int) -> int:
            return later

    with pytest.raises(ValueError, match="already taken"):
        flow.node(name="a")(_with_x(timed({}, "a", 0, 1)))
    with pytest.raises(ValueError, match="already taken"):
        flow.node(name="x")(_with_x(timed({}, "x", 0, 1)))
    with pytest.raises(TypeError, match=r"\*args"):
        flow.node(name="star")(lambda *xs: xs)
    with pytest.raises(ValueError, match=r"Quorum\(2\) over 1 upstream"):
        flow.node(name="q", join=cohort.Quorum(2))(lambda a: a)
    with pytest.raises(ValueError, match="map_over='y'"):
        flow.node(name="m", map_over="y")(lambda a: a)
    with pytest.raises(ValueError, match="limit= goes with map_over="):
        flow.node(name="l", limit=2)(lambda a: a)
    with pytest.raises(TypeError, match="join="):
        flow.node(name="j", join="all")(lambda a: a)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="plain def"):
        flow.node(name="c", cpu=True)(a.fn)
    with pytest.raises(ValueError, match="takes nothing"):
        flow.node(name="n")(lambda: 1)
    assert [n.name for n in flow.nodes] == ["a"]  # nothing half-added


async def test_run_checks_its_inputs() -> None:
    flow, _ = diamond()
    with pytest.raises(TypeError, match=r"missing \['x'\]"):
        await flow.run()
    with pytest.raises(TypeError, match=r"unknown \['y'\]"):
        await flow.run(x=1, y=2)
    with pytest.raises(ValueError, match="on_timeout"):
        await flow.run(x=1, on_timeout="ignore")  # type: ignore[arg-type]


@vc
async def test_results_are_typed_by_node() -> None:
    flow = cohort.Flow("typed", inputs=["x"])

    @flow.node
    async def text(x: int) -> str:
        return str(x)

    result = await flow.run(x=7)
    assert_type(result[text], str)
    assert result[text] == "7"


@vc
async def test_an_upstream_cancelled_before_it_ran_still_lets_the_run_end() -> None:
    """A quorum starting in the same step as one of its upstreams cancels that
    upstream before its task ever ran: it must still count as ended."""
    flow = cohort.Flow("same step", inputs=["x"])
    flow.node(name="a")(_with_x(timed({}, "a", 1.0, 1)))
    flow.node(name="b")(_with_x(timed({}, "b", 1.0, 2)))

    @flow.node(join=cohort.Settle())
    async def c(b: cohort.Outcome) -> int:
        await asyncio.sleep(1)
        return 3

    @flow.node
    async def d(a: int, c: int) -> int:  # starts with c at 2 s, and ends at 3 s
        await asyncio.sleep(1)
        return a + c

    @flow.node(join=cohort.FirstWins())
    async def e(c: int | None, d: int | None) -> int:
        return c or d or 0

    result = await flow.run(x=0)
    assert result[e] == 3
    assert result.outcome(d).status is cohort.ChildStatus.CANCELLED
    assert now() == 2.0


# -- stray cancellations, policies, unneeded chains, node kinds ---------------------------


@vc
async def test_a_stray_cancellation_fails_its_node_and_the_run_never_hangs() -> None:
    """A node whose task is cancelled by something other than the run fails, as in
    pipelines: its dependents learn of it (the run used to wait for ever)."""
    flow = cohort.Flow("stray", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        await asyncio.sleep(1)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # a library cancelling its own task
        await asyncio.sleep(1)
        return x

    @flow.node
    async def b(a: int) -> int:
        return a

    with pytest.raises(cohort.FlowError, match="node 'a' failed: RuntimeError") as info:
        await flow.run(x=1, timeout=60)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value.__cause__.__cause__, asyncio.CancelledError)
    assert info.value.result.outcome(a).status is cohort.ChildStatus.FAILED
    assert now() == 1.0


@vc
async def test_a_critical_sink_ending_in_a_stray_cancellation_fails_the_run() -> None:
    """A sink that awaited something cancelled elsewhere: a failure, not a success
    with the sink marked cancelled."""
    flow = cohort.Flow("stray sink", inputs=["x"])

    @flow.node
    async def sink(x: int) -> int:
        shared: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(1, shared.cancel)
        return await shared

    with pytest.raises(cohort.FlowError, match=r"node 'sink'.*without being cancelled"):
        await flow.run(x=1)


@vc
async def test_a_node_task_cancelled_by_another_before_it_ran_fails_that_node() -> None:
    flow = cohort.Flow("stray before start", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        for task in asyncio.all_tasks():
            if task.get_name() == "b":
                task.cancel()  # b's task has not taken its first step yet
        await asyncio.sleep(1)
        return x

    @flow.node
    async def b(x: int) -> int:
        return x

    @flow.node
    async def c(a: int, b: int) -> int:
        return a + b

    with pytest.raises(cohort.FlowError, match=r"node 'b'.*before it ran") as info:
        await flow.run(x=1, timeout=60)
    assert info.value.node == "b"
    assert now() == 0.0


@vc
async def test_a_failed_critical_node_fails_the_run_though_only_optional_nodes_take_it() -> None:
    flow = cohort.Flow("optional dependents", inputs=["x"])

    @flow.node
    async def broken(x: int) -> int:
        await asyncio.sleep(1)
        raise KeyError("gone")

    @flow.node
    async def other(x: int) -> int:
        return x

    @flow.node(critical=False)
    async def summary(broken: int) -> int:
        return broken

    @flow.node(critical=False, join=cohort.FirstWins())
    async def either(broken: int | None, other: int | None) -> int:
        await asyncio.sleep(5)
        return 0

    with pytest.raises(cohort.FlowError, match="node 'broken' failed: KeyError") as info:
        await flow.run(x=1)
    assert info.value.node == "broken"
    assert now() == 1.0


class _MyGather(cohort.Gather):
    """A Gather under another name: scheduled as Gather."""


class _TwoSucceeded(cohort.JoinPolicy):
    """Done at the second success, failed at the second failure."""

    def on_child_done(self, group: Any, handle: Any) -> cohort.Decision:
        if group.succeeded >= 2:
            return cohort.Decision.DONE
        if group.failed >= 2:
            return cohort.Decision.FAIL
        return cohort.Decision.CONTINUE


def _three_sources(flow: cohort.Flow, log: dict[str, tuple[float, float]]) -> None:
    for name, seconds in (("s1", 1.0), ("s2", 2.0), ("s3", 3.0)):
        flow.node(name=name)(_with_x(timed(log, name, seconds, name)))


@vc
async def test_a_subclass_of_a_builtin_join_is_scheduled_by_its_own_answers() -> None:
    flow = cohort.Flow("subclass", inputs=["x"])
    log: dict[str, tuple[float, float]] = {}
    _three_sources(flow, log)

    @flow.node(join=_MyGather())
    async def gathered(s1: str, s2: str, s3: str) -> str:
        log["gathered"] = (now(), now())
        return s1 + s2 + s3

    @flow.node(join=_TwoSucceeded())
    async def two(s1: str | None, s2: str | None, s3: str | None) -> str:
        log["two"] = (now(), now())
        return ",".join(s for s in (s1, s2, s3) if s)

    result = await flow.run(x=0)
    assert result[gathered] == "s1s2s3"
    assert log["gathered"][0] == 3.0  # every upstream, not the first one
    assert result[two] == "s1,s2"
    assert log["two"][0] == 2.0  # the custom policy said DONE at the second success


def test_a_join_policy_a_flow_cannot_honour_is_refused_at_definition() -> None:
    class OnTimeout(cohort.JoinPolicy):
        def on_timeout(self, group: Any) -> cohort.Decision:
            return cohort.Decision.DONE

    flow = cohort.Flow("refused", inputs=["x"])
    flow.node(name="a")(_with_x(timed({}, "a", 0, 1)))
    with pytest.raises(TypeError, match="on_timeout"):
        flow.node(name="b", join=OnTimeout())(lambda a: a)
    assert [n.name for n in flow.nodes] == ["a"]


@vc
async def test_a_chain_nothing_needs_any_more_is_cancelled_transitively() -> None:
    """Quorum(2) of three sources, the third waiting on a slow node: the run ends
    when the quorum is met, the slow chain cancelled, not when it ends."""
    flow = cohort.Flow("chain", inputs=["x"])
    log: dict[str, tuple[float, float]] = {}
    flow.node(name="s1")(_with_x(timed(log, "s1", 1.0, "s1")))
    flow.node(name="s2")(_with_x(timed(log, "s2", 2.0, "s2")))
    flow.node(name="slow")(_with_x(timed(log, "slow", 10.0, "slow")))

    @flow.node
    async def s3(slow: str) -> str:
        return slow

    @flow.node(join=cohort.Quorum(2))
    async def merged(s1: str | None, s2: str | None, s3: str | None) -> list[str]:
        return [s for s in (s1, s2, s3) if s]

    result = await flow.run(x=0)
    assert result[merged] == ["s1", "s2"]
    assert now() == 2.0
    assert log["slow"] == (0.0, 2.0)
    assert result.outcome(slow_name := "slow").status is cohort.ChildStatus.CANCELLED, slow_name
    assert result.outcome(s3).status is cohort.ChildStatus.CANCELLED


@vc
async def test_what_only_a_node_that_can_never_start_needed_is_cancelled() -> None:
    flow = cohort.Flow("skipped", inputs=["x"])
    log: dict[str, tuple[float, float]] = {}
    flow.node(name="slow")(_with_x(timed(log, "slow", 10.0, 1)))
    flow.node(name="backup")(_with_x(timed(log, "backup", 2.0, 2)))

    @flow.node
    async def broken(x: int) -> int:
        await asyncio.sleep(1)
        raise KeyError("gone")

    @flow.node(join=cohort.FirstWins())
    async def either(broken: int | None, backup: int | None) -> int:
        return broken or backup or 0

    @flow.node(critical=False)
    async def summary(broken: int, slow: int) -> int:  # can never start once broken failed
        return broken + slow

    result = await flow.run(x=0)
    assert result[either] == 2
    assert log["slow"] == (0.0, 1.0)  # cancelled when summary could no longer start
    assert result.outcome("slow").status is cohort.ChildStatus.CANCELLED
    assert now() == 2.0


class _RecordingExecutor:
    """An executor running calls on the loop, one virtual second each, counting how
    many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0

    async def run(self, fn: Any, *args: Any) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(1)
            return fn(*args)
        finally:
            self.running -= 1

    async def map(self, fn: Any, items: Any, **_: Any) -> list[Any]:
        return list(await asyncio.gather(*(self.run(fn, item) for item in items)))

    def imap(self, fn: Any, items: Any, **_: Any) -> Any:
        raise NotImplementedError

    async def share(self, obj: Any) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


@vc
async def test_map_over_limit_bounds_executor_nodes_too() -> None:
    executor = _RecordingExecutor()
    flow = cohort.Flow("limited", inputs=["items"])

    def count(items: list[int]) -> int:
        return ff.count(items)

    flow.node(map_over="items", limit=1, executor=executor)(count)
    result = await flow.run(items=[[3], [3, 6], [1], [9]])
    assert result["count"] == [1, 2, 0, 1]
    assert executor.most == 1
    assert now() == 4.0


@vc
async def test_a_node_may_be_an_object_with_an_async_call() -> None:
    class Scale:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        async def __call__(self, x: int) -> int:
            await asyncio.sleep(1)
            return x * self.factor

    flow = cohort.Flow("callable", inputs=["x"])
    flow.node(name="scaled")(Scale(3))
    result = await flow.run(x=2)
    assert result["scaled"] == 6
    assert now() == 1.0


@vc
async def test_a_flow_of_only_optional_nodes_runs_every_node() -> None:
    flow = cohort.Flow("all optional", inputs=["x"])
    log: dict[str, tuple[float, float]] = {}
    flow.node(name="quick", critical=False)(_with_x(timed(log, "quick", 1.0, 1)))
    flow.node(name="slow", critical=False)(_with_x(timed(log, "slow", 3.0, 3)))
    result = await flow.run(x=0)
    assert result.values == {"quick": 1, "slow": 3}
    assert now() == 3.0


@vc
async def test_a_thread_node_cut_short_warns_that_its_thread_still_runs() -> None:
    """Python cannot stop a thread: the node times out at once, and the run says
    (a RuntimeWarning, and a note on the node's error) that its thread runs on."""
    import threading

    release, finished = threading.Event(), threading.Event()

    def blocking(x: int) -> int:
        try:
            release.wait(30)
            return x
        finally:
            finished.set()

    flow = cohort.Flow("thread", inputs=["x"])
    flow.node(name="blocking", timeout=1.0)(blocking)
    try:
        with (
            pytest.warns(RuntimeWarning, match=r"node 'blocking'.*still running"),
            pytest.raises(cohort.FlowError, match="TimeoutError") as info,
        ):
            await flow.run(x=1)
        outcome = info.value.result.outcome("blocking")
        assert outcome.status is cohort.ChildStatus.TIMED_OUT
        assert outcome.error is not None
        assert any("still running" in note for note in outcome.error.__notes__)
        assert info.value.result.threads_left == ["blocking"]
    finally:
        release.set()
        assert finished.wait(30)


async def test_decorated_cpu_nodes_stages_and_retries_run_in_worker_processes() -> None:
    """``@flow.node(cpu=True)``, ``@cohort.stage(cpu=True)`` and ``@cohort.Retry``
    over ``@cohort.cpu`` rebind the module name: workers still find the function."""
    async with cohort.ProcessPool(1) as pool:
        cohort.set_default_executor(pool)
        try:
            result = await ff.decorated.run(x=2, xs=[1, 2])
            assert await ff.tripled(5) == 15
            assert (await ff.tripled.run([1, 2])).outputs == [3, 6]
            assert await ff.retried(1) == 11
        finally:
            cohort.set_default_executor(None)
    assert result[ff.doubled] == 4
    assert result[ff.shifted] == [5, 6]


def test_inputs_named_like_run_keywords_are_refused() -> None:
    for name in ("timeout", "on_timeout"):
        with pytest.raises(ValueError, match=rf"'{name}'.*keyword of run"):
            cohort.Flow("reserved", inputs=["x", name])


async def test_a_misspelled_input_names_the_unknown_keyword() -> None:
    flow = cohort.Flow("typo", inputs=["user_id"])
    flow.node(name="a")(lambda user_id: user_id)
    with pytest.raises(TypeError, match=r"unknown \['usr_id'\].*missing \['user_id'\]"):
        await flow.run(usr_id=1)


def test_to_mermaid_draws_the_policy_as_declared() -> None:
    flow = cohort.Flow("m", inputs=["x"])
    flow.node(name="a")(_with_x(timed({}, "a", 0, 1)))
    flow.node(name="b")(_with_x(timed({}, "b", 0, 1)))

    @flow.node(join=cohort.FirstWins())
    async def c(a: int | None, b: int | None) -> int:
        return 0

    text = flow.to_mermaid()
    assert '  a -->|"FirstWins()"| c' in text
    assert "Quorum(1)" not in text


async def test_a_finished_run_leaves_nothing_for_the_cycle_collector() -> None:
    """A run that ended is freed by reference counting: no cycle through its group
    (the node tasks' contexts hold the group, whose policy holds the run), and no
    cancellation of a group that has nothing left running."""
    flow = cohort.Flow("acyclic", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        return x + 1

    @flow.node
    async def b(a: int) -> int:
        return a * 2

    @flow.node
    async def c(a: int) -> int:
        return a * 3

    @flow.node
    async def d(b: int, c: int) -> int:
        return b + c

    assert (await flow.run(x=0))[d] == 5
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        result = await flow.run(x=1)
        assert result[d] == 10
        del result
        gc.collect()
        left = [o for o in gc.garbage if type(o).__module__.startswith("cohort")]
        left += [e for e in gc.garbage if isinstance(e, asyncio.CancelledError)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


class _TwoSuffice(cohort.JoinPolicy):
    """Done at the second success: a policy of the user's own, not a built-in type."""

    consults_on_success = True

    def on_child_done(self, group: cohort.GroupView, handle: cohort.ChildView) -> cohort.Decision:
        return cohort.Decision.DONE if group.succeeded >= 2 else cohort.Decision.CONTINUE


class _GatherOfMine(cohort.Gather):
    """A subclass of Gather: a fan-in under it waits for every upstream, as Gather's."""


@vc
@pytest.mark.parametrize(
    "policy", [_TwoSuffice(), _GatherOfMine()], ids=["custom", "gather-subclass"]
)
async def test_a_policy_of_the_users_own_decides_a_fan_in_as_it_decides_a_group(
    policy: cohort.JoinPolicy,
) -> None:
    durations = {"a": 1.0, "b": 2.0, "c": 5.0}

    async def leg(name: str) -> str:
        await asyncio.sleep(durations[name])
        return name

    async with cohort.TaskGroup(policy) as g:
        for name in durations:
            g.spawn(leg, name, name=name)
    group_done = now()

    flow = cohort.Flow("legs", inputs=["x"])
    for name in durations:
        flow.node(name=name)(_with_x(lambda name=name: leg(name)))

    @flow.node(join=policy, critical=True)
    async def joined(a: str | None, b: str | None, c: str | None) -> float:
        return now() - group_done

    result = await flow.run(x=0)
    assert result[joined] == group_done  # the fan-in started when the group was done


@vc
async def test_a_node_cancelled_as_not_needed_says_which_node_went_on_without_it() -> None:
    """Quorum(2) of s1, s2 and s3 (fed by slow): once met, s3 (never started) and
    slow (running) are cancelled with a "not needed" reason naming their dependent."""
    flow = cohort.Flow("why", inputs=["x"])
    log: dict[str, tuple[float, float]] = {}
    seen: list[cohort.CancelReason | None] = []
    flow.node(name="s1")(_with_x(timed(log, "s1", 1.0, "s1")))
    flow.node(name="s2")(_with_x(timed(log, "s2", 2.0, "s2")))

    @flow.node
    async def slow(x: int) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError as exc:
            seen.append(cohort.cancel_reason(exc))
            raise
        return "slow"

    @flow.node
    async def s3(slow: str) -> str:
        return slow

    @flow.node(join=cohort.Quorum(2))
    async def merged(s1: str | None, s2: str | None, s3: str | None) -> list[str]:
        return [s for s in (s1, s2, s3) if s]

    result = await flow.run(x=0)
    assert result[merged] == ["s1", "s2"]
    (caught,) = seen
    assert caught is not None
    assert caught.kind == "not needed"
    assert caught.child == "s3"
    assert caught.source == "why"
    assert str(caught) == (
        "node 'slow' of flow 'why' is not needed any more: 's3' no longer waits for it"
    )
    assert result.outcome("slow").cancel_reason == caught
    s3_reason = result.outcome(s3).cancel_reason
    assert s3_reason is not None
    assert s3_reason.kind == "not needed"
    assert s3_reason.child == "merged"
    assert result.outcome("s1").cancel_reason is None


class _NoneMayFail(cohort.JoinPolicy):
    """Decides only once every child ended: FAIL if any failed (or always, with
    ``refuse``); it sees no success."""

    consults_on_success = False

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse

    def on_child_done(self, group: cohort.GroupView, handle: cohort.ChildView) -> cohort.Decision:
        return cohort.Decision.CONTINUE

    def on_all_done(self, group: cohort.GroupView) -> cohort.Decision:
        return cohort.Decision.FAIL if group.failed or self.refuse else cohort.Decision.DONE


@vc
@pytest.mark.parametrize("case", ["succeeds", "upstream fails", "policy refuses"])
async def test_a_policy_answering_fail_in_on_all_done_after_a_success_fails_the_run(
    case: str,
) -> None:
    flow = cohort.Flow("all done", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        if case == "upstream fails":
            raise ValueError("a")
        return x

    @flow.node
    async def b(x: int) -> int:
        await asyncio.sleep(1)  # ends last, a success: the policy decides then
        return x

    ran: list[str] = []

    @flow.node(join=_NoneMayFail(refuse=case == "policy refuses"))
    async def c(a: int | None, b: int) -> int:
        ran.append("c")
        return b

    if case == "succeeds":
        assert (await flow.run(x=1))[c] == 1
        assert ran == ["c"]
        return
    culprit = "a" if case == "upstream fails" else "c"
    with pytest.raises(cohort.FlowError, match=f"node '{culprit}' failed") as info:
        await flow.run(x=1)
    assert info.value.node == culprit
    assert info.value.result.outcome(c).status is cohort.ChildStatus.FAILED
    assert ran == []
    assert now() == 1.0


def _forward_by_name(fn: Any) -> Any:
    """A decorator whose wrapper shows ``fn``'s parameters but takes keywords only."""

    @functools.wraps(fn)
    async def wrapper(**kwargs: Any) -> Any:
        return await fn(**kwargs)

    return wrapper


async def test_each_node_gets_its_arguments_by_the_parameters_its_own_code_takes() -> None:
    flow = cohort.Flow("by name or position", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        return x

    @flow.node
    async def b(x: int, a: int) -> str:  # an input, then a node
        return f"b{x}{a}"

    @flow.node
    async def c(*, a: int, x: int) -> str:  # keyword-only
        return f"c{a}{x}"

    @flow.node
    @_forward_by_name
    async def d(b: str, c: str) -> str:  # its wrapper takes keywords only
        return b + c

    assert (await flow.run(x=1))[d] == "b11c11"
