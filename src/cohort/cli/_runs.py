"""``cohort runs ls/show/rm/migrate --db PATH|URL``: the durable runs recorded in a
ledger (a SQLite file, or a ``postgresql://`` URL)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
from pathlib import Path

from cohort.cli._common import UsageError
from cohort.durable import PostgresStore, RunBusyError, SQLiteStore, Store, migrate, work

__all__ = ["runs_command"]


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).isoformat(sep=" ", timespec="seconds")


def runs_command(args: argparse.Namespace) -> int:
    """Run one ``cohort runs`` action; return the exit status."""
    db: Path | str
    store: Store
    if args.db.startswith(("postgresql://", "postgres://")):
        db = args.db
        if args.runs_command == "migrate":
            before, after = migrate(args.db, schema=args.schema)
            print(f"ledger schema at version {after} (was {before})")
            return 0
        store = PostgresStore(args.db)
        if args.runs_command == "worker":
            try:
                done = asyncio.run(
                    work(store, modules=args.programs, poll=args.poll, until_idle=args.until_idle)
                )
            finally:
                store.close()
            print(f"worker ran {done} runs")
            return 0
    else:
        db = Path(args.db)
        if args.runs_command == "migrate":
            raise UsageError("cohort runs migrate takes a postgresql:// URL (SQLite needs none)")
        if args.runs_command == "worker":
            raise UsageError("cohort runs worker takes a postgresql:// URL (a shared ledger)")
        if not db.is_file():
            raise UsageError(f"no ledger at {db} (--db takes the database a durable run wrote)")
        store = SQLiteStore(db)
    try:
        if args.runs_command == "ls":
            print(f"{'RUN':<32} {'STATE':<8} {'EPOCH':>5} {'STEPS':>6}  UPDATED")
            for run in store.runs():
                n_steps = len(store.load(run.run_id)[0])
                print(
                    f"{run.run_id:<32} {run.state:<8} {run.epoch:>5} {n_steps:>6}  "
                    f"{_when(run.updated)}"
                )
            return 0
        if args.runs_command == "show":
            record = store.run(args.run_id)
            if record is None:
                raise UsageError(f"no run {args.run_id!r} in {db} (see: cohort runs ls)")
            steps, decisions = store.load(args.run_id)
            print(f"run {record.run_id}: {record.state}, epoch {record.epoch}")
            for step in sorted(steps, key=lambda s: s.path):
                size = 0 if step.value is None else len(step.value)
                print(
                    f"  step {step.path}: {step.status} seq={step.seq} "
                    f"attempt={step.attempt} {size} bytes"
                )
            for decision in sorted(decisions, key=lambda d: (d.path, d.kind)):
                value = json.loads(decision.value)
                print(f"  decision {decision.path} {decision.kind}: {value} seq={decision.seq}")
            return 0
        if not args.run_ids and args.older_than is None:
            raise UsageError("cohort runs rm needs RUN_ID(s) or --older-than SECONDS")
        status = 0
        for run_id in args.run_ids:
            try:
                found = store.delete(run_id)
            except RunBusyError as exc:
                print(f"cohort: {exc}")
                status = 1
                continue
            print(f"deleted {run_id}" if found else f"no run {run_id}")
            if not found:
                status = 1
        if args.older_than is not None:
            for run_id in store.expire(args.older_than):
                print(f"expired {run_id}")
        return status
    finally:
        store.close()
