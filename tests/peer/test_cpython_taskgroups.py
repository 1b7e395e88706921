"""CPython's ``test_asyncio.test_taskgroups`` against ``cohort.TaskGroup``."""

from __future__ import annotations

from asyncio import taskgroups

from peer import shims
from peer._harness import asyncio_with, cases, load_suite, proxy

_suite = load_suite(
    "test.test_asyncio.test_taskgroups",
    {
        "asyncio": asyncio_with(TaskGroup=shims.TaskGroup),
        "taskgroups": proxy(taskgroups, TaskGroup=shims.TaskGroup),
    },
)

# asyncio's words -> cohort's, for the same RuntimeError.
_WORDING = {
    "is finished": "it has exited",
    "has not been entered": "enter it with `async with` first",
    "parent task": "must be entered inside an asyncio task",
}

globals().update(cases(_suite, "TestTaskGroup", __name__, wording=_WORDING))
