"""Awaiting pipelines run by run: every run a fresh interpreter, cohort against hand-written.

The pipeline of ``bench_pipeline``'s awaiting case (3 stages x 4 workers, each
stage awaiting ``asyncio.sleep(0)`` once per item) over ``iter(range(N))``,
outputs not kept. Each run is a fresh interpreter, so whatever a run settles
into (how a stage's workers take their items) is measured run by run rather
than averaged away inside one process. Runs are interleaved: in each round the
hand-written ``asyncio.Queue`` pipeline, cohort ordered and cohort unordered
run one after another, and each cohort run is divided by the hand-written run
of its own round.

The clock starts after the imports (a 10-item run first), so that only the
runs are compared. Reported per case and size: every run's time per item and ratio, their
median, min, max and max/min, and each run's peak RSS.

Targets: every run <= 0.9x the hand-written time, max/min <= 1.2 across runs,
the same peak RSS at both sizes.
Usage: ``python -m benchmarks pipeline_modes`` (``--quick``: 3 runs, smaller N).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap

_CASES = ("hand-written asyncio.Queue", "cohort (defaults: ordered)", "cohort (unordered)")

_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, time
    sys.path.insert(0, {root!r})
    from benchmarks.bench_pipeline import a1, a2, a3, cohort_pipe, hand_written

    case, n = sys.argv[1], int(sys.argv[2])
    if case != "hand":  # imports done (and compiled) before the clock starts
        pipe = cohort_pipe((a1, a2, a3), ordered=case == "ordered")
        asyncio.run(pipe.run(range(10)))
    t0, c0 = time.perf_counter(), time.process_time()
    if case == "hand":
        asyncio.run(hand_written(n, [a1, a2, a3]))
    else:
        report = asyncio.run(pipe.run(iter(range(n)), collect=False))
        assert report.succeeded == n, report
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    print(seconds, cpu, int(hwm.split()[1]))
    """
)


def _run(case: str, n: int) -> tuple[float, float, int]:
    """One fresh interpreter: (seconds per item, CPU seconds per item, peak RSS in KiB)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT.format(root=root), case, str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, cpu, rss = done.stdout.split()
    return float(seconds) / n, float(cpu) / n, int(rss)


def _row(name: str, ts: list[float], base: list[float], rss: str) -> str:
    ratios = [t / b for t, b in zip(ts, base, strict=True)]
    return (
        f"| {name} | {' '.join(f'{t * 1e6:.1f}' for t in ts)} "
        f"| {statistics.median(ts) * 1e6:.2f} | {min(ts) * 1e6:.2f}-{max(ts) * 1e6:.2f} "
        f"| {max(ts) / min(ts):.2f} | {' '.join(f'{r:.2f}' for r in ratios)} "
        f"| {max(ratios):.2f}x | {rss} |"
    )


def _size(n: int, runs: int) -> str:
    keys = ("hand", "ordered", "unordered")
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    rss: dict[str, list[int]] = {k: [] for k in keys}
    for _ in range(runs):
        for k in keys:
            t, c, r = _run(k, n)
            wall[k].append(t)
            cpu[k].append(c)
            rss[k].append(r)
    lines = [
        f"## 3 stages awaiting sleep(0) x 4 workers, {n:,} items, "
        f"{runs} fresh interpreters each, interleaved",
        "",
        "Wall time, then CPU time of the process (less disturbed by other load).",
        "",
        "| case | us per item, run by run | median | min-max | max/min "
        "| ratio to hand-written, run by run | worst ratio | peak RSS (max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, name in zip(keys, _CASES, strict=True):
        lines.append(_row(name, wall[k], wall["hand"], f"{max(rss[k]) / 1024:.1f} MiB"))
    for k, name in zip(keys, _CASES, strict=True):
        lines.append(_row(f"{name}, CPU", cpu[k], cpu["hand"], ""))
    return "\n".join(lines) + "\n"


def main(quick: bool) -> str:
    runs = 3 if quick else 10
    sizes = (10_000, 100_000) if quick else (100_000, 1_000_000)
    parts = ["# Awaiting pipelines, one fresh interpreter per run", ""]
    parts += [_size(n, runs) for n in sizes]
    return "\n".join(parts)


if __name__ == "__main__":
    print(main("--quick" in sys.argv))
