"""Every question a flow asks a node's join policy, in one place.

A node's upstreams are shown to its policy as a task group's children, all
spawned at once (``GroupView``), the upstream that just ended as a finished
child (``ChildView``). Nothing else in the flow calls a policy's hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cohort._core._handle import ChildStatus
from cohort._core._policies import (
    ChildView,
    Decision,
    Gather,
    GroupView,
    JoinPolicy,
    Settle,
    Traits,
    ask_all_done,
    ask_child_done,
    fan_in_refusal,
)

if TYPE_CHECKING:
    from cohort._flow._graph import Node
    from cohort._flow._run import NodeRecord

__all__ = [
    "NEVER",
    "START",
    "WAIT",
    "check_join",
    "decide",
    "may_start_early",
    "starts_when_all_counted",
    "takes_outcomes",
]

START = 1  # the node may start now
WAIT = 0  # not yet
NEVER = -1  # it never can

_DONE = Decision.DONE
_FAIL = Decision.FAIL
_SUCCEEDED = ChildStatus.SUCCEEDED
_CANCELLED = ChildStatus.CANCELLED


def check_join(join: object) -> None:
    """``join=`` must be a policy whose answers a flow can ask for (the refusal a
    task group's fan-ins share: ``fan_in_refusal``)."""
    refusal = fan_in_refusal(join)
    if refusal is not None:
        raise TypeError(refusal)


def may_start_early(join: JoinPolicy) -> bool:
    """Whether a node joined by ``join`` may start before every upstream ended (only
    ``Gather`` and ``Settle`` themselves are known not to)."""
    return type(join) is not Gather and type(join) is not Settle


def starts_when_all_counted(traits: Traits) -> bool:
    """Whether a node whose policy has these ``traits`` starts once every upstream
    ended counted (succeeded, or optional), its policy asked nothing: ``decide``'s
    answer then, known without asking (``Gather``)."""
    return not traits.sees_successes and not traits.sees_all_done


def takes_outcomes(join: JoinPolicy) -> bool:
    """Whether a node joined by ``join`` takes each upstream's ``Outcome`` (``Settle``)."""
    return isinstance(join, Settle)


def decide(
    node: Node[Any],
    record: NodeRecord,
    records: Mapping[str, NodeRecord],
    upstream: NodeRecord,
    counted: bool,
) -> int:
    """``START``, ``WAIT`` or ``NEVER`` for ``node`` (its ``record``; ``records``: the
    run's, by node name), now that ``upstream`` ended (``counted``: it succeeded, or was optional
    and is passed as ``None``).

    As in a task group whose children are the node's upstreams: ``on_child_done``
    for the upstream that just ended (a success only if the policy asks to see
    successes), then, once every upstream ended, ``on_all_done``; CONTINUE
    there means DONE. May raise what the policy raises.
    """
    join = node.join
    traits = node.traits
    view: _JoinView | None = None
    if not counted or traits.sees_successes:
        view = _JoinView(node, record, records)
        decision = ask_child_done(join, traits, view, _UpstreamView(upstream, counted))
        if decision is _DONE:
            return START
        if decision is _FAIL:
            return NEVER
    if record.n_ok + record.n_bad < node.n_deps:
        return WAIT
    if not traits.sees_all_done:
        return START  # ask_all_done's answer, without making a view for it
    view = view or _JoinView(node, record, records)
    return NEVER if ask_all_done(join, traits, view) is _FAIL else START


class _JoinView:
    """A node's upstreams as a join policy sees a task group's children (``GroupView``):
    all spawned at once (the body is done), optional failures counted as successes.
    Made for one decision: the counters are read once."""

    __slots__ = ("failed", "node", "pending", "records", "spawned", "succeeded")

    body_done = True
    timed_out = False

    def __init__(
        self, node: Node[Any], record: NodeRecord, records: Mapping[str, NodeRecord]
    ) -> None:
        self.node = node
        self.records = records
        self.spawned = node.n_deps
        self.succeeded = record.n_ok
        self.failed = record.n_bad
        self.pending = self.spawned - self.succeeded - self.failed

    @property
    def name(self) -> str:
        return f"{self.node.flow.name}.{self.node.name}"

    @property
    def results(self) -> list[Any]:
        records = self.records
        return [r.value for d in self.node.deps if (r := records[d]).state is _SUCCEEDED]

    def errors_of_critical(self) -> list[Exception]:
        records = self.records
        return [e for d in self.node.deps if isinstance(e := records[d].error, Exception)]


class _UpstreamView:
    """The upstream that just ended, as a policy sees a finished child (``ChildView``)."""

    __slots__ = ("counted", "record")

    def __init__(self, record: NodeRecord, counted: bool) -> None:
        self.record = record
        self.counted = counted  # succeeded, or optional and passed as None

    @property
    def name(self) -> str:
        return self.record.node.name

    @property
    def critical(self) -> bool:
        return self.record.node.critical

    @property
    def status(self) -> ChildStatus:
        return _SUCCEEDED if self.counted else self.record.state

    @property
    def failed(self) -> bool:
        return not self.counted and self.record.state is not _CANCELLED

    @property
    def error(self) -> BaseException | None:
        return None if self.counted else self.record.error


if TYPE_CHECKING:
    _views: tuple[type[GroupView], type[ChildView]] = (_JoinView, _UpstreamView)
