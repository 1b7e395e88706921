"""What a pipeline run reports: outputs, error records, counts and per-stage statistics.

Every source item ends exactly once as output(s), dropped, done (a sink took
it), failed, or cancelled, so ``read == succeeded + dropped + done + failed +
cancelled`` always holds (``Report.counts_add_up()``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["ErrorRecord", "Report", "StageStatistics", "StageStats"]

R = TypeVar("R")

# Latency samples kept per stage: enough for a stable p99, bounded whatever the run's length.
_SAMPLES = 4096


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One failed item: the value as it entered ``stage``, its source ``index``, the error."""

    item: Any
    index: int
    stage: str
    exception: BaseException
    attempts: int


@dataclass(frozen=True, slots=True)
class StageStatistics:
    """What one stage did in a run (``Report.stages``; ``StageStats`` is another name for it).

    ``items_in`` items entered it, ``items_out`` values left it (Many counts each
    value), ``failed`` items ended in error there, ``retried`` attempts were
    retries, ``dropped`` items it filtered out; latencies (seconds, per item, all
    attempts and backoff included) are estimated from a bounded sample; ``busy``
    is the summed time its workers spent in the stage's function.
    """

    name: str
    workers: int
    items_in: int
    items_out: int
    failed: int
    retried: int
    dropped: int
    latency_p50: float
    latency_p99: float
    busy: float


StageStats = StageStatistics
"""The earlier name of :class:`StageStatistics` (the same class), kept for existing code."""


@dataclass(frozen=True, slots=True)
class Report(Generic[R]):
    """The result of ``Pipeline.run`` (and ``stream(...).report``).

    ``outputs`` is the list of outputs (``None`` unless collected), in source
    order when every stage is ordered. The counts are per source item.
    """

    outputs: list[R] | None
    errors: list[ErrorRecord]
    read: int
    succeeded: int
    dropped: int
    done: int
    failed: int
    cancelled: int
    stages: tuple[StageStatistics, ...]
    elapsed: float
    extra: dict[str, Any] = field(default_factory=dict)

    def counts_add_up(self) -> bool:
        """True when every item read ended exactly once (always, unless cohort has a bug)."""
        ended = self.succeeded + self.dropped + self.done + self.failed + self.cancelled
        return ended == self.read

    def stage(self, name: str) -> StageStatistics:
        """The statistics of the stage called ``name``."""
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage named {name!r} in this report; stages: {self._names()}")

    def _names(self) -> list[str]:
        return [s.name for s in self.stages]

    def __str__(self) -> str:
        head = (
            f"read {self.read}: {self.succeeded} succeeded, {self.dropped} dropped, "
            f"{self.done} done, {self.failed} failed, {self.cancelled} cancelled "
            f"in {self.elapsed:.3f}s"
        )
        lines = [head]
        for s in self.stages:
            lines.append(
                f"  {s.name}: in {s.items_in} out {s.items_out} failed {s.failed} "
                f"retried {s.retried} dropped {s.dropped} "
                f"p50 {_ms(s.latency_p50)} p99 {_ms(s.latency_p99)} "
                f"busy {s.busy:.3f}s"
            )
        return "\n".join(lines)


class LatencySampler:
    """Systematic sampling in bounded memory: keep every ``stride``-th latency.

    When the buffer is full, every other sample is dropped and the stride doubles,
    so the kept samples stay spread evenly over the whole run.
    """

    __slots__ = ("_count", "_stride", "samples")

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stride = 1
        self._count = 0

    def add(self, latency: float) -> None:
        self._count += 1
        if self._count % self._stride:
            return
        samples = self.samples
        samples.append(latency)
        if len(samples) >= _SAMPLES:
            del samples[::2]
            self._stride *= 2

    def quantile(self, q: float) -> float:
        if not self.samples:
            return math.nan
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float) -> str:
    """Milliseconds, or ``-`` for a stage that timed no item (no latency to show)."""
    return "-" if seconds != seconds else f"{seconds * 1e3:.2f}ms"
