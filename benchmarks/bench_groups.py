"""A group's own cost: small groups (one per request), nested groups, expiring scopes.

* Small groups: G groups opened and closed one after another, each with C
  children that return at once (C = 1 and 10): ``cohort.TaskGroup`` through
  ``spawn()`` and through ``start_soon()``, against ``asyncio.TaskGroup`` (the
  baseline). Cost per group.
* Nested groups: one group inside the body of another, D deep (D = 10, 100,
  1000), each with one child, against nested ``asyncio.TaskGroup``. Cost per
  level: it should not grow with the depth.
* Expiring scopes: a scope whose deadline fires while its body awaits
  (``move_on_after(0)``, ``fail_after(0)``, caught) against ``asyncio.timeout(0)``.

``COHORT_BENCH_ONLY='Groups of 1 '`` keeps the sections whose title matches that
regular expression (as in bench_core; the memory table's title included).

Each case runs on the default loop and on uvloop, in interleaved rounds; the
time is the process's CPU time (``time.process_time``), so that other load on
a shared machine counts less. Targets: small groups <= 1.2x asyncio.TaskGroup,
nested groups <= 1.5x per level and depth 1000 within 1.2x of depth 10,
expiring scopes <= 1.0x asyncio.timeout.
* Memory per waiting child: N children blocked in one group, traced with
  ``tracemalloc`` (spawn keeps its handles, as its caller does); target <= 1.05x
  ``asyncio.TaskGroup``, flat in N.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import sys
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any

import cohort
from benchmarks._harness import CaseResult, LoopFactory, loops, table, versions

_Cases = dict[str, Callable[[], Coroutine[Any, Any, object]]]


async def _noop() -> None:
    pass


def _small_cases(children: int, groups: int) -> _Cases:
    async def asyncio_tg() -> None:
        for _ in range(groups):
            async with asyncio.TaskGroup() as tg:
                for _ in range(children):
                    tg.create_task(_noop())

    async def cohort_spawn() -> None:
        for _ in range(groups):
            async with cohort.TaskGroup() as g:
                for _ in range(children):
                    g.spawn(_noop)

    async def cohort_start_soon() -> None:
        for _ in range(groups):
            async with cohort.TaskGroup() as g:
                for _ in range(children):
                    g.start_soon(_noop)

    return {
        "asyncio.TaskGroup": asyncio_tg,
        "cohort.TaskGroup spawn": cohort_spawn,
        "cohort.TaskGroup start_soon": cohort_start_soon,
    }


def _nested_cases(depth: int, repeat: int) -> _Cases:
    async def asyncio_level(d: int) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_noop())
            if d > 1:
                await asyncio_level(d - 1)

    async def cohort_level(d: int) -> None:
        async with cohort.TaskGroup() as g:
            g.spawn(_noop)
            if d > 1:
                await cohort_level(d - 1)

    async def asyncio_nested() -> None:
        for _ in range(repeat):
            await asyncio_level(depth)

    async def cohort_nested() -> None:
        for _ in range(repeat):
            await cohort_level(depth)

    return {"asyncio.TaskGroup nested": asyncio_nested, "cohort.TaskGroup nested": cohort_nested}


def _expiring_cases(uses: int) -> _Cases:
    async def asyncio_timeout() -> None:
        for _ in range(uses):
            try:
                async with asyncio.timeout(0):
                    await asyncio.sleep(1)
            except TimeoutError:
                pass

    async def cohort_move_on() -> None:
        for _ in range(uses):
            with cohort.move_on_after(0):
                await asyncio.sleep(1)

    async def cohort_fail() -> None:
        for _ in range(uses):
            try:
                with cohort.fail_after(0):
                    await asyncio.sleep(1)
            except TimeoutError:
                pass

    return {
        "asyncio.timeout": asyncio_timeout,
        "cohort.move_on_after": cohort_move_on,
        "cohort.fail_after": cohort_fail,
    }


async def _blocked(release: asyncio.Event) -> None:
    await release.wait()


async def _peak_per_child(n: int, kind: str) -> float:
    """Bytes traced per child while ``n`` children wait in one group (tracemalloc)."""
    release = asyncio.Event()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        if kind == "asyncio.TaskGroup":
            async with asyncio.TaskGroup() as tg:
                for _ in range(n):
                    tg.create_task(_blocked(release))
                await asyncio.sleep(0)  # every child at its first await
                used = tracemalloc.get_traced_memory()[0] - before
                release.set()
        else:
            handles = []
            async with cohort.TaskGroup() as g:
                if kind == "cohort.TaskGroup spawn":
                    # The handles kept, as a caller of spawn does.
                    handles = [g.spawn(_blocked, release) for _ in range(n)]
                else:
                    for _ in range(n):
                        g.start_soon(_blocked, release)
                await asyncio.sleep(0)
                used = tracemalloc.get_traced_memory()[0] - before
                release.set()
            del handles
    finally:
        tracemalloc.stop()
    return used / n


_MEMORY_KINDS = ("asyncio.TaskGroup", "cohort.TaskGroup spawn", "cohort.TaskGroup start_soon")


def _memory_table(sizes: list[int], factory: LoopFactory, loop_name: str) -> str:
    lines = [
        f"## Memory per waiting child ({loop_name}; tracemalloc, bytes)\n",
        "| children | " + " | ".join(_MEMORY_KINDS) + " | spawn / asyncio | start_soon / asyncio |",
        "|---|" + "---|" * (len(_MEMORY_KINDS) + 2),
    ]
    for n in sizes:
        per = {}
        for kind in _MEMORY_KINDS:
            with asyncio.Runner(loop_factory=factory) as runner:
                gc.collect()
                per[kind] = runner.run(_peak_per_child(n, kind))
        base = per["asyncio.TaskGroup"]
        lines.append(
            f"| {n:,} | "
            + " | ".join(f"{per[k]:.0f}" for k in _MEMORY_KINDS)
            + f" | {per[_MEMORY_KINDS[1]] / base:.3f}x | {per[_MEMORY_KINDS[2]] / base:.3f}x |"
        )
    return "\n".join(lines) + "\n"


def _cpu_compare(
    cases: list[tuple[str, Callable[[], object]]], rounds: int, per: int
) -> list[CaseResult]:
    """As ``_harness.compare``, on the process's CPU time."""
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(rounds):
        for name, fn in cases:
            gc.collect()
            t0 = time.process_time()
            fn()
            times[name].append((time.process_time() - t0) / per)
    base = times[cases[0][0]]
    return [
        CaseResult(name, ts, [t / b for t, b in zip(ts, base, strict=True)])
        for name, ts in times.items()
    ]


def _selected(title: str) -> bool:
    only = os.environ.get("COHORT_BENCH_ONLY")
    return not only or re.search(only, title) is not None


def _measure(
    title: str, unit: str, factory: LoopFactory, cases: _Cases, rounds: int, per: int
) -> str:
    if not _selected(title):
        return ""
    runners = [asyncio.Runner(loop_factory=factory) for _ in cases]
    try:
        timed: list[tuple[str, Callable[[], object]]] = [
            (name, _bind(r, fn)) for r, (name, fn) in zip(runners, cases.items(), strict=True)
        ]
        for _, fn in timed:  # warm-up: imports, caches, first-use costs
            fn()
        results = _cpu_compare(timed, rounds, per)
    finally:
        for r in runners:
            r.close()
    return table(title, results, unit)


def _bind(
    runner: asyncio.Runner, fn: Callable[[], Coroutine[Any, Any, object]]
) -> Callable[[], object]:
    return lambda: runner.run(fn())


def main(quick: bool) -> str:
    out = [
        "# Groups: small groups, nested groups, expiring scopes\n",
        "Versions: "
        + versions("cohort", "uvloop")
        + "\n\nCPU time; ratios are paired per round against the first row "
        "(same loop, same run).\n",
    ]
    rounds = 5 if quick else 9
    scale = 10 if quick else 1
    small = [(1, 100_000 // scale), (10, 10_000 // scale)]
    nested = [(10, 1_000 // scale), (100, 100 // scale), (1_000, max(1, 10 // scale))]
    uses = 20_000 // scale
    for loop_name, factory in loops():
        for children, groups in small:
            out.append(
                _measure(
                    f"Groups of {children} (x{groups:,}, {loop_name})",
                    "per group",
                    factory,
                    _small_cases(children, groups),
                    rounds,
                    groups,
                )
            )
        for depth, repeat in nested:
            # Each level is a few frames deep while the innermost body runs.
            sys.setrecursionlimit(max(sys.getrecursionlimit(), 8 * depth + 1_000))
            out.append(
                _measure(
                    f"Nested groups, depth {depth:,} (x{repeat:,}, {loop_name})",
                    "per level",
                    factory,
                    _nested_cases(depth, repeat),
                    rounds,
                    depth * repeat,
                )
            )
        if _selected(f"Memory per waiting child ({loop_name}"):
            sizes = [10_000] if quick else [10_000, 100_000, 1_000_000]
            out.append(_memory_table(sizes, factory, loop_name))
        out.append(
            _measure(
                f"Scope whose deadline fires (x{uses:,}, {loop_name})",
                "per use",
                factory,
                _expiring_cases(uses),
                rounds,
                uses,
            )
        )
    return "\n".join(part for part in out if part)
