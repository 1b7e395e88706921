"""cohort's pytest plugin in a fresh project: it works, or it says why it cannot.

Each test writes a small project (a test file and a pytest.ini) and runs
pytest on it in a subprocess. ``-p no:asyncio`` stands for a pytest-asyncio
without the loop-factory hook (before 1.4): the plugin must refuse to run
rather than let the tests run on the real clock.
"""

from __future__ import annotations

from pathlib import Path

import cohort
from _util import run_python

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_test() -> str:
    """The README's pytest example, a complete test file, as written."""
    text = README.read_text()
    start = text.index("# save as test_timeouts.py")
    return text[start : text.index("```", start)]


VIRTUAL_TEST = readme_test()

PLAIN_TEST = """
async def test_plain():
    pass
"""


def project(tmp_path: Path, test: str, ini: str = "") -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "test_it.py").write_text(test)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nasyncio_mode = auto\n{ini}")
    return tmp_path


# The cohort under test (not another one installed), however PYTHONPATH was given.
SRC = str(Path(cohort.__file__).resolve().parents[1])


def pytest_in(path: Path, *args: str) -> tuple[int, str]:
    argv = ["-q", "-p", "no:cacheprovider", *args]
    code = (
        f"import sys; sys.path.insert(0, {SRC!r}); import pytest; sys.exit(pytest.main({argv!r}))"
    )
    result = run_python("-c", code, cwd=path)
    return result.returncode, result.stdout + result.stderr


def test_the_readme_snippet_runs_in_a_fresh_project(tmp_path: Path) -> None:
    code, out = pytest_in(project(tmp_path, VIRTUAL_TEST))
    assert code == 0, out
    assert "2 passed" in out  # the marked test and the one using cohort.testing.run


def test_virtual_clock_without_the_loop_hook_is_a_usage_error(tmp_path: Path) -> None:
    code, out = pytest_in(project(tmp_path, VIRTUAL_TEST), "-p", "no:asyncio")
    assert code == 4, out  # pytest's exit status for usage errors
    assert "@pytest.mark.virtual_clock (on test_it.py::test_read_times_out)" in out
    assert "needs pytest-asyncio >= 1.4" in out


def test_cohort_loops_without_the_loop_hook_is_a_usage_error(tmp_path: Path) -> None:
    path = project(tmp_path, PLAIN_TEST, "cohort_loops = asyncio uvloop\n")
    code, out = pytest_in(path, "-p", "no:asyncio")
    assert code == 4, out
    assert "cohort_loops = ['asyncio', 'uvloop'] needs pytest-asyncio >= 1.4" in out


SOCKET_TEST = """
import asyncio, socket, pytest

@pytest.mark.virtual_clock
async def test_reads_a_socket_nobody_writes():
    ours, theirs = socket.socketpair()
    with theirs:
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            async with asyncio.timeout(5):
                await reader.read(1)
        finally:
            writer.close()
            await writer.wait_closed()
"""

NO_IO_TEST = """
import asyncio, pytest

@pytest.mark.virtual_clock
async def test_waits_on_nothing():
    async with asyncio.timeout(5):
        await asyncio.Event().wait()
"""

IO_NOTE = "the virtual clock jumped 1 time(s) while the loop waited on real I/O"


def test_a_timeout_while_waiting_on_a_socket_is_explained_in_the_test_failure(
    tmp_path: Path,
) -> None:
    # Each in a project of its own: one pytest process, one test, one loop.
    code, out = pytest_in(project(tmp_path / "socket", SOCKET_TEST))
    assert code == 1, out
    assert "1 failed" in out
    assert IO_NOTE in out, out
    assert "@pytest.mark.virtual_clock(autojump_threshold=0.5)" in out

    code, out = pytest_in(project(tmp_path / "no_io", NO_IO_TEST))
    assert code == 1, out
    assert "1 failed" in out
    assert "TimeoutError" in out
    assert "virtual clock jumped" not in out, out
