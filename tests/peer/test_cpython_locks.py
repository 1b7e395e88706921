"""CPython's ``test_asyncio.test_locks`` Barrier and Event suites against cohort's."""

from __future__ import annotations

from peer import shims
from peer._harness import asyncio_with, cases, load_suite

_suite = load_suite(
    "test.test_asyncio.test_locks",
    {"asyncio": asyncio_with(Barrier=shims.Barrier, Event=shims.Event)},
)

globals().update(cases(_suite, "BarrierTests", __name__))
globals().update(cases(_suite, "EventTests", __name__))
