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

    Both built-in executors also have ``share(obj)`` (a ``Shared`` handle for one
    big object that many calls read); it is not part of this protocol, so an
    executor of your own needs only the four methods here.
    """

    async def run(self, fn: Callable[..., _R], *args: Any) -> _R:
        """Run ``fn(*args)`` on the backend and return its result (re-raising its error)."""

    def imap(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | AsyncIterable[_T],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> AsyncGenerator[_R, None]:
        """Yield ``fn(item)`` for each item as results come (in input order unless
        ``ordered=False``); leaving the loop early cancels the calls still running.
        """

    async def map(
        self,
        fn: Callable[[_T], _R],
        iterable: Iterable[_T] | AsyncIterable[_T],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
    ) -> list[_R]:
        """``fn`` over every item; the results in input order (``ordered=False``:
        completion order).
        """

    async def aclose(self) -> None:
        """Release the executor's resources (workers, connections); idempotent."""
