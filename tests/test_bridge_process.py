"""The bridge in a child interpreter: Ctrl-C, a killed parent, a missing main guard."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import psutil
import pytest

from _bridge_util import gone
from _util import popen_python

TESTS = Path(__file__).parent

PRELUDE = f"""
import asyncio, os, sys
sys.path.insert(0, {str(TESTS)!r})
import _bridge_funcs as f
import cohort
"""


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "prog.py"
    path.write_text(PRELUDE + textwrap.dedent(body))
    return path


def _start(path: Path) -> subprocess.Popen[str]:
    return popen_python(
        str(path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, like a program in a terminal
    )


RUNS_FOREVER = """
async def main():
    async with cohort.ProcessPool(1) as pool:
        await pool.run(f.mark_and_spin, sys.argv[1] if len(sys.argv) > 1 else {marker!r})

if __name__ == "__main__":
    asyncio.run(main())
"""


def _wait_for_marker(marker: Path, proc: subprocess.Popen[str]) -> int:
    """Block until the worker wrote its pid to ``marker`` (a FIFO): the call is running."""
    fd = os.open(marker, os.O_RDONLY)  # blocks until the worker opens it for writing
    try:
        data = b""
        while chunk := os.read(fd, 64):
            data += chunk
    finally:
        os.close(fd)
    assert proc.poll() is None
    return int(data)


def _wait_gone(pid: int) -> bool:
    try:
        psutil.Process(pid).wait(timeout=10)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return gone(pid)
    return True


def test_ctrl_c_stops_the_program_and_its_workers(tmp_path: Path) -> None:
    marker = tmp_path / "running"
    os.mkfifo(marker)
    proc = _start(_script(tmp_path, RUNS_FOREVER.format(marker=str(marker))))
    try:
        worker = _wait_for_marker(marker, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _out, err = proc.communicate(timeout=30)
        assert "KeyboardInterrupt" in err
        assert _wait_gone(worker)
    finally:
        proc.kill()
        proc.wait()


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "running"
    os.mkfifo(marker)
    proc = _start(_script(tmp_path, RUNS_FOREVER.format(marker=str(marker))))
    try:
        worker = _wait_for_marker(marker, proc)
        proc.kill()  # SIGKILL: no cleanup code runs in the parent
        proc.communicate(timeout=30)
        assert _wait_gone(worker), "the worker outlived its parent"
    finally:
        proc.kill()
        proc.wait()


def test_missing_main_guard_gives_one_clear_error(tmp_path: Path) -> None:
    body = """
    async def main():
        async with cohort.ProcessPool(1) as pool:
            print(await pool.run(f.add, 1, 2))

    asyncio.run(main())   # no `if __name__ == "__main__":` guard
    """
    proc = _start(_script(tmp_path, body))
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("cohort.PoolBrokenError")
    assert 'if __name__ == "__main__":' in last


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_start_methods_and_cpu_functions_work(tmp_path: Path, method: str) -> None:
    body = f"""
    import _bridge_cpu as c

    async def main():
        async with cohort.ProcessPool(1, start_method={method!r}) as pool:
            cohort.set_default_executor(pool)
            print(await pool.run(f.add, 1, 2), await pool.map(f.square, range(5)), await c.cube(2))

    if __name__ == "__main__":
        asyncio.run(main())
    """
    proc = _start(_script(tmp_path, body))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.strip() == "3 [0, 1, 4, 9, 16] 8"
