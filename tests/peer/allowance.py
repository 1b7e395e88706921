"""Every CPython asyncio test that fails against cohort, and why: the whole allowance.

Keys are ``suite.Class.test``; each entry becomes ``xfail(strict=True,
raises=..., reason=...)`` on every loop: a test that starts passing, or fails
with another exception than the one listed, fails the run. A reason is either
a design choice of cohort (documented in README.md, docs/semantics.md or the
class's docstring), an API cohort does not have, or a private attribute of
asyncio's class that the test reads.
"""

from __future__ import annotations

import asyncio

_CLOSES_REFUSED = (
    "design: spawn() closes a coroutine it refuses (as asyncio.TaskGroup.create_task "
    "does since Python 3.13, gh-115957); this 3.11 test awaits the coroutine afterwards"
)
_DEADLINE_BEFORE_ENTRY = (
    "design: a CancelScope's deadline can be set before the scope is entered (as in "
    "trio and anyio); asyncio.Timeout.reschedule() refuses with 'has not been entered'"
)
_NO_DRAINING = (
    "design: cohort releases a whole generation at once, like threading.Barrier: there "
    "is no 'draining' phase during which new arrivals block, the next generation starts "
    "filling at once, and abort()/reset() never break a generation that is complete "
    "(docs/semantics.md, Synchronisation)"
)

ALLOWANCE: dict[str, tuple[type[BaseException], str]] = {
    # -- test_taskgroups: 30/35 ------------------------------------------------------
    "test_taskgroups.TestTaskGroup.test_taskgroup_23": (
        ExceptionGroup,  # the body's AttributeError, grouped
        "private: reads asyncio.TaskGroup._tasks (cohort's public count: g.pending)",
    ),
    "test_taskgroups.TestTaskGroup.test_taskgroup_finished": (RuntimeError, _CLOSES_REFUSED),
    "test_taskgroups.TestTaskGroup.test_taskgroup_not_entered": (RuntimeError, _CLOSES_REFUSED),
    "test_taskgroups.TestTaskGroup.test_taskgroup_without_parent_task": (
        RuntimeError,
        _CLOSES_REFUSED,
    ),
    "test_taskgroups.TestTaskGroup.test_taskgroup_no_create_task_after_failure": (
        AssertionError,  # the group's errors hold the RuntimeError of that await
        _CLOSES_REFUSED,
    ),
    # -- test_timeouts: 30/32 --------------------------------------------------------
    "test_timeouts.TimeoutTests.test_timeout_not_entered": (
        AssertionError,
        _DEADLINE_BEFORE_ENTRY,
    ),
    "test_timeouts.TimeoutTests.test_timeout_without_task": (
        AssertionError,
        _DEADLINE_BEFORE_ENTRY,
    ),
    # -- test_locks.BarrierTests: 15/22 ----------------------------------------------
    "test_locks.BarrierTests.test_filling_tasks_cancel_one": (
        AssertionError,
        "design: a waiter cancelled while its generation fills breaks the barrier for "
        "the others (README, Synchronisation; docs/semantics.md); asyncio lets the "
        "others wait on",
    ),
    "test_locks.BarrierTests.test_draining_state": (AssertionError, _NO_DRAINING),
    "test_locks.BarrierTests.test_repr": (
        AssertionError,
        _NO_DRAINING + "; no 'resetting' state either",
    ),
    "test_locks.BarrierTests.test_abort_barrier_when_tasks_half_draining_half_blocking": (
        AssertionError,
        _NO_DRAINING,
    ),
    "test_locks.BarrierTests.test_reset_barrier_when_tasks_half_draining_half_blocking": (
        asyncio.BrokenBarrierError,
        _NO_DRAINING,
    ),
    "test_locks.BarrierTests.test_reset_barrier_while_tasks_draining": (
        TimeoutError,
        _NO_DRAINING + "; the test's last wait then has no partner and never returns",
    ),
    "test_locks.BarrierTests.test_reset_barrier_when_tasks_half_draining": (
        AttributeError,
        "private: reads asyncio.Barrier._count",
    ),
    # -- test_locks.EventTests: 4/6 --------------------------------------------------
    "test_locks.EventTests.test_repr": (
        AttributeError,
        "private: appends a mock to asyncio.Event._waiters to check the repr",
    ),
    "test_locks.EventTests.test_clear_with_waiters": (
        AssertionError,
        "private: asyncio.Event._waiters still lists a waiter released by set() until it "
        "resumes; cohort's public count (statistics().n_waiting, under that name in the "
        "shim) counts the blocked waiters only",
    ),
}

#: Tests of the allowance that never return on cohort: stopped after this many seconds.
HANGS: dict[str, float] = {
    "test_locks.BarrierTests.test_reset_barrier_while_tasks_draining": 1.0,
}
