"""``Watchdog``: a thread that reports an event loop which stopped running.

The loop runs a heartbeat callback every half threshold, which stamps the
time; a daemon thread sleeps until the last stamp is one threshold old and,
if no newer stamp came meanwhile, takes the stack of the loop's
thread (``sys._current_frames()``) and reports it once for that stall: to a
callback, to cohort's structured events (``loop.stall``) and to the
``cohort.watchdog`` logger. The thread works while the loop is blocked, which
is the point: a coroutine that calls ``time.sleep`` or spins in C code is
caught in the act.

With ``hang_after``, the heartbeat also looks, on the loop, for logical hangs:
tasks waiting on the same thing for longer than ``hang_after`` seconds of the
loop's clock (``cohort.hang_report()``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType, TracebackType

from cohort._observe._events import emit
from cohort._observe._hangs import HangReport, HangTracker
from cohort._validate import check_callable, check_flag, check_seconds

__all__ = ["StallReport", "Watchdog", "watchdog"]

_log = logging.getLogger("cohort.watchdog")
_KEPT = 100  # reports kept on the watchdog (the oldest are dropped)
_STDLIB = sysconfig.get_paths()["stdlib"]


@dataclass(frozen=True, slots=True)
class StallReport:
    """What the watchdog saw when the loop had not run for longer than its threshold."""

    stalled_for: float
    """Seconds since the loop last ran the heartbeat, when the stall was seen."""
    threshold: float
    """The watchdog's threshold in seconds."""
    stack: tuple[str, ...]
    """The loop thread's stack, outermost first, one ``file:line in function`` each."""

    @property
    def where(self) -> str:
        """Where the loop's thread is blocked: the innermost frame outside the
        standard library (the innermost frame if all are in it)."""
        for entry in reversed(self.stack):
            if not entry.startswith(_STDLIB) or "site-packages" in entry:
                return entry
        return self.stack[-1] if self.stack else "(the loop's thread has no Python frame)"

    def __str__(self) -> str:
        lines = [
            f"event loop stalled for {self.stalled_for:.3f}s "
            f"(threshold {self.threshold:.3f}s), blocked at {self.where}"
        ]
        lines += [f"  {entry}" for entry in self.stack]
        return "\n".join(lines)


def _stack(frame: FrameType | None) -> tuple[str, ...]:
    summary = traceback.extract_stack(frame) if frame is not None else []
    return tuple(f"{f.filename}:{f.lineno} in {f.name}" for f in summary)


class Watchdog:
    """Reports a stalled event loop (with the blocking frame) and, optionally, logical hangs.

    Opt-in, one per loop: ``async with cohort.Watchdog(0.1):`` around the
    program's main body, or ``start()``/``stop()`` where no block fits (a
    framework's startup and shutdown hooks). Both need the loop running.

    Args:
        threshold: seconds without the loop running before a stall is reported.
        on_stall: called with a :class:`StallReport`, once per stall, in the
            watchdog's thread (the loop is blocked, it cannot run it).
        hang_after: also report tasks that wait on the same thing for longer
            than this many seconds of the loop's clock (None: do not look).
        on_hang: called on the loop with the :class:`HangReport` of the
            waits found hung; each hung wait is reported once.
        clock: the thread's clock (``time.monotonic``); tests inject one.
        log: also log each report on the ``cohort.watchdog`` logger (warning).
    """

    def __init__(
        self,
        threshold: float = 0.1,
        *,
        on_stall: Callable[[StallReport], object] | None = None,
        hang_after: float | None = None,
        on_hang: Callable[[HangReport], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        log: bool = True,
    ) -> None:
        self.threshold = check_seconds("Watchdog threshold", threshold, zero=False, inf=False)
        self.hang_after = check_seconds(
            "Watchdog hang_after", hang_after, none=True, zero=False, inf=False
        )
        self._on_stall = check_callable("Watchdog on_stall", on_stall, none=True)
        self._on_hang = check_callable("Watchdog on_hang", on_hang, none=True)
        self._clock = check_callable("Watchdog clock", clock)
        self._log = check_flag("Watchdog log", log)
        self._every = self.threshold / 2  # the heartbeat's period
        self.stalls: collections.deque[StallReport] = collections.deque(maxlen=_KEPT)
        """The latest stall reports (at most 100)."""
        self.hangs: collections.deque[HangReport] = collections.deque(maxlen=_KEPT)
        """The latest hang reports (at most 100)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._beat = 0.0  # the clock at the last heartbeat (written on the loop)
        self._reported = -1.0  # the heartbeat stamp of the stall last reported
        self._timer: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tracker = HangTracker(self.hang_after) if self.hang_after is not None else None
        self._next_look = 0.0

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"<cohort.Watchdog {state} threshold={self.threshold}>"

    @property
    def running(self) -> bool:
        """Whether the watchdog watches a loop now."""
        return self._thread is not None

    def start(self) -> Watchdog:
        """Start watching the running loop (call it on the loop's thread); returns self."""
        if self._thread is not None:
            raise RuntimeError(f"{self!r} is already running; stop() it before start()")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "Watchdog.start() watches the running loop: call it from a coroutine "
                "(or use `async with cohort.Watchdog(...)`)"
            ) from None
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._beat = self._clock()
        self._reported = -1.0
        self._stop.clear()
        self._next_look = loop.time() + (self.hang_after or 0.0) / 2
        self._timer = loop.call_later(self._every, self._heartbeat)
        self._thread = threading.Thread(target=self._watch, name="cohort-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching and join the thread; a stopped watchdog may be started again."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        thread.join()

    async def __aenter__(self) -> Watchdog:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- on the loop ----------------------------------------------------------------

    def _heartbeat(self) -> None:
        self._beat = self._clock()
        loop = self._loop
        if loop is None or self._thread is None:
            return
        self._timer = loop.call_later(self._every, self._heartbeat)
        tracker = self._tracker
        if tracker is not None and loop.time() >= self._next_look:
            self._next_look = loop.time() + tracker.hang_after / 2
            report = tracker.look(loop)
            if report is not None:
                self._deliver_hang(report)

    def _deliver_hang(self, report: HangReport) -> None:
        self.hangs.append(report)
        emit("warning", "loop.hang", report=str(report))
        if self._log:
            _log.warning("%s", report)
        if self._on_hang is not None:
            try:
                self._on_hang(report)
            except Exception:
                _log.exception("Watchdog on_hang callback raised")

    # -- in the thread --------------------------------------------------------------

    def _watch(self) -> None:
        # Sleep until the last heartbeat is one threshold old: with heartbeats every
        # half threshold, the thread wakes about once per threshold while all is well.
        threshold = self.threshold
        while True:
            beat = self._beat
            late = self._clock() - beat
            if late > threshold and beat != self._reported:
                self._reported = beat
                frame = sys._current_frames().get(self._loop_thread)
                report = StallReport(late, threshold, _stack(frame))
                del frame
                self._deliver_stall(report)
            pause = threshold - late if late <= threshold else threshold / 2
            if self._stop.wait(pause + threshold / 64):
                return

    def _deliver_stall(self, report: StallReport) -> None:
        self.stalls.append(report)
        emit("warning", "loop.stall", stalled_for=report.stalled_for, where=report.where)
        if self._log:
            _log.warning("%s", report)
        if self._on_stall is not None:
            try:
                self._on_stall(report)
            except Exception:
                _log.exception("Watchdog on_stall callback raised")


def watchdog(
    threshold: float = 0.1,
    *,
    on_stall: Callable[[StallReport], object] | None = None,
    hang_after: float | None = None,
    on_hang: Callable[[HangReport], object] | None = None,
    clock: Callable[[], float] = time.monotonic,
    log: bool = True,
) -> Watchdog:
    """A :class:`Watchdog` for ``async with cohort.watchdog(0.1): ...`` (same arguments)."""
    return Watchdog(
        threshold, on_stall=on_stall, hang_after=hang_after, on_hang=on_hang, clock=clock, log=log
    )
