"""``cohort bench``: the benchmark suite of a source checkout (``python -m benchmarks``).

The suite lives in ``benchmarks/`` beside ``src/`` and is not part of the
wheel, so this works from a checkout (or an editable install) only; it runs
the suite in a child process, which keeps its imports and Ctrl-C its own.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cohort
from cohort.cli._common import EXIT_INTERRUPTED, UsageError

__all__ = ["bench_command", "find_benchmarks"]


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


def bench_command(names: Sequence[str], *, quick: bool) -> int:
    """Run the suite; return its exit status."""
    root = find_benchmarks()
    if root is None:
        raise UsageError(
            "the benchmark suite is not installed (it ships with the source checkout, "
            "not the wheel); run `cohort bench` (or `make bench`) from the root of a "
            "source checkout"
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
