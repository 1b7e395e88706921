"""``map`` and ``as_completed``: calls whose results are iterated as they come.

Both return a :class:`ResultStream`, an async iterator whose calls run in a
task group owned by a small driver task (a task group cannot stay open across
the consumer's ``yield`` points without breaking the consumer's own scopes).
The stream is also an async context manager: leaving ``async with`` cancels
and awaits every call still running, so leaving a loop early is structured too.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import sys
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sized,
)
from types import TracebackType
from typing import Any, Generic, Never, TypeVar

from cohort._core import _scopes
from cohort._core._combinators import coroutines_of
from cohort._core._group import TaskGroup, close_coroutines
from cohort._core._policies import Settle
from cohort._validate import check_count, keywords_refused

__all__ = ["ResultStream", "as_completed", "map"]

T = TypeVar("T")
R = TypeVar("R")

_CancelledError = asyncio.CancelledError
_SETTLE = Settle()


class _Life(enum.IntEnum):
    """A stream's life; it only moves forward."""

    NEW = 0  # not started: no driver yet
    RUNNING = 1  # the driver's group runs the calls
    FINISHED = 2  # the driver's group has exited; results may wait to be taken
    OVER = 3  # the consumer has seen the end or an error, or closed the stream


_NO_LIMIT = sys.maxsize


class _StreamCore:
    """The state shared by the driver task, the workers and the consumer.

    Workers pull an item only when fewer than ``limit`` items are in flight
    (pulled but not yet taken by the consumer), so a slow consumer stops the
    pulling and memory stays flat. The core never refers to the
    :class:`ResultStream` facade, so dropping the facade can cancel the work.
    """

    def __init__(
        self,
        call: Callable[[Any], Awaitable[Any]] | None,
        source: Iterable[Any] | AsyncIterable[Any],
        limit: int,
        ordered: bool,
        name: str,
        owns_items: bool,
        workers: tuple[int, int],
    ) -> None:
        self.call = call
        self.name = name
        self.limit = limit
        self.ordered = ordered
        self.owns_items = owns_items  # items are our coroutine objects: close the unused
        # Workers started at once, and at most; a source of unknown length
        # starts with one worker and grows one per item pulled, up to `limit`.
        self.initial_workers, self.max_workers = workers
        self.aiter: AsyncIterator[Any] | None = None
        self.iter: Iterator[Any] | None = None
        self.source = source
        self.lock: asyncio.Lock | None = None
        self.pulled = 0
        self.in_flight = 0
        self.workers = 0
        self.exhausted = False
        self.ready: deque[tuple[bool, Any]] = deque()
        self.ready_at: dict[int, tuple[bool, Any]] = {}
        self.next_index = 0
        self.failure: BaseException | None = None
        self.extra_failures: list[BaseException] = []
        self.slot_waiters: deque[asyncio.Future[None]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.group: TaskGroup | None = None
        self.driver: asyncio.Task[None] | None = None
        self.life = _Life.NEW
        self.reported = False  # the driver's own error was raised to the consumer

    # -- driver and workers (run in the driver's task group) ----------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        source = self.source
        if isinstance(source, AsyncIterable):
            self.aiter = aiter(source)
            self.lock = asyncio.Lock()
        else:
            self.iter = iter(source)
        # The calls see the consumer's deadline in current_deadline().
        context = contextvars.copy_context()
        context.run(_scopes._base_deadline.set, _scopes.current_deadline())
        self.driver = loop.create_task(self._drive(), name=self.name, context=context)
        self.life = _Life.RUNNING

    def advance(self, life: _Life) -> None:
        if life > self.life:
            self.life = life

    @property
    def over(self) -> bool:
        return self.life is _Life.OVER

    async def _drive(self) -> None:
        try:
            async with TaskGroup(join=_SETTLE, name=self.name) as group:
                self.group = group
                for _ in range(self.initial_workers):
                    self._spawn_worker()
        finally:
            self.advance(_Life.FINISHED)
            if self.owns_items and self.iter is not None:
                close_coroutines(self.iter)
            self._wake()

    def _spawn_worker(self) -> None:
        assert self.group is not None
        self.workers += 1
        self.group.spawn(self._work, name=f"{self.name}-worker-{self.workers}")

    async def _work(self) -> None:
        call = self.call
        while not self.exhausted and self.failure is None:
            while self.in_flight >= self.limit:
                slot = asyncio.get_running_loop().create_future()
                self.slot_waiters.append(slot)
                await slot
            it = self.iter
            try:
                item = next(it) if it is not None else await self._pull()
            except (StopIteration, StopAsyncIteration):
                self.exhausted = True
                return
            except Exception as exc:
                self._fail(self.pulled, exc)
                return
            index = self.pulled
            self.pulled += 1
            self.in_flight += 1
            if self.workers < self.max_workers:
                self._spawn_worker()
            try:
                value = await (item if call is None else call(item))
            except Exception as exc:
                self._fail(index, exc)
                return
            except _CancelledError as exc:
                error = _scopes.stray(exc, f"{self.name}: the call for item {index}")
                if error is None:
                    raise  # the stream is being stopped
                self._fail(index, error)
                return
            self._deliver(index, (True, value))

    async def _pull(self) -> Any:
        assert self.aiter is not None
        assert self.lock is not None
        async with self.lock:  # an async generator cannot be advanced concurrently
            if self.exhausted or self.failure is not None:
                raise StopAsyncIteration
            return await anext(self.aiter)

    def _deliver(self, index: int, entry: tuple[bool, Any]) -> None:
        if self.ordered:
            self.ready_at[index] = entry
        else:
            self.ready.append(entry)
        self._wake()

    def _fail(self, index: int, exc: BaseException) -> None:
        if self.failure is not None:
            self.extra_failures.append(exc)
            return
        self.failure = exc
        self._deliver(index, (False, exc))
        if self.group is not None:
            self.group.cancel()  # every other call stops; the group exits normally

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- consumer side ---------------------------------------------------------

    def take(self) -> tuple[bool, Any] | None:
        if self.ordered:
            entry = self.ready_at.pop(self.next_index, None)
            if entry is not None:
                self.next_index += 1
        else:
            entry = self.ready.popleft() if self.ready else None
        if entry is not None and entry[0]:
            self.in_flight -= 1
            waiters = self.slot_waiters
            while waiters:
                slot = waiters.popleft()
                if not slot.done():
                    slot.set_result(None)
                    break
        return entry

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    async def join(self) -> None:
        """Wait until the driver (and so every call) has finished, even if cancelled meanwhile."""
        driver = self.driver
        assert driver is not None
        interrupted = await _scopes.wait_finished(driver)
        if interrupted is not None:
            raise interrupted
        if not self.reported and not driver.cancelled() and driver.exception() is not None:
            self.reported = True  # raise it once, not again from aclose()
            raise driver.exception()  # type: ignore[misc]

    def error(self) -> BaseException:
        failure = self.failure
        assert failure is not None
        if self.extra_failures:
            shown = ", ".join(repr(e) for e in self.extra_failures[:3])
            failure.add_note(
                f"{self.name}: {len(self.extra_failures)} more call(s) failed while the rest "
                f"was being cancelled: {shown}"
            )
            self.extra_failures.clear()
        return failure

    def abandon(self) -> None:
        """The facade was dropped: cancel the work (it cannot be awaited from here)."""
        driver = self.driver
        if driver is None:
            if self.owns_items:
                close_coroutines(self.source)  # type: ignore[arg-type]
        elif not driver.done() and not driver.get_loop().is_closed():
            driver.cancel()


class ResultStream(AsyncIterator[R], Generic[R]):
    """The results of :func:`cohort.map` or :func:`cohort.as_completed`.

    An async iterator, and an async context manager that makes early exit
    structured: leaving ``async with`` (normally, by ``break``, by an error)
    cancels every call still running and waits for it. ``aclose()`` does the
    same. A bare ``async for`` is fine when it runs to the end or an error
    ends it; after a ``break`` without ``async with`` the calls still running
    are cancelled when the stream is garbage-collected, but not awaited.

    Example:
        ```python
        async with cohort.map(fetch, urls, limit=10) as pages:
            async for page in pages:
                if is_enough(page):
                    break          # the other fetches are cancelled and awaited here
        ```
    """

    __slots__ = ("_core", "_entered")

    def __init__(self, core: _StreamCore) -> None:
        self._core = core
        self._entered = False

    def __repr__(self) -> str:
        core = self._core
        state = {_Life.NEW: "not started", _Life.RUNNING: "running"}.get(core.life, "finished")
        return f"<ResultStream {core.name} {state}, pulled={core.pulled}, limit={core.limit}>"

    async def __aenter__(self) -> ResultStream[R]:
        if self._entered or self._core.life is not _Life.NEW:
            raise RuntimeError(f"{self!r} has already been started; enter a stream only once")
        self._entered = True
        self._core.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ResultStream[R]:
        if self._core.over:
            # A second `async for` over a spent stream would silently see nothing.
            raise RuntimeError(
                f"{self!r} was already iterated to its end or closed; "
                f"call {self._core.name}() again for a new stream"
            )
        return self

    async def __anext__(self) -> R:
        core = self._core
        if core.over:
            raise StopAsyncIteration
        if core.life is _Life.NEW:
            core.start()
        while True:
            entry = core.take()
            if entry is not None:
                if entry[0]:
                    return entry[1]  # type: ignore[no-any-return]
                break  # a failure, at the point it would have been yielded
            if core.life >= _Life.FINISHED or core.failure is not None:
                await core.join()
                entry = core.take()
                if entry is not None and entry[0]:
                    return entry[1]  # type: ignore[no-any-return]
                break
            await core.wait()
        core.advance(_Life.OVER)
        await core.join()
        if core.failure is not None:
            raise core.error()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel every call still running and wait for them; idempotent."""
        core = self._core
        core.advance(_Life.OVER)
        driver = core.driver
        if driver is None:
            core.abandon()
            return
        if not driver.done():
            driver.cancel()
        await core.join()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None and not core.over:
            core.abandon()


def map(
    fn: Callable[[T], Awaitable[R]],
    iterable: Iterable[T] | AsyncIterable[T],
    *,
    limit: int,
    ordered: bool = True,
    **kwargs: Never,
) -> ResultStream[R]:
    """Call ``fn(item)`` for every item, at most ``limit`` at a time; iterate the results.

    Items are pulled from the iterable (sync or async) only when one of the
    ``limit`` slots is free, and a slot stays taken until its result has been
    consumed, so memory stays flat for millions of items. Results come in
    input order (``ordered=True``) or completion order. The first failure
    cancels every other call and is raised where its result would have been
    yielded. ``limit`` is required: there is no silent unbounded default.

    Example:
        ```python
        async with cohort.map(fetch, urls, limit=10) as pages:
            async for page in pages:
                print(page)
        ```
    """
    if kwargs:
        raise keywords_refused("cohort.map", fn, (), kwargs, ("limit", "ordered"), ", items")
    if not callable(fn):
        raise TypeError(f"map() needs an async callable, got {fn!r}")
    limit = check_count("limit", limit)
    if not isinstance(iterable, Iterable | AsyncIterable):
        raise TypeError(f"map() needs an iterable or async iterable of items, got {iterable!r}")
    # Known length: start the workers at once; else grow one per item pulled.
    workers = (min(limit, len(iterable)),) * 2 if isinstance(iterable, Sized) else (1, limit)
    core = _StreamCore(fn, iterable, limit, bool(ordered), "cohort.map", False, workers)
    return ResultStream(core)


def as_completed(aws: Iterable[Awaitable[T]], *, limit: int | None = None) -> ResultStream[T]:
    """Run the awaitables concurrently and iterate their values as they complete.

    ``aws`` is read in full at the call. With ``limit``, at most that many
    run (or wait to be consumed) at once. A failure cancels the rest and is
    raised where its value would have been yielded. Awaitables not started
    when the stream ends are closed, so none is left un-awaited.

    Example:
        ```python
        async with cohort.as_completed([probe(h) for h in hosts], limit=50) as replies:
            async for reply in replies:
                print(reply)
        ```
    """
    if asyncio.iscoroutine(aws) or not isinstance(aws, Iterable):
        close_coroutines([aws])
        raise TypeError(
            f"as_completed() takes an iterable of awaitables, got {aws!r}; "
            "write as_completed([a, b]) rather than as_completed(a, b)"
        )
    try:
        limit = check_count("limit", limit, none=True)
    except (TypeError, ValueError):
        close_coroutines(aws)
        raise
    coros = coroutines_of(list(aws), "as_completed")
    cap = _NO_LIMIT if limit is None else limit
    workers = (min(cap, len(coros)),) * 2
    core = _StreamCore(None, coros, cap, False, "cohort.as_completed", True, workers)
    return ResultStream(core)
