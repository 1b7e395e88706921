"""Retry policy, per-attempt timeouts, and the markers a stage function may return."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, final

from cohort import _scopes
from cohort._validate import check_count, check_flag, check_seconds

__all__ = ["DROP", "DropType", "Many", "Retry"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry a failing stage call with exponential backoff and full jitter.

    ``attempts`` counts every try, the first included; the delay before retry
    n (n = 1, 2, ...) is ``backoff * 2**(n-1)``, capped by ``max_backoff``,
    and with ``jitter`` a uniform draw in ``[0, delay]``. Only exceptions that
    are instances of ``on`` are retried. A stage's ``timeout`` is per attempt.

    Example::

        @cohort.stage(timeout=2.0, retry=cohort.Retry(attempts=3, backoff=0.05))
        async def fetch(url: str) -> bytes: ...
    """

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float | None = None
    jitter: bool = True
    on: tuple[type[BaseException], ...] | type[BaseException] = (Exception,)

    def __post_init__(self) -> None:
        # attempts counts every try, the first included.
        check_count("Retry(attempts=)", self.attempts)
        check_seconds("Retry(backoff=)", self.backoff, inf=False)
        check_seconds("Retry(max_backoff=)", self.max_backoff, none=True)
        check_flag("Retry(jitter=)", self.jitter)
        on = self.on if isinstance(self.on, tuple) else (self.on,)
        if not on or not all(isinstance(t, type) and issubclass(t, BaseException) for t in on):
            raise TypeError(f"Retry(on=) takes exception classes, got {self.on!r}")
        object.__setattr__(self, "on", on)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the second attempt)."""
        # 2.0 ** 1023 is the largest power a float holds: past it the delay is inf, not an error.
        delay = self.backoff * 2.0 ** min(retry - 1, 1023) if self.backoff else 0.0
        if self.max_backoff is not None:
            delay = min(delay, self.max_backoff)
        return random.uniform(0, delay) if self.jitter else delay


@final
class DropType:
    """The type of ``cohort.DROP``, for annotations: a filter stage returns
    ``str | cohort.DropType``; composing and running pipelines drop it from
    the output type."""

    _instance: DropType | None = None

    def __new__(cls) -> DropType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "cohort.DROP"

    def __reduce__(self) -> str:
        return "DROP"


DROP: Final = DropType()
"""Return ``cohort.DROP`` from a stage to filter the item out (counted as dropped)."""


@final
class Many(Generic[T]):
    """Return ``cohort.Many(values)`` from a stage to emit several outputs for one input.

    ``Many([])`` drops the item. Example::

        @cohort.stage
        async def split(line: str) -> cohort.Many[str]:
            return cohort.Many(line.split())
    """

    __slots__ = ("values",)

    def __init__(self, values: Iterable[T]) -> None:
        if isinstance(values, str | bytes):
            raise TypeError(
                f"cohort.Many() got a {type(values).__name__}, which would emit one character "
                "per output; pass a list of them"
            )
        self.values: list[T] = list(values)

    def __repr__(self) -> str:
        return f"cohort.Many({self.values!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Many) and other.values == self.values

    def __hash__(self) -> int:
        return hash(tuple(self.values))


class ItemFailed(Exception):
    """Internal: the engine's view of a call that failed after ``attempts`` tries."""

    def __init__(self, exc: Exception, attempts: int) -> None:
        super().__init__(exc)
        self.exc = exc
        self.attempts = attempts


async def call_with_policy(
    invoke: Callable[[Any], Awaitable[Any]],
    item: Any,
    timeout: float | None,
    retry: Retry | None,
    on_retry: Callable[[Exception, int], None] | None = None,
) -> Any:
    """``await invoke(item)`` with a per-attempt timeout and retries; raises ``ItemFailed``."""
    attempt = 1
    retry_on: Any = retry.on if retry is not None else ()
    limit = retry.attempts if retry is not None else 1
    while True:
        error: Exception
        try:
            if timeout is None:
                return await invoke(item)
            async with asyncio.timeout(timeout):
                return await invoke(item)
        except Exception as exc:
            error = exc
        except asyncio.CancelledError as exc:
            stray = _scopes.stray(exc, "the stage call")
            if stray is None:
                raise  # the run is being cancelled
            error = stray
        if attempt >= limit or not isinstance(error, retry_on):
            raise ItemFailed(error, attempt) from None
        if on_retry is not None:
            on_retry(error, attempt)
        assert retry is not None
        await asyncio.sleep(retry.delay(attempt))
        attempt += 1
