"""ETL pipeline: fetch documents over HTTP, parse them in worker processes, store in SQLite.

A local document server (Starlette on uvicorn on 127.0.0.1) serves N
generated documents; a seed decides which are slow, which answer 503 the
first time (retried), which are missing (404) and which are malformed. The
pipeline (``cohort.examples.etl.pipeline``, in the package so that
``cohort demo`` can run it too)::

    fetch  (async, 16 workers, per-attempt timeout, Retry on 503 and transport errors)
      | parse  (cpu=True: a plain def in 2 worker processes)
      | store  (batch=50: one SQLite transaction per batch; on_error="skip")

Documents that fail for good (404 at fetch, malformed at parse) go to a
dead-letter file as JSON lines; everything else ends up as a row. The report
(counts and per-stage stats) and the row count are printed.

    python examples/etl.py                         # 200 documents, seed 1
    python examples/etl.py --docs 1000 --seed 7 --progress
    python examples/etl.py --db etl.sqlite --dead-letter dead.jsonl
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cohort
from cohort.examples.etl.pipeline import run_etl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200, metavar="N")
    parser.add_argument("--seed", type=int, default=1, metavar="S")
    parser.add_argument("--db", type=Path, metavar="PATH", help="SQLite file (default: temporary)")
    parser.add_argument(
        "--dead-letter", type=Path, metavar="PATH", help="JSON lines file (default: temporary)"
    )
    parser.add_argument("--progress", action="store_true", help="show live per-stage progress")
    args = parser.parse_args(argv)
    if args.docs < 1:
        parser.error("--docs must be at least 1")
    return args


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cohort-etl-") as tmp:
        db: Path = args.db or Path(tmp) / "etl.sqlite"
        dead: Path = args.dead_letter or Path(tmp) / "dead.jsonl"
        result = await run_etl(args.docs, args.seed, db, dead, progress=args.progress)
        print(result.report)
        print(f"sqlite rows: {result.rows} in {db if args.db else 'a temporary database'}")
        print(
            f"dead letters: {result.dead_letters} in "
            f"{dead if args.dead_letter else 'a temporary file'}"
        )
        for what, n in result.errors_by_kind().items():
            print(f"  {what} x{n}")


if __name__ == "__main__":
    cohort.run(main, parse_args())  # Ctrl-C: the partial report, one line, exit status 130
