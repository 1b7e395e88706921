"""The harness runs the suites where it says, and the allowance names real tests."""

from __future__ import annotations

import asyncio
import types
import unittest

import pytest

from peer import test_cpython_timeouts
from peer.allowance import ALLOWANCE, HANGS


@pytest.mark.parametrize("key", sorted(ALLOWANCE))
def test_allowance_names_a_test(key: str) -> None:
    suite, classname, test = key.split(".")
    module = pytest.importorskip(
        f"test.test_asyncio.{suite}",
        reason="this Python ships without its test package",
    )
    assert isinstance(getattr(getattr(module, classname), test, None), types.FunctionType)
    raises, reason = ALLOWANCE[key]
    assert issubclass(raises, BaseException)
    assert reason.split(":")[0] in ("design", "private", "API", "cohort bug")


def test_hangs_are_in_the_allowance() -> None:
    assert set(HANGS) <= set(ALLOWANCE)


@pytest.mark.parametrize(
    ("case", "loop_module"),
    [("TimeoutTestsOnAsyncio", "asyncio"), ("TimeoutTestsOnUvloop", "uvloop")],
)
def test_each_case_runs_on_its_loop(case: str, loop_module: str) -> None:
    if loop_module == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed")
    seen: list[asyncio.AbstractEventLoop] = []

    class Probe(getattr(test_cpython_timeouts, case)):  # type: ignore[misc]
        async def test_probe(self) -> None:
            seen.append(asyncio.get_running_loop())

    result = unittest.TestResult()
    Probe("test_probe").run(result)
    assert result.wasSuccessful(), result.errors
    assert type(seen[0]).__module__.split(".")[0] == loop_module
