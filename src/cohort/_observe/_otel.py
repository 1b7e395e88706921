"""OpenTelemetry traces and metrics of groups, children, pipeline batches and Flow nodes.

``instrument()`` registers one listener for the events cohort already emits
(``cohort._observe._events``: a group's entry and exit, a child's start and
end, the layers' named events); nothing in the hot paths changes, and while
it is off the cost stays the one ``EVENTS.on`` test per child. Only the
OpenTelemetry API is needed (``cohort[otel]``); the application brings an
SDK, or gets the API's no-op providers.

Context: a group's span is the current span in its body (set at entry and
put back at exit without a token, only where the body's context still shows
it: a group in an async generator closed by another task leaves that task's
context alone, so no "Failed to detach context" error is ever logged); a
child's span is a child of its group's span, but not the current span inside
the child (its task's context is made before the span, and may be one the
caller passed with ``spawn(context=)``): spans a child opens nest under the
group's span.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cohort._observe._events import GroupStatistics, set_sink

if TYPE_CHECKING:
    from cohort._core._child import Child
    from cohort._core._state import GroupState

__all__ = ["instrument", "uninstrument"]

_SCOPE = "cohort"


@dataclass(slots=True)
class _Open:
    """A group's span while the group is open, and the contexts around its body."""

    span: Any
    context: Any  # the body's context with the span in it
    before: Any  # the context current at entry
    policy: str  # the join policy's class name, the children metrics' attribute


class _Otel:
    """The listener: spans and metrics from cohort's events."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.metrics import Observation
        from opentelemetry.trace import Link, Status, StatusCode

        self.tracer = tracer
        self.link = Link
        self.context = context
        self.trace = trace
        self.propagate = propagate
        self.status = Status
        self.error_code = StatusCode.ERROR
        self.groups: dict[GroupState, _Open] = {}
        self.children: dict[Child, Any] = {}
        # The open span of each node by the task that runs it: a node's end (cancelled
        # by the run too) is reported from that task.
        self.nodes: weakref.WeakKeyDictionary[asyncio.Task[Any], dict[tuple[str, str], Any]] = (
            weakref.WeakKeyDictionary()
        )
        # Children are counted here (a dict increment each) and read by the SDK when it
        # collects: an SDK counter's add() costs more than the child's span.
        self.observation = Observation
        self.started_by: dict[str, int] = {}  # by join policy
        self.ended_by: dict[tuple[str, str], int] = {}  # by join policy and outcome
        meter.create_observable_counter(
            "cohort.children.started",
            [self._observe_started],
            unit="{child}",
            description="children started",
        )
        meter.create_observable_counter(
            "cohort.children.ended",
            [self._observe_ended],
            unit="{child}",
            description="children ended, by outcome",
        )
        self.duration = meter.create_histogram(
            "cohort.group.duration", unit="s", description="time from a group's entry to its exit"
        )
        self.retries = meter.create_counter(
            "cohort.retries", unit="{retry}", description="calls made again (Retry, pipelines)"
        )
        self.breaker = meter.create_counter(
            "cohort.breaker.state_changes", unit="{change}", description="breaker moves"
        )
        self.inflight = meter.create_up_down_counter(
            "cohort.stage.in_flight", unit="{item}", description="items a stage is processing"
        )
        self.depth = meter.create_histogram(
            "cohort.stage.queue_depth",
            unit="{item}",
            description="items waiting in a stage's input when it takes a batch",
        )

    def _observe_started(self, options: Any) -> list[Any]:
        return [
            self.observation(n, {"cohort.join_policy": policy})
            for policy, n in list(self.started_by.items())
        ]

    def _observe_ended(self, options: Any) -> list[Any]:
        return [
            self.observation(n, {"cohort.join_policy": policy, "cohort.outcome": outcome})
            for (policy, outcome), n in list(self.ended_by.items())
        ]

    # -- groups and children ---------------------------------------------------------

    def group_entered(self, group: GroupState, stats: GroupStatistics) -> None:
        policy = stats.policy
        attributes: dict[str, Any] = {
            "cohort.group": stats.name,
            "cohort.join_policy": repr(policy),
        }
        k = getattr(policy, "k", None)
        if isinstance(k, int):
            attributes["cohort.k"] = k
        span = self.tracer.start_span(f"group {stats.name}", attributes=attributes)
        before = self.context.get_current()
        inside = self.trace.set_span_in_context(span, before)
        self.context.attach(inside)  # put back at exit, without the token (see the module)
        self.groups[group] = _Open(span, inside, before, type(policy).__name__)

    def group_exited(self, group: GroupState, stats: GroupStatistics) -> None:
        entry = self.groups.pop(group, None)
        if entry is None:
            return
        if self.context.get_current() is entry.context:
            self.context.attach(entry.before)
        if stats.decision.value == "fail":
            outcome = "failed"
        elif stats.cancelled_from_outside:
            outcome = "cancelled"
        elif stats.timed_out or group.errors:
            outcome = "partial"
        else:
            outcome = "ok"
        span = entry.span
        span.set_attribute("cohort.n", stats.children)
        span.set_attribute("cohort.succeeded", stats.succeeded)
        span.set_attribute("cohort.failed", stats.failed)
        span.set_attribute("cohort.outcome", outcome)
        if stats.cancel_reason is not None:
            span.set_attribute("cohort.cancel_reason", stats.cancel_reason)
        if outcome == "failed":
            span.set_status(self.status(self.error_code, f"group {stats.name!r} failed"))
        span.end()
        kind = type(stats.policy).__name__
        self.duration.record(stats.elapsed, {"cohort.join_policy": kind, "cohort.outcome": outcome})

    # A child's span is started with its name only and gets its attributes in one
    # call at its end: attributes given at the start are copied and checked twice by
    # the SDK (the sampler's result, then the span), a sixth of a span's cost.

    def child_started(self, child: Child, group: GroupState) -> None:
        entry = self.groups.get(group)
        if entry is None:  # a group entered before instrument()
            self.children[child] = self.tracer.start_span(f"child {child.name}")
            policy = type(group.policy).__name__
        else:  # a child of the group's span, with no context attached or detached
            self.children[child] = self.tracer.start_span(f"child {child.name}", entry.context)
            policy = entry.policy
        self.started_by[policy] = self.started_by.get(policy, 0) + 1

    def child_ended(self, child: Child, group: GroupState) -> None:
        span = self.children.pop(child, None)
        if span is None:  # dropped while it waited for a ``limit`` slot: it never ran
            entry = self.groups.get(group)
            span = self.tracer.start_span(
                f"child {child.name}", None if entry is None else entry.context
            )
        status = child.status.value
        attributes: dict[str, Any] = {
            "cohort.child": child.name,
            "cohort.critical": child.critical,
            "cohort.outcome": status,
        }
        if child.tally is not None:
            attributes["cohort.retry.attempts"] = child.attempts
        reason = getattr(child, "reason", None)
        if reason is not None:
            attributes["cohort.cancel_reason"] = str(reason)
        span.set_attributes(attributes)
        error = child.error
        if error is not None:
            span.record_exception(error)
            span.set_status(self.status(self.error_code, repr(error)))
        span.end()
        key = (type(group.policy).__name__, status)
        self.ended_by[key] = self.ended_by.get(key, 0) + 1

    # -- detached work -----------------------------------------------------------------

    def detached(self) -> None:
        """In the context of work that may outlive its caller (``Linger``): a new trace,
        its root a ``detached`` span linked to the caller's span (ended at once; the
        work's spans are its children), current in that context only."""
        caller = self.trace.get_current_span().get_span_context()
        links = [self.link(caller)] if caller.is_valid else []
        root = self.context.Context()
        span = self.tracer.start_span("detached", context=root, links=links)
        span.end()
        self.context.attach(self.trace.set_span_in_context(span, root))  # a fresh copy

    def carrier(self) -> dict[str, str] | None:
        """The current trace context as W3C headers, for a call to another process
        (``None`` when no span is current)."""
        if not self.trace.get_current_span().get_span_context().is_valid:
            return None
        carrier: dict[str, str] = {}
        self.propagate.inject(carrier)
        return carrier

    # -- pipeline batches --------------------------------------------------------------

    def batch_started(self, stage: str, size: int, waiting: int) -> Any:
        """A stage takes a batch (a chunk) of ``size`` items, ``waiting`` left behind."""
        attributes = {"cohort.stage": stage}
        self.inflight.add(size, attributes)
        self.depth.record(waiting, attributes)
        return self.tracer.start_span(
            f"stage {stage}", attributes={"cohort.stage": stage, "cohort.batch.size": size}
        )

    def batch_ended(self, span: Any, stage: str, size: int, out: int) -> None:
        self.inflight.add(-size, {"cohort.stage": stage})
        span.set_attribute("cohort.batch.out", out)
        span.end()

    # -- every other event, by name ----------------------------------------------------

    def event(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if event == "flow.node_started":
            task = asyncio.current_task()
            attributes = {"cohort.flow": fields["flow"], "cohort.node": fields["node"]}
            span = self.tracer.start_span(f"node {fields['node']}", attributes=attributes)
            if task is not None:
                self.nodes.setdefault(task, {})[(fields["flow"], fields["node"])] = span
        elif event in ("flow.node_done", "flow.node_skipped"):
            task = asyncio.current_task()
            opened = None if task is None else self.nodes.get(task)
            span = None if opened is None else opened.pop((fields["flow"], fields["node"]), None)
            if span is None:
                attributes = {"cohort.flow": fields["flow"], "cohort.node": fields["node"]}
                span = self.tracer.start_span(f"node {fields['node']}", attributes=attributes)
            status = fields.get("status", "skipped")
            span.set_attribute("cohort.outcome", status)
            if "attempts" in fields:
                span.set_attribute("cohort.retry.attempts", fields["attempts"])
            if fields.get("cancel_reason") is not None:
                span.set_attribute("cohort.cancel_reason", fields["cancel_reason"])
            if status == "failed":
                span.set_status(self.status(self.error_code, f"node {fields['node']!r} failed"))
            span.end()
        elif event in ("retry.retrying", "pipeline.item.retried"):
            self.retries.add(1, {"cohort.stage": fields["stage"]} if "stage" in fields else {})
        elif event == "breaker.state":
            self.breaker.add(
                1,
                {"cohort.breaker": fields["breaker"], "cohort.from": fields["old"],
                 "cohort.to": fields["new"]},
            )  # fmt: skip


def instrument(*, tracer_provider: Any = None, meter_provider: Any = None) -> None:
    """Send cohort's spans and metrics to OpenTelemetry (``pip install 'cohort[otel]'``).

    Spans: one per task group (its join policy, ``k``, the number of children,
    its outcome ``ok``/``partial``/``failed``/``cancelled``, its cancel reason)
    with one per child inside it (critical, retry attempts, how it ended, its
    cancel reason, its error); one per pipeline stage batch and per Flow node.
    Metrics: ``cohort.children.started``/``ended`` (by outcome),
    ``cohort.group.duration``, ``cohort.stage.in_flight``,
    ``cohort.stage.queue_depth``, ``cohort.retries``,
    ``cohort.breaker.state_changes``. The global providers are used unless
    given. Off until called; ``uninstrument()`` switches it off again.

    Example:
        ```python
        from opentelemetry.sdk.trace import TracerProvider

        cohort.instrument(tracer_provider=TracerProvider())
        ```
    """
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:
        raise ImportError(
            "cohort.instrument() needs the OpenTelemetry API: pip install 'cohort[otel]'"
        ) from exc
    tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
    set_sink(_Otel(tracer, meter))


def uninstrument() -> None:
    """Stop sending spans and metrics to OpenTelemetry (spans still open are not ended)."""
    set_sink(None)
