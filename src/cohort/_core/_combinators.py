"""One-shot helpers for the common shapes of concurrency, each a task group underneath.

``gather``, ``settle``, ``race``, ``quorum`` and ``hedge`` are a ``TaskGroup`` with the
matching join policy, so they fail, time out and cancel exactly as a group
does: when they return or raise, nothing they started is still running.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from types import CoroutineType
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, overload

from cohort._core import _scopes
from cohort._core._group import TaskGroup, close_coroutines
from cohort._core._policies import FirstWins, Quorum, Settle
from cohort._observe._events import emit
from cohort._validate import check_count, check_seconds, keywords_refused

if TYPE_CHECKING:
    from cohort._core._retry import Retry
    from cohort._resilience._hedge import HedgeBudget

__all__ = ["coroutines_of", "gather", "hedge", "quorum", "race", "settle"]

T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
T5 = TypeVar("T5")
T6 = TypeVar("T6")
Ts = TypeVarTuple("Ts")

# Policies keep no state of their own, so one instance serves every call.
_FIRST_WINS = FirstWins()
_CoroutineType = CoroutineType
_SETTLE = Settle()
_HEDGE_OPTIONS = ("delay", "attempts", "budget", "retry")


# -- awaitables in, nothing left un-awaited ---------------------------------------


async def _await(aw: Awaitable[T]) -> T:
    return await aw


def coroutines_of(aws: Iterable[object], where: str) -> list[Coroutine[Any, Any, Any]]:
    """Coroutines for the awaitables, all checked before any runs.

    On bad input every coroutine object given is closed before the error is
    raised, so a failed call leaves nothing un-awaited.
    """
    out: list[Coroutine[Any, Any, Any]] = []
    for i, aw in enumerate(aws):
        if type(aw) is _CoroutineType or asyncio.iscoroutine(aw):  # a coroutine: no call
            out.append(aw)
        elif inspect.isawaitable(aw):
            out.append(_await(aw))
        else:
            close_coroutines(out)
            close_coroutines(aws)
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
        close_coroutines(coros[spawned:])


def _new_group(coros: list[Coroutine[Any, Any, Any]], **options: Any) -> TaskGroup:
    try:
        return TaskGroup(**options)
    except BaseException:
        close_coroutines(coros)
        raise


# -- one-shot helpers ---------------------------------------------------------------


@overload
async def gather(
    a1: Awaitable[T1], /, *, limit: int | None = None, timeout: float | None = None
) -> tuple[T1]: ...


@overload
async def gather(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1, T2]: ...


@overload
async def gather(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1, T2, T3]: ...


@overload
async def gather(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    a4: Awaitable[T4],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1, T2, T3, T4]: ...


@overload
async def gather(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    a4: Awaitable[T4],
    a5: Awaitable[T5],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1, T2, T3, T4, T5]: ...


@overload
async def gather(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    a4: Awaitable[T4],
    a5: Awaitable[T5],
    a6: Awaitable[T6],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1, T2, T3, T4, T5, T6]: ...


@overload
async def gather(
    *aws: Awaitable[T], limit: int | None = None, timeout: float | None = None
) -> tuple[T, ...]: ...


async def gather(
    *aws: Awaitable[Any], limit: int | None = None, timeout: float | None = None, **kwargs: Any
) -> tuple[Any, ...]:
    """Run the awaitables concurrently; return their values in argument order, as a tuple.

    Fails like ``TaskGroup(Gather())``: the first failure cancels the rest and
    an ``ExceptionGroup`` of every failure is raised. ``limit`` caps how many
    run at once; ``timeout`` (seconds) cancels everything and raises
    ``TimeoutError``. Tasks and futures may be passed too (they are awaited,
    and cancelled if the gather is). Typed per argument, like ``asyncio.gather``:
    ``await gather(name(), age())`` is a ``tuple[str, int]``.

    Example:
        ```python
        pages = await cohort.gather(*(fetch(u) for u in urls), limit=10, timeout=5)
        ```
    """
    if kwargs:
        close_coroutines(aws)
        if "return_exceptions" in kwargs:
            raise TypeError(
                "cohort.gather() takes no return_exceptions=: it raises the failures. For "
                "every outcome, values and exceptions in argument order, write "
                "`await cohort.settle(...)` (same arguments, limit= and timeout= included)"
            )
        raise TypeError(
            f"cohort.gather() got unexpected keyword argument(s) {', '.join(map(repr, kwargs))}; "
            "its options are limit= and timeout= (arguments go to each call: gather(f(x, k=1)))"
        )
    coros = coroutines_of(aws, "gather")
    group = _new_group(coros, limit=limit, timeout=timeout, name="cohort.gather")
    await _run_group(group, coros)
    return tuple(group.results)


@overload
async def settle(
    a1: Awaitable[T1], /, *, limit: int | None = None, timeout: float | None = None
) -> tuple[T1 | Exception]: ...


@overload
async def settle(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1 | Exception, T2 | Exception]: ...


@overload
async def settle(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1 | Exception, T2 | Exception, T3 | Exception]: ...


@overload
async def settle(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    a4: Awaitable[T4],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1 | Exception, T2 | Exception, T3 | Exception, T4 | Exception]: ...


@overload
async def settle(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    a4: Awaitable[T4],
    a5: Awaitable[T5],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[T1 | Exception, T2 | Exception, T3 | Exception, T4 | Exception, T5 | Exception]: ...


@overload
async def settle(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    a4: Awaitable[T4],
    a5: Awaitable[T5],
    a6: Awaitable[T6],
    /,
    *,
    limit: int | None = None,
    timeout: float | None = None,
) -> tuple[
    T1 | Exception, T2 | Exception, T3 | Exception, T4 | Exception, T5 | Exception, T6 | Exception
]: ...


@overload
async def settle(
    *aws: Awaitable[T], limit: int | None = None, timeout: float | None = None
) -> tuple[T | Exception, ...]: ...


async def settle(
    *aws: Awaitable[Any], limit: int | None = None, timeout: float | None = None
) -> tuple[Any, ...]:
    """Run the awaitables concurrently; return every outcome in argument order, as a tuple.

    Each place holds the value, or the exception that awaitable raised: what
    ``asyncio.gather(..., return_exceptions=True)`` returns, except that a
    failure is always an ``Exception`` (one that ended with a stray
    ``CancelledError``, e.g. a task cancelled elsewhere, is a ``RuntimeError``
    with that ``CancelledError`` as its cause). A failure cancels nothing. It
    is ``TaskGroup(Settle())``: ``KeyboardInterrupt``/``SystemExit`` in a child
    still stop everything and are raised; ``limit`` caps how many run at once;
    ``timeout`` (seconds) or cancelling the caller cancels every awaitable and
    raises ``TimeoutError`` or ``CancelledError`` (no partial tuple). Typed per
    argument: ``await settle(name(), age())`` is a
    ``tuple[str | Exception, int | Exception]``.

    Example:
        ```python
        pages = await cohort.settle(*(fetch(u) for u in urls), limit=10)
        for url, page in zip(urls, pages, strict=True):
            if isinstance(page, Exception):
                print(f"{url} failed: {page!r}")
        ```
    """
    coros = coroutines_of(aws, "settle")
    group = _new_group(coros, join=_SETTLE, limit=limit, timeout=timeout, name="cohort.settle")
    await _run_group(group, coros)
    outcomes: list[Any] = []
    for handle in group.handles:
        error = handle.error
        outcomes.append(handle.result() if error is None else error)
    return tuple(outcomes)


@overload
async def race(a1: Awaitable[T1], a2: Awaitable[T2], /) -> T1 | T2: ...


@overload
async def race(a1: Awaitable[T1], a2: Awaitable[T2], a3: Awaitable[T3], /) -> T1 | T2 | T3: ...


@overload
async def race(
    a1: Awaitable[T1], a2: Awaitable[T2], a3: Awaitable[T3], a4: Awaitable[T4], /
) -> T1 | T2 | T3 | T4: ...


@overload
async def race(
    a1: Awaitable[T1], a2: Awaitable[T2], a3: Awaitable[T3], a4: Awaitable[T4], a5: Awaitable[T5], /
) -> T1 | T2 | T3 | T4 | T5: ...


@overload
async def race(
    a1: Awaitable[T1],
    a2: Awaitable[T2],
    a3: Awaitable[T3],
    a4: Awaitable[T4],
    a5: Awaitable[T5],
    a6: Awaitable[T6],
    /,
) -> T1 | T2 | T3 | T4 | T5 | T6: ...


@overload
async def race(*aws: Awaitable[T]) -> T: ...


async def race(*aws: Awaitable[Any]) -> Any:
    """Return the first successful value; the losers are cancelled and awaited first.

    A failure does not end the race: the next success still wins. When every
    awaitable failed, raises :class:`cohort.QuorumError` (an ``ExceptionGroup``
    of their errors).

    Example:
        ```python
        answer = await cohort.race(ask(primary), ask(backup))
        ```
    """
    coros = coroutines_of(aws, "race")
    if not coros:
        raise ValueError("race() needs at least one awaitable")
    # _run_group(_new_group(...)), inlined: a race is often small and frequent.
    spawned = 0
    try:
        async with TaskGroup(_FIRST_WINS, name="cohort.race") as group:
            for coro in coros:
                group.spawn(coro)
                spawned += 1
    except BaseException:
        close_coroutines(coros[spawned:])  # only those that never got a task
        raise
    return group.results[0]


async def quorum(k: int, *aws: Awaitable[T]) -> list[T]:
    """Return the first ``k`` successful values (completion order); cancel the rest.

    Raises :class:`cohort.QuorumError` as soon as ``k`` successes are out of
    reach, and ``ValueError`` at once if ``k`` is not between 1 and the number
    of awaitables.
    """
    coros = coroutines_of(aws, "quorum")
    try:
        k = _check_quorum(k, len(coros))
    except (TypeError, ValueError):
        close_coroutines(coros)
        raise
    group = _new_group(coros, join=Quorum(k), name="cohort.quorum")
    await _run_group(group, coros)
    return group.results


def _check_quorum(k: object, n: int) -> int:
    k = check_count("quorum(k, *aws): k", k, least=0)
    if not 1 <= k <= n:
        raise ValueError(
            f"quorum(k, *aws) needs an int k between 1 and the {n} awaitable(s) given, got k={k!r}"
        )
    return k


async def _retried(policy: Retry, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    from cohort._core._retry import _name as _retry_name
    from cohort._core._retry import attempt_all

    return await attempt_all(policy, lambda: fn(*args), _retry_name(fn))


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


@overload
async def hedge(
    fn: Callable[[*Ts], Awaitable[T]],
    *args: *Ts,
    delay: float,
    attempts: int = 2,
    budget: HedgeBudget | None = None,
    retry: Retry | None = None,
) -> T: ...
@overload
async def hedge(
    fn: Sequence[Callable[[], Awaitable[T]]],
    *,
    delay: float,
    budget: HedgeBudget | None = None,
    retry: Retry | None = None,
) -> T: ...
async def hedge(  # type: ignore[misc]  # mypy: a TypeVarTuple overload
    fn: Any,
    *args: Any,
    delay: Any,
    attempts: Any = None,
    budget: Any = None,
    retry: Any = None,
    **kwargs: Any,
) -> Any:
    """Call ``fn(*args)``; start another call after ``delay`` if none succeeded yet.

    Up to ``attempts`` calls overlap; the first success wins and the others are
    cancelled and awaited. A failed attempt starts the next one at once; a
    slow one starts it after ``delay`` seconds (counted from the latest start).
    When every attempt failed, raises :class:`cohort.QuorumError`. This cuts
    tail latency when asking interchangeable replicas.

    Given a sequence of argument-less async callables instead, attempt ``n``
    calls the ``n``-th (one attempt each): the way to ask a different replica
    per attempt.

    With ``budget=cohort.HedgeBudget(ratio)`` shared by all calls to a
    backend, each call deposits ``ratio`` and each attempt after the first
    needs one unit: an attempt the budget cannot pay for is not started (the
    call waits for the attempts it has), so hedging adds at most that
    fraction of load. With ``retry=cohort.Retry(...)`` each attempt is retried
    under that policy before it counts as failed.

    Example:
        ```python
        row = await cohort.hedge(read_replica, key, delay=0.05, attempts=3)
        row = await cohort.hedge([partial(read, r, key) for r in replicas], delay=0.05)
        ```
    """
    if kwargs:
        raise keywords_refused("cohort.hedge", fn, args, kwargs, _HEDGE_OPTIONS)
    calls: list[tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]]
    if isinstance(fn, Sequence) and not isinstance(fn, str | bytes):
        if args or attempts is not None:
            raise TypeError(
                "hedge() over a sequence of callables takes no arguments and no attempts= "
                "(one attempt per callable; bind arguments with functools.partial)"
            )
        if not fn:
            raise ValueError("hedge() needs at least one callable")
        for each in fn:
            if not callable(each):
                raise TypeError(f"hedge() needs async callables, got {each!r}")
        calls = [(each, ()) for each in fn]
    else:
        if not callable(fn):
            raise TypeError(f"hedge() needs an async callable, got {fn!r}")
        calls = [(fn, args)] * check_count("attempts", 2 if attempts is None else attempts)
    delay = check_seconds("delay", delay)
    if budget is not None:
        from cohort._resilience._hedge import HedgeBudget  # not imported with cohort

        if not isinstance(budget, HedgeBudget):
            raise TypeError(f"budget must be a cohort.HedgeBudget or None, got {budget!r}")
        budget.deposit()
    if retry is not None:
        from cohort._core._retry import Retry

        if not isinstance(retry, Retry):
            raise TypeError(f"retry must be a cohort.Retry or None, got {retry!r}")
        calls = [(_retried, (retry, call, call_args)) for call, call_args in calls]
    state = _Hedge()
    async with TaskGroup(join=_FIRST_WINS, name="cohort.hedge") as group:
        for n, (call, call_args) in enumerate(calls, start=1):
            if n > 1 and budget is not None and not budget.withdraw():
                emit("info", "hedge.budget_exhausted", attempt=n)
                break
            group.spawn(state.attempt, call, call_args, name=f"hedge-attempt-{n}")
            if n < len(calls):
                await state.next_turn(delay)
    return group.results[0]
