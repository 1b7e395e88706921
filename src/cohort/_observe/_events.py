"""Observability: structured events through structlog.

cohort never configures logging on import and emits nothing until asked:
``configure_logging()`` sets structlog up for an application and switches
cohort's events on; ``enable_events()`` switches them on for applications
that configure structlog themselves. While events are off, the cost in the
hot paths is one attribute test per child, and structlog is not even
imported until events are switched on (it is half of ``import cohort``'s time).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cohort._core._child import Child
    from cohort._core._policies import Decision, JoinPolicy
    from cohort._core._state import GroupState

__all__ = ["GroupStatistics", "Sink", "configure_logging", "enable_events", "set_sink"]


class Sink(Protocol):
    """What else hears cohort's events (OpenTelemetry's instrumentation): the groups'
    and children's with their records, and every other event by name and fields."""

    def group_entered(self, group: GroupState, stats: GroupStatistics) -> None: ...
    def group_exited(self, group: GroupState, stats: GroupStatistics) -> None: ...
    def child_started(self, child: Child, group: GroupState) -> None: ...
    def child_ended(self, child: Child, group: GroupState) -> None: ...
    def event(self, level: str, event: str, fields: dict[str, Any]) -> None: ...
    def batch_started(self, stage: str, size: int, waiting: int) -> Any: ...
    def batch_ended(self, span: Any, stage: str, size: int, out: int) -> None: ...
    def detached(self) -> None: ...
    def carrier(self) -> dict[str, str] | None: ...


class _Tee:
    """``EVENTS.log`` while a sink listens: each event to structlog (if switched on) and
    to the sink, so that every ``EVENTS.log.info(...)`` in the layers reaches both."""

    __slots__ = ("logger", "sink")

    def __init__(self, logger: Any, sink: Sink) -> None:
        self.logger = logger
        self.sink = sink

    def _send(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if self.logger is not None:
            getattr(self.logger, level)(event, **fields)
        self.sink.event(level, event, fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._send("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._send("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._send("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._send("error", event, fields)

    def __getattr__(self, level: str) -> Any:  # any other level structlog has
        def send(event: str, **fields: Any) -> None:
            self._send(level, event, fields)

        return send


class _Events:
    """Holder of the on/off switch, read in hot paths as ``EVENTS.on``."""

    __slots__ = ("log", "logger", "on", "sink")

    def __init__(self) -> None:
        self.on = False
        self.log: Any = None  # what the layers call: the structlog logger, or a _Tee
        self.logger: Any = None  # structlog's, while its events are switched on
        self.sink: Sink | None = None

    def update(self) -> None:
        sink = self.sink
        self.log = self.logger if sink is None else _Tee(self.logger, sink)
        self.on = self.log is not None


EVENTS = _Events()


def emit(level: str, event: str, **fields: Any) -> None:
    """A structlog event on logger ``cohort``, only while cohort's events are switched on."""
    if EVENTS.on:
        getattr(EVENTS.log, level)(event, **fields)


def enable_events(on: bool = True) -> None:
    """Switch cohort's structlog events (logger name ``cohort``) on or off."""
    if on:
        import structlog

        EVENTS.logger = structlog.get_logger("cohort")
    else:
        EVENTS.logger = None
    EVENTS.update()


def set_sink(sink: Sink | None) -> None:
    """Let ``sink`` hear every event too (``None``: no sink); events are on while either is.

    A sink that raises never breaks the program: the error is logged (logger
    ``cohort``) and the group, child or stage goes on.
    """
    EVENTS.sink = None if sink is None else _Guarded(sink)
    EVENTS.update()


def _failed(what: str) -> None:
    logging.getLogger("cohort").warning("cohort: the event listener failed in %s", what,
                                        exc_info=True)  # fmt: skip


class _Guarded:
    """A sink whose errors are logged, not raised into cohort's paths."""

    __slots__ = ("inner",)

    def __init__(self, inner: Sink) -> None:
        self.inner = inner

    def group_entered(self, group: GroupState, stats: GroupStatistics) -> None:
        try:
            self.inner.group_entered(group, stats)
        except Exception:
            _failed("group_entered")

    def group_exited(self, group: GroupState, stats: GroupStatistics) -> None:
        try:
            self.inner.group_exited(group, stats)
        except Exception:
            _failed("group_exited")

    def child_started(self, child: Child, group: GroupState) -> None:
        try:
            self.inner.child_started(child, group)
        except Exception:
            _failed("child_started")

    def child_ended(self, child: Child, group: GroupState) -> None:
        try:
            self.inner.child_ended(child, group)
        except Exception:
            _failed("child_ended")

    def event(self, level: str, event: str, fields: dict[str, Any]) -> None:
        try:
            self.inner.event(level, event, fields)
        except Exception:
            _failed("event")

    def batch_started(self, stage: str, size: int, waiting: int) -> Any:
        try:
            return self.inner.batch_started(stage, size, waiting)
        except Exception:
            _failed("batch_started")
            return None

    def batch_ended(self, span: Any, stage: str, size: int, out: int) -> None:
        try:
            self.inner.batch_ended(span, stage, size, out)
        except Exception:
            _failed("batch_ended")

    def detached(self) -> None:
        try:
            self.inner.detached()
        except Exception:
            _failed("detached")

    def carrier(self) -> dict[str, str] | None:
        try:
            return self.inner.carrier()
        except Exception:
            _failed("carrier")
            return None


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Configure structlog for an application and switch cohort's events on.

    Args:
        level: the lowest level shown ("debug" shows every child event,
            "info" group summaries and failures).
        json: one JSON object per line (for log shippers) instead of the
            coloured console rendering.
    """
    import structlog

    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    enable_events(True)


@dataclass(frozen=True, slots=True)
class GroupStatistics:
    """A snapshot of a group's counters (``TaskGroup.statistics()``)."""

    name: str
    policy: JoinPolicy
    phase: str  #: "new", "open", "exiting" or "closed"
    decision: Decision
    children: int  #: spawned so far, critical or not
    running: int
    queued: int  #: waiting for a ``limit`` slot
    spawned: int  #: critical children spawned
    succeeded: int  #: critical children that succeeded
    failed: int  #: critical children that failed, timed out or were cancelled
    timed_out: bool
    cancelled_from_outside: bool
    elapsed: float  #: seconds since entry on the loop's clock (0 before)
    #: why the group cancelled its children and body (``str()`` of its ``CancelReason``)
    cancel_reason: str | None = None


# -- the events of groups and children (called only while EVENTS.on) ------------------


def child_started(child: Child, group: GroupState, parent: str | None) -> None:
    sink = EVENTS.sink
    if sink is not None:
        sink.child_started(child, group)
    logger = EVENTS.logger
    if logger is not None:
        logger.debug("child started", child=child.name, group=group.name, parent=parent)


def child_ended(handle: Child, group: GroupState, parent: str | None) -> None:
    """``child succeeded`` and ``child cancelled`` at debug, failures and timeouts at info."""
    sink = EVENTS.sink
    if sink is not None:
        sink.child_ended(handle, group)
    logger = EVENTS.logger
    if logger is None:
        return
    status = handle.status
    log = logger.debug if status.value in ("succeeded", "cancelled") else logger.info
    ended = handle.ended or 0.0
    reason = getattr(handle, "reason", None)
    started = handle.started if handle.started is not None else ended
    log(
        f"child {status.value}",
        child=handle.name,
        group=group.name,
        parent=parent,
        critical=handle.critical,
        elapsed=ended - started,
        error=None if handle.error is None else repr(handle.error),
        cancel_reason=None if reason is None else str(reason),
    )


def group_event(event: str, group: GroupState, parent: str | None) -> None:
    """``group entered`` (debug) and ``group exited`` (info, with the counts)."""
    stats = group.statistics()
    sink = EVENTS.sink
    if sink is not None:
        if event == "group entered":
            sink.group_entered(group, stats)
        else:
            sink.group_exited(group, stats)
    logger = EVENTS.logger
    if logger is None:
        return
    if event == "group entered":
        logger.debug(event, group=stats.name, policy=repr(stats.policy), parent=parent)
        return
    logger.info(
        event,
        group=stats.name,
        policy=repr(stats.policy),
        parent=parent,
        decision=stats.decision.value,
        timed_out=stats.timed_out,
        cancelled_from_outside=stats.cancelled_from_outside,
        children=stats.children,
        cancel_reason=stats.cancel_reason,
        succeeded=stats.succeeded,
        failed=stats.failed,
        elapsed=stats.elapsed,
    )
