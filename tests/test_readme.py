"""Every Python snippet of the README runs as written.

mktestdocs finds the fenced ``python`` blocks; each runs in a fresh namespace
after a hidden setup that defines the helpers it only names (``fetch``,
``replicas``...). Blocks with top-level ``await`` run as the body of a
coroutine: on the virtual clock, except the process-pool block (real worker
processes, real time). The pytest snippet's test function is also run, and a
fresh project runs it through pytest (tests/test_plugin.py).
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from mktestdocs import grab_code_blocks  # type: ignore[import-untyped]

import cohort
import cohort.testing
from _util import RecordingExecutor

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = grab_code_blocks(README.read_text(), lang="python")

COMMON = """
import asyncio, cohort

fetch_seconds = 1.0  # past the move_on_after(0.5) of the scopes snippet

async def fetch(url="https://example.org/"):
    await asyncio.sleep(fetch_seconds)
    return f"<page {url}>"

async def read(replica, key):
    await asyncio.sleep(0.01)
    return f"{replica}:{key}"

def mirror(url):
    return url + "?mirror"

async def endless_urls():
    n = 0
    while True:
        n += 1
        yield f"https://example.org/{n}"

def enough(page):
    return page.endswith("/30>")

async def probe(host):
    await asyncio.sleep(0.01)
    return f"{host} up"

urls = [f"https://example.org/{i}" for i in range(5)]
url = urls[0]
replicas = ["eu-1", "us-1", "ap-1"]
key = 42
hosts = ["a", "b", "c"]
cached = "<cached page>"

class _Conn:
    async def close(self):
        await asyncio.sleep(0.1)

class _Pool:
    async def run(self, fn, *args):
        await asyncio.sleep(0.5)
        return fn(*args)

conn, pool = _Conn(), _Pool()
score, row = sum, [1.0, 2.0]

class _Session:
    pass

session, mirrors = _Session(), ["https://a.example", "https://b.example"]

async def get_json(session, url):
    await asyncio.sleep(0.01)
    return {"from": url}

def merge():
    pass

async def http_get(url):
    await asyncio.sleep(0.01)
    return url.encode()

class _Db:
    rows = []
    async def insert_many(self, docs):
        self.rows.extend(docs)

db = _Db()

async def never_answers():
    await asyncio.Event().wait()

async def main(*args):
    return "main ran"
"""

ProcessPoolSetup = """
import functools
import numpy
from _readme_funcs import column_total, count_words, mean_brightness, parse, score_model, search
from _readme_funcs import sha256_hex
blob = b"some bytes"
image = numpy.ones((2000, 2000))
table = numpy.arange(40.0).reshape(10, 4)
row = [1.0, 2.0]
paths = ["a", "bb", "ccc"]
lines = ["a b", "c d e"]
shards = [range(i * 1000, (i + 1) * 1000) for i in (4, 0, 1, 2, 3)]  # found in the first
"""


def _first_line(block: str) -> str:
    return block.strip().splitlines()[0]


def _compile(block: str) -> Any:
    return compile(block, str(README), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def _run(block: str, namespace: dict[str, Any], loop: str) -> None:
    """Run ``block``: in a coroutine on the ``virtual`` clock or a ``real`` loop, or ``sync``."""
    code = _compile(block)
    if loop == "sync":
        assert not code.co_flags & inspect.CO_COROUTINE, "await needs a loop"
        exec(code, namespace)
        return

    async def body() -> None:
        result = eval(code, namespace)  # a coroutine when the block awaits
        if inspect.iscoroutine(result):
            await result

    if loop == "virtual":
        cohort.testing.run(body)
    else:
        cohort.run(body)


def test_the_readme_has_the_snippets_this_test_knows() -> None:
    assert [_first_line(b) for b in BLOCKS] == list(HOW)


HOW: dict[str, tuple[str, str]] = {
    # first line of the block: (extra setup, how it runs)
    "import cohort": ("", "virtual"),
    "class TwoOrThreeStrikes(cohort.JoinPolicy):": ("", "sync"),
    # ends with cohort.run(main, ...), on a real loop: fetches are quick there
    "from functools import partial": ("fetch_seconds = 0.01", "sync"),
    (
        "breaker = cohort.CircuitBreaker(failures=5, window=20, recovery_timeout=1.0, "
        'name="pricing")'
    ): ("import functools", "virtual"),
    "with cohort.move_on_after(0.5) as scope:     # silent": ("", "virtual"),
    "async with cohort.Linger(grace=0.6, limit=1000) as linger:   # e.g. in an app's lifespan": (
        "",
        "virtual",
    ),
    "barrier = cohort.Barrier(3, action=merge)         # cyclic; merge runs once per generation": (
        "",
        "virtual",
    ),
    "async with cohort.ProcessPool(workers=2) as pool:": (ProcessPoolSetup, "real"),
    "@cohort.stage(workers=32, timeout=2.0, retry=cohort.Retry(attempts=3, backoff=0.05))": (
        "",
        "virtual",
    ),
    'page = cohort.Flow("page", inputs=["key"])': ("", "virtual"),
    "import pytest, cohort": ("", "sync"),
    (
        'cohort.configure_logging("debug")   # or json=True; '
        "enable_events() if you configure structlog"
    ): ("", "virtual"),
}


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_every_python_snippet_runs_as_written(
    block: str, capsys: pytest.CaptureFixture[str]
) -> None:
    setup, loop = HOW[_first_line(block)]
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(COMMON + setup, namespace)
    executor = RecordingExecutor()  # cpu=True stages of exec'd code cannot be pickled
    cohort.set_default_executor(executor)
    try:
        _run(block, namespace, loop)
    finally:
        cohort.set_default_executor(None)
        cohort.enable_events(False)
        structlog.reset_defaults()
    checks: dict[str, Callable[[dict[str, Any], str], None]] = {
        "import cohort": lambda ns, out: _assert_eq(len(ns["g"].results), 2),
        "from functools import partial": lambda ns, out: _assert_in("b up", out),
        (
            "breaker = cohort.CircuitBreaker(failures=5, window=20, recovery_timeout=1.0, "
            'name="pricing")'
        ): lambda ns, out: _assert_eq(ns["row"], "eu-1:42"),
        "with cohort.move_on_after(0.5) as scope:     # silent": lambda ns, out: _assert_eq(
            ns["data"], "<cached page>"
        ),
        'page = cohort.Flow("page", inputs=["key"])': lambda ns, out: _assert_in(
            "2 recommendations, reviews: reviews:42 ChildStatus.SUCCEEDED", out
        ),
        "async with cohort.ProcessPool(workers=2) as pool:": lambda ns, out: _assert_eq(
            (ns["g"].result, ns["words"], ns["sizes"], ns["brightness"], ns["totals"]),
            (4242, 7, [1, 2, 3], 1.0, [180.0, 190.0, 200.0, 210.0]),
        ),
        "import pytest, cohort": _run_the_snippets_test,
    }
    check = checks.get(_first_line(block))
    if check is not None:
        check(namespace, capsys.readouterr().out)


def _assert_eq(got: object, expected: object) -> None:
    assert got == expected


def _assert_in(part: str, text: str) -> None:
    assert part in text


def _run_the_snippets_test(namespace: dict[str, Any], out: str) -> None:
    test = namespace["test_read_times_out"]
    assert test.pytestmark[0].name == "virtual_clock"
    cohort.testing.run(test)  # passes: the hour-long wait took no time
