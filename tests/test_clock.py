"""The virtual clock: time jumps to the next timer, I/O and threads still work."""

from __future__ import annotations

import asyncio
import socket

import pytest

import cohort
from cohort.testing import VirtualClockLoop, run, wait_all_tasks_blocked


def test_sleep_of_an_hour_is_instant_and_exact() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - start

    assert run(main) == 3600


def test_timers_fire_in_order_at_their_exact_times() -> None:
    seen: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        seen.append((name, asyncio.get_running_loop().time()))

    async def main() -> None:
        await asyncio.gather(sleeper("b", 2.5), sleeper("a", 0.1), sleeper("c", 7))

    run(main)
    assert seen == [("a", 0.1), ("b", 2.5), ("c", 7.0)]


def test_thread_wakeups_still_arrive() -> None:
    async def main() -> int:
        return await asyncio.to_thread(sum, [1, 2, 3])

    assert run(main) == 6


def test_start_and_manual_advance() -> None:
    loop = VirtualClockLoop(start=100.0)
    try:
        assert loop.time() == 100.0
        loop.advance(5)
        assert loop.time() == 105.0
        with pytest.raises(ValueError, match="backwards"):
            loop.advance(-1)
    finally:
        loop.close()


def test_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="autojump_threshold"):
        VirtualClockLoop(autojump_threshold=-1)


async def read_a_socket_nobody_writes(deadline: float) -> None:
    """Wait on a real socket (one end of a pair; nothing is ever sent) under a deadline."""
    ours, theirs = socket.socketpair()
    with theirs:
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            with cohort.fail_after(deadline):
                await reader.read(1)
        finally:
            writer.close()
            await writer.wait_closed()


def test_a_deadline_that_expires_while_waiting_on_a_socket_names_autojump_threshold() -> None:
    with pytest.raises(TimeoutError) as info:
        run(read_a_socket_nobody_writes, 5)
    (note,) = info.value.__notes__
    assert "the virtual clock jumped 1 time(s) while the loop waited on real I/O" in note
    assert "from 0 s to 5 s" in note
    assert "raise autojump_threshold (now 0)" in note
    assert "cohort.testing.run(..., autojump_threshold=0.5)" in note


def test_a_deadline_that_expires_with_no_io_pending_has_no_note() -> None:
    async def main() -> None:
        with cohort.fail_after(5):
            await asyncio.Event().wait()

    with pytest.raises(TimeoutError) as info:
        run(main)
    assert not hasattr(info.value, "__notes__")


@pytest.mark.virtual_clock
async def test_marker_runs_on_virtual_loop() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualClockLoop)
    await asyncio.sleep(10)
    assert loop.time() == 10


@pytest.mark.virtual_clock
async def test_wait_all_tasks_blocked_runs_everything_runnable_first() -> None:
    loop = asyncio.get_running_loop()
    steps: list[int] = []

    async def chatter() -> None:
        for i in range(5):
            steps.append(i)
            await asyncio.sleep(0)

    task = asyncio.create_task(chatter())
    await wait_all_tasks_blocked()
    assert steps == [0, 1, 2, 3, 4]
    assert loop.time() == 0
    await task


async def test_wait_all_tasks_blocked_needs_virtual_loop() -> None:
    with pytest.raises(RuntimeError, match="VirtualClockLoop"):
        await wait_all_tasks_blocked()
