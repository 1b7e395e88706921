"""What a flow run gives back: ``FlowResult`` (values and outcomes), ``FlowError``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, overload

from cohort._core._handle import Outcome
from cohort._exceptions import CohortError

if TYPE_CHECKING:
    from cohort._flow._graph import Flow, Node
    from cohort._flow._run import Run

__all__ = ["FlowError", "FlowResult", "UpstreamFailed"]

R = TypeVar("R")


class FlowError(CohortError):
    """A flow run failed: a critical node failed and nothing could take its place.

    ``node`` names it, ``result`` holds every node's outcome so far; the node's
    exception is the ``__cause__``.
    """

    def __init__(self, message: str, *, node: str, result: FlowResult) -> None:
        super().__init__(message)
        self.node = node
        self.result = result


class UpstreamFailed(CohortError):
    """Internal marker: a node that never ran because what it needed failed."""


class FlowResult:
    """What a flow run produced: ``result[node]`` (or ``result["name"]``) is a node's
    value, ``result.outcome(node)`` how it ended (status, times, attempts, error)."""

    __slots__ = ("_run", "flow")

    flow: Flow

    def __init__(self, run: Run) -> None:
        self.flow = run.flow
        self._run = run

    @overload
    def __getitem__(self, node: Node[R]) -> R: ...
    @overload
    def __getitem__(self, node: str) -> Any: ...
    def __getitem__(self, node: Node[Any] | str) -> Any:
        name = node if isinstance(node, str) else node.name
        record = self._run.records.get(name)
        if record is not None and record.succeeded:
            return record.value
        outcome = self.outcome(name)
        raise LookupError(f"node {name!r} has no value: it {outcome.status.value}")

    def get(self, node: Node[R] | str, default: Any = None) -> R | Any:
        """The node's value, or ``default`` if it did not succeed."""
        name = node if isinstance(node, str) else node.name
        record = self._run.records.get(name)
        return record.value if record is not None and record.succeeded else default

    def outcome(self, node: Node[Any] | str) -> Outcome:
        """How the node ended (``PENDING`` if it never started)."""
        name = node if isinstance(node, str) else node.name
        record = self._run.records.get(name)
        if record is None:
            raise KeyError(f"flow {self.flow.name!r} has no node {name!r}")
        return record.outcome()

    @property
    def outcomes(self) -> dict[str, Outcome]:
        """Every node's outcome, by name, in declaration order."""
        return {name: record.outcome() for name, record in self._run.records.items()}

    @property
    def values(self) -> dict[str, Any]:
        """The values of the nodes that succeeded, by name."""
        return {n: r.value for n, r in self._run.records.items() if r.succeeded}

    @property
    def threads_left(self) -> list[str]:
        """Plain-``def`` nodes cut short (timeout, cancellation) whose thread was still
        running when the run ended (Python cannot stop a thread)."""
        return self._run.threads_left()

    def __repr__(self) -> str:
        done = sum(r.succeeded for r in self._run.records.values())
        return f"<cohort.FlowResult {self.flow.name!r} {done}/{len(self.flow.by_name)} succeeded>"
