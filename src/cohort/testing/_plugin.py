"""pytest plugin: run asyncio tests on chosen loops, virtual time included.

Works through pytest-asyncio's ``pytest_asyncio_loop_factories`` hook:

* ``cohort_loops`` (ini, default ``asyncio``): the loops every async test runs
  on, among ``asyncio`` (the policy's loop), ``uvloop`` and ``virtual``.
* ``@pytest.mark.virtual_clock`` (optionally ``autojump_threshold=``): run this
  test only on a :class:`~cohort.testing.VirtualClockLoop`.
* ``cohort_strict_loop_errors`` (ini bool): fail a test when an exception
  reaches the loop's exception handler (a task error nobody retrieved...).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any

import pytest

from cohort.testing._clock import VirtualClockLoop, explain_timeout, io_jumps

_LoopFactory = Callable[[], asyncio.AbstractEventLoop]
_unhandled: list[dict[str, Any]] = []
# The virtual-clock loops made for tests (a test's timeout may need explaining).
_virtual_loops: weakref.WeakSet[VirtualClockLoop] = weakref.WeakSet()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "cohort_loops",
        "event loops async tests run on: asyncio, uvloop, virtual",
        type="args",
        default=["asyncio"],
    )
    parser.addini(
        "cohort_strict_loop_errors",
        "fail a test when an exception reaches the event loop's exception handler",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "virtual_clock(autojump_threshold=0.0): run the test on cohort's virtual-clock loop",
    )
    names = config.getini("cohort_loops") or ["asyncio"]
    if names != ["asyncio"] and not _loop_hook_available(config):
        raise pytest.UsageError(_missing_hook(f"cohort_loops = {names!r}"))


_NEEDS = "pytest-asyncio >= 1.4 (pip install 'cohort[test]' or 'pytest-asyncio>=1.4')"


def _loop_hook_available(config: pytest.Config) -> bool:
    """True if pytest-asyncio is active and asks plugins for loop factories (1.4+)."""
    caller = getattr(config.pluginmanager.hook, "pytest_asyncio_loop_factories", None)
    return caller is not None and caller.spec is not None


def _missing_hook(what: str) -> str:
    return (
        f"cohort: {what} needs {_NEEDS}; without it the tests would silently run on "
        "the default loop and the real clock"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _loop_hook_available(config):
        return
    marked = [item.nodeid for item in items if item.get_closest_marker("virtual_clock")]
    if marked:
        more = f" and {len(marked) - 1} more" if len(marked) > 1 else ""
        raise pytest.UsageError(_missing_hook(f"@pytest.mark.virtual_clock (on {marked[0]}{more})"))


def _record_unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    _unhandled.append(context)
    loop.default_exception_handler(context)


def _factory(name: str, strict: bool, threshold: float = 0.0) -> _LoopFactory:
    def make() -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop
        if name == "virtual":
            loop = VirtualClockLoop(autojump_threshold=threshold)
            _virtual_loops.add(loop)
        elif name == "uvloop":
            try:
                import uvloop
            except ImportError:
                raise pytest.UsageError(
                    "cohort_loops: uvloop is not installed (pip install 'cohort[uvloop]')"
                ) from None

            loop = uvloop.new_event_loop()
        elif name == "asyncio":
            loop = asyncio.get_event_loop_policy().new_event_loop()
        else:
            raise pytest.UsageError(
                f"cohort_loops: unknown loop {name!r}; use asyncio, uvloop or virtual"
            )
        if strict:
            loop.set_exception_handler(_record_unhandled)
        return loop

    return make


@pytest.hookimpl(optionalhook=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, _LoopFactory]:
    strict = bool(config.getini("cohort_strict_loop_errors"))
    marker = item.get_closest_marker("virtual_clock")
    if marker is not None:
        threshold = float(marker.kwargs.get("autojump_threshold", 0.0))
        return {"virtual": _factory("virtual", strict, threshold)}
    names: list[str] = config.getini("cohort_loops") or ["asyncio"]
    return {name: _factory(name, strict) for name in names}


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """A test that fails with a timeout on virtual time after the clock jumped past
    real I/O: the error gets a note that names ``autojump_threshold``."""
    before = {loop: io_jumps(loop) for loop in _virtual_loops}
    try:
        return (yield)
    except BaseException as exc:
        for loop in list(_virtual_loops):
            explain_timeout(loop, exc, since=before.get(loop, 0))
        raise


@pytest.fixture(autouse=True)
def _cohort_fail_on_loop_errors() -> Iterator[None]:
    _unhandled.clear()
    yield
    if _unhandled:
        contexts = list(_unhandled)
        _unhandled.clear()
        pytest.fail(
            f"an exception reached the event loop's exception handler: {contexts!r}",
            pytrace=False,
        )
