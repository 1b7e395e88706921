"""Values that decide a branch, journaled: ``now()`` and ``random()``.

Inside a durable run each call's value is journaled at its structural path
(the n-th call in the child, step or node that makes it); a resumed run gets
the same value at the same call, so it takes the branch it took before the
crash. Outside a durable run (and in a durable pipeline's stages, whose items
run again until recorded) they are ``time.time()`` and ``random.random()``.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable

from cohort._core._journal import journal_var

__all__ = ["now", "random"]


def _journaled(kind: str, draw: Callable[[], float]) -> float:
    """``draw()``, or in a durable run the value the n-th call of ``kind`` at the
    calling code's path returned before a crash (recorded on first draw)."""
    journal = journal_var.get()
    if journal is None:
        return draw()
    key = journal.key(kind)
    value = journal.recorded(key)
    if value is None:
        value = draw()
        journal.record(key, value)
    return float(value)


def now() -> float:
    """``time.time()``, journaled in a durable run: a resume reads the value this call
    returned before the crash (so a branch on the time of day is taken again)."""
    return _journaled("now", time.time)


def random() -> float:
    """``random.random()`` (a float in [0, 1)), journaled in a durable run: a resume
    reads the value this call returned before the crash. Derive others from it
    (``a + (b - a) * random()``, ``seq[int(random() * len(seq))]``)."""
    return _journaled("random", _random.random)
