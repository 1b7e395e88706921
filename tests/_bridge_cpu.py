"""Module-level ``@cohort.cpu`` functions for the bridge tests (workers import them by name)."""

from __future__ import annotations

import os

import cohort


@cohort.cpu
def cube(x: int) -> int:
    """Cube a number, in a worker process."""
    return x * x * x


@cohort.cpu
def pid_of_worker() -> int:
    return os.getpid()


@cohort.cpu
def scaled(x: int, *, factor: int = 1) -> int:
    return x * factor
