"""The ETL pipeline: fetch documents over HTTP, parse them in worker processes, store in SQLite.

```text
fetch  (async, 16 workers, per-attempt timeout, Retry on 503 and transport errors)
  | parse  (cpu=True: a plain def in worker processes)
  | store  (batch=50: one SQLite transaction per batch; on_error="skip")
```

Documents that fail for good (404 at fetch, malformed at parse) go to a
dead-letter file as JSON lines (``on_error=`` a callable ``(item, exc)``);
everything else ends up as a row. ``run_etl`` serves a seed's documents
(``cohort.examples.etl.server``), runs the pipeline over them and counts what
landed where. ``parse`` is at module level so worker processes find it by name.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypedDict

import httpx

import cohort
from cohort.examples.etl.server import document_app, plan
from cohort.examples.servers import serve

__all__ = [
    "BATCH",
    "FETCH_RETRY",
    "FETCH_TIMEOUT",
    "DeadLetters",
    "Doc",
    "Fetched",
    "Result",
    "build_pipeline",
    "create_db",
    "parse",
    "run_etl",
    "worth_retrying",
]

FETCH_TIMEOUT = 2.0  # seconds per attempt
BATCH = 50

WORD = re.compile(r"[a-z]+")


def worth_retrying(exc: BaseException) -> bool:
    """A 503, a broken connection or a timeout is worth another try; a 404 is not."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 503
    return isinstance(exc, httpx.TransportError | TimeoutError)


FETCH_RETRY = cohort.Retry(attempts=3, backoff=0.01, on=worth_retrying)


class Fetched(TypedDict):
    """What ``fetch`` hands to ``parse``: plain data, so it pickles to a worker process."""

    url: str
    text: str


class Doc(TypedDict):
    """A parsed document: one row of the ``docs`` table."""

    id: int
    title: str
    author: str
    words: int
    top_word: str
    url: str


# -- parse: module level, so worker processes find it by name -------------------------


@cohort.stage(cpu=True, workers=2)
def parse(raw: Fetched) -> Doc:
    """Parse ``key: value`` headers, a blank line, a body; count the body's words.

    Raises ``ValueError`` for a document without the blank line, without an
    ``id``/``title``, or with an ``id`` that is not a number.
    """
    head, sep, body = raw["text"].partition("\n\n")
    if not sep:
        raise ValueError("no blank line after the header")
    headers: dict[str, str] = {}
    for line in head.splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"bad header line {line!r}")
        headers[key.strip().lower()] = value.strip()
    for key in ("id", "title"):
        if not headers.get(key):
            raise ValueError(f"header {key!r} missing")
    if not headers["id"].isdigit():
        raise ValueError(f"id {headers['id']!r} is not a number")
    words = WORD.findall(body.lower())
    top = Counter(words).most_common(1)
    return Doc(
        id=int(headers["id"]),
        title=headers["title"],
        author=headers.get("author", ""),
        words=len(words),
        top_word=top[0][0] if top else "",
        url=raw["url"],
    )


# -- the dead-letter file ---------------------------------------------------------------


class DeadLetters:
    """A dead-letter sink for one stage: each failure as a JSON line.

    ``{"doc": id, "stage": ..., "item": the stage's input, "error": type name,
    "message": first line}``; ``item`` is a URL (fetch) or ``{url, text}`` (parse).
    """

    def __init__(self, out: IO[str], stage: str) -> None:
        self.out = out
        self.stage = stage
        self.count = 0

    def __call__(self, item: Any, exc: BaseException) -> None:
        url = item if isinstance(item, str) else item["url"]
        record = {
            "doc": int(url.rsplit("/", 1)[1]),
            "stage": self.stage,
            "item": item,
            "error": type(exc).__name__,
            "message": str(exc).splitlines()[0] if str(exc) else "",
        }
        self.out.write(json.dumps(record, default=repr) + "\n")
        self.out.flush()
        self.count += 1


# -- the pipeline -------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    author TEXT NOT NULL,
    words INTEGER NOT NULL,
    top_word TEXT NOT NULL,
    url TEXT NOT NULL
)
"""


def create_db(db: Path) -> None:
    """A fresh ``docs`` table each run (ids are primary keys)."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DROP TABLE IF EXISTS docs")
        conn.execute(SCHEMA)


def build_pipeline(
    client: httpx.AsyncClient, pool: cohort.Executor, db: Path, dead: IO[str]
) -> cohort.Pipeline[str, None]:
    """fetch | parse | store: fetch on ``client``, parse on ``pool``, store into ``db``."""

    @cohort.stage(
        workers=16,
        timeout=FETCH_TIMEOUT,
        retry=FETCH_RETRY,
        on_error=DeadLetters(dead, "fetch"),
    )
    async def fetch(url: str) -> Fetched:
        response = await client.get(url)
        response.raise_for_status()  # a 503 is retried (worth_retrying), a 404 is not
        return Fetched(url=url, text=response.text)

    @cohort.stage(batch=BATCH, on_error="skip")
    def store(docs: list[Doc]) -> None:
        """One transaction per batch (a plain def: runs in a thread, off the loop)."""
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.executemany(
                "INSERT INTO docs VALUES (:id, :title, :author, :words, :top_word, :url)", docs
            )

    parse_on_pool = parse.with_options(executor=pool, on_error=DeadLetters(dead, "parse"))
    return fetch | parse_on_pool | store


@dataclass(frozen=True)
class Result:
    """What an ETL run did: its report, the rows stored and the dead letters written."""

    report: cohort.Report[None]
    rows: int
    dead_letters: int
    hits: Counter[int]  # requests the server got, per document id

    def errors_by_kind(self) -> dict[str, int]:
        """The report's errors counted by ``"stage: ExceptionType"``, sorted by that key."""
        kinds = Counter(f"{e.stage}: {type(e.exception).__name__}" for e in self.report.errors)
        return dict(sorted(kinds.items()))


async def run_etl(
    docs: int,
    seed: int,
    db: Path,
    dead_letter: Path,
    *,
    progress: bool = False,
    before_close: Callable[[], None] | None = None,
) -> Result:
    """Serve the seed's documents, run the pipeline over them, and count what landed where."""
    specs = plan(docs, seed)
    app = document_app(specs)
    create_db(db)
    async with contextlib.AsyncExitStack() as stack:
        urls = await stack.enter_async_context(serve({"docs": app}))
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=urls["docs"], limits=httpx.Limits(max_connections=32))
        )
        # An explicit pool for the parse stage: its worker processes end with this block.
        pool = await stack.enter_async_context(cohort.ProcessPool(2))
        dead = stack.enter_context(dead_letter.open("w", encoding="utf-8"))
        pipe = build_pipeline(client, pool, db, dead)
        report = await pipe.run(
            (f"{urls['docs']}{spec.path}" for spec in specs), collect=False, progress=progress
        )
        if before_close is not None:
            before_close()  # for tests: look around while the servers and the pool still run
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (rows,) = conn.execute("SELECT count(*) FROM docs").fetchone()
    with dead_letter.open(encoding="utf-8") as f:
        dead_count = sum(1 for _ in f)
    return Result(report, rows, dead_count, Counter(app.state.hits))
