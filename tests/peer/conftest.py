"""Keep pytest's failure reports of the CPython suites clear of garbage collection.

Python 3.11's ``ast.parse`` is not re-entrant (its recursion counter lives in
module state: "SystemError: AST constructor recursion depth mismatch"). pytest
parses the test's source to show a failure; if the collector runs then and
frees a task of the failed test whose exception was never retrieved, asyncio
logs it, and the traceback's caret lines parse source again: pytest crashes.
So the collector is off while a report is built, and the failed test's garbage
is collected right after it, outside any report.
"""

from __future__ import annotations

import gc
from collections.abc import Generator

import pytest

_failed = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        report = yield
    finally:
        if enabled:
            gc.enable()
    if not report.passed:
        item.stash[_failed] = True
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    try:
        return (yield)
    finally:
        if item.stash.get(_failed, False):
            gc.collect()
