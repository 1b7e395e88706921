"""OpenTelemetry spans and metrics (cohort._observe._otel), with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import cohort
from cohort.testing import wait_all_tasks_blocked

pytestmark = pytest.mark.virtual_clock


@dataclass
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer: trace.Tracer

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        (found,) = [s for s in self.spans() if s.name == name]
        return found

    def metric(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value: a sum's value or a histogram's count) of each data point."""
        data = self.reader.get_metrics_data()
        points: list[tuple[dict[str, Any], Any]] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            points.append((dict(p.attributes or {}), getattr(p, "value", None)
                                           if hasattr(p, "value") else p.count))  # fmt: skip
        return points


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def otel() -> Iterator[Otel]:
    """cohort instrumented into an in-memory exporter; no test may make OpenTelemetry log
    "Failed to detach context" (spans cancelled in groups and async generators)."""
    records = _Records()
    context_logger = logging.getLogger("opentelemetry.context")
    context_logger.addHandler(records)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    cohort.instrument(tracer_provider=provider, meter_provider=MeterProvider([reader]))
    try:
        yield Otel(exporter, reader, provider.get_tracer("test"))
    finally:
        cohort.uninstrument()
        context_logger.removeHandler(records)
    assert not [m for m in records.messages if "Failed to detach context" in m]


async def ok(v: int, after: float = 0) -> int:
    await asyncio.sleep(after)
    return v


async def bad(after: float = 0) -> None:
    await asyncio.sleep(after)
    raise ValueError("bad")


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_group_and_its_children_are_spans_with_their_attributes(otel: Otel) -> None:
    async with cohort.TaskGroup(join=cohort.Quorum(2), name="reads") as g:
        g.spawn(ok, 1, 1, name="r1")
        g.spawn(ok, 2, 2, name="r2")
        g.spawn(ok, 3, 3, name="r3", critical=True)
    group = otel.span("group reads")
    assert attrs(group)["cohort.join_policy"] == "Quorum(2)"
    assert attrs(group)["cohort.k"] == 2
    assert attrs(group)["cohort.n"] == 3
    assert attrs(group)["cohort.outcome"] == "ok"
    assert "Quorum(2) met with 'r2'" in attrs(group)["cohort.cancel_reason"]
    r3 = otel.span("child r3")
    assert r3.parent is not None
    assert group.context is not None
    assert r3.parent.span_id == group.context.span_id
    assert attrs(r3)["cohort.outcome"] == "cancelled"
    assert attrs(r3)["cohort.critical"] is True
    assert attrs(r3)["cohort.cancel_reason"] == "Quorum(2) met with 'r2'"
    assert attrs(otel.span("child r1"))["cohort.outcome"] == "succeeded"


async def test_outcomes_ok_partial_and_failed_and_the_error_on_the_child(otel: Otel) -> None:
    async with cohort.TaskGroup(join=cohort.Settle(), name="settle") as g:
        g.spawn(ok, 1)
        g.spawn(bad, name="b1")
    with pytest.raises(ExceptionGroup):
        async with cohort.TaskGroup(name="gather") as g:
            g.spawn(bad, name="b2")
            g.spawn(ok, 1, 5, name="slow")
    assert attrs(otel.span("group settle"))["cohort.outcome"] == "partial"
    failed = otel.span("group gather")
    assert attrs(failed)["cohort.outcome"] == "failed"
    assert failed.status.status_code is StatusCode.ERROR
    b2 = otel.span("child b2")
    assert b2.status.status_code is StatusCode.ERROR
    assert [e.name for e in b2.events] == ["exception"]
    assert attrs(otel.span("child slow"))["cohort.cancel_reason"] == (
        "sibling 'b2' failed: ValueError('bad')"
    )


async def test_the_group_span_is_current_in_its_body_and_put_back_at_exit(otel: Otel) -> None:
    with otel.tracer.start_as_current_span("outer") as outer:
        async with cohort.TaskGroup(name="g"):
            inner = trace.get_current_span()
            with otel.tracer.start_as_current_span("user"):
                pass
        assert trace.get_current_span() is outer
    group = otel.span("group g")
    assert inner.get_span_context().span_id == group.context.span_id
    user = otel.span("user")
    assert user.parent is not None
    assert user.parent.span_id == group.context.span_id
    assert group.parent is not None
    assert group.parent.span_id == outer.get_span_context().span_id


async def test_a_queued_child_dropped_before_it_ran_still_has_a_span(otel: Otel) -> None:
    async with cohort.TaskGroup(limit=1) as g:
        g.spawn(ok, 1, 1, name="first")
        queued = g.spawn(ok, 2, name="queued")
        queued.cancel()
    assert attrs(otel.span("child queued"))["cohort.outcome"] == "cancelled"


async def test_metrics_children_by_outcome_and_group_duration(otel: Otel) -> None:
    async with cohort.TaskGroup(join=cohort.Settle()) as g:
        for i in range(3):
            g.spawn(ok, i, 1)
        g.spawn(bad)
    started = otel.metric("cohort.children.started")
    assert sum(v for _, v in started) == 4
    ended = {a["cohort.outcome"]: v for a, v in otel.metric("cohort.children.ended")}
    assert ended == {"succeeded": 3, "failed": 1}
    ((where, count),) = otel.metric("cohort.group.duration")
    assert where == {"cohort.join_policy": "Settle", "cohort.outcome": "partial"}
    assert count == 1


async def test_flow_nodes_are_spans(otel: Otel) -> None:
    flow = cohort.Flow("pair", inputs=["x"])

    @flow.node
    async def a(x: int) -> int:
        await asyncio.sleep(1)
        return x + 1

    @flow.node
    async def b(a: int) -> int:
        return a * 2

    result = await flow.run(x=1)
    assert result["b"] == 4
    for name in ("a", "b"):
        span = otel.span(f"node {name}")
        assert attrs(span)["cohort.flow"] == "pair"
        assert attrs(span)["cohort.outcome"] == "succeeded"


async def test_a_flow_node_cancelled_as_not_needed_has_a_span_with_that_reason(otel: Otel) -> None:
    """Quorum(2) of s1, s2 and s3 (fed by slow): once met, slow (running) and s3 (never
    started) are cancelled; each node's span ends, its outcome cancelled, its reason
    "not needed" naming the node that went on without it."""
    flow = cohort.Flow("why", inputs=["x"])

    @flow.node
    async def s1(x: int) -> str:
        await asyncio.sleep(1)
        return "s1"

    @flow.node
    async def s2(x: int) -> str:
        await asyncio.sleep(2)
        return "s2"

    @flow.node
    async def slow(x: int) -> str:
        await asyncio.sleep(10)
        return "slow"

    @flow.node
    async def s3(slow: str) -> str:
        return slow

    @flow.node(join=cohort.Quorum(2))
    async def merged(s1: str | None, s2: str | None, s3: str | None) -> int:
        return 0

    await flow.run(x=0)
    slow_span = otel.span("node slow")
    assert attrs(slow_span)["cohort.outcome"] == "cancelled"
    assert attrs(slow_span)["cohort.cancel_reason"] == (
        "node 'slow' of flow 'why' is not needed any more: 's3' no longer waits for it"
    )
    assert slow_span.status.status_code is not StatusCode.ERROR
    child_span = otel.span("child slow")  # the run's group's record of its task
    assert attrs(child_span)["cohort.cancel_reason"] == attrs(slow_span)["cohort.cancel_reason"]
    s3_span = otel.span("node s3")
    assert attrs(s3_span)["cohort.outcome"] == "cancelled"
    assert attrs(s3_span)["cohort.cancel_reason"] == (
        "node 's3' of flow 'why' is not needed any more: 'merged' no longer waits for it"
    )
    assert "cohort.cancel_reason" not in attrs(otel.span("node s1"))


async def test_a_flow_node_cancelled_before_its_first_step_has_a_span_with_the_reason(
    otel: Otel,
) -> None:
    """x2 starts when s1 ends, and is cancelled at once (FirstWins of s1 and x3 met
    with s1) before its task ran: its span says so."""
    flow = cohort.Flow("early", inputs=["x"])

    @flow.node
    async def s1(x: int) -> str:
        await asyncio.sleep(1)
        return "s1"

    @flow.node
    async def x2(s1: str) -> str:
        await asyncio.sleep(10)
        return "x2"

    @flow.node
    async def x3(x2: str) -> str:
        return "x3"

    @flow.node(join=cohort.FirstWins())
    async def merged(s1: str | None, x3: str | None) -> int:
        return 0

    result = await flow.run(x=0)
    assert result.outcome("x2").started is None  # it never ran
    (x2_span,) = [s for s in otel.spans() if s.name == "node x2"]
    assert attrs(x2_span)["cohort.outcome"] == "cancelled"
    assert attrs(x2_span)["cohort.cancel_reason"] == (
        "node 'x2' of flow 'early' is not needed any more: 'x3' no longer waits for it"
    )


async def test_an_optional_flow_node_cut_short_by_the_runs_end_has_a_span_with_the_reason(
    otel: Otel,
) -> None:
    flow = cohort.Flow("tail", inputs=["x"])

    @flow.node
    async def main(x: int) -> int:
        await asyncio.sleep(1)
        return x

    @flow.node(critical=False)
    async def extra(x: int) -> int:
        await asyncio.sleep(10)
        return x

    await flow.run(x=0)
    span = otel.span("node extra")
    assert attrs(span)["cohort.outcome"] == "cancelled"
    assert attrs(span)["cohort.cancel_reason"] == "group 'flow tail' was cancelled"


async def test_pipeline_stage_batches_are_spans_and_in_flight_returns_to_zero(otel: Otel) -> None:
    @cohort.stage(workers=2)
    async def inc(x: int) -> int:
        await asyncio.sleep(0.1)
        return x + 1

    pipe: cohort.Pipeline[int, int] = cohort.Pipeline([inc])
    report = await pipe.run(range(10))
    assert report.succeeded == 10
    batches = [s for s in otel.spans() if s.name == "stage inc"]
    assert batches
    assert sum(attrs(s)["cohort.batch.size"] for s in batches) == 10
    assert sum(attrs(s)["cohort.batch.out"] for s in batches) == 10
    (in_flight,) = otel.metric("cohort.stage.in_flight")
    assert in_flight == ({"cohort.stage": "inc"}, 0)


async def test_retries_and_breaker_state_changes_are_counted(otel: Otel) -> None:
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("flaky")
        return 1

    async with cohort.TaskGroup() as g:
        h = g.spawn(flaky, retry=cohort.Retry(attempts=3, backoff=0, jitter=False), name="f")
    assert h.result() == 1
    assert sum(v for _, v in otel.metric("cohort.retries")) == 2
    assert attrs(otel.span("child f"))["cohort.retry.attempts"] == 3
    breaker = cohort.CircuitBreaker(failures=1, name="db")
    with pytest.raises(ConnectionError):
        async with breaker:
            raise ConnectionError("down")
    changes = otel.metric("cohort.breaker.state_changes")
    assert changes == [({"cohort.breaker": "db", "cohort.from": "closed", "cohort.to": "open"}, 1)]


async def test_a_group_in_an_async_generator_closed_by_another_task_detaches_nothing(
    otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    async def numbers() -> AsyncGenerator[int]:
        async with cohort.TaskGroup(name="in-gen") as g:
            g.spawn(ok, 1, 100, name="sleeper")
            yield 1
            yield 2

    gen = numbers()
    with otel.tracer.start_as_current_span("consumer") as consumer:
        assert await anext(gen) == 1
        await wait_all_tasks_blocked()

    async def close_it() -> None:
        with pytest.raises(RuntimeError, match="exited in"):
            await gen.aclose()

    with caplog.at_level(logging.DEBUG):
        await asyncio.create_task(close_it())
    assert "Failed to detach context" not in caplog.text
    assert trace.get_current_span() is not consumer
    assert attrs(otel.span("group in-gen"))["cohort.n"] == 1


async def test_lingering_work_is_a_linked_trace_not_a_child(otel: Otel) -> None:
    async def work() -> None:
        with otel.tracer.start_as_current_span("lingering"):
            await asyncio.sleep(1)

    async with cohort.Linger(grace=5) as linger:
        with otel.tracer.start_as_current_span("caller") as caller, cohort.move_on_after(0.5):
            await linger.call(work)
    lingering = otel.span("lingering")
    detached = otel.span("detached")
    assert lingering.parent is not None
    assert lingering.parent.span_id == detached.context.span_id
    assert detached.parent is None
    assert lingering.context.trace_id != caller.get_span_context().trace_id
    assert [link.context.span_id for link in detached.links] == [caller.get_span_context().span_id]


async def test_structlog_events_and_spans_both_flow_while_both_are_on(
    otel: Otel, events: list[dict[str, Any]]
) -> None:
    @cohort.stage(on_error="skip")
    async def fail_one(x: int) -> int:
        if x == 1:
            raise ValueError("one")
        return x

    async with cohort.TaskGroup(name="both") as g:
        g.spawn(ok, 1, name="c")
    pipe: cohort.Pipeline[int, int] = cohort.Pipeline([fail_one])
    await pipe.run(range(3))
    names = [e["event"] for e in events]
    assert "child succeeded" in names
    assert "pipeline.item.failed" in names
    assert attrs(otel.span("child c"))["cohort.outcome"] == "succeeded"
    assert otel.span("group both")


async def test_a_batch_cut_short_by_cancellation_ends_its_span(otel: Otel) -> None:
    @cohort.stage
    async def slow(x: int) -> int:
        await asyncio.sleep(10)
        return x

    pipe: cohort.Pipeline[int, int] = cohort.Pipeline([slow])
    with cohort.move_on_after(1):
        await pipe.run(range(3))
    assert [s for s in otel.spans() if s.name == "stage slow"]
    (in_flight,) = otel.metric("cohort.stage.in_flight")
    assert in_flight == ({"cohort.stage": "slow"}, 0)


class _BrokenTracer:
    def start_span(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter down")


class _BrokenProvider:
    def get_tracer(self, *args: object, **kwargs: object) -> _BrokenTracer:
        return _BrokenTracer()


async def test_a_failing_tracer_is_logged_and_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cohort.instrument(tracer_provider=_BrokenProvider())
    try:
        with caplog.at_level(logging.WARNING, logger="cohort"):
            async with cohort.TaskGroup() as g:
                g.spawn(ok, 1)
    finally:
        cohort.uninstrument()
    assert g.results == [1]
    assert "the event listener failed in group_entered" in caplog.text
    assert "exporter down" in caplog.text


def test_instrument_without_opentelemetry_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'cohort\[otel\]'"):
        cohort.instrument()


async def test_nothing_is_sent_unless_instrumented() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cohort.instrument(tracer_provider=provider)
    cohort.uninstrument()
    async with cohort.TaskGroup() as g:
        g.spawn(ok, 1)
    assert exporter.get_finished_spans() == ()


def _trace_picture() -> Any:
    """benchmarks/fanout_trace.py, the docs' waterfall renderer (not a package module)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fanout_trace.py"
    spec = importlib.util.spec_from_file_location("_fanout_trace", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


async def test_the_trace_picture_nests_spans_under_their_parents_with_their_reasons(
    otel: Otel,
) -> None:
    async with cohort.TaskGroup(name="outer") as g:
        g.spawn(ok, 1, 1, name="first")

        async def inner() -> None:
            async with cohort.TaskGroup(join=cohort.FirstWins(), name="race") as race:
                race.spawn(ok, 1, 1, name="fast")
                race.spawn(ok, 2, 5, name="slow")

        g.spawn(inner, name="second")
    picture = _trace_picture()
    rows = picture.bars(otel.spans())
    assert [(b.depth, b.name) for b in rows] == [
        (0, "group outer"),
        (1, "child first"),
        (1, "child second"),
        (1, "group race"),
        (2, "child fast"),
        (2, "child slow"),
    ]
    assert rows[-1].detail == "cancelled, reason: 'fast' won (FirstWins())"
    drawn = picture.svg(rows, "a <title>")
    assert drawn.startswith("<svg ")
    assert drawn.count("<rect ") >= len(rows)
    assert "a &lt;title&gt;" in drawn
    assert "cancelled, reason: &#x27;fast&#x27; won (FirstWins())" in drawn


async def test_a_child_span_starts_with_its_name_and_gets_its_attributes_at_its_end() -> None:
    """What a span processor (or a sampler) sees at a child's start: its name and its
    parent, the group's span; the attributes come in one call when the child ends."""
    from opentelemetry.sdk.trace import SpanProcessor

    at_start: dict[str, dict[str, Any]] = {}

    class Starts(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            at_start[span.name] = dict(span.attributes or {})

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(Starts())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cohort.instrument(tracer_provider=provider)
    try:
        async with cohort.TaskGroup(name="g") as g:
            g.spawn(ok, 1, 1, name="c")
    finally:
        cohort.uninstrument()
    assert at_start["child c"] == {}
    spans = {s.name: s for s in exporter.get_finished_spans()}
    child, group = spans["child c"], spans["group g"]
    assert child.parent is not None
    assert group.context is not None
    assert child.parent.span_id == group.context.span_id
    assert attrs(child) == {
        "cohort.child": "c",
        "cohort.critical": True,
        "cohort.outcome": "succeeded",
    }
