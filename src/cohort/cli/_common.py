"""What every ``cohort`` subcommand shares: exit statuses and the usage error."""

from __future__ import annotations

from cohort._core._runtime import EXIT_INTERRUPTED

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "UsageError"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or a target that cannot be run: reported in one line, exit status 2."""
