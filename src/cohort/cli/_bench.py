"""``cohort bench``: the benchmark suite of a source checkout (``python -m benchmarks``).

The suite lives in ``benchmarks/`` beside ``src/`` and is not part of the
wheel, so this works from a checkout (or an editable install) only; it runs
the suite in a child process, which keeps its imports and Ctrl-C its own.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cohort
from cohort.cli._common import EXIT_INTERRUPTED, UsageError

__all__ = ["bench_command", "benchmark_names", "find_benchmarks", "missing_packages"]

_INSTALL = "pip install 'cohort[bench]'"


def find_benchmarks() -> Path | None:
    """The directory holding the ``benchmarks`` package, or None when there is none."""
    # src/cohort/__init__.py -> the checkout's root, where benchmarks/ sits beside src/.
    for root in (Path(cohort.__file__).resolve().parents[2], Path.cwd()):
        # The editable install's checkout, or the checkout we are run from.
        if _is_suite(root / "benchmarks"):
            return root
    spec = importlib.util.find_spec("benchmarks")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if _is_suite(Path(location)):
                return Path(location).parent
    return None


def _is_suite(path: Path) -> bool:
    # Another project's `benchmarks` package could be importable; ours has a harness.
    return (path / "__main__.py").is_file() and (path / "_harness.py").is_file()


def benchmark_names(root: Path | None = None) -> list[str]:
    """The suite's benchmarks (``core`` for ``benchmarks/bench_core.py``...), sorted;
    empty when no suite is found."""
    root = root or find_benchmarks()
    if root is None:
        return []
    return sorted(p.stem.removeprefix("bench_") for p in (root / "benchmarks").glob("bench_*.py"))


def missing_packages(root: Path, names: Sequence[str]) -> list[str]:
    """The packages the benchmarks ``names`` import (the peers they compare with)
    that cannot be imported here, in the order first imported."""
    suite = root / "benchmarks"
    files = [suite / "__main__.py", suite / "_harness.py"]
    files += [suite / f"bench_{name}.py" for name in names]
    missing: list[str] = []
    for path in files:
        for module in _imports(path):
            if module not in missing and not _installed(module):
                missing.append(module)
    return missing


def _imports(path: Path) -> list[str]:
    """Third-party modules the file imports, at the top or in a function, except
    under ``try: ... except ImportError`` (optional peers, skipped when absent)."""
    visitor = _ImportVisitor()
    visitor.visit(ast.parse(path.read_bytes(), str(path)))
    own = {"__future__", "benchmarks", "cohort"}
    return [m for m in visitor.found if m not in own and m not in sys.stdlib_module_names]


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: list[str] = []

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [alias.name.partition(".")[0] for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.found.append(node.module.partition(".")[0])

    def visit_Try(self, node: ast.Try) -> None:
        optional = any(_catches_import_error(h.type) for h in node.handlers)
        for child in [*([] if optional else node.body), *node.handlers, *node.orelse]:
            self.visit(child)
        for child in node.finalbody:
            self.visit(child)


def _catches_import_error(kind: ast.expr | None) -> bool:
    kinds = kind.elts if isinstance(kind, ast.Tuple) else [kind]
    names = {k.id for k in kinds if isinstance(k, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def bench_command(names: Sequence[str], *, quick: bool) -> int:
    """Run the suite; return its exit status."""
    root = find_benchmarks()
    if root is None:
        raise UsageError(
            "the benchmark suite is not installed (it ships with the source checkout, "
            "not the wheel); run `cohort bench` (or `make bench`) from the root of a "
            "source checkout"
        )
    known = benchmark_names(root)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(
            f"unknown benchmark(s) {', '.join(unknown)}; the benchmarks are {', '.join(known)}"
        )
    missing = missing_packages(root, names or known)
    if missing:
        raise UsageError(
            f"the benchmarks need {', '.join(missing)}, not installed here: {_INSTALL} "
            "(the libraries they compare cohort with)"
        )
    argv = [sys.executable, "-m", "benchmarks", *(["--quick"] if quick else []), *names]
    child = subprocess.Popen(argv, cwd=root)
    try:
        return child.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the child too; let it finish its own way.
        child.wait()
        print("cohort: benchmarks interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
