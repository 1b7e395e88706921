"""Run every benchmark module (benchmarks/bench_*.py) and print their tables.

Each module exposes ``main(quick: bool) -> str`` returning Markdown.
Usage: ``python -m benchmarks [--quick] [NAME ...]`` (NAME: e.g. ``core``, ``sync``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import platform
import sys

import benchmarks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and sizes")
    parser.add_argument("names", nargs="*", help="bench modules to run (default: all)")
    args = parser.parse_args(argv)
    found = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(benchmarks.__path__)
        if m.name.startswith("bench_")
    )
    unknown = set(args.names) - set(found)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; available: {found}")
    print(f"# cohort benchmarks (Python {platform.python_version()}, {platform.machine()})\n")
    for name in args.names or found:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(module.main(args.quick), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
