"""``cohort ps|tree|why PID``: read the dump of a process that called ``cohort.enable_dump()``."""

from __future__ import annotations

import sys

import cohort
from cohort.cli._common import EXIT_FAILED, EXIT_OK, UsageError

__all__ = ["ps_command"]

# The section of the dump each subcommand prints.
SECTIONS = {"ps": "tasks", "tree": "tree", "why": "why"}


def section(text: str, name: str) -> str:
    """One section (``tree``, ``tasks`` or ``why``) of a dump, without its heading."""
    head = f"== {name} ==\n"
    start = text.find(head)
    if start < 0:
        return ""
    body = text[start + len(head) :]
    end = body.find("\n== ")
    return body if end < 0 else body[: end + 1]


def ps_command(command: str, pid: int, *, timeout: float, whole: bool) -> int:
    """Signal ``pid`` for a dump, print the section ``command`` names (or all of it)."""
    try:
        text = cohort.request_dump(pid, timeout=timeout)
    except ProcessLookupError:
        raise UsageError(f"no process {pid}") from None
    except PermissionError:
        raise UsageError(f"process {pid} is not yours to signal") from None
    except TimeoutError as exc:
        print(f"cohort: {exc}", file=sys.stderr)
        return EXIT_FAILED
    out = text if whole else section(text, SECTIONS[command])
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return EXIT_OK
