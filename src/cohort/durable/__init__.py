"""cohort.durable: runs that survive a crash (kill -9) and resume where they stopped.

Inside ``async with cohort.durable.run(run_id, store=path) as run:`` every
task-group child and every ``run.step(...)`` is recorded in a ledger (SQLite
by default) under its structural path: run / group name / child name. Run the
same code again with the same ``run_id`` and what finished is not run again:
its recorded value (or error) is returned, in the order it was recorded.
Values that decide a branch are journaled where they decide: ``now()``,
``random()``, a ``CircuitBreaker``'s admissions and a ``Retry``'s attempts.

This package is optional: ``import cohort`` does not load it.
"""

from __future__ import annotations

from cohort._public import publish as _publish
from cohort.durable._codec import Codec, JsonCodec, PickleCodec, RecordedError
from cohort.durable._context import current_run, epoch, idempotency_key, step, write_rows
from cohort.durable._decide import now, random
from cohort.durable._flows import resume_flow, run_flow
from cohort.durable._ledger import ItemLedger
from cohort.durable._postgres import PostgresStore, migrate
from cohort.durable._replay import FlowReplay
from cohort.durable._run import DurableRun, run
from cohort.durable._sqlite import SQLiteStore
from cohort.durable._steps import ValueEncodingError
from cohort.durable._store import (
    AmbiguousStepError,
    DecisionRecord,
    DivergenceError,
    DurableError,
    FencedError,
    RunBusyError,
    RunRecord,
    StepRecord,
    StepRow,
    Store,
)
from cohort.durable._worker import program, programs, work

__all__ = [
    "AmbiguousStepError",
    "Codec",
    "DecisionRecord",
    "DivergenceError",
    "DurableError",
    "DurableRun",
    "FencedError",
    "FlowReplay",
    "ItemLedger",
    "JsonCodec",
    "PostgresStore",
    "PickleCodec",
    "RecordedError",
    "RunBusyError",
    "RunRecord",
    "SQLiteStore",
    "StepRecord",
    "StepRow",
    "Store",
    "ValueEncodingError",
    "current_run",
    "epoch",
    "idempotency_key",
    "migrate",
    "now",
    "program",
    "programs",
    "random",
    "resume_flow",
    "run",
    "run_flow",
    "step",
    "work",
    "write_rows",
]

_publish(globals(), "cohort.durable")
