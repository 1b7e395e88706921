"""A durable pipeline's item ledger: what each source offset reached, committed in groups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cohort.durable._run import DurableRun

__all__ = ["LEDGER_AT", "LEDGER_EVERY", "ItemLedger"]

# A pipeline's item ledger commits every LEDGER_EVERY seconds, or at LEDGER_AT items.
LEDGER_EVERY = 0.02
LEDGER_AT = 4096


class ItemLedger:
    """A durable pipeline's item ledger: source offset -> the stage it reached.

    A stage notes an item's new value in memory (``reach``, ``drop``,
    ``write``); the run commits what moved since its last commit as one row
    (path ``<pipeline>/#<n>``, ``seq`` n) whose value is the list of
    ``[offset, stage reached (1-based), dropped, value]``: an item that moved
    through several stages meanwhile is listed once. ``recorded`` is what a
    resumed run found: offset -> (stage, dropped, value).
    """

    __slots__ = ("batches", "dirty", "keep_last", "prefix", "recorded", "run", "stages")

    def __init__(
        self,
        run: DurableRun,
        prefix: str,
        stages: int,
        keep_last: bool,
        recorded: dict[int, tuple[int, bool, Any]],
    ) -> None:
        self.run = run
        self.prefix = prefix
        self.stages = stages
        self.keep_last = keep_last
        self.recorded = recorded
        self.batches = 0
        self.dirty: dict[int, tuple[int, bool, Any]] = {}

    def reach(self, offset: int, stage: int, value: Any) -> None:
        """Item ``offset`` left stage ``stage`` (1-based) with ``value``."""
        dirty = self.dirty
        dirty[offset] = (stage, False, value)
        if len(dirty) == 1 or len(dirty) >= LEDGER_AT:
            self.run.touch(len(dirty))

    def drop(self, offset: int, stage: int) -> None:
        """Stage ``stage`` dropped item ``offset``: it is finished."""
        dirty = self.dirty
        dirty[offset] = (stage, True, None)
        self.run.touch(len(dirty))

    def write(self, offset: int, stage: int, value: Any, sql: str, rows: list[Any]) -> None:
        """A transactional sink: ``rows`` written by ``sql`` in the same commit as
        item ``offset`` reaching ``stage``: exactly once."""
        if rows:
            self.run.store.execute_in_commit(sql, rows)
        self.dirty[offset] = (stage, False, value)  # no await since: one commit holds both
        self.run.crash_point("after-effect")
        self.run.touch(len(self.dirty))
