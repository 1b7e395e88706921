"""Runs picked up by workers: a registry of runnable programs by name, and the loop
of ``cohort runs worker`` that takes pending or abandoned runs from a shared
Postgres ledger and runs them, several workers (processes, machines) never taking
the same run at once.

A program is an async function of one argument (the run's JSON ``args``),
registered under a name: ``@cohort.durable.program("nightly")``. It runs inside
``cohort.durable.run(run_id, ...)``, so its steps are recorded and a run taken
over from a dead worker resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from cohort.durable._postgres import PostgresStore
from cohort.durable._run import run

__all__ = ["program", "programs", "work"]

_log = logging.getLogger("cohort.durable.worker")
_PROGRAMS: dict[str, Callable[[Any], Awaitable[Any]]] = {}

F = TypeVar("F", bound=Callable[[Any], Awaitable[Any]])


def program(name: str) -> Callable[[F], F]:
    """Register an async function of one argument (the run's ``args``) as the program
    ``name``, for ``PostgresStore.submit(run_id, name, args)`` and ``cohort runs worker``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a program's name is a non-empty str, got {name!r}")

    def register(fn: F) -> F:
        function: object = fn  # (the check narrows what it is given)
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"program {name!r} must be an async function, got {fn!r}")
        known = _PROGRAMS.get(name)
        if known is not None and known is not fn:
            raise ValueError(f"program {name!r} is registered already (by {known!r})")
        _PROGRAMS[name] = fn
        return fn

    return register


def programs() -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """The registered programs, by name."""
    return dict(_PROGRAMS)


async def work(
    store: PostgresStore,
    *,
    modules: Sequence[str] = (),
    poll: float = 0.2,
    until_idle: bool = False,
) -> int:
    """Run pending and abandoned runs of the registered programs (those of
    ``modules``, imported first) one at a time until cancelled, or, with
    ``until_idle``, until none is left; the number of runs run. A run that fails
    is recorded ``failed`` and logged; the loop goes on."""
    if not isinstance(store, PostgresStore):
        raise TypeError(f"work() takes a PostgresStore, got {store!r}")
    for module in modules:
        importlib.import_module(module)
    names = sorted(_PROGRAMS)
    if not names:
        raise ValueError(
            "no program is registered: decorate async functions with "
            "@cohort.durable.program(name) in the modules given to the worker"
        )
    done = 0
    while True:
        claimed = await asyncio.to_thread(store.claim, names)
        if claimed is None:
            if until_idle:
                return done
            await asyncio.sleep(poll)
            continue
        run_id, name, args = claimed
        try:
            async with run(run_id, store=store):
                await _PROGRAMS[name](args)
        except Exception:
            _log.exception("run %r of program %r failed", run_id, name)
        done += 1
