"""A flow's graph drawn as a Mermaid flowchart."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cohort._core._policies import JoinPolicy

if TYPE_CHECKING:
    from cohort._flow._graph import Node

__all__ = ["mermaid"]


def mermaid(inputs: Iterable[str], nodes: Iterable[Node[Any]]) -> str:
    """The graph as a Mermaid flowchart; fan-in edges carry the join policy."""
    lines = ["flowchart TD"]
    for item in inputs:
        lines.append(f"  {item}([{item}])")
    for node in nodes:
        extras = []
        if not node.critical:
            extras.append("optional")
        if node.map_over:
            extras.append(f"map over {node.map_over}")
        if node.kind == "cpu":
            extras.append("cpu")
        label = node.name + (f"<br/><i>{', '.join(extras)}</i>" if extras else "")
        lines.append(f'  {node.name}["{label}"]')
        policy = _policy_label(node.join) if len(node.deps) > 1 else ""
        for p in node.params:
            arrow = f'-->|"{policy}"|' if policy and p in node.deps else "-->"
            lines.append(f"  {p} {arrow} {node.name}")
    return "\n".join(lines)


def _policy_label(join: JoinPolicy) -> str:
    return repr(join).replace('"', "'")  # as declared: FirstWins() is not drawn as Quorum(1)
