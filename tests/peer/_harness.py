"""Load CPython's asyncio test modules with cohort's shims in their namespace.

Each suite is loaded as a private copy of the interpreter's module (the real
``test.test_asyncio...`` module and the real ``asyncio`` stay untouched); the
copy's ``asyncio`` (and ``taskgroups``) names are then bound to proxy modules
whose attributes are asyncio's except the shimmed ones. The test classes are
subclassed once per event loop, with the allowance's ``xfail`` marks and the
suite's ``assertRaisesRegex`` wording applied.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import types
import unittest
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from peer.allowance import ALLOWANCE, HANGS

try:
    import uvloop
except ImportError:  # e.g. on Windows
    uvloop = None  # type: ignore[assignment]

LOOPS = ("asyncio", "uvloop")


def load_suite(modname: str, names: Mapping[str, types.ModuleType]) -> types.ModuleType:
    """A private copy of CPython's test module ``modname`` with ``names`` rebound in it.

    Skips the calling test module when the interpreter ships without its
    ``test`` package (some distributions strip it), or when its suites are
    newer than the ones the allowance was drawn up for (3.11 and 3.12).
    """
    if sys.version_info >= (3, 13):
        pytest.skip(
            "the allowance covers the 3.11 and 3.12 asyncio suites; this Python's differ",
            allow_module_level=True,
        )
    real = pytest.importorskip(
        modname,
        reason=f"this Python ships without its test package ({modname} is missing)",
    )
    spec = importlib.util.spec_from_file_location(f"peer_copy.{modname}", real.__file__)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, value in names.items():
        assert name in vars(module), f"{modname} has no global {name!r} to replace"
        setattr(module, name, value)
    return module


def proxy(real: types.ModuleType, **shims: Any) -> types.ModuleType:
    """A module object with ``real``'s attributes, except ``shims``."""
    missing = [name for name in shims if not hasattr(real, name)]
    assert not missing, f"{real.__name__} has no {missing}: nothing to shim"
    module = types.ModuleType(real.__name__, real.__doc__)
    vars(module).update({k: v for k, v in vars(real).items() if not k.startswith("__")})
    vars(module).update(shims)
    return module


def asyncio_with(**shims: Any) -> types.ModuleType:
    """``asyncio`` with ``shims`` in place of its own classes and functions."""
    return proxy(asyncio, **shims)


def _uvloop_runner(self: unittest.IsolatedAsyncioTestCase) -> None:
    # Python 3.11's IsolatedAsyncioTestCase has no loop_factory; this is its
    # _setupAsyncioRunner with uvloop's loop.
    assert uvloop is not None
    runner = asyncio.Runner(debug=True, loop_factory=uvloop.new_event_loop)
    self._asyncioRunner = runner  # type: ignore[attr-defined]


def _copy_function(fn: types.FunctionType) -> types.FunctionType:
    """The same function as a new object, so that marks put on it stay on it."""
    copy = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    copy.__doc__ = fn.__doc__
    return copy


def cases(
    suite: types.ModuleType,
    classname: str,
    module: str,
    *,
    wording: Mapping[str, str] | None = None,
) -> dict[str, type[unittest.TestCase]]:
    """One subclass of ``suite.classname`` per loop, named ``<classname>On<Loop>``,
    for the test module ``module`` to collect.

    ``wording`` maps an ``assertRaisesRegex`` pattern of the suite to the one
    matching cohort's message for the same error.
    """
    base = getattr(suite, classname)
    wording = dict(wording or {})
    out: dict[str, type[unittest.TestCase]] = {}
    for loop in LOOPS:
        attrs: dict[str, Any] = {"__module__": module}
        if wording:
            attrs["assertRaisesRegex"] = _reworded(base, wording)
        for key, (raises, reason) in ALLOWANCE.items():
            where, _, test = key.rpartition(".")
            if where != f"{_short(suite)}.{classname}":
                continue
            fn = getattr(base, test, None)
            assert isinstance(fn, types.FunctionType), f"allowance names no test {key!r}"
            fn = _bounded(fn, HANGS[key]) if key in HANGS else _copy_function(fn)
            attrs[test] = pytest.mark.xfail(strict=True, raises=raises, reason=reason)(fn)
        if loop == "uvloop":
            if hasattr(unittest.IsolatedAsyncioTestCase, "loop_factory"):
                attrs["loop_factory"] = staticmethod(uvloop.new_event_loop) if uvloop else None
            else:
                attrs["_setupAsyncioRunner"] = _uvloop_runner
        name = f"{classname}On{loop.capitalize()}"
        cls = type(name, (base,), attrs)
        if loop == "uvloop":
            cls = unittest.skipIf(uvloop is None, "uvloop is not installed")(cls)
        out[name] = cls
    return out


def _bounded(fn: types.FunctionType, seconds: float) -> Callable[[unittest.TestCase], Any]:
    """``fn`` (an async test that never returns on cohort), stopped after ``seconds``.

    A loop timer, not pytest-timeout: SIGALRM does not interrupt uvloop's poll.
    """

    async def bounded(self: unittest.TestCase) -> None:
        await asyncio.wait_for(fn(self), seconds)

    bounded.__name__ = fn.__name__
    bounded.__qualname__ = fn.__qualname__
    return bounded


def _short(suite: types.ModuleType) -> str:
    """``test_taskgroups`` for the copy of ``test.test_asyncio.test_taskgroups``."""
    return suite.__name__.rpartition(".")[2]


def _reworded(base: type[unittest.TestCase], wording: Mapping[str, str]) -> Any:
    def assertRaisesRegex(
        self: unittest.TestCase, expected: Any, regex: str | re.Pattern[str], *args: Any, **kw: Any
    ) -> Any:
        if isinstance(regex, str):
            regex = wording.get(regex, regex)
        return base.assertRaisesRegex(self, expected, regex, *args, **kw)  # noqa: PT027

    return assertRaisesRegex
