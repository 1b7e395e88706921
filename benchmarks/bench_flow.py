"""cohort.Flow: what a graph costs per node, against hand-written joins and orchestrators.

A 10-node diamond (one source, eight middle nodes, one sink joining them all),
every node an ``async def`` that returns at once, so the figures are the
graph's own cost. Against: the same joins written by hand with
``asyncio.TaskGroup``; Prefect 3 (``@flow``/``@task`` with ``.submit``) and
Hamilton's async driver on the same graph, in a fresh interpreter, where they
are installed (``pip install 'cohort[bench]'``; or set ``COHORT_PEERS_PYTHON``
to an interpreter that has them). Then the memory of 1,000 runs in flight.

Timed in CPU time (``time.process_time``: every node returns at once, so a run
never waits, and on a shared machine wall time also counts other processes).

Targets: cohort.Flow <= 1.5x the hand-written cohort.TaskGroup joins and
<= 2.0x the hand-written asyncio.TaskGroup joins, on each loop (median of the
paired per-round ratios; min-max is the spread), and nothing left for the
cycle collector by a finished run.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import os
import subprocess
import sys
import time
import tracemalloc
from typing import Any

from benchmarks._harness import compare, cyclic_garbage, loops, table

MIDDLE = 8
NODES = MIDDLE + 2
VS_TASKGROUP = 1.5  # target: Flow / hand-written cohort.TaskGroup
VS_ASYNCIO = 2.0  # target: Flow / hand-written asyncio.TaskGroup


def _functions(extra: dict[str, Any] | None = None, wait: bool = False) -> dict[str, Any]:
    """The diamond's node functions, each with exactly the parameters it is wired by."""
    hold = "    await gate.wait()\n" if wait else ""
    code = "async def source(x):\n    return x\n"
    for i in range(MIDDLE):
        code += f"async def m{i}(source):\n{hold}    return source + {i}\n"
    names = ", ".join(f"m{i}" for i in range(MIDDLE))
    code += f"async def sink({names}):\n    return {names.replace(', ', ' + ')}\n"
    namespace: dict[str, Any] = dict(extra or {})
    exec(code, namespace)
    return namespace


def build(name: str = "diamond", **extra: Any) -> Any:
    import cohort

    flow = cohort.Flow(name, inputs=["x"])
    functions = _functions(extra, wait="gate" in extra)
    for node in ["source", *(f"m{i}" for i in range(MIDDLE)), "sink"]:
        flow.node(functions[node])
    return flow


async def _source(x: int) -> int:
    return x


async def _middle(v: int, i: int) -> int:
    return v + i


async def _sink(values: list[int]) -> int:
    return sum(values)


async def hand_written(x: int) -> int:
    """The diamond's joins written with ``asyncio.TaskGroup``."""
    s = await _source(x)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_middle(s, i)) for i in range(MIDDLE)]
    return await _sink([t.result() for t in tasks])


async def hand_written_cohort(x: int) -> int:
    """The same joins with ``cohort.TaskGroup``, as a cohort user would write them."""
    import cohort

    s = await _source(x)
    async with cohort.TaskGroup() as g:
        for i in range(MIDDLE):
            g.spawn(_middle, s, i)
    return await _sink(g.results)


def _runs(fn: Any, runs: int, new_loop: Any) -> Any:
    def go() -> None:
        loop = new_loop()
        try:

            async def many() -> None:
                for i in range(runs):
                    await fn(i)

            loop.run_until_complete(many())
        finally:
            loop.close()

    return go


def _memory(in_flight: int) -> float:
    """Bytes per run with ``in_flight`` runs waiting in their middle nodes."""

    async def measure() -> float:
        gate = asyncio.Event()
        hold = build("held", gate=gate)
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        tasks = [asyncio.ensure_future(hold.run(x=i)) for i in range(in_flight)]
        for _ in range(5):
            await asyncio.sleep(0)
        used = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        gate.set()
        await asyncio.gather(*tasks)
        return used / in_flight

    return asyncio.run(measure())


_PEERS = r"""
import asyncio, json, sys, time, logging, os
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
out = {}
runs = int(sys.argv[1])
try:
    from hamilton import async_driver
    import types
    mod = types.ModuleType("diamond_nodes")
    code = "async def source(x: int) -> int:\n    return x\n"
    for i in range(8):
        code += f"async def m{i}(source: int) -> int:\n    return source + {i}\n"
    code += "async def sink(" + ", ".join(f"m{i}: int" for i in range(8)) + ") -> int:\n"
    code += "    return " + " + ".join(f"m{i}" for i in range(8)) + "\n"
    exec(code, mod.__dict__)
    sys.modules["diamond_nodes"] = mod
    async def ham():
        dr = await async_driver.Builder().with_modules(mod).build()
        await dr.execute(["sink"], inputs={"x": 0})
        t0 = time.perf_counter()
        for i in range(runs):
            await dr.execute(["sink"], inputs={"x": i})
        return (time.perf_counter() - t0) / runs
    out["hamilton"] = asyncio.run(ham())
except ImportError:
    pass
try:
    from prefect import flow, task
    from prefect.testing.utilities import prefect_test_harness
    logging.disable(logging.CRITICAL)
    @task
    def source(x): return x
    @task
    def middle(v, i): return v + i
    @task
    def sink(values): return sum(values)
    @flow
    def diamond(x):
        s = source.submit(x)
        ms = [middle.submit(s, i) for i in range(8)]
        return sink.submit(ms).result()
    with prefect_test_harness():
        diamond(0)
        t0 = time.perf_counter()
        n = max(1, runs // 50)
        for i in range(n):
            diamond(i)
        out["prefect"] = (time.perf_counter() - t0) / n
except ImportError:
    pass
print(repr(out))
"""


def _peers(runs: int) -> dict[str, float]:
    python = os.environ.get("COHORT_PEERS_PYTHON", sys.executable)
    try:
        done = subprocess.run(
            [python, "-c", _PEERS, str(runs)],
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        return {}
    return dict(ast.literal_eval(done.stdout.strip().splitlines()[-1]))


def _verdict(ratios: list[float], target: float) -> str:
    """``ratios`` (sorted, one per round) as the median, its spread and the verdict."""
    median = ratios[len(ratios) // 2]
    verdict = "met" if median <= target else "MISSED"
    return f"**{median:.2f}x** ({ratios[0]:.2f}-{ratios[-1]:.2f}), target <= {target:g}x: {verdict}"


def main(quick: bool) -> str:
    rounds = 3 if quick else 7
    runs = 1_000 if quick else 10_000
    flow = build()

    async def cohort_run(x: int) -> int:
        return int((await flow.run(x=x))["sink"])

    out = [
        "# Flow: a 10-node diamond per run",
        "",
        f"{os.cpu_count()} CPUs; {runs:,} runs per round, medians over {rounds} interleaved "
        "rounds; every node returns at once; CPU time of this process.",
        "",
    ]
    flow_per_run = None
    for loop_name, new_loop in loops():
        res = compare(
            [
                ("hand-written cohort.TaskGroup joins", _runs(hand_written_cohort, runs, new_loop)),
                ("hand-written asyncio.TaskGroup joins", _runs(hand_written, runs, new_loop)),
                ("cohort.Flow.run", _runs(cohort_run, runs, new_loop)),
            ],
            rounds=rounds,
            per=runs,
            clock=time.process_time,
        )
        case = res[2]
        vs_group = sorted(case.ratios)
        vs_asyncio = sorted(f / a for f, a in zip(case.seconds, res[1].seconds, strict=True))
        per_node = case.median / NODES
        flow_per_run = flow_per_run or case.median
        out.append(table(f"one run of the diamond ({loop_name})", res, "per run"))
        out += [
            f"- cohort.Flow per node: **{per_node * 1e6:.1f} us**",
            "- flow / hand-written cohort.TaskGroup: " + _verdict(vs_group, VS_TASKGROUP),
            "- flow / hand-written asyncio.TaskGroup: " + _verdict(vs_asyncio, VS_ASYNCIO),
            "",
        ]
    garbage = [
        cyclic_garbage(_runs(fn, 100, asyncio.new_event_loop))
        for fn in (cohort_run, hand_written_cohort)
    ]
    out += [
        f"Objects left for the cycle collector by 100 runs on a new loop: cohort.Flow "
        f"{garbage[0]}, hand-written cohort.TaskGroup {garbage[1]} (a run's own objects "
        "are freed by reference counting).",
        "",
    ]
    peers = _peers(200 if quick else 1000)
    python = os.environ.get("COHORT_PEERS_PYTHON", sys.executable)
    out += [
        "## Against orchestrators (same graph, fresh interpreter)",
        "",
        f"Run by {python}; Prefect with its test harness (a temporary local server), "
        "Hamilton's async driver built once and executed per run.",
        "",
    ]
    if not peers:
        out += ["Prefect and Hamilton are not installed here (`pip install 'cohort[bench]'`).", ""]
    assert flow_per_run is not None
    for name, per_run in sorted(peers.items()):
        times = per_run / flow_per_run
        verdict = "met" if times >= 100 else "MISSED"
        out.append(
            f"- {name}: {per_run * 1e3:.2f} ms per run, **{times:,.0f}x** cohort.Flow's "
            f"(target >= 100x: {verdict})"
        )
    out.append("")
    per_run_bytes = _memory(100 if quick else 1000)
    out += [
        f"## Memory: {100 if quick else 1000:,} runs in flight (every middle node waiting)",
        "",
        f"**{per_run_bytes / 1024:.1f} KiB** per run (tracemalloc), {per_run_bytes / NODES:.0f} B "
        "per node.",
        "",
    ]
    return "\n".join(out)
