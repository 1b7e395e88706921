"""A stage's options, checked once: what the engine needs to run it (besides its call)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from numbers import Real
from typing import Any, Literal

from cohort._validate import check_count, check_flag, check_seconds
from cohort.bridge import Executor
from cohort.pipeline._retry import Retry

__all__ = ["OnError", "StageOptions"]

# Finished items an ordered stage may hold back behind a slow one (with the default buffer).
DEFAULT_WINDOW = 256

OnError = Literal["raise", "skip"] | Callable[[Any, BaseException], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class StageOptions:
    """The options of a stage, validated once (see ``stage`` for their meaning)."""

    name: str
    workers: int = 1
    buffer: int | None = None
    timeout: float | None = None
    retry: Retry | None = None
    on_error: OnError = "raise"
    ordered: bool = True
    batch: int | None = None
    batch_timeout: float | None = None
    cpu: bool = False
    executor: Executor | None = None
    max_errors: int | None = None
    max_error_rate: float | None = None

    def __post_init__(self) -> None:
        check_count("workers", self.workers)
        check_count("buffer", self.buffer, none=True)
        check_seconds("timeout", self.timeout, none=True, zero=False)
        check_flag("ordered", self.ordered)
        check_flag("cpu", self.cpu)
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"a stage's name must be a non-empty str, got {self.name!r}")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise TypeError(f"retry= takes cohort.Retry(...), got {self.retry!r}")
        if not (self.on_error in ("raise", "skip") or callable(self.on_error)):
            raise ValueError(
                f'on_error must be "raise", "skip" or a callable (item, exception), '
                f"got {self.on_error!r}"
            )
        if check_count("batch", self.batch, none=True) is not None:
            assert self.batch is not None
            if self.buffer is not None and self.buffer < self.batch:
                raise ValueError(
                    f"buffer={self.buffer} is smaller than batch={self.batch}: "
                    "a full batch could never wait in the queue; raise buffer or omit it"
                )
        if self.batch_timeout is not None:
            if self.batch is None:
                raise ValueError("batch_timeout= needs batch=n: it flushes a partial batch")
            check_seconds("batch_timeout", self.batch_timeout)
        if self.executor is not None and not isinstance(self.executor, Executor):
            raise TypeError(f"executor= takes a cohort.Executor, got {self.executor!r}")
        check_count("max_errors", self.max_errors, least=0, none=True)
        rate = self.max_error_rate
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, Real):
                raise TypeError(f"max_error_rate is a fraction in [0, 1) or None, got {rate!r}")
            if not 0 <= rate < 1:
                raise ValueError(f"max_error_rate is a fraction in [0, 1), got {rate!r}")

    @property
    def capacity(self) -> int:
        """Items the stage's input queue holds (default: twice its workers, or batches)."""
        if self.buffer is not None:
            return self.buffer
        return 2 * self.workers * (self.batch or 1)

    @property
    def window(self) -> int:
        """Bound of the reorder window, in items: buffer + workers (in batches if batching),
        and at least ``DEFAULT_WINDOW`` when ``buffer`` is left to its default.

        Stages that await take one item at a time; with a window of a few items
        every slow item stalls the other workers, who then wait their turn one
        wake-up at a time (measured: 3 stages that each await once per item ran
        1.3x the time of a hand-written asyncio.Queue pipeline with a 12-item
        window, 0.6-0.8x with 128). Stages whose calls only yield to the loop
        take chunks of at most a worker's share of the window: 256 lets 4
        workers take 64 items each (0.95x that pipeline's CPU time with 128,
        0.85x with 256).
        """
        window = self.capacity + self.workers * (self.batch or 1)
        if self.buffer is None and self.batch is None:
            return max(window, DEFAULT_WINDOW)
        return window
