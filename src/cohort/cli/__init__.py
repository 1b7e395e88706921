"""The ``cohort`` command: ``run``, ``bench``, ``demo``, ``runs``, and ``ps``/``tree``/``why PID``.

Built on the standard library's :mod:`argparse`, so the core keeps its
dependency list short (structlog only); the command has three subcommands and
a handful of flags, which argparse handles with ``--help`` for each and
``--progress/--no-progress`` through ``BooleanOptionalAction``.

Exit status: 0 on success, 1 when a run failed, 2 for bad usage (a one-line
``cohort: error: ...`` on stderr, no traceback), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from cohort.cli._common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse, with bad arguments reported in one line like every other usage error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"cohort: error: {message} (see: {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cohort",
        description="Structured concurrency for asyncio: run pipelines, benchmarks, a demo.",
    )
    from cohort import __version__

    parser.add_argument("--version", action="version", version=f"cohort {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="run a pipeline over input lines, writing outputs as JSON lines",
        description=(
            "Run the pipeline MODULE:PIPELINE (a cohort.Pipeline or cohort.Stage) over "
            "the input lines, write each output as one JSON line and print the report "
            "on stderr. Exit status 1 when the run failed beyond the pipeline's error policy."
        ),
    )
    run.add_argument(
        "target",
        metavar="MODULE:PIPELINE",
        help="a module (dotted name or path to a .py file) and the pipeline's name in it",
    )
    run.add_argument("--input", "-i", default="-", metavar="FILE", help="input file (- = stdin)")
    run.add_argument("--output", "-o", default="-", metavar="FILE", help="output file (- = stdout)")
    run.add_argument(
        "--json-lines",
        action="store_true",
        help="parse each input line as JSON (blank lines skipped)",
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show per-stage progress on stderr (default: when stderr is a terminal)",
    )
    run.add_argument(
        "--log-format",
        choices=["console", "json"],
        default=None,
        help="switch cohort's structured events on, rendered this way on stderr",
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="lowest event level shown (default: info once --log-format is given)",
    )
    from cohort.cli._bench import benchmark_names

    found = benchmark_names()
    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite (from a source checkout)",
        description=(
            "Run the benchmark suite (python -m benchmarks) and print its tables. "
            "Needs the libraries it compares with: pip install 'cohort[bench]'."
        ),
    )
    bench.add_argument("--quick", action="store_true", help="fewer rounds and sizes")
    bench.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=(
            f"benchmarks to run (default: all): {', '.join(found)}"
            if found
            else "benchmarks to run (none found: the suite ships with a source checkout)"
        ),
    )
    demo = sub.add_parser(
        "demo",
        help="the web fan-out service under load, then an ETL pipeline (offline, seconds)",
        description=(
            "Start local HTTP backends and the fan-out service on 127.0.0.1, send a short "
            "load with three strategies (plain, quorum, hedging and mirror races), then run "
            "a small ETL pipeline, with live progress, and print a summary. Needs no "
            "network; needs the web extras (pip install 'cohort[cli]')."
        ),
    )
    runs = sub.add_parser(
        "runs",
        help="list, show and delete durable runs in a ledger",
        description=(
            "Inspect the durable runs recorded in a ledger (cohort.durable): a SQLite "
            "file or a postgresql:// URL."
        ),
    )
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    runs_ls = runs_sub.add_parser("ls", help="list runs: id, state, epoch, steps, updated")
    runs_show = runs_sub.add_parser("show", help="one run's steps and decisions")
    runs_show.add_argument("run_id", metavar="RUN_ID")
    runs_rm = runs_sub.add_parser("rm", help="delete runs, or expire finished old ones")
    runs_rm.add_argument("run_ids", nargs="*", metavar="RUN_ID")
    runs_rm.add_argument(
        "--older-than",
        type=float,
        default=None,
        metavar="SECONDS",
        help="delete every finished run not updated for this many seconds",
    )
    runs_migrate = runs_sub.add_parser(
        "migrate", help="create or upgrade a Postgres ledger's tables (versioned)"
    )
    runs_migrate.add_argument(
        "--schema", default=None, help="the schema of the tables (default: current_schema())"
    )
    runs_worker = runs_sub.add_parser(
        "worker",
        help="run pending and abandoned runs of registered programs from a Postgres ledger",
        description=(
            "Take pending runs (PostgresStore.submit) and runs whose owner died from a "
            "shared Postgres ledger and run them, one at a time; any number of workers "
            "on any number of machines never run the same run at once."
        ),
    )
    runs_worker.add_argument(
        "--programs",
        action="append",
        required=True,
        metavar="MODULE",
        help="a module whose @cohort.durable.program functions this worker runs (repeatable)",
    )
    runs_worker.add_argument(
        "--until-idle", action="store_true", help="stop once no run is left to take"
    )
    runs_worker.add_argument(
        "--poll", type=float, default=0.2, metavar="SECONDS", help="wait between empty polls"
    )
    for action in (runs_ls, runs_show, runs_rm, runs_migrate, runs_worker):
        action.add_argument(
            "--db",
            required=True,
            metavar="PATH|URL",
            help="the ledger: a SQLite database file, or a postgresql:// URL",
        )
    from cohort.cli._demo import add_demo_arguments

    add_demo_arguments(demo)
    for name, what in (
        ("ps", "every task of a running process: its await point and coroutine chain"),
        ("tree", "the task groups of a running process and their children"),
        ("why", "what each task of a running process waits on, for whom; deadlocks"),
    ):
        ps = sub.add_parser(
            name,
            help=f"{what} (the process called cohort.enable_dump())",
            description=(
                f"Send SIGUSR1 to PID and print {what}, from the dump its "
                "cohort.enable_dump() handler writes."
            ),
        )
        ps.add_argument("pid", type=int, metavar="PID", help="the process to ask")
        ps.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
        ps.add_argument("--all", action="store_true", help="print the whole dump")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cohort`` command on ``argv`` (default ``sys.argv[1:]``); return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            from cohort.cli._run import run_command

            return run_command(args)
        if args.command == "bench":
            from cohort.cli._bench import bench_command

            return bench_command(args.names, quick=args.quick)
        if args.command == "runs":
            from cohort.cli._runs import runs_command

            return runs_command(args)
        if args.command in ("ps", "tree", "why"):
            from cohort.cli._ps import ps_command

            return ps_command(args.command, args.pid, timeout=args.timeout, whole=args.all)
        from cohort.cli._demo import demo_command

        return demo_command(args)
    except UsageError as exc:
        print(f"cohort: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("cohort: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
