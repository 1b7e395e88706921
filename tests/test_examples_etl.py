"""Example 2, the ETL pipeline (examples/etl.py), end to end on a real local server.

The document server's behaviour follows from a seed (``cohort.examples.etl.server.plan``):
which documents are fine or slow (they become rows), transient (503 once,
then retried: rows too), missing (404: dead letter from fetch) or malformed
(dead letter from parse). The tests derive every expected count, id and row
from that plan and check the SQLite table, the dead-letter file, the report
and the server's request counts exactly. No wall-clock duration is asserted.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from _bridge_util import start_forkserver
from _util import EXAMPLES, live_children, run_python
from cohort.examples.etl import pipeline as etl
from cohort.examples.etl.server import DocSpec, plan

DOCS, SEED = 60, 3


# -- an oracle: what must land where, from the plan ------------------------------------


@dataclass(frozen=True)
class Expected:
    rows: dict[int, tuple[str, int]]  # id -> (title, word count)
    dead: set[tuple[int, str, str]]  # (id, stage, exception type)
    transient: int


def header_and_body(spec: DocSpec) -> tuple[dict[str, str], list[str]]:
    lines = spec.text.splitlines()
    blank = lines.index("")
    headers = dict(line.split(": ", 1) for line in lines[:blank])
    return headers, lines[blank + 1 :]


def expected(specs: list[DocSpec]) -> Expected:
    """Rows and dead letters computed from the plan, by other means than the parser."""
    rows: dict[int, tuple[str, int]] = {}
    dead: set[tuple[int, str, str]] = set()
    for spec in specs:
        if spec.kind == "missing":
            dead.add((spec.id, "fetch", "HTTPStatusError"))
        elif spec.kind == "malformed":
            dead.add((spec.id, "parse", "ValueError"))
        else:
            headers, body = header_and_body(spec)
            rows[spec.id] = (headers["title"], sum(len(line.split()) for line in body))
    return Expected(rows, dead, sum(s.kind == "transient" for s in specs))


def table(db: Path) -> dict[int, tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        return {i: (t, w) for i, t, w in conn.execute("SELECT id, title, words FROM docs")}
    finally:
        conn.close()


def dead_letters(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the plan ----------------------------------------------------------------------------


def test_the_plan_is_seeded_and_has_every_kind() -> None:
    specs = plan(DOCS, SEED)
    assert specs == plan(DOCS, SEED)
    assert [s.text for s in plan(DOCS, SEED + 1)] != [s.text for s in specs]
    kinds = Counter(s.kind for s in specs)
    assert set(kinds) == {"ok", "slow", "transient", "missing", "malformed"}
    assert sum(kinds.values()) == DOCS
    assert all(0 < s.delay < etl.FETCH_TIMEOUT / 4 for s in specs if s.kind == "slow")


def test_parse_reads_good_documents_and_rejects_each_flaw() -> None:
    flaws = set()
    for spec in plan(DOCS, SEED):
        raw = etl.Fetched(url=f"http://x{spec.path}", text=spec.text)
        if spec.kind == "malformed":
            with pytest.raises(ValueError) as info:
                etl.parse.fn(raw)
            flaws.add(str(info.value).split()[0])
        else:
            doc = etl.parse.fn(raw)
            headers, body = header_and_body(spec)
            assert (doc["id"], doc["title"], doc["author"]) == (
                spec.id,
                headers["title"],
                headers["author"],
            )
            assert doc["words"] == sum(len(line.split()) for line in body)
    assert flaws == {"no", "header", "id"}  # no blank line / title missing / bad id


# -- the whole pipeline, in process ------------------------------------------------------


async def test_the_pipeline_stores_what_parses_dead_letters_the_rest_and_leaves_no_worker(
    tmp_path: Path,
) -> None:
    start_forkserver()  # long-lived, started once: part of the baseline
    before = live_children()
    workers: set[int] = set()

    def look_around() -> None:
        workers.update(live_children() - before)

    db, dead_path = tmp_path / "etl.sqlite", tmp_path / "dead.jsonl"
    specs = plan(DOCS, SEED)
    want = expected(specs)

    result = await etl.run_etl(DOCS, SEED, db, dead_path, before_close=look_around)
    report = result.report

    # SQLite: exactly the documents that should succeed, with the right contents.
    assert result.rows == len(want.rows)
    assert table(db) == want.rows
    # The dead-letter file: exactly the permanent failures, with ids and exception types.
    lines = dead_letters(dead_path)
    assert len(lines) == result.dead_letters == len(want.dead)
    assert {(d["doc"], d["stage"], d["error"]) for d in lines} == want.dead
    for d in lines:
        item = d["item"]
        url = item if d["stage"] == "fetch" else item["url"]  # type: ignore[index]
        assert url.endswith(f"/docs/{d['doc']}")  # type: ignore[union-attr]
    # Retries: one per transient document, nothing else retried.
    fetch, parse, store = (report.stage(n) for n in ("fetch", "parse", "store"))
    assert fetch.retried == want.transient
    assert parse.retried == store.retried == 0
    assert result.hits == Counter(
        {s.id: 2 if s.kind == "transient" else 1 for s in specs}
    )  # 404s were not retried
    # The report: every source item ended once.
    assert report.counts_add_up()
    assert report.read == DOCS
    assert report.done == len(want.rows)
    assert report.failed == len(want.dead)
    assert report.succeeded == report.dropped == report.cancelled == 0
    assert (fetch.items_in, fetch.failed) == (DOCS, sum(s.kind == "missing" for s in specs))
    assert (parse.items_in, parse.failed) == (
        fetch.items_out,
        sum(s.kind == "malformed" for s in specs),
    )
    assert (store.items_in, store.failed) == (len(want.rows), 0)
    assert sorted((e.stage, e.index) for e in report.errors) == sorted(
        (stage, i)
        for i, stage, _ in want.dead  # ids are source indexes
    )
    # Processes: the parse stage's pool had its two workers; none is left.
    assert len(workers) == 2
    assert not workers & live_children(), "parse workers left running"
    assert live_children() <= before


async def test_a_failing_store_batch_is_skipped_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """on_error="skip" on store: a batch that breaks the table fails alone; the run goes on."""
    db, dead_path = tmp_path / "etl.sqlite", tmp_path / "dead.jsonl"
    etl.create_db(db)
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO docs VALUES (0, 't', 'a', 1, 'w', 'u')")  # id 0 taken
    conn.close()
    monkeypatch.setattr(etl, "create_db", lambda db: None)  # keep the clashing row
    specs = plan(DOCS, SEED)
    want = expected(specs)
    assert 0 in want.rows
    result = await etl.run_etl(DOCS, SEED, db, dead_path)
    report = result.report
    store = report.stage("store")
    failed_batch = {e.index for e in report.errors if e.stage == "store"}
    assert 0 in failed_batch
    assert store.failed == len(failed_batch) <= etl.BATCH
    assert all(
        isinstance(e.exception, sqlite3.IntegrityError) for e in report.errors if e.stage == "store"
    )
    # The batch's transaction rolled back as a whole; every other batch landed.
    assert result.rows == 1 + len(want.rows) - len(failed_batch)
    assert report.done == len(want.rows) - len(failed_batch)
    assert report.counts_add_up()
    assert report.read == DOCS
    assert result.dead_letters == len(want.dead)  # skip writes no dead letter


# -- the program, as a user runs it --------------------------------------------------------


def test_the_script_prints_the_report_and_fills_its_files(tmp_path: Path) -> None:
    docs, seed = 40, 5
    db, dead_path = tmp_path / "out.sqlite", tmp_path / "dead.jsonl"
    etl.create_db(db)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO docs VALUES (999, 't', 'a', 1, 'w', 'u')")
    conn.close()  # an earlier run's table is replaced, not appended to
    done = run_python(
        str(EXAMPLES / "etl.py"), "--docs", str(docs), "--seed", str(seed),
        "--db", str(db), "--dead-letter", str(dead_path),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = expected(plan(docs, seed))
    out = done.stdout
    assert out.startswith(f"read {docs}: 0 succeeded, 0 dropped, {len(want.rows)} done, ")
    assert f"retried {want.transient} " in out.splitlines()[1]
    assert f"sqlite rows: {len(want.rows)} in {db}" in out
    assert f"dead letters: {len(want.dead)} in {dead_path}" in out
    assert table(db) == want.rows
    assert {(d["doc"], d["stage"], d["error"]) for d in dead_letters(dead_path)} == want.dead


def test_bad_arguments_exit_2() -> None:
    done = run_python(str(EXAMPLES / "etl.py"), "--docs", "0")
    assert done.returncode == 2
    assert "--docs must be at least 1" in done.stderr


def test_a_503_is_retried_and_a_404_is_not() -> None:
    request = httpx.Request("GET", "http://x/docs/1")

    def status(code: int) -> httpx.HTTPStatusError:
        return httpx.HTTPStatusError(str(code), request=request, response=httpx.Response(code))

    assert etl.FETCH_RETRY.retries(status(503))
    assert etl.FETCH_RETRY.retries(httpx.ConnectError("refused"))
    assert not etl.FETCH_RETRY.retries(status(404))
