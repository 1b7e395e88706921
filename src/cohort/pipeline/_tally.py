"""The tally of fates: every source item of a run ends exactly once.

An item ends (``settle``) as output, dropped, done or failed; what never
ended is cancelled. An item that a stage fanned out (``Many``) ends when all
its descendants have ended: failed if one failed (at once), else output if
one was output, else done, else dropped.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = ["DONE", "DROPPED", "FAILED", "OUTPUT", "Fate", "Tally"]


class Fate(enum.IntEnum):
    """How a source item ended (its index in ``Tally.counts``); cancelled is what is left."""

    OUTPUT = 0
    DROPPED = 1
    DONE = 2
    FAILED = 3


OUTPUT, DROPPED, DONE, FAILED = Fate.OUTPUT, Fate.DROPPED, Fate.DONE, Fate.FAILED


@dataclasses.dataclass(slots=True)
class _Fan:
    """A source item that became several: how many parts are still live, and how they ended."""

    live: int
    fates: int = 0  # bitmask of the parts' fates
    failed: bool = False  # counted as failed once, whatever its other parts do


class Tally:
    """Counts every source item's fate exactly once, fanned-out items included."""

    __slots__ = ("counts", "fanout", "read")

    def __init__(self) -> None:
        self.read = 0
        self.counts = [0, 0, 0, 0]  # by Fate
        self.fanout: dict[int, _Fan] = {}

    def settle_outputs(self, idxs: list[int]) -> None:
        if not self.fanout:
            self.counts[OUTPUT] += len(idxs)
            return
        for i in idxs:
            self.settle(i, OUTPUT)

    def settle(self, index: int, fate: Fate) -> None:
        fan = self.fanout.get(index)
        if fan is None:
            self.counts[fate] += 1
            return
        fan.live -= 1
        fan.fates |= 1 << fate
        if fate == FAILED and not fan.failed:
            fan.failed = True
            self.counts[FAILED] += 1
        if fan.live == 0:
            del self.fanout[index]
            if not fan.failed:
                # One fate per item: output if any part came out, else done, else dropped.
                for f in (OUTPUT, DONE, DROPPED):
                    if fan.fates & (1 << f):
                        self.counts[f] += 1
                        break

    def fan(self, index: int, n: int) -> None:
        """Item ``index`` became ``n`` (> 1) items."""
        fan = self.fanout.get(index)
        if fan is None:
            self.fanout[index] = _Fan(n)
        else:
            fan.live += n - 1

    def summary(self) -> dict[str, int]:
        out, dropped, done, failed = self.counts
        return {
            "read": self.read,
            "succeeded": out,
            "dropped": dropped,
            "done": done,
            "failed": failed,
            "cancelled": self.read - out - dropped - done - failed,
        }
