"""Picklable functions for the cpu-stage tests (worker processes import this module by name)."""

from __future__ import annotations

import os

import cohort


@cohort.stage(cpu=True, workers=2)
def square(x: int) -> int:
    """A decorated cpu stage: workers find the plain function through this attribute."""
    return x * x


def pid_of(_: object) -> int:
    return os.getpid()


def crash_on(x: int) -> int:
    if x == 3:
        os._exit(3)
    return x


def spin(x: float) -> float:
    """Busy for ``x`` seconds of real time (cancellation must kill the worker)."""
    import time

    end = time.monotonic() + x
    while time.monotonic() < end:
        pass
    return x
