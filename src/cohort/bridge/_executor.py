"""The one executor interface the bridge's backends share."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from typing import Any, Protocol, TypeVar, runtime_checkable

_T = TypeVar("_T")
_R = TypeVar("_R")


@runtime_checkable
class Executor(Protocol):
    """Runs CPU-bound calls somewhere else: ``ProcessPool`` locally, ``DaskExecutor`` on a cluster.

    ``run(fn, *args)`` returns ``fn(*args)``; ``map``/``imap`` apply ``fn`` to each item,
    batching small calls; ``aclose()`` releases the executor's resources. Cancelling a
    call stops waiting for it; whether the work itself stops is the backend's promise
    (``ProcessPool`` kills the worker; Dask does not, unless asked for a hard stop).
    """

    async def run(self, fn: Callable[..., _R], *args: Any) -> _R: ...

    def imap(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | AsyncIterable[_T],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> AsyncGenerator[_R, None]: ...

    async def map(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | AsyncIterable[_T],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> list[_R]: ...

    async def aclose(self) -> None: ...
