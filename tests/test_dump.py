"""Dumps on SIGUSR1, read from another process with ``cohort ps|tree|why PID``.

Each test starts a real program (tests/_dump_child.py) that hangs on purpose,
sends it a real signal through the CLI, and reads its own dump file.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cohort
from _util import run_python
from cohort._observe._dump import dump_path

CHILD = Path(__file__).with_name("_dump_child.py")


def line_of(text: str) -> int:
    """The line of the child program that holds ``text``."""
    lines = CHILD.read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, 1) if text in line)


@pytest.fixture(params=["idle", "stall"])
def hung(request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    with subprocess.Popen(
        [sys.executable, str(CHILD), request.param], stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            yield proc.pid, request.param
        finally:
            proc.kill()
            proc.wait()
            dump_path(proc.pid).unlink(missing_ok=True)


def test_why_names_the_party_that_never_arrived(hung: tuple[int, str]) -> None:
    pid, _ = hung
    result = run_python("-m", "cohort.cli", "why", str(pid))
    assert result.returncode == 0, result.stderr
    assert "worker-0: Barrier 2/3, missing 1: not arrived: worker-2" in result.stdout
    assert "worker-2: asyncio.Event never set" in result.stdout


def test_tree_shows_the_group_and_its_children(hung: tuple[int, str]) -> None:
    pid, _ = hung
    result = run_python("-m", "cohort.cli", "tree", str(pid))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("crew [Gather()]")
    for i in range(3):
        assert f"worker-{i} running" in result.stdout


def test_ps_shows_each_await_point_and_the_blocking_frame(hung: tuple[int, str]) -> None:
    pid, mode = hung
    result = run_python("-m", "cohort.cli", "ps", str(pid))
    assert result.returncode == 0, result.stderr
    assert (
        f"worker-0: Barrier at {CHILD}:{line_of('await barrier.wait()')} in worker" in result.stdout
    )
    assert (
        f"worker-2: asyncio.Event at {CHILD}:{line_of('await gate.wait()')} in worker"
        in result.stdout
    )
    assert "    worker (" in result.stdout  # the coroutine chain
    if mode == "stall":
        assert (
            f"running now at {CHILD}:{line_of('time.sleep(60)')} in block_in_sleep" in result.stdout
        )


def test_a_process_without_dumps_times_out_clearly() -> None:
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGUSR1, lambda *a: None)\n"
        "print('ready', flush=True); time.sleep(60)"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            result = run_python("-m", "cohort.cli", "why", str(proc.pid), "--timeout", "0.2")
            assert result.returncode == 1
            assert "did it call cohort.enable_dump()?" in result.stderr
        finally:
            proc.kill()
            proc.wait()


def test_no_such_process_is_a_usage_error() -> None:
    result = run_python("-m", "cohort.cli", "ps", "999999999")
    assert result.returncode == 2
    assert "no process 999999999" in result.stderr


async def test_dump_in_process_has_every_section() -> None:
    text = cohort.dump()
    for name in ("tree", "tasks", "why"):
        assert f"== {name} ==" in text


async def test_enable_dump_off_the_main_thread_raises() -> None:
    import asyncio

    def in_thread() -> None:
        async def go() -> None:
            cohort.enable_dump()

        asyncio.run(go())

    with pytest.raises(RuntimeError, match="call it on the main thread"):
        await asyncio.to_thread(in_thread)
