"""Core costs: spawn+join per task, race, and cancel scopes entered and left or fired.

* Spawn: N children (N = 1k, 10k, 100k) that return at once, spawned and
  joined in one group: ``cohort.TaskGroup`` (Gather), through ``spawn()`` and
  through ``start_soon()`` (no handle), against ``asyncio.TaskGroup`` (the
  baseline), ``asyncio.gather``, an anyio task group (not at 100k) and a trio
  nursery. Cost per task.
* Race: K children (K = 2, 10, 100, 1000), one wins after one loop turn, the
  others sleep and are cancelled and reaped: ``cohort.race`` and
  ``TaskGroup(join=FirstWins())`` against a hand-written
  ``asyncio.wait(FIRST_COMPLETED)`` + cancel + gather (the baseline), anyio
  and trio. Cost per race.
* Scopes, enter/exit: entering and leaving ``move_on_after``/``fail_after``
  with an empty body, against ``asyncio.timeout`` (the baseline), anyio and
  trio. Cost per use.
* Scopes, deadline fires: the same scopes with a 0 s deadline around a wait
  that never ends on its own (the timer fires, the wait is cancelled, the
  scope exits silently or raises ``TimeoutError``, caught). Cost per use. One
  row has another task hold anyio state meanwhile (a program using anyio
  somewhere), which makes each scope look up anyio's state of its own task.

Each loop (the default loop and uvloop) is measured in several fresh
interpreters, run one after the other, the loops' runs interleaved; in each,
every case runs once per round, rounds interleaved, timed in CPU time. Ratios
are paired per round against the baseline; per run, the median over its
rounds; over the runs, the median and min-max, and the min-max of every
single round. trio runs on its own loop and appears in both tables.
Targets: TaskGroup <= 1.15x asyncio.TaskGroup, race <= 1.1x the hand-written
version, scopes <= 1.0x asyncio.timeout.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import trio

import cohort
from benchmarks._harness import compare, cyclic_garbage, loops, versions

RUNS = 3  # fresh interpreters per loop (2 with --quick)


def _on(
    runner: asyncio.Runner, fn: Callable[[], Coroutine[Any, Any, object]]
) -> Callable[[], object]:
    return lambda: runner.run(fn())


# -- spawn + join ------------------------------------------------------------------


async def _noop() -> None:
    pass


async def _trio_noop() -> None:
    pass


def _spawn_cases(n: int) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
    async def asyncio_tg() -> None:
        async with asyncio.TaskGroup() as tg:
            for _ in range(n):
                tg.create_task(_noop())

    async def cohort_tg() -> None:
        async with cohort.TaskGroup() as g:
            for _ in range(n):
                g.spawn(_noop)

    async def cohort_tg_start_soon() -> None:
        async with cohort.TaskGroup() as g:
            for _ in range(n):
                g.start_soon(_noop)

    async def asyncio_gather() -> None:
        await asyncio.gather(*[_noop() for _ in range(n)])

    async def cohort_gather() -> None:
        await cohort.gather(*[_noop() for _ in range(n)])

    async def anyio_tg() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(_noop)

    return {
        "asyncio.TaskGroup": asyncio_tg,
        "cohort.TaskGroup(Gather)": cohort_tg,
        "cohort.TaskGroup(Gather).start_soon": cohort_tg_start_soon,
        "asyncio.gather": asyncio_gather,
        "cohort.gather": cohort_gather,
        "anyio task group": anyio_tg,
    }


def _trio_spawn(n: int) -> Callable[[], object]:
    async def nursery() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(_trio_noop)

    return lambda: trio.run(nursery)


# -- race ---------------------------------------------------------------------------


async def _win() -> int:
    await asyncio.sleep(0)
    return 1


async def _lose() -> int:
    await asyncio.sleep(3600)
    return 0


def _race_cases(k: int, races: int) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
    async def hand_written() -> None:
        for _ in range(races):
            tasks = [asyncio.create_task(_lose()) for _ in range(k - 1)]
            tasks.append(asyncio.create_task(_win()))
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            done.pop().result()

    async def cohort_race() -> None:
        for _ in range(races):
            await cohort.race(*[_lose() for _ in range(k - 1)], _win())

    async def cohort_first_wins() -> None:
        policy = cohort.FirstWins()
        for _ in range(races):
            async with cohort.TaskGroup(join=policy) as g:
                for _ in range(k - 1):
                    g.spawn(_lose)
                g.spawn(_win)

    async def anyio_run(fn: Any, result: list[int], scope: anyio.CancelScope) -> None:
        result.append(await fn())
        scope.cancel()

    async def anyio_race() -> None:
        for _ in range(races):
            result: list[int] = []
            async with anyio.create_task_group() as tg:
                for _ in range(k - 1):
                    tg.start_soon(anyio_run, _lose, result, tg.cancel_scope)
                tg.start_soon(anyio_run, _win, result, tg.cancel_scope)

    return {
        "asyncio.wait + cancel + gather": hand_written,
        "cohort.race": cohort_race,
        "cohort.TaskGroup(FirstWins)": cohort_first_wins,
        "anyio task group + cancel": anyio_race,
    }


def _quorum_cases(n: int, k: int) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
    """``k`` winners among ``n`` children (the rest never finish): the first ``k``
    results, the rest cancelled; by hand with ``asyncio.wait`` + cancel + gather."""

    async def hand_written() -> None:
        tasks = [asyncio.create_task(_lose()) for _ in range(n - k)]
        tasks += [asyncio.create_task(_win()) for _ in range(k)]
        results: list[int] = []
        pending: set[asyncio.Task[int]] = set(tasks)
        while len(results) < k:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            results += [t.result() for t in done]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def cohort_quorum() -> None:
        async with cohort.TaskGroup(join=cohort.FirstWins() if k == 1 else cohort.Quorum(k)) as g:
            for _ in range(n - k):
                g.spawn(_lose)
            for _ in range(k):
                g.spawn(_win)

    name = "FirstWins" if k == 1 else f"Quorum({k})"
    return {
        "asyncio.wait + cancel + gather": hand_written,
        f"cohort.TaskGroup({name})": cohort_quorum,
    }


def _trio_race(k: int, races: int) -> Callable[[], object]:
    async def lose() -> int:
        await trio.sleep(3600)
        return 0

    async def win() -> int:
        await trio.lowlevel.checkpoint()
        return 1

    async def run(fn: Any, result: list[int], scope: trio.CancelScope) -> None:
        result.append(await fn())
        scope.cancel()

    async def main() -> None:
        for _ in range(races):
            result: list[int] = []
            async with trio.open_nursery() as nursery:
                for _ in range(k - 1):
                    nursery.start_soon(run, lose, result, nursery.cancel_scope)
                nursery.start_soon(run, win, result, nursery.cancel_scope)

    return lambda: trio.run(main)


# -- scopes ------------------------------------------------------------------------


# Enter/exit: the bodies are empty on purpose, what is timed is entering and leaving.


def _scope_cases(uses: int) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
    async def asyncio_timeout() -> None:
        for _ in range(uses):
            async with asyncio.timeout(10):  # noqa: ASYNC100 (the enter/exit is what we time)
                pass

    async def cohort_move_on() -> None:
        for _ in range(uses):
            with cohort.move_on_after(10):
                pass

    async def cohort_fail() -> None:
        for _ in range(uses):
            with cohort.fail_after(10):
                pass

    async def anyio_move_on() -> None:
        for _ in range(uses):
            with anyio.move_on_after(10):  # noqa: ASYNC100 (the enter/exit is what we time)
                pass

    async def anyio_fail() -> None:
        for _ in range(uses):
            with anyio.fail_after(10):  # noqa: ASYNC100 (the enter/exit is what we time)
                pass

    return {
        "asyncio.timeout": asyncio_timeout,
        "cohort.move_on_after": cohort_move_on,
        "cohort.fail_after": cohort_fail,
        "anyio.move_on_after": anyio_move_on,
        "anyio.fail_after": anyio_fail,
    }


def _trio_scopes(uses: int) -> dict[str, Callable[[], object]]:
    async def move_on() -> None:
        for _ in range(uses):
            with trio.move_on_after(10):  # noqa: ASYNC100 (the enter/exit is what we time)
                pass

    async def fail() -> None:
        for _ in range(uses):
            with trio.fail_after(10):  # noqa: ASYNC100 (the enter/exit is what we time)
                pass

    return {
        "trio.move_on_after": lambda: trio.run(move_on),
        "trio.fail_after": lambda: trio.run(fail),
    }


# Deadline fires: a 0-second deadline around a wait that never ends on its own, so
# every use arms the timer, delivers the cancellation, unwinds the wait and turns
# it into a silent exit or a TimeoutError (caught here), as a timeout that runs out.


def _firing_cases(uses: int) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
    async def asyncio_timeout() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(uses):
            try:
                async with asyncio.timeout(0):
                    await loop.create_future()
            except TimeoutError:
                pass

    async def cohort_move_on() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(uses):
            with cohort.move_on_after(0):
                await loop.create_future()

    async def cohort_fail() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(uses):
            try:
                with cohort.fail_after(0):
                    await loop.create_future()
            except TimeoutError:
                pass

    async def anyio_move_on() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(uses):
            with anyio.move_on_after(0):
                await loop.create_future()

    async def anyio_fail() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(uses):
            try:
                with anyio.fail_after(0):
                    await loop.create_future()
            except TimeoutError:
                pass

    async def cohort_move_on_anyio_elsewhere() -> None:
        # A program that uses anyio somewhere: another task holds anyio state.
        release = asyncio.Event()

        async def hold() -> None:
            with anyio.CancelScope():
                await release.wait()

        holder = asyncio.create_task(hold())
        await asyncio.sleep(0)
        try:
            await cohort_move_on()
        finally:
            release.set()
            await holder

    return {
        "asyncio.timeout": asyncio_timeout,
        "cohort.move_on_after": cohort_move_on,
        "cohort.fail_after": cohort_fail,
        "cohort.move_on_after, anyio state in another task": cohort_move_on_anyio_elsewhere,
        "anyio.move_on_after": anyio_move_on,
        "anyio.fail_after": anyio_fail,
    }


def _trio_firing(uses: int) -> dict[str, Callable[[], object]]:
    async def move_on() -> None:
        for _ in range(uses):
            with trio.move_on_after(0):
                await trio.sleep_forever()

    async def fail() -> None:
        for _ in range(uses):
            try:
                with trio.fail_after(0):
                    await trio.sleep_forever()
            except trio.TooSlowError:
                pass

    return {
        "trio.move_on_after": lambda: trio.run(move_on),
        "trio.fail_after": lambda: trio.run(fail),
    }


# -- one fresh interpreter's run ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Section:
    title: str
    unit: str
    cases: Callable[[], dict[str, Callable[[], Coroutine[Any, Any, object]]]]
    extra: Callable[[], dict[str, Callable[[], object]]]
    rounds: int
    per: int
    warm: bool = True  # run every case once before the rounds


def _sections(quick: bool) -> list[_Section]:
    """What one run measures, in order, on one loop (trio rows: on trio's own loop).

    ``COHORT_BENCH_ONLY='K = (2|10)$|fires'`` keeps the sections whose title
    matches that regular expression, in any case (``spawn`` keeps "Spawn + join";
    for a few rows; a full run for the figures).
    """
    only = os.environ.get("COHORT_BENCH_ONLY")
    return [s for s in _all_sections(quick) if not only or re.search(only, s.title, re.I)]


def _all_sections(quick: bool) -> list[_Section]:
    out: list[_Section] = []
    # (N, rounds per run, spawns of N per round)
    sizes = [(1_000, 5, 5), (10_000, 3, 1)] if quick else [(1_000, 5, 10), (10_000, 3, 1)]
    if not quick:
        sizes.append((100_000, 2, 1))
    for n, rounds, repeat in sizes:
        # At 100k the smaller sizes have warmed the code already, and the anyio
        # group (5x and more at every size) would take half the run on its own.
        big = n >= 100_000
        out.append(
            _Section(
                f"Spawn + join, N = {n:,}",
                "per task",
                partial(_repeated_cases, n, repeat, skip=("anyio task group",) if big else ()),
                partial(lambda n, r: {"trio nursery": _repeat_sync(_trio_spawn(n), r)}, n, repeat),
                rounds,
                n * repeat,
                warm=not big,
            )
        )
    for k, races in [(2, 1000), (10, 200), (100, 40), (1000, 4)]:
        races = max(1, races // 2) if quick else races
        out.append(
            _Section(
                f"Race, K = {k:,}",
                "per race",
                partial(_race_cases, k, races),
                partial(lambda k, r: {"trio nursery + cancel": _trio_race(k, r)}, k, races),
                3 if quick else 5,
                races,
            )
        )
    for k in (1, 10):
        out.append(
            _Section(
                f"{'FirstWins' if k == 1 else f'Quorum({k})'} over 10,000 children",
                "per child",
                partial(_quorum_cases, 10_000, k),
                dict,
                3,
                10_000,
            )
        )
    uses = 2_000 if quick else 5_000
    rounds = 3 if quick else 5
    out.append(
        _Section(
            "Cancel scope enter/exit, empty body",
            "per use",
            partial(_scope_cases, uses),
            partial(_trio_scopes, uses),
            rounds,
            uses,
        )
    )
    out.append(
        _Section(
            "Cancel scope whose deadline fires (0 s, around a wait that never ends)",
            "per use",
            partial(_firing_cases, uses // 2),
            partial(_trio_firing, uses // 2),
            rounds,
            uses // 2,
        )
    )
    return out


def _repeated_cases(
    n: int, times: int, skip: tuple[str, ...] = ()
) -> dict[str, Callable[[], Coroutine[Any, Any, object]]]:
    cases = _spawn_cases(n).items()
    return {name: _repeat(fn, times) for name, fn in cases if name not in skip}


def _child(loop_name: str, quick: bool) -> dict[str, Any]:
    """One fresh interpreter: every section on one loop; CPU seconds per unit, per round."""
    factory = dict(loops())[loop_name]
    result: dict[str, Any] = {}
    for section in _sections(quick):
        cases = section.cases()
        extra = section.extra()
        runners = [asyncio.Runner(loop_factory=factory) for _ in cases]
        try:
            timed = [
                (name, _on(r, fn)) for r, (name, fn) in zip(runners, cases.items(), strict=True)
            ]
            if section.warm:  # imports, caches, first-use costs
                for _, fn in [*timed, *extra.items()]:
                    fn()
            results = compare(
                [*timed, *extra.items()],
                rounds=section.rounds,
                per=section.per,
                clock=time.process_time,
            )
            garbage = {name: cyclic_garbage(fn) for name, fn in timed}
        finally:
            for r in runners:
                r.close()
        result[section.title] = {
            "seconds": {r.name: r.seconds for r in results},
            "garbage": garbage,
        }
    return result


def _fresh_run(loop_name: str, quick: bool) -> dict[str, Any]:
    """Run ``_child`` in a new interpreter, with this interpreter's cohort."""
    src = str(Path(cohort.__file__).resolve().parents[1])
    env = dict(os.environ)
    paths = [src, str(Path(__file__).parents[1])]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    args = [sys.executable, "-m", "benchmarks.bench_core", loop_name, "quick" if quick else "full"]
    out = subprocess.run(
        args, check=True, capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1]
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


# -- report ------------------------------------------------------------------------


def _section_table(title: str, loop_name: str, unit: str, runs: list[dict[str, Any]]) -> str:
    """Per run: the median over its rounds (cost, and ratio paired per round with the
    first row); then over the runs: the median, the min-max of the runs' medians, and
    the min-max of every single round's ratio."""
    per_run = [run[title]["seconds"] for run in runs]
    names = list(per_run[0])
    base = names[0]
    lines = [
        f"## {title} ({loop_name})",
        "",
        f"| case | median {unit} | ratio, median of runs | min-max over runs | "
        "min-max over all rounds |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        costs = [statistics.median(r[name]) for r in per_run]
        ratios = [[t / b for t, b in zip(r[name], r[base], strict=True)] for r in per_run]
        medians = [statistics.median(x) for x in ratios]
        every = [x for run in ratios for x in run]
        lines.append(
            f"| {name} | {_fmt(statistics.median(costs))} | {statistics.median(medians):.2f}x "
            f"| {min(medians):.2f}-{max(medians):.2f} | {min(every):.2f}-{max(every):.2f} |"
        )
    garbage: dict[str, int] = {}
    for run in runs:
        for name, count in run[title]["garbage"].items():
            garbage[name] = max(garbage.get(name, 0), count)
    left = ", ".join(f"{name} {count:,}" for name, count in garbage.items())
    return "\n".join(lines) + f"\n\n- cyclic garbage left per round (most over the runs): {left}\n"


def _fmt(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.2f} us"


def main(quick: bool) -> str:
    runs = 2 if quick else RUNS
    loop_names = [name for name, _ in loops()]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in loop_names}
    for _ in range(runs):  # the loops' runs interleaved
        for name in loop_names:
            results[name].append(_fresh_run(name, quick))
    out = [
        "# Core: spawn+join, race, cancel scopes\n",
        "Versions: "
        + versions("cohort", "anyio", "trio", "uvloop")
        + f"; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs.\n",
        f"{runs} fresh interpreters per loop, run one after the other (the loops' runs "
        "interleaved); in each, every case runs once per round, rounds interleaved, timed in "
        "CPU time (`time.process_time`: on a shared machine wall time also counts other "
        "programs' turns). Ratios are paired per round against the first row (same loop, "
        "same round). Per run, the median over its rounds; then the median and min-max of "
        "the runs' medians, and the min-max of every single round's ratio (the cases that "
        "lose now and then). The trio rows run on trio's own loop and appear in both tables.\n",
    ]
    for name in loop_names:
        for section in _sections(quick):
            out.append(_section_table(section.title, name, section.unit, results[name]))
    return "\n".join(out)


def _repeat(
    fn: Callable[[], Coroutine[Any, Any, object]], times: int
) -> Callable[[], Coroutine[Any, Any, object]]:
    if times == 1:
        return fn

    async def repeated() -> None:
        for _ in range(times):
            await fn()

    return repeated


def _repeat_sync(fn: Callable[[], object], times: int) -> Callable[[], object]:
    def repeated() -> None:
        for _ in range(times):
            fn()

    return repeated


if __name__ == "__main__":  # one fresh interpreter's run: LOOP quick|full, JSON out
    print(json.dumps(_child(sys.argv[1], sys.argv[2] == "quick")))
