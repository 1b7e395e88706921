"""The decision journal: where a durable run records the values that decided a branch.

A clock read, a random draw, a circuit breaker's admission, a retry's failed
attempts: a resumed durable run must see the same ones where they decided, or
it takes another branch than the one its records came from. Core code asks
the journal of the durable run it runs in (``journal_var``; ``None`` outside
one). ``active[0]`` counts the journals open in the process, so that a hot
path (a breaker's admission) pays one check outside durable runs.

A decision's key is ``(path, kind-n)``: the structural path of the code that
makes it (the durable child or step it runs in) and its ordinal among the
decisions of that kind made there, so the n-th one in a child replays as the
n-th one when that child runs again.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

__all__ = ["Journal", "active", "journal_var"]


class Journal(Protocol):
    """A durable run's journal of decisions (JSON values)."""

    def key(self, kind: str) -> tuple[str, str]:
        """The key of the next decision of ``kind`` at the calling code's path."""
        ...

    def recorded(self, key: tuple[str, str]) -> Any:
        """The value recorded under ``key`` (by this run or before a crash), or None."""
        ...

    def record(self, key: tuple[str, str], value: Any) -> None:
        """Record ``value`` (not None) under ``key``: committed with the next commit,
        before any record the run makes after it."""
        ...


journal_var: ContextVar[Journal | None] = ContextVar("cohort_journal", default=None)
active = [0]  # journals open in this process
