"""Testing support: a virtual clock for asyncio and a pytest plugin.

``VirtualClockLoop`` is an asyncio loop whose clock jumps to the next timer
whenever nothing can run, so timeouts are instant and durations exact.
``run(main)`` runs a coroutine function on one; in pytest, mark a test with
``@pytest.mark.virtual_clock`` (the plugin is registered automatically and
works through pytest-asyncio).

``crash_loop(args, reference=...)`` runs a program that resumes after a crash
(a ``cohort.durable`` run) in a subprocess, SIGKILLs it at random moments and
at injected crash points, restarts it until it finishes, and compares its
output with a crash-free run's.
"""

from __future__ import annotations

from cohort.testing._clock import (
    VirtualClockLoop,
    VirtualClockPolicy,
    run,
    wait_all_tasks_blocked,
)
from cohort.testing._crash import CRASH_POINTS, CrashLoopError, CrashLoopResult, crash_loop

__all__ = [
    "CRASH_POINTS",
    "CrashLoopError",
    "CrashLoopResult",
    "VirtualClockLoop",
    "VirtualClockPolicy",
    "crash_loop",
    "run",
    "wait_all_tasks_blocked",
]
