"""A virtual clock for asyncio: time jumps to the next timer when nothing can run.

The loop is an ordinary ``asyncio.SelectorEventLoop`` whose ``time()`` is a
number it owns. Whenever the loop would block in ``select()`` waiting for the
next timer, it polls the real selector once (I/O and thread wake-ups still
work) and, if nothing is ready, moves its clock forward to that timer instead
of sleeping. Timeouts of an hour take no real time, and durations measured
with ``loop.time()`` are exact, so tests can assert them.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Never, TypeVar

from cohort._core._runtime import refuse_inside_a_loop
from cohort._validate import keywords_refused

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

_T = TypeVar("_T")

__all__ = ["VirtualClockLoop", "VirtualClockPolicy", "run", "wait_all_tasks_blocked"]


class _JumpingSelector(selectors.BaseSelector):
    """Delegates to a real selector but turns idle waits into clock jumps."""

    def __init__(self, loop: VirtualClockLoop, inner: selectors.BaseSelector) -> None:
        self._loop = loop
        self._inner = inner

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._inner.select(0)
        if ready or timeout == 0:
            return ready
        loop = self._loop
        if loop._wake_blocked_waiters():
            return []
        threshold = loop.autojump_threshold
        if timeout is None:
            # No timer is pending: only I/O or another thread can wake us.
            return self._inner.select(None)
        if threshold > 0:
            ready = self._inner.select(min(timeout, threshold))
            if ready:
                return ready
        loop._jump(timeout, len(self._inner.get_map()))
        return []

    def close(self) -> None:
        self._inner.close()

    def get_key(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._inner.get_map()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on virtual time.

    Args:
        start: the clock's initial reading.
        autojump_threshold: real seconds to wait for I/O before jumping the
            clock (0 jumps as soon as nothing is runnable, which is what pure
            timing tests want; raise it when real processes or sockets must
            answer before a timeout).

    Example:
        ```python
        loop = VirtualClockLoop()
        loop.run_until_complete(asyncio.sleep(3600))   # returns at once
        assert loop.time() == 3600
        ```
    """

    def __init__(self, *, start: float = 0.0, autojump_threshold: float = 0.0) -> None:
        self._virtual_now = float(start)
        self.autojump_threshold = autojump_threshold
        self._blocked_waiters: list[asyncio.Future[None]] = []
        # Jumps made while a socket or pipe of the program was registered (waiting
        # for I/O that had not come within autojump_threshold): how many, and the
        # last one (from, to, file descriptors waited on).
        self._io_jumps = 0
        self._last_io_jump = (0.0, 0.0, 0)
        super().__init__(selectors.DefaultSelector())
        inner: selectors.BaseSelector = self._selector  # type: ignore[has-type]
        self._own_fds = len(inner.get_map())  # the loop's self-pipe, registered already
        self._selector = _JumpingSelector(self, inner)
        if autojump_threshold < 0:
            self.close()
            raise ValueError(f"autojump_threshold must be >= 0, got {autojump_threshold!r}")

    def time(self) -> float:
        """The virtual clock: seconds that jump forward whenever nothing can run."""
        return self._virtual_now

    def _advance(self, seconds: float) -> None:
        self._virtual_now += seconds
        scheduled: list[asyncio.TimerHandle] = getattr(self, "_scheduled", [])
        if scheduled:
            # Land exactly on the timer, free of float rounding in now + (when - now).
            self._virtual_now = max(self._virtual_now, scheduled[0].when())

    def _jump(self, seconds: float, registered: int) -> None:
        """Jump to the next timer, ``seconds`` away, with ``registered`` file
        descriptors in the selector (the loop's own included)."""
        start = self._virtual_now
        self._advance(seconds)
        waiting = registered - self._own_fds
        if waiting > 0:  # a socket or pipe had nothing for us: time jumped past it
            self._io_jumps += 1
            self._last_io_jump = (start, self._virtual_now, waiting)

    def _io_jump_count(self) -> int:
        return self._io_jumps

    def _explain_timeout(self, exc: BaseException, since: int) -> None:
        jumps = self._io_jumps - since
        timeout = isinstance(exc, TimeoutError) or (
            isinstance(exc, BaseExceptionGroup) and exc.subgroup(TimeoutError) is not None
        )
        if jumps <= 0 or not timeout or _NOTE_MARK in "".join(getattr(exc, "__notes__", ())):
            return
        start, end, waiting = self._last_io_jump
        exc.add_note(
            f"{_NOTE_MARK}: the virtual clock jumped {jumps} time(s) while the loop waited on "
            f"real I/O ({waiting} socket(s) or pipe(s) with nothing to read or write), the "
            f"last from {start:g} s to {end:g} s: a deadline can expire there before the I/O "
            "arrives. If it needs real time (a server, a subprocess, a network call), raise "
            f"autojump_threshold (now {self.autojump_threshold:g}), the real seconds to wait "
            "for I/O before the clock jumps: "
            "@pytest.mark.virtual_clock(autojump_threshold=0.5) "
            "or cohort.testing.run(..., autojump_threshold=0.5)"
        )

    def advance(self, seconds: float) -> None:
        """Move the clock forward by hand (timers due by then fire on the next iteration)."""
        if seconds < 0:
            raise ValueError(f"cannot move the clock backwards ({seconds!r} s)")
        self._virtual_now += seconds

    def _wake_blocked_waiters(self) -> bool:
        waiters, self._blocked_waiters = self._blocked_waiters, []
        woke = False
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
                woke = True
        return woke


class VirtualClockPolicy(asyncio.DefaultEventLoopPolicy):
    """An event loop policy whose new loops run on virtual time."""

    def __init__(self, *, autojump_threshold: float = 0.0) -> None:
        super().__init__()
        self._threshold = autojump_threshold

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A new :class:`VirtualClockLoop`."""
        return VirtualClockLoop(autojump_threshold=self._threshold)


def io_jumps(loop: VirtualClockLoop) -> int:
    """How many times the clock jumped while the loop waited on real I/O."""
    return loop._io_jump_count()


def explain_timeout(loop: VirtualClockLoop, exc: BaseException, since: int = 0) -> None:
    """Add a note to ``exc`` if it is a timeout (or a group holding one) and the clock
    jumped while the loop waited on real I/O (more than ``since`` such jumps so far):
    the deadline may have expired only because that I/O was not given real time."""
    loop._explain_timeout(exc, since)


_NOTE_MARK = "cohort.testing"


async def wait_all_tasks_blocked() -> None:
    """Return once every other task is blocked (before the virtual clock jumps).

    Orders events in tests without sleeping: after it returns, every task
    that could make progress without time passing or I/O arriving has done so.
    Only on a ``VirtualClockLoop``.
    """
    loop = asyncio.get_running_loop()
    if not isinstance(loop, VirtualClockLoop):
        raise RuntimeError(
            f"wait_all_tasks_blocked() needs a VirtualClockLoop, the running loop is {loop!r}; "
            "run the test with cohort.testing.run() or the virtual_clock marker"
        )
    fut: asyncio.Future[None] = loop.create_future()
    loop._blocked_waiters.append(fut)
    await fut


def run(
    main: Callable[..., Coroutine[Any, Any, _T]],
    *args: Any,
    autojump_threshold: float = 0.0,
    debug: bool = False,
    **kwargs: Never,
) -> _T:
    """Run ``main(*args)`` to completion on a fresh virtual-clock loop and return its result."""
    if kwargs:
        raise keywords_refused(
            "cohort.testing.run", main, args, kwargs, ("autojump_threshold", "debug")
        )
    refuse_inside_a_loop("cohort.testing.run", main)
    with asyncio.Runner(
        debug=debug,
        loop_factory=lambda: VirtualClockLoop(autojump_threshold=autojump_threshold),
    ) as runner:
        try:
            return runner.run(main(*args))
        except BaseException as exc:
            loop = runner.get_loop()
            if isinstance(loop, VirtualClockLoop):
                explain_timeout(loop, exc)
            raise
