"""The ledger's interface: runs, steps and decisions, and the errors of the layer.

A store keeps three tables, designed so that a SQL server (PostgreSQL) can
hold them as the embedded SQLite store does:

* ``runs``: ``id`` (text, primary key), ``state`` (``running``, ``done``,
  ``failed``), ``epoch`` (integer, bumped by every owner that opens the run),
  ``created`` and ``updated`` (seconds since the epoch, wall clock);
* ``steps``: keyed by ``(run_id, path)`` where ``path`` is the step's
  structural path (segments joined by ``/``): ``status`` (``ok``, ``error``,
  ``cancelled``, ``started``), ``value`` (the codec's bytes, or the pickled
  error), ``seq`` (its place among the completions of its group), ``attempt``
  (how many times its body began), ``started`` and ``ended``;
* ``decisions``: keyed by ``(run_id, path, kind)``: a group's join decision
  that replaying outcomes would not reproduce (``timeout``, ``winners``),
  with its ``seq`` and a JSON ``value``.

Writes are buffered (``put_step``, ``put_decision``) and committed together
by ``flush``, in one transaction that first checks the owner's epoch: a
process that lost ownership can never commit.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from cohort._exceptions import CohortError

__all__ = [
    "AmbiguousStepError",
    "BufferedStore",
    "DecisionRecord",
    "DivergenceError",
    "DurableError",
    "FencedError",
    "RunBusyError",
    "RunRecord",
    "StepRecord",
    "StepRow",
    "Store",
    "StepStatus",
]

StepStatus = Literal["ok", "error", "cancelled", "started"]
RunState = Literal["running", "done", "failed"]


class DurableError(CohortError):
    """Base class of the durable layer's errors."""


class RunBusyError(DurableError):
    """Another live process owns the run (its lock is held)."""


class FencedError(DurableError):
    """This process no longer owns the run: another one took it over (its epoch is newer)."""


class DivergenceError(DurableError):
    """A resumed run's structure differs from what the ledger recorded."""


class AmbiguousStepError(DurableError):
    """An external-effect step started before a crash and recorded no result."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as the ledger holds it."""

    run_id: str
    state: str
    epoch: int
    created: float
    updated: float


class StepRecord(NamedTuple):
    """One step (a child or a ``step()`` call) as the ledger holds it (a named
    tuple: a resume builds one per recorded step, from its row as it is)."""

    run_id: str
    path: str
    status: StepStatus
    value: bytes | None
    seq: int
    attempt: int
    started: float
    ended: float | None


StepRow = tuple[str, StepStatus, bytes | None, int, int]
"""A recorded step as a resume reads it (``Store.load_index``): path, status,
encoded value, its place in its group's completion order, attempts."""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A group's journaled join decision (``kind``: ``timeout`` or ``winners``)."""

    run_id: str
    path: str
    kind: str
    value: str  # JSON
    seq: int


class Store(abc.ABC):
    """Where durable runs are recorded. Methods are called from one thread at a time.

    The owner of a run calls ``acquire`` (lock + new epoch), ``load_index``
    (whose default reads ``load``; ``load`` itself serves inspection), then
    ``put_step``/``put_decision`` any number of times and ``flush`` to commit
    what is pending; ``finish`` marks the run's end and ``release`` gives it up.
    """

    @abc.abstractmethod
    def acquire(self, run_id: str, *, wait: float = 0.0, steal: bool = False) -> int:
        """Own ``run_id`` (created if new), waiting up to ``wait`` seconds for a live
        owner to go; return the new epoch. Raises :class:`RunBusyError`, unless
        ``steal``: then a hung owner is fenced off and the run taken over."""

    @abc.abstractmethod
    def release(self, run_id: str) -> None:
        """Give up ownership (pending records are dropped: flush first)."""

    @abc.abstractmethod
    def load(self, run_id: str) -> tuple[list[StepRecord], list[DecisionRecord]]:
        """Everything recorded for ``run_id``."""

    def load_index(
        self, run_id: str
    ) -> tuple[dict[str, bytes], dict[str, StepRow], list[DecisionRecord]]:
        """What a resume needs: the encoded value of each step recorded ``ok`` with
        no place in an order (``seq < 0``: a ``step()``, the bulk of a long run), by
        path; every other step as a ``StepRow`` ``(path, status, value, seq,
        attempt)``, by path; and the decisions. A store may answer it with a few
        queries of these columns only, without building records."""
        steps, decisions = self.load(run_id)
        values: dict[str, bytes] = {}
        rows: dict[str, StepRow] = {}
        for r in steps:
            if r.status == "ok" and r.seq < 0 and r.value is not None:
                values[r.path] = r.value
            else:
                rows[r.path] = (r.path, r.status, r.value, r.seq, r.attempt)
        return values, rows, decisions

    @abc.abstractmethod
    def put_step(self, record: StepRecord) -> None:
        """Buffer a step record (replacing any record of the same path)."""

    def put_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Buffer step records given as tuples in ``StepRecord``'s field order (a
        store may take them as they are: no record objects on a hot path)."""
        for row in rows:
            self.put_step(StepRecord(*row))

    @abc.abstractmethod
    def put_decision(self, record: DecisionRecord) -> None:
        """Buffer a decision record."""

    @abc.abstractmethod
    def discard_steps(self, run_id: str, paths: list[str]) -> None:
        """Buffer the deletion of these steps (a resumed run that chose to discard them)."""

    def execute_in_commit(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """Buffer ``executemany(sql, rows)`` on the ledger's own database into the next
        commit (a transactional sink). A store that cannot raises ``TypeError``."""
        raise TypeError(
            f"{self!r} cannot commit a sink's rows with its records: write them with "
            "a SQLiteStore or a PostgresStore, or make the sink idempotent with idempotency_key()"
        )

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Records buffered and not committed yet."""

    @abc.abstractmethod
    def flush(self, run_id: str, epoch: int) -> None:
        """Commit what is pending, if ``epoch`` still owns ``run_id`` (else
        :class:`FencedError`, and nothing is committed)."""

    @abc.abstractmethod
    def finish(self, run_id: str, epoch: int, state: RunState) -> None:
        """Commit what is pending and the run's final state."""

    # -- operations (any process, no ownership needed) ------------------------------

    @abc.abstractmethod
    def runs(self) -> list[RunRecord]:
        """Every run, oldest first."""

    @abc.abstractmethod
    def run(self, run_id: str) -> RunRecord | None:
        """One run, or None."""

    @abc.abstractmethod
    def delete(self, run_id: str) -> bool:
        """Delete a run and its records; False if there was none. Refused
        (:class:`RunBusyError`) while a live process owns it."""

    @abc.abstractmethod
    def expire(self, older_than: float) -> list[str]:
        """Delete the finished runs (``done`` or ``failed``) not updated for
        ``older_than`` seconds, skipping any a live process owns; their ids."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the store (pending records are dropped: flush first)."""


class BufferedStore(Store):
    """A store that buffers what a run records (steps, decisions, deletions, a
    sink's statements) in memory and writes it all in one transaction per
    commit: a subclass implements only how it writes (``_write``)."""

    def __init__(self) -> None:
        self._steps: list[tuple[Any, ...]] = []
        self._decisions: list[tuple[Any, ...]] = []
        self._deletes: list[tuple[str, str]] = []
        self._statements: list[tuple[str, list[tuple[Any, ...]]]] = []
        # Called inside each commit's transaction, just before COMMIT (crash tests).
        self.before_commit: Callable[[], None] | None = None

    def put_step(self, record: StepRecord) -> None:
        self._steps.append(record)  # a tuple in the tables' column order

    def put_rows(self, rows: list[tuple[Any, ...]]) -> None:
        self._steps.extend(rows)

    def put_decision(self, record: DecisionRecord) -> None:
        self._decisions.append((record.run_id, record.path, record.kind, record.value, record.seq))

    def discard_steps(self, run_id: str, paths: list[str]) -> None:
        self._deletes.extend((run_id, path) for path in paths)

    @property
    def pending(self) -> int:
        return len(self._steps) + len(self._decisions) + len(self._deletes) + len(self._statements)

    def flush(self, run_id: str, epoch: int) -> None:
        self._commit(run_id, epoch, None)

    def finish(self, run_id: str, epoch: int, state: RunState) -> None:
        self._commit(run_id, epoch, state)

    def _commit(self, run_id: str, epoch: int, state: RunState | None) -> None:
        if not self.pending and state is None:
            return
        steps, decisions, deletes, statements = (
            self._steps,
            self._decisions,
            self._deletes,
            self._statements,
        )
        self._steps, self._decisions, self._deletes, self._statements = [], [], [], []
        self._write(run_id, epoch, state, steps, decisions, deletes, statements)

    @abc.abstractmethod
    def _write(
        self,
        run_id: str,
        epoch: int,
        state: RunState | None,
        steps: list[tuple[Any, ...]],
        decisions: list[tuple[Any, ...]],
        deletes: list[tuple[str, str]],
        statements: list[tuple[str, list[tuple[Any, ...]]]],
    ) -> None:
        """Write these records in one transaction, if ``epoch`` still owns ``run_id``
        (else :class:`FencedError`, and nothing is written), with the run's final
        ``state`` if not None; call ``before_commit`` just before committing."""
