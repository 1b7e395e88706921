"""``cohort run MODULE:PIPELINE``: a pipeline over input lines, outputs as JSON lines.

Outputs are streamed (``pipe.stream``) and written as they arrive, so memory
stays flat whatever the input's length. The report goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, TextIO

import cohort
from cohort.cli._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from cohort.cli._input import InputError, LineFeed
from cohort.cli._load import load_pipeline
from cohort.pipeline import Pipeline, Report

__all__ = ["run_command"]

_FLUSH_EVERY = 0.2  # seconds: outputs to a pipe or file are flushed at least this often


@dataclass(slots=True)
class _Outcome:
    report: Report[Any] | None = None
    error: BaseException | None = None
    written: int = 0


def run_command(args: argparse.Namespace) -> int:
    """Run ``cohort run``; return its exit status (UsageError for status 2)."""
    pipe = load_pipeline(args.target)
    fd = _open_input(args.input)
    if args.log_format is not None or args.log_level is not None:
        cohort.configure_logging(args.log_level or "info", json=args.log_format == "json")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    out = _open_output(args.output)
    outcome = _Outcome()
    feed = LineFeed(fd, json_lines=args.json_lines)
    status = EXIT_OK
    try:
        cohort.run(_execute, pipe, feed, out, progress, outcome, on_interrupt="raise")
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
    finally:
        _close(out)
        if fd != 0:
            os.close(fd)
    if status == EXIT_OK and outcome.error is not None:
        status = EXIT_FAILED
    _summarize(outcome, status, json_log=args.log_format == "json")
    return status


async def _execute(
    pipe: Pipeline[Any, Any], feed: LineFeed, out: TextIO, progress: bool, outcome: _Outcome
) -> None:
    stream = pipe.stream(feed, progress=progress)
    flush_each = out.isatty()
    last_flush = time.monotonic()
    try:
        async with stream as outputs:
            async for value in outputs:
                out.write(_json_line(value, outcome.written + 1))
                outcome.written += 1
                if flush_each or time.monotonic() - last_flush > _FLUSH_EVERY:
                    out.flush()
                    last_flush = time.monotonic()
    except Exception as exc:
        # PipelineError (a failure beyond the error policy), a bad input line,
        # an output that went away: all end the run with status 1.
        outcome.error = exc
    finally:
        # Also on Ctrl-C (CancelledError): the stream's report is ready by now.
        outcome.report = stream.report


# Written as their text (ISO dates and times, exact decimals...); nothing else
# JSON cannot hold is guessed at: a repr in the output would pass unnoticed.
_AS_TEXT = (datetime.date, datetime.time, decimal.Decimal, uuid.UUID, PurePath)


def _as_text(value: object) -> str:
    if isinstance(value, _AS_TEXT):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_line(value: Any, number: int) -> str:
    try:
        return json.dumps(value, default=_as_text) + "\n"
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"output {number} is a {type(value).__name__}, which JSON cannot hold ({exc}); "
            "make the last stage return dicts, lists, strings, numbers, booleans or None "
            "(dates, times, decimals, UUIDs and paths are written as text)"
        ) from None


def _summarize(outcome: _Outcome, status: int, *, json_log: bool) -> None:
    report, error = outcome.report, outcome.error
    if json_log:
        fields: dict[str, Any] = {"event": "cohort.run.finished", "exit_status": status}
        if report is not None:
            fields.update(
                read=report.read,
                succeeded=report.succeeded,
                dropped=report.dropped,
                done=report.done,
                failed=report.failed,
                cancelled=report.cancelled,
                elapsed=round(report.elapsed, 6),
            )
        if error is not None:
            fields["error"] = _describe(error)
        print(json.dumps(fields), file=sys.stderr)
        return
    if status == EXIT_INTERRUPTED:
        head = str(report).splitlines()[0] if report is not None else "no report"
        print(f"cohort: interrupted: {head}", file=sys.stderr)
        return
    if report is not None:
        print(report, file=sys.stderr)
    if error is not None:
        print(f"cohort: run failed: {_describe(error)}", file=sys.stderr)


def _describe(error: BaseException) -> str:
    if isinstance(error, InputError):
        return str(error)
    if isinstance(error, BrokenPipeError):
        return "the output was closed"
    text = f"{type(error).__name__}: {error}"
    cause = error.__cause__
    if cause is not None and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return " ".join(text.split())


def _open_input(path: str) -> int:
    if path == "-":
        return sys.stdin.fileno()
    if os.path.isdir(path):
        raise UsageError(f"cannot read input {path!r}: it is a directory")
    try:
        return os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise UsageError(f"cannot read input {path!r}: {exc.strerror or exc}") from None


def _open_output(path: str) -> TextIO:
    if path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")  # closed by run_command
    except OSError as exc:
        raise UsageError(f"cannot write output {path!r}: {exc.strerror or exc}") from None


def _close(out: TextIO) -> None:
    try:
        if out is sys.stdout:
            out.flush()
        else:
            out.close()
    except BrokenPipeError:
        # Nobody reads stdout any more; point it at devnull so exit doesn't complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
