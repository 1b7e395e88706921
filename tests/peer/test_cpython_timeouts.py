"""CPython's ``test_asyncio.test_timeouts`` against ``cohort.fail_after``/``fail_at``."""

from __future__ import annotations

from peer import shims
from peer._harness import asyncio_with, cases, load_suite

_suite = load_suite(
    "test.test_asyncio.test_timeouts",
    {
        "asyncio": asyncio_with(
            Timeout=shims.Timeout, timeout=shims.timeout, timeout_at=shims.timeout_at
        ),
    },
)

# asyncio's words -> cohort's, for the same RuntimeError from reschedule() (deadline=).
_WORDING = {
    "finished": "has exited",
    "expired": "has exited",  # expired, then exited: cohort names the exit
    "expiring": "has already expired",
}

globals().update(cases(_suite, "TimeoutTests", __name__, wording=_WORDING))
