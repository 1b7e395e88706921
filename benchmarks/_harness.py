"""Shared measuring code: interleaved repetitions, medians, spreads and paired ratios.

Every case of a comparison runs once per round, in the same process, rounds
interleaved, so drift (thermal, other load) hits all cases alike. Ratios are
taken per round against the baseline of that same round, then summarised.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    seconds: list[float]  # one per round, already divided by `per` (cost per unit)
    ratios: list[float]  # paired with the baseline's rounds

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def compare(
    cases: Sequence[tuple[str, Callable[[], object]]],
    *,
    rounds: int = 7,
    per: int = 1,
    baseline: str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[CaseResult]:
    """Time each case `rounds` times, interleaved; the first case is the baseline by default.

    Each callable runs one whole measurement (it may start its own event loop) and
    `per` divides its duration into a per-unit cost (per task, per call, per item).
    ``clock`` reads the time (``time.process_time`` counts this process's CPU only).
    """
    base = baseline or cases[0][0]
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(rounds):
        for name, fn in cases:
            gc.collect()
            t0 = clock()
            fn()
            times[name].append((clock() - t0) / per)
    return [
        CaseResult(name, ts, [t / b for t, b in zip(ts, times[base], strict=True)])
        for name, ts in times.items()
    ]


def cyclic_garbage(fn: Callable[[], object]) -> int:
    """Objects one run of ``fn`` leaves for the cycle collector.

    ``compare`` collects before each round, outside the timing, so a case that
    leaves reference cycles behind does not pay for their collection there;
    printing this count next to a table shows whether that flatters a case.
    """
    gc.collect()
    gc.disable()
    try:
        fn()
        return gc.collect()
    finally:
        gc.enable()


def _fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.2f} us"


def table(title: str, results: Sequence[CaseResult], unit: str = "per unit") -> str:
    """Render results: median and min-max cost, and the median (min-max) paired ratio."""
    lines = [f"## {title}", ""]
    lines.append(f"| case | median {unit} | min-max | ratio to baseline (median, min-max) |")
    lines.append("|---|---|---|---|")
    for r in results:
        ratio = statistics.median(r.ratios)
        lines.append(
            f"| {r.name} | {_fmt_seconds(r.median)} | "
            f"{_fmt_seconds(min(r.seconds))}-{_fmt_seconds(max(r.seconds))} | "
            f"{ratio:.2f}x ({min(r.ratios):.2f}-{max(r.ratios):.2f}) |"
        )
    return "\n".join(lines) + "\n"


def versions(*dists: str) -> str:
    """One line with the installed versions of the named distributions."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for d in dists:
        try:
            out.append(f"{d} {version(d)}")
        except PackageNotFoundError:
            out.append(f"{d} (not installed)")
    return ", ".join(out)


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def loops() -> list[tuple[str, LoopFactory]]:
    """The event loops every suite is measured on: asyncio's own, and uvloop if installed."""
    found: list[tuple[str, LoopFactory]] = [("asyncio", asyncio.new_event_loop)]
    try:
        import uvloop
    except ImportError:
        return found
    found.append(("uvloop", uvloop.new_event_loop))
    return found
