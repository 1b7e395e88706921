"""Injected crash points for the crash-loop harness: ``COHORT_DURABLE_CRASH=point[@n]``
SIGKILLs the process the n-th time (1 by default) it reaches that point."""

from __future__ import annotations

import os
import signal

__all__ = ["CRASH_POINTS", "Crash"]

CRASH_POINTS = ("before-effect", "after-effect", "in-commit", "decision")


class Crash:
    """The crash point this process was told to die at, if any."""

    def __init__(self) -> None:
        spec = os.environ.get("COHORT_DURABLE_CRASH", "")
        point, _, count = spec.partition("@")
        self.point = point
        self.left = int(count or 1)

    def at(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)
