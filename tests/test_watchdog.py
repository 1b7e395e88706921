"""The loop-stall watchdog: a thread that names the frame blocking the loop.

The watchdog's clock is injected: a stall is made by moving that clock past
the threshold and then blocking the loop on a ``threading.Event`` that the
report (or the watchdog's own clock readings) sets, so nothing here depends
on wall time.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from structlog.testing import capture_logs

import cohort

THRESHOLD = 0.02  # the thread wakes at least every THRESHOLD real seconds


class FakeClock:
    """A clock that moves only when told; ``after(n)`` is set once read ``n`` more times."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()
        self._waits: list[tuple[int, threading.Event]] = []

    def __call__(self) -> float:
        with self._lock:
            self._waits = [(n - 1, e) for n, e in self._waits]
            for n, event in self._waits:
                if n <= 0:
                    event.set()
            return self.now

    def after(self, reads: int) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._waits.append((reads, event))
        return event


def block_the_loop(clock: FakeClock, until: threading.Event) -> None:
    clock.now += 1.0  # the loop's last heartbeat is now a second old
    assert until.wait(30), "the watchdog never reported"


async def test_a_stalled_loop_is_reported_with_the_blocking_frame() -> None:
    clock = FakeClock()
    seen: list[cohort.StallReport] = []
    reported = threading.Event()

    def on_stall(report: cohort.StallReport) -> None:
        seen.append(report)
        reported.set()

    async with cohort.Watchdog(THRESHOLD, on_stall=on_stall, clock=clock, log=False) as wd:
        await asyncio.sleep(0)
        block_the_loop(clock, reported)
    assert len(seen) == 1
    report = seen[0]
    assert report.where.endswith("in block_the_loop")
    assert any(entry.endswith("in test_a_stalled_loop_is_reported_with_the_blocking_frame")
               for entry in report.stack)  # fmt: skip
    assert report.stalled_for >= 1.0
    assert report.threshold == THRESHOLD
    assert "event loop stalled" in str(report)
    assert "block_the_loop" in str(report)
    assert list(wd.stalls) == seen
    assert not wd.running


@pytest.mark.virtual_clock
async def test_a_stall_is_reported_once_however_long_it_lasts() -> None:
    clock = FakeClock()
    seen: list[cohort.StallReport] = []
    async with cohort.Watchdog(THRESHOLD, on_stall=seen.append, clock=clock, log=False):
        clock.now += 1.0
        assert _wait_for(lambda: bool(seen))
        assert clock.after(10).wait(30)  # the thread looked ten more times: no new report
        assert len(seen) == 1
        await asyncio.sleep(THRESHOLD)  # virtual time: the heartbeat runs, the stall is over
        clock.now += 1.0  # a second, separate stall is a second report
        assert _wait_for(lambda: len(seen) == 2)
    assert len(seen) == 2


def _wait_for(predicate: object) -> bool:
    """Block this (the loop's) thread until the watchdog thread made ``predicate`` true."""
    assert callable(predicate)
    done = threading.Event()
    for _ in range(30_000):
        if predicate():
            done.set()
            break
        done.wait(0.001)
    return done.is_set()


async def test_a_stall_is_a_structured_event() -> None:
    clock = FakeClock()
    reported = threading.Event()
    cohort.enable_events()
    try:
        with capture_logs() as logs:
            async with cohort.Watchdog(
                THRESHOLD, on_stall=lambda _: reported.set(), clock=clock, log=False
            ):
                block_the_loop(clock, reported)
    finally:
        cohort.enable_events(False)
    stalls = [e for e in logs if e["event"] == "loop.stall"]
    assert len(stalls) == 1
    assert stalls[0]["where"].endswith("in block_the_loop")


@pytest.mark.virtual_clock
async def test_a_failing_on_stall_callback_does_not_stop_the_watchdog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    calls: list[int] = []

    def broken(report: cohort.StallReport) -> None:
        calls.append(1)
        raise RuntimeError("callback bug")

    async with cohort.Watchdog(THRESHOLD, on_stall=broken, clock=clock, log=False):
        for n in range(2):
            clock.now += 1.0
            assert _wait_for(lambda n=n: len(calls) > n)
            await asyncio.sleep(THRESHOLD)  # virtual time: the heartbeat runs
    assert len(calls) == 2
    assert "on_stall callback raised" in caplog.text


async def test_start_and_stop_outside_a_block() -> None:
    wd = cohort.watchdog(THRESHOLD, log=False).start()
    assert wd.running
    with pytest.raises(RuntimeError, match="already running"):
        wd.start()
    wd.stop()
    wd.stop()  # twice is fine
    assert not wd.running
    wd.start().stop()  # a stopped watchdog starts again


def test_start_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError, match="call it from a coroutine"):
        cohort.Watchdog(1.0).start()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"threshold": 0}, ValueError, "threshold must be a number of seconds > 0"),
        ({"threshold": -1}, ValueError, "threshold"),
        ({"threshold": "1"}, TypeError, "threshold"),
        ({"hang_after": 0}, ValueError, "hang_after"),
        ({"on_stall": 3}, TypeError, "on_stall must be callable"),
        ({"on_hang": "x"}, TypeError, "on_hang must be callable"),
        ({"clock": None}, TypeError, "clock must be callable"),
        ({"log": "yes"}, TypeError, "log must be True or False"),
    ],
)
def test_bad_arguments_raise_at_the_call(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        cohort.Watchdog(**kwargs)  # type: ignore[arg-type]
