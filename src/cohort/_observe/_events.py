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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cohort._core._child import Child
    from cohort._core._policies import Decision, JoinPolicy

__all__ = ["GroupStatistics", "configure_logging", "enable_events"]


class _Events:
    """Holder of the on/off switch, read in hot paths as ``EVENTS.on``."""

    __slots__ = ("log", "on")

    def __init__(self) -> None:
        self.on = False
        self.log: Any = None


EVENTS = _Events()


def emit(level: str, event: str, **fields: Any) -> None:
    """A structlog event on logger ``cohort``, only while cohort's events are switched on."""
    if EVENTS.on:
        getattr(EVENTS.log, level)(event, **fields)


def enable_events(on: bool = True) -> None:
    """Switch cohort's structlog events (logger name ``cohort``) on or off."""
    if on:
        import structlog

        EVENTS.log = structlog.get_logger("cohort")
    else:
        EVENTS.log = None
    EVENTS.on = on


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


# -- the events of groups and children (called only while EVENTS.on) ------------------


def child_started(child: str, group: str, parent: str | None) -> None:
    EVENTS.log.debug("child started", child=child, group=group, parent=parent)


def child_ended(handle: Child, group: str, parent: str | None) -> None:
    """``child succeeded`` and ``child cancelled`` at debug, failures and timeouts at info."""
    status = handle.status
    log = EVENTS.log.debug if status.value in ("succeeded", "cancelled") else EVENTS.log.info
    ended = handle.ended or 0.0
    reason = getattr(handle, "reason", None)
    started = handle.started if handle.started is not None else ended
    log(
        f"child {status.value}",
        child=handle.name,
        group=group,
        parent=parent,
        critical=handle.critical,
        elapsed=ended - started,
        error=None if handle.error is None else repr(handle.error),
        cancel_reason=None if reason is None else str(reason),
    )


def group_event(event: str, stats: GroupStatistics, parent: str | None) -> None:
    """``group entered`` (debug) and ``group exited`` (info, with the counts)."""
    if event == "group entered":
        EVENTS.log.debug(event, group=stats.name, policy=repr(stats.policy), parent=parent)
        return
    EVENTS.log.info(
        event,
        group=stats.name,
        policy=repr(stats.policy),
        parent=parent,
        decision=stats.decision.value,
        timed_out=stats.timed_out,
        cancelled_from_outside=stats.cancelled_from_outside,
        children=stats.children,
        succeeded=stats.succeeded,
        failed=stats.failed,
        elapsed=stats.elapsed,
    )
