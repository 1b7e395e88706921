"""A child's coroutine before it is a task: made from ``fn(*args)`` (checked), retried
under ``spawn(retry=)``, closed if it never runs; the context it runs in; the clock
its times are read on."""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final

from cohort._core import _scopes
from cohort._observe._events import EVENTS

if TYPE_CHECKING:
    from cohort._core._group import TaskGroup
    from cohort._core._retry import Retry

__all__ = [
    "SPAWN_OPTIONS",
    "SpawnHook",
    "SpawnHookVar",
    "check_coro",
    "child_context",
    "clock_of",
    "close_coroutines",
    "coro_object",
    "detached_context",
    "retrying",
    "spawn_hook",
]

# The hook of an optional layer (cohort.durable). A layer that sets it is called
# with the group, the callable (or coroutine object) and the name given, before the
# coroutine is made, and answers the child's name and a function that wraps its
# coroutine.
SpawnHook = Callable[
    ["TaskGroup", object, "str | None"],
    tuple[str, Callable[[Coroutine[Any, Any, Any]], Coroutine[Any, Any, Any]]],
]
_hook_var: contextvars.ContextVar[SpawnHook | None] = contextvars.ContextVar(
    "cohort_spawn_hook", default=None
)


class SpawnHookVar:
    """The spawn hook's context variable (``get``/``set``/``reset`` as a ContextVar's).

    ``used`` turns True once a hook is set, and stays so: until then a child
    does not read the variable at all (``None``, the default, is its value).
    """

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = False

    def get(self) -> SpawnHook | None:
        return _hook_var.get()

    def set(self, hook: SpawnHook | None) -> contextvars.Token[SpawnHook | None]:
        if hook is not None:
            self.used = True
        return _hook_var.set(hook)

    def reset(self, token: contextvars.Token[SpawnHook | None]) -> None:
        _hook_var.reset(token)


spawn_hook: Final = SpawnHookVar()


def detached_context() -> contextvars.Context:
    """A copy of the current context for a task that may outlive this one: the
    application's variables stay (logging bindings...), cohort's deadlines and
    scopes do not apply there."""
    context = contextvars.copy_context()
    context.run(_detach)
    sink = EVENTS.sink
    if sink is not None:  # a tracer: the work starts a trace of its own, linked to this one
        context.run(sink.detached)
    return context


def _detach() -> None:
    _scopes._base_deadline.set(math.inf)
    _scopes._state_var.set(None)


def child_context(context: object, fn: object) -> contextvars.Context:
    """``spawn(context=)``: the context, checked, holding the deadline in force as the
    caller's, as a copy of the caller's would.

    It is set only where it differs: the caller's own running context (which
    cannot be entered again) already holds it.
    """
    if type(context) is not contextvars.Context:
        close_coroutines((fn,))
        raise TypeError(
            "context= takes a contextvars.Context (e.g. contextvars.copy_context()), "
            f"got {context!r}"
        )
    deadline = _scopes._base_deadline.get()
    if context.get(_scopes._base_deadline, math.inf) != deadline:
        context.run(_scopes._base_deadline.set, deadline)
    return context


def clock_of(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop.time``, or ``time.monotonic`` itself where that is all ``loop.time`` does.

    Children are timed on the loop's clock (a virtual clock included); calling
    the C function directly saves a Python method call per timestamp.
    """
    if type(loop).time is _base_time:
        return _monotonic
    return loop.time


_base_time: Final = asyncio.BaseEventLoop.time
_monotonic: Final = time.monotonic


SPAWN_OPTIONS = ("name", "timeout", "critical", "retry", "context")


def close_coroutines(items: Iterable[object]) -> None:
    """Close coroutine objects that will never run (no "never awaited" warning)."""
    for item in items:
        if asyncio.iscoroutine(item):
            item.close()


def coro_object(fn: Any, args: tuple[Any, ...]) -> Coroutine[Any, Any, Any]:
    """``spawn(coroutine_object)``: check it is one, and that no arguments came with it."""
    if not asyncio.iscoroutine(fn):
        raise TypeError(f"spawn() needs an async callable or a coroutine object, got {fn!r}")
    if args:
        fn.close()
        raise TypeError("spawn() got a coroutine object and arguments; pass fn, *args")
    return fn


def check_coro(fn: Any, coro: Any) -> Coroutine[Any, Any, Any]:
    """``fn(*args)`` did not return a plain coroutine: accept other coroutines only."""
    if asyncio.iscoroutine(coro):
        return coro
    raise TypeError(
        f"spawn() needs an async function: {fn!r} returned {type(coro).__name__}, "
        "not a coroutine (use `async def`, or cohort.to_process/to_thread for plain functions)"
    )


def retrying(
    fn: Any, args: tuple[Any, ...], policy: Retry
) -> tuple[Callable[[], Coroutine[Any, Any, Any]], tuple[()], list[int]]:
    """``spawn(fn, *args, retry=policy)``: the child calls ``fn(*args)`` again on failure."""
    from cohort._core._retry import Retry, attempt_all  # not imported with cohort
    from cohort._core._retry import _name as _retry_name

    if not isinstance(policy, Retry):
        close_coroutines((fn,))
        raise TypeError(f"retry must be a cohort.Retry, got {policy!r}")
    if not callable(fn):
        close_coroutines((fn,))
        raise TypeError(
            "spawn(retry=) needs an async callable and its arguments, not a coroutine "
            "object: a coroutine runs once"
        )
    tally = [0]
    what = _retry_name(fn)

    def child() -> Coroutine[Any, Any, Any]:
        return attempt_all(policy, lambda: fn(*args), what, tally)

    return child, (), tally
