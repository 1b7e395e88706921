"""Core costs: spawn+join per task, race, and cancel-scope enter/exit.

* Spawn: N children (N = 1k, 10k, 100k) that return at once, spawned and
  joined in one group: ``cohort.TaskGroup`` (Gather), through ``spawn()`` and
  through ``start_soon()`` (no handle), against ``asyncio.TaskGroup`` (the
  baseline), ``asyncio.gather``, an anyio task group and a trio nursery.
  Cost per task.
* Race: K children (K = 10, 100, 1000), one wins after one loop turn, the
  others sleep and are cancelled and reaped: ``cohort.race`` and
  ``TaskGroup(join=FirstWins())`` against a hand-written
  ``asyncio.wait(FIRST_COMPLETED)`` + cancel + gather (the baseline), anyio
  and trio. Cost per race.
* Scopes: entering and leaving ``move_on_after``/``fail_after`` with an empty
  body, against ``asyncio.timeout`` (the baseline), anyio and trio. Cost per use.

Each asyncio-based case runs on the default loop and on uvloop (one table
each); trio runs on its own loop and appears in both tables, measured in the
same interleaved rounds. Targets: TaskGroup <= 1.15x asyncio.TaskGroup,
race <= 1.1x the hand-written version, scopes <= 1.0x asyncio.timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import trio

import cohort
from benchmarks._harness import LoopFactory, compare, cyclic_garbage, loops, table, versions

_Factory = LoopFactory


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


# The bodies are empty on purpose: what is timed is entering and leaving.


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


# -- running -----------------------------------------------------------------------


def _measure(
    title: str,
    unit: str,
    factory: _Factory,
    cases: dict[str, Callable[[], Coroutine[Any, Any, object]]],
    extra: dict[str, Callable[[], object]],
    rounds: int,
    per: int,
) -> str:
    runners = [asyncio.Runner(loop_factory=factory) for _ in cases]
    try:
        timed = [(name, _on(r, fn)) for r, (name, fn) in zip(runners, cases.items(), strict=True)]
        for _, fn in timed:  # warm-up: imports, caches, first-use costs
            fn()
        for fn in extra.values():
            fn()
        results = compare([*timed, *extra.items()], rounds=rounds, per=per)
        garbage = {name: cyclic_garbage(fn) for name, fn in timed}
    finally:
        for r in runners:
            r.close()
    left = ", ".join(f"{name} {count:,}" for name, count in garbage.items())
    return table(title, results, unit) + f"\n- cyclic garbage left per round: {left}\n"


def main(quick: bool) -> str:
    out = [
        "# Core: spawn+join, race, cancel scopes\n",
        "Versions: "
        + versions("cohort", "anyio", "trio", "uvloop")
        + "\n\nRatios are paired per round against the first row (same loop, same run).\n",
    ]
    sizes = [(1_000, 11, 5), (10_000, 5, 1)] if quick else [(1_000, 21, 20), (10_000, 9, 2)]
    if not quick:
        sizes.append((100_000, 3, 1))
    race_sizes = [(10, 200), (100, 40), (1000, 4)]
    race_rounds = 5 if quick else 15
    uses = 2_000 if quick else 10_000
    scope_rounds = 7 if quick else 21
    for loop_name, factory in loops():
        for n, rounds, repeat in sizes:
            cases = _spawn_cases(n)
            if repeat > 1:
                cases = {name: _repeat(fn, repeat) for name, fn in cases.items()}
            out.append(
                _measure(
                    f"Spawn + join, N = {n:,} ({loop_name})",
                    "per task",
                    factory,
                    cases,
                    {"trio nursery": _repeat_sync(_trio_spawn(n), repeat)},
                    rounds,
                    n * repeat,
                )
            )
        for k, races in race_sizes:
            if quick:
                races = max(1, races // 2)
            out.append(
                _measure(
                    f"Race, K = {k:,} ({loop_name})",
                    "per race",
                    factory,
                    _race_cases(k, races),
                    {"trio nursery + cancel": _trio_race(k, races)},
                    race_rounds,
                    races,
                )
            )
        out.append(
            _measure(
                f"Cancel scope enter/exit, empty body ({loop_name})",
                "per use",
                factory,
                _scope_cases(uses),
                _trio_scopes(uses),
                scope_rounds,
                uses,
            )
        )
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
