"""Testing support: a virtual clock for asyncio and a pytest plugin.

``VirtualClockLoop`` is an asyncio loop whose clock jumps to the next timer
whenever nothing can run, so timeouts are instant and durations exact.
``run(main)`` runs a coroutine function on one; in pytest, mark a test with
``@pytest.mark.virtual_clock`` (the plugin is registered automatically and
works through pytest-asyncio).
"""

from __future__ import annotations

from cohort.testing._clock import (
    VirtualClockLoop,
    VirtualClockPolicy,
    run,
    wait_all_tasks_blocked,
)

__all__ = ["VirtualClockLoop", "VirtualClockPolicy", "run", "wait_all_tasks_blocked"]
