"""Helpers for the common shapes of concurrency, each one a task group underneath.

``gather``, ``race``, ``quorum`` and ``hedge`` are a ``TaskGroup`` with the
matching join policy, so they fail, time out and cancel exactly as a group
does: when they return or raise, nothing they started is still running.

``map`` and ``as_completed`` return a :class:`ResultStream`, an async
iterator whose calls run in a task group owned by a small driver task (a task
group cannot stay open across the consumer's ``yield`` points without
breaking the consumer's own scopes). The stream is also an async context
manager: leaving ``async with`` cancels and awaits every call still running,
so leaving a loop early is structured too.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Sized,
)
from types import TracebackType
from typing import Any, Generic, TypeVar, TypeVarTuple

from cohort import _scopes
from cohort._group import TaskGroup
from cohort._policies import FirstWins, Quorum, Settle
from cohort._validate import check_count, check_seconds

__all__ = ["ResultStream", "as_completed", "gather", "hedge", "map", "quorum", "race"]

T = TypeVar("T")
R = TypeVar("R")
Ts = TypeVarTuple("Ts")

_CancelledError = asyncio.CancelledError
# Policies keep no state of their own, so one instance serves every call.
_FIRST_WINS = FirstWins()
_SETTLE = Settle()


# -- awaitables in, nothing left un-awaited ---------------------------------------


async def _await(aw: Awaitable[T]) -> T:
    return await aw


def _close(items: Iterable[object]) -> None:
    """Close coroutine objects that will never run (no "never awaited" warning)."""
    for item in items:
        if asyncio.iscoroutine(item):
            item.close()


def _coros(aws: Iterable[object], where: str) -> list[Coroutine[Any, Any, Any]]:
    """Coroutines for the awaitables, all checked before any runs.

    On bad input every coroutine object given is closed before the error is
    raised, so a failed call leaves nothing un-awaited.
    """
    out: list[Coroutine[Any, Any, Any]] = []
    for i, aw in enumerate(aws):
        if asyncio.iscoroutine(aw):
            out.append(aw)
        elif inspect.isawaitable(aw):
            out.append(_await(aw))
        else:
            _close(out)
            _close(aws)
            raise TypeError(
                f"{where}() takes awaitables (coroutine objects, tasks, futures); "
                f"argument {i} is {aw!r}: call the async function, e.g. {where}(fetch(url))"
            )
    return out


async def _run_group(group: TaskGroup, coros: list[Coroutine[Any, Any, Any]]) -> None:
    spawned = 0
    try:
        async with group:
            for coro in coros:
                group.spawn(coro)
                spawned += 1
    finally:
        # Only when entering or spawning failed: close what never got a task.
        _close(coros[spawned:])


def _new_group(coros: list[Coroutine[Any, Any, Any]], **options: Any) -> TaskGroup:
    try:
        return TaskGroup(**options)
    except BaseException:
        _close(coros)
        raise


# -- one-shot helpers ---------------------------------------------------------------


async def gather(
    *aws: Awaitable[T], limit: int | None = None, timeout: float | None = None
) -> list[T]:
    """Run the awaitables concurrently; return their values in argument order.

    Fails like ``TaskGroup(Gather())``: the first failure cancels the rest and
    an ``ExceptionGroup`` of every failure is raised. ``limit`` caps how many
    run at once; ``timeout`` (seconds) cancels everything and raises
    ``TimeoutError``. Tasks and futures may be passed too (they are awaited,
    and cancelled if the gather is).

    Example::

        pages = await cohort.gather(*(fetch(u) for u in urls), limit=10, timeout=5)
    """
    coros = _coros(aws, "gather")
    group = _new_group(coros, limit=limit, timeout=timeout, name="cohort.gather")
    await _run_group(group, coros)
    return group.results


async def race(*aws: Awaitable[T]) -> T:
    """Return the first successful value; the losers are cancelled and awaited first.

    A failure does not end the race: the next success still wins. When every
    awaitable failed, raises :class:`cohort.QuorumError` (an ``ExceptionGroup``
    of their errors).

    Example::

        answer = await cohort.race(ask(primary), ask(backup))
    """
    coros = _coros(aws, "race")
    if not coros:
        raise ValueError("race() needs at least one awaitable")
    group = _new_group(coros, join=_FIRST_WINS, name="cohort.race")
    await _run_group(group, coros)
    return group.results[0]  # type: ignore[no-any-return]


async def quorum(k: int, *aws: Awaitable[T]) -> list[T]:
    """Return the first ``k`` successful values (completion order); cancel the rest.

    Raises :class:`cohort.QuorumError` as soon as ``k`` successes are out of
    reach, and ``ValueError`` at once if ``k`` is not between 1 and the number
    of awaitables.
    """
    coros = _coros(aws, "quorum")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(coros):
        _close(coros)
        raise ValueError(
            f"quorum(k, *aws) needs an int k between 1 and the {len(coros)} awaitable(s) "
            f"given, got k={k!r}"
        )
    group = _new_group(coros, join=Quorum(k), name="cohort.quorum")
    await _run_group(group, coros)
    return group.results


class _Hedge:
    """Counts failed attempts and wakes the body, which starts the next attempt."""

    __slots__ = ("failures", "waiter")

    def __init__(self) -> None:
        self.failures = 0
        self.waiter: asyncio.Future[None] | None = None

    async def attempt(self, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        try:
            return await fn(*args)
        except Exception:
            self.failures += 1
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            raise

    async def next_turn(self, delay: float) -> None:
        """Return after ``delay`` or as soon as an attempt has failed."""
        if not self.failures:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                with _scopes.move_on_after(delay):
                    await self.waiter
            finally:
                self.waiter = None
        if self.failures:
            self.failures -= 1


async def hedge(
    fn: Callable[[*Ts], Awaitable[T]], *args: *Ts, delay: float, attempts: int = 2
) -> T:
    """Call ``fn(*args)``; start another call after ``delay`` if none succeeded yet.

    Up to ``attempts`` calls overlap; the first success wins and the others are
    cancelled and awaited. A failed attempt starts the next one at once; a
    slow one starts it after ``delay`` seconds (counted from the latest start).
    When every attempt failed, raises :class:`cohort.QuorumError`. This cuts
    tail latency when asking interchangeable replicas.

    Example::

        row = await cohort.hedge(read_replica, key, delay=0.05, attempts=3)
    """
    if not callable(fn):
        raise TypeError(f"hedge() needs an async callable, got {fn!r}")
    attempts = check_count("attempts", attempts)
    delay = check_seconds("delay", delay)
    state = _Hedge()
    async with TaskGroup(join=_FIRST_WINS, name="cohort.hedge") as group:
        for n in range(1, attempts + 1):
            group.spawn(state.attempt, fn, args, name=f"hedge-attempt-{n}")
            if n < attempts:
                await state.next_turn(delay)
    return group.results[0]  # type: ignore[no-any-return]


# -- streams: map and as_completed ------------------------------------------------------

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
        self.finished = False  # the driver's group has exited
        self.over = False  # the consumer has seen the end (or an error)
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

    async def _drive(self) -> None:
        try:
            async with TaskGroup(join=_SETTLE, name=self.name) as group:
                self.group = group
                for _ in range(self.initial_workers):
                    self._spawn_worker()
        finally:
            self.finished = True
            if self.owns_items and self.iter is not None:
                _close(self.iter)
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
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise  # the stream is being stopped
                # The call raised CancelledError without being cancelled: an
                # error, or its item would silently go missing.
                error = RuntimeError(f"{self.name}: the call for item {index} was cancelled")
                error.__cause__ = exc
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
        cancelled = False
        while not driver.done():
            try:
                await asyncio.wait((driver,))
            except _CancelledError:
                cancelled = True
        if cancelled:
            raise _CancelledError
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
                _close(self.source)  # type: ignore[arg-type]
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

    Example::

        async with cohort.map(fetch, urls, limit=10) as pages:
            async for page in pages:
                if is_enough(page):
                    break          # the other fetches are cancelled and awaited here
    """

    __slots__ = ("_core", "_entered")

    def __init__(self, core: _StreamCore) -> None:
        self._core = core
        self._entered = False

    def __repr__(self) -> str:
        core = self._core
        state = "finished" if core.over else "running" if core.driver else "not started"
        return f"<ResultStream {core.name} {state}, pulled={core.pulled}, limit={core.limit}>"

    async def __aenter__(self) -> ResultStream[R]:
        if self._entered or self._core.driver is not None or self._core.over:
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
        if core.driver is None:
            core.start()
        while True:
            entry = core.take()
            if entry is not None:
                if entry[0]:
                    return entry[1]  # type: ignore[no-any-return]
                break  # a failure, at the point it would have been yielded
            if core.finished or core.failure is not None:
                await core.join()
                entry = core.take()
                if entry is not None and entry[0]:
                    return entry[1]  # type: ignore[no-any-return]
                break
            await core.wait()
        core.over = True
        await core.join()
        if core.failure is not None:
            raise core.error()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Cancel every call still running and wait for them; idempotent."""
        core = self._core
        core.over = True
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
) -> ResultStream[R]:
    """Call ``fn(item)`` for every item, at most ``limit`` at a time; iterate the results.

    Items are pulled from the iterable (sync or async) only when one of the
    ``limit`` slots is free, and a slot stays taken until its result has been
    consumed, so memory stays flat for millions of items. Results come in
    input order (``ordered=True``) or completion order. The first failure
    cancels every other call and is raised where its result would have been
    yielded. ``limit`` is required: there is no silent unbounded default.

    Example::

        async with cohort.map(fetch, urls, limit=10) as pages:
            async for page in pages:
                print(page)
    """
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

    Example::

        async with cohort.as_completed([probe(h) for h in hosts], limit=50) as replies:
            async for reply in replies:
                print(reply)
    """
    if asyncio.iscoroutine(aws) or not isinstance(aws, Iterable):
        _close([aws])
        raise TypeError(
            f"as_completed() takes an iterable of awaitables, got {aws!r}; "
            "write as_completed([a, b]) rather than as_completed(a, b)"
        )
    try:
        limit = check_count("limit", limit, none=True)
    except (TypeError, ValueError):
        _close(aws)
        raise
    coros = _coros(list(aws), "as_completed")
    cap = _NO_LIMIT if limit is None else limit
    workers = (min(cap, len(coros)),) * 2
    core = _StreamCore(None, coros, cap, False, "cohort.as_completed", True, workers)
    return ResultStream(core)
