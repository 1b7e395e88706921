"""The reasons a task group gives the children and the body it cancels.

Built once per decision (not per child), only when the group cancels; the
records themselves are ``cohort._observe._reasons.CancelReason``.
"""

from __future__ import annotations

from cohort._core._child import Child, ChildStatus
from cohort._core._policies import Decision, FirstWins, JoinPolicy, Quorum
from cohort._exceptions import BulkheadFullError, CircuitOpenError
from cohort._observe._reasons import CancelReason, lazy_reason

__all__ = [
    "after_child",
    "body_failed",
    "by_group",
    "group_cancelled",
    "handle_cancelled",
    "outside",
]


def after_child(group: str, policy: JoinPolicy, decision: Decision, child: Child) -> CancelReason:
    """The policy decided once ``child`` ended: a sibling failed, a winner, a quorum.

    Made when read (the child has ended: its name, status and error no longer change).
    """
    return lazy_reason(_after_child, group, policy, decision, child)


def _after_child(group: str, policy: JoinPolicy, decision: Decision, child: Child) -> CancelReason:
    name = child.name
    status = child.status
    if status is not ChildStatus.SUCCEEDED and decision is Decision.FAIL:
        error = child.error
        if isinstance(error, (CircuitOpenError, BulkheadFullError)):
            guard = "breaker" if isinstance(error, CircuitOpenError) else "bulkhead"
            message = f"sibling {name!r} was rejected by a {guard}: {error!r}"
            return CancelReason("rejected", message, source=group, child=name, error=error)
        how = f"failed: {error!r}" if error is not None else status.value
        return CancelReason(
            "sibling failed", f"sibling {name!r} {how}", source=group, child=name, error=error
        )
    if status is ChildStatus.SUCCEEDED and isinstance(policy, FirstWins):
        return CancelReason("winner", f"{name!r} won ({policy!r})", source=group, child=name)
    if status is ChildStatus.SUCCEEDED and isinstance(policy, Quorum):
        message = f"{policy!r} met with {name!r}"
        return CancelReason("quorum", message, source=group, child=name)
    message = f"{policy!r} decided {decision.value} once {name!r} {status.value}"
    return CancelReason("policy", message, source=group, child=name)


def by_group(group: str, policy: JoinPolicy, decision: Decision, timeout: float | None,
             timed_out: bool) -> CancelReason:  # fmt: skip
    """A decision with no child behind it: the group's timeout, or its policy."""
    if timed_out:
        return CancelReason(
            "group timed out", f"group {group!r} timed out after {timeout} s", source=group
        )
    message = f"group {group!r}: {policy!r} decided {decision.value}"
    return CancelReason("policy", message, source=group)


def body_failed(group: str, error: BaseException) -> CancelReason:
    return CancelReason(
        "body failed", f"the body of group {group!r} failed: {error!r}", source=group, error=error
    )


def group_cancelled(group: str) -> CancelReason:
    return CancelReason("group cancelled", f"group {group!r} was cancelled", source=group)


def handle_cancelled(child: str) -> CancelReason:
    return CancelReason("handle cancelled", f"child {child!r} was cancelled by its handle",
                        child=child)  # fmt: skip


def outside(group: str) -> CancelReason:
    return CancelReason("outside", f"the task running group {group!r} was cancelled", source=group)
