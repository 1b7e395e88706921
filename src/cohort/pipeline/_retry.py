"""The markers a stage function may return, and a stage call's timeout and retries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Generic, TypeVar, final

from cohort._core._retry import AttemptsFailed, Retry, run_attempts

__all__ = ["DROP", "AttemptsFailed", "DropType", "Many", "Retry", "call_with_policy"]

T = TypeVar("T")


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

    ``Many([])`` drops the item.

    Example:
        ```python
        @cohort.stage
        async def split(line: str) -> cohort.Many[str]:
            return cohort.Many(line.split())
        ```
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


async def call_with_policy(
    invoke: Callable[[Any], Awaitable[Any]],
    item: Any,
    timeout: float | None,
    retry: Retry | None,
    on_retry: Callable[[Exception, int], None] | None = None,
) -> Any:
    """``await invoke(item)`` with a per-attempt timeout (the stage's, else the
    policy's ``attempt_timeout``) and retries; raises ``AttemptsFailed``."""
    if timeout is None and retry is not None:
        timeout = retry.attempt_timeout
    return await run_attempts(retry, lambda: invoke(item), timeout, "the stage call", on_retry)
