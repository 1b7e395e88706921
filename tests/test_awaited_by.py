"""Awaited-by edges (Python 3.14+): ``python -m asyncio pstree`` shows a group's children
under the task that runs the group.

The edges need Python 3.14's ``asyncio.future_add_to_awaited_by``. The test that
reads ``pstree`` runs a 3.14 interpreter in a subprocess: the one named by
``COHORT_PYTHON314``, else ``python3.14`` on the PATH; it is skipped without one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cohort._observe import _awaited

SRC = Path(__file__).resolve().parents[1] / "src"

_PROGRAM = """
import asyncio, sys
import cohort

started = 0
all_started = asyncio.Event()

async def leaf() -> None:
    global started
    started += 1
    if started == 3:
        all_started.set()
    await asyncio.Event().wait()

async def inner() -> None:
    async with cohort.TaskGroup(join=cohort.FirstWins(), name="race") as g:
        g.spawn(leaf, name="leaf-b")
        g.spawn(leaf, name="leaf-c")

async def main() -> None:
    async with cohort.TaskGroup(name="outer") as g:
        g.spawn(leaf, name="leaf-a")
        g.spawn(inner, name="inner")
        await all_started.wait()
        print("ready", flush=True)
        sys.stdin.readline()  # blocks the loop: the tree stays as it is while pstree reads it
        g.cancel()

asyncio.run(main())
"""


def _python314() -> str | None:
    found = os.environ.get("COHORT_PYTHON314") or shutil.which("python3.14")
    if found is None:
        return None
    probe = subprocess.run(
        [found, "-c", "import asyncio; print(hasattr(asyncio, 'future_add_to_awaited_by'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return found if probe.stdout.strip() == "True" else None


def test_the_edges_are_asyncios_own_functions_from_python_3_14_and_none_before() -> None:
    if sys.version_info >= (3, 14):
        assert _awaited.add_awaited_by is getattr(asyncio, "future_add_to_awaited_by")  # noqa: B009
        assert _awaited.discard_awaited_by is getattr(asyncio, "future_discard_from_awaited_by")  # noqa: B009
    else:
        assert _awaited.add_awaited_by is None
        assert _awaited.discard_awaited_by is None


def _depth(line: str) -> int:
    return line.index("(T)")


def test_pstree_shows_a_groups_children_under_the_task_that_runs_the_group() -> None:
    python = _python314()
    if python is None:
        pytest.skip("needs a Python 3.14 interpreter (COHORT_PYTHON314 or python3.14)")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("PYTHONHOME", None)
    with subprocess.Popen(
        [python, "-c", _PROGRAM],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as program:
        assert program.stdin is not None
        assert program.stdout is not None
        try:
            assert program.stdout.readline().strip() == "ready"
            tree = subprocess.run(
                [python, "-m", "asyncio", "pstree", str(program.pid)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        finally:
            program.stdin.write("\n")
            program.stdin.close()
            program.wait(timeout=60)
    tasks = [line for line in tree.splitlines() if "(T)" in line]
    assert [line for line in tasks if line.startswith("└──")] == ["└── (T) Task-1"], tree
    depth = {line.split("(T) ")[1]: _depth(line) for line in tasks}
    assert depth["leaf-a"] == depth["inner"] > depth["Task-1"], tree
    assert depth["leaf-b"] == depth["leaf-c"] > depth["inner"], tree
    assert "TaskGroup._leave" in tree  # the inner group's task waits in its exit
