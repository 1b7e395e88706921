"""The shape of the code: no module reads another object's private state.

Groups, handles, scopes, pools and pipelines talk through public properties
and a few private *methods* (a documented friend interface such as
``Handle._settle``); reading another object's private attributes is kept to
the places below, each with its reason. A new one fails this test: add a
public property instead, or an entry here with the reason.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

ALLOWED = {
    # A CancelScope's per-task bookkeeping, in the same module as the class.
    **{("cohort/_scopes.py", f"{name}.{attr}"): "same module"
       for name in ("scope", "inner", "s")
       for attr in ("_anyio", "_cancel_requests", "_deadline", "_effective", "_fail", "_phase",
                    "_raised", "_reason", "_relative", "_shield")},
    ("cohort/_scopes.py", "backend._task_states"): "anyio keeps its shields to itself",
    ("cohort/_handle.py", "handle._timed_out"): "same module (the child's timeout wrapper)",
    ("cohort/pipeline/_pipeline.py", "other._stages"): "same class (composition with |)",
    ("cohort/bridge/_procs.py", "multiprocessing.forkserver._forkserver"): (
        "the stdlib has no public way to read the forkserver's preload list"
    ),
    ("cohort/testing/_clock.py", "loop._blocked_waiters"): "same module (the virtual clock)",
    ("cohort/_group.py", "handle._tally"): (
        "set by spawn(retry=) only, so that the handle's constructors cost no more"
    ),
    ("cohort/_resilience.py", "bulkhead._on_idle"): "same module (KeyedBulkhead drops idle ones)",
    **{("cohort/_flow.py", expr): "same module (a run reads its flow's plan)"
       for expr in ("flow._dependents", "flow._n_critical", "self.flow._roots",
                    "self.flow._group_name")},
}  # fmt: skip


def private_reads() -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted((SRC / "cohort").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or id(node) in called:
                continue
            if not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and (owner.id in {"self", "cls"} | imported):
                continue
            found[(path.relative_to(SRC).as_posix(), ast.unparse(node))] += 1
    return found


def test_no_module_reads_another_objects_private_attributes() -> None:
    unexpected = sorted(set(private_reads()) - set(ALLOWED))
    assert unexpected == [], "private state read from outside its object: " + ", ".join(
        f"{where}: {expr}" for where, expr in unexpected
    )
