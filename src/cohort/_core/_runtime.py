"""``cohort.run``: ``asyncio.run`` that picks uvloop when it is installed.

The loop is chosen once per call: the ``uvloop`` argument when given, else
the environment variable ``COHORT_LOOP`` (``asyncio`` or ``uvloop``), else
uvloop if it can be imported and asyncio's default loop otherwise.

Ctrl-C ends a program the way the ``cohort`` command does: everything is
stopped, one short summary goes to stderr (with the partial report of each
pipeline the interrupt cut short), and the exit status is 130, instead of a
traceback through the loop's internals.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from types import FrameType
from typing import Any, Final, Literal, Never, TypeVar, TypeVarTuple

from cohort._core._group import close_coroutines
from cohort._observe._reasons import CancelReason
from cohort._validate import keywords_refused

__all__ = ["note_cut_short", "refuse_inside_a_loop", "run"]

EXIT_INTERRUPTED = 130
# What was cut short by cancellation inside the current cohort.run: shown if
# the run ends with Ctrl-C (bounded: a long-lived service cancels many runs).
_cut_short: ContextVar[deque[str] | None] = ContextVar("cohort_cut_short", default=None)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_ENV = "COHORT_LOOP"
_RUN_OPTIONS = ("uvloop", "debug", "on_interrupt")
_LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _uvloop_factory(required: bool, why: str) -> _LoopFactory | None:
    try:
        import uvloop
    except ImportError:
        if required:
            raise RuntimeError(
                f"cohort.run: uvloop was asked for ({why}) but it is not installed; "
                "`pip install uvloop`, or pass uvloop=None to fall back to asyncio's loop"
            ) from None
        return None
    factory: _LoopFactory = uvloop.new_event_loop
    return factory


def loop_factory(uvloop: bool | None = None) -> _LoopFactory | None:
    """The loop factory ``cohort.run`` would use (``None``: asyncio's default loop)."""
    if uvloop is True:
        return _uvloop_factory(True, "uvloop=True")
    if uvloop is False:
        return None
    if uvloop is not None:
        raise TypeError(f"uvloop must be True, False or None, got {uvloop!r}")
    choice = os.environ.get(_ENV, "").strip().lower()
    if choice == "asyncio":
        return None
    if choice == "uvloop":
        return _uvloop_factory(True, f"{_ENV}=uvloop")
    if choice:
        raise ValueError(f"{_ENV} must be 'asyncio' or 'uvloop' (or unset), got {choice!r}")
    return _uvloop_factory(False, "")


def run(
    main: Callable[[*Ts], Coroutine[Any, Any, T]] | Coroutine[Any, Any, T],
    *args: *Ts,
    uvloop: bool | None = None,
    debug: bool = False,
    on_interrupt: Literal["exit", "raise"] = "exit",
    **kwargs: Never,
) -> T:
    """Run ``main(*args)`` on a new event loop and return its result, like ``asyncio.run``.

    Uses uvloop when it is importable, unless ``uvloop=False`` or the
    environment says ``COHORT_LOOP=asyncio``; ``uvloop=True`` without uvloop
    installed raises ``RuntimeError``. ``main`` may also be a coroutine object
    (then without ``args``). At the end, the tasks still running are
    cancelled and async generators closed, as ``asyncio.run`` does.

    On Ctrl-C (``KeyboardInterrupt``) the main task is cancelled and awaited,
    so every group, pool worker and pipeline stops; then, with
    ``on_interrupt="exit"`` (the default), one summary line (and the partial
    report of each pipeline run the interrupt cut short) goes to stderr and
    ``SystemExit(130)`` is raised, as a shell expects of an interrupted
    program. ``on_interrupt="raise"`` re-raises the ``KeyboardInterrupt``.

    Example:
        ```python
        async def main(n: int) -> tuple[int, ...]:
            return await cohort.gather(*(work(i) for i in range(n)), limit=8)

        print(cohort.run(main, 100))
        ```
    """
    if kwargs:
        raise keywords_refused("cohort.run", main, args, kwargs, _RUN_OPTIONS)
    refuse_inside_a_loop("cohort.run", main)
    if on_interrupt not in ("exit", "raise"):
        close_coroutines((main,))
        raise ValueError(f'on_interrupt must be "exit" or "raise", got {on_interrupt!r}')
    if asyncio.iscoroutine(main):
        if args:
            main.close()
            raise TypeError("cohort.run() got a coroutine object and arguments; pass main, *args")
        coro = main
    elif callable(main):
        coro = main(*args)
        if not asyncio.iscoroutine(coro):
            raise TypeError(
                f"cohort.run() needs an async function: {main!r} returned "
                f"{type(coro).__name__}, not a coroutine"
            )
    else:
        raise TypeError(f"cohort.run() needs an async function or a coroutine, got {main!r}")
    try:
        factory = loop_factory(uvloop)
    except BaseException:
        coro.close()
        raise
    notes: deque[str] = deque(maxlen=4)
    token = _cut_short.set(notes)
    try:
        with _Runner(debug=debug, loop_factory=factory) as runner:
            return runner.run(coro)
    except KeyboardInterrupt:
        if on_interrupt == "raise":
            raise
        for note in notes:
            print(f"cohort: cut short: {note}", file=sys.stderr)
        print("cohort: interrupted (Ctrl-C); every task was stopped", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        _cut_short.reset(token)


SHUTDOWN: Final = CancelReason("shutdown", "the program was interrupted (Ctrl-C)")


# Runner is @final for type checkers only; its SIGINT handler is a method to override.
class _Runner(asyncio.Runner):  # type: ignore[misc]
    """``asyncio.Runner`` whose Ctrl-C cancels the main task with the reason ``shutdown``
    (the groups in it pass the reason on to their children)."""

    # asyncio.Runner's own state, which its stub leaves out.
    _interrupt_count: int
    _loop: asyncio.AbstractEventLoop | None

    def _on_sigint(
        self, signum: int, frame: FrameType | None, main_task: asyncio.Task[Any]
    ) -> None:
        # asyncio.Runner's own handler (3.11-3.13), the reason added to the cancel.
        self._interrupt_count += 1
        if self._interrupt_count == 1 and not main_task.done():
            main_task.cancel(SHUTDOWN)
            loop = self._loop
            if loop is not None:  # wake a loop blocked in select() with a long timeout
                loop.call_soon_threadsafe(_nothing)
            return
        raise KeyboardInterrupt()


def _nothing() -> None:
    pass


def refuse_inside_a_loop(where: str, main: object) -> None:
    """Raise ``RuntimeError`` if an event loop runs in this thread: ``where`` starts a
    loop of its own, which async code cannot do; ``main``, if a coroutine, is closed
    first (no "never awaited" warning)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    close_coroutines((main,))
    # A coroutine object's function, or the async function itself.
    name = getattr(main, "__name__", None) or "main"
    raise RuntimeError(
        f"{where}() was called inside a running event loop; it starts a loop of its own, "
        f"for the top of a program. In async code, write `await {name}(...)` instead"
    )


def note_cut_short(what: str) -> None:
    """Record a one-line account of work that cancellation cut short (a pipeline's
    partial report); ``cohort.run`` prints the latest few if the run ends on Ctrl-C."""
    notes = _cut_short.get()
    if notes is not None:
        notes.append(what)
