"""Every Python block of the README and the docs runs as written.

Each fenced ``python`` block of README.md and docs/**/*.md is written to its
own file in an empty temporary directory and run there by a fresh interpreter
(the venv's), with nothing on the path but cohort itself: no hidden setup, so
a missing import fails here as it would for a user. The markings a reader
sees decide how a block runs (CONTRIBUTING.md, "Code blocks in the docs"):

* ``# continues the example above`` as the first line: a fragment; it runs
  appended to the block before it (itself run the same way).
* ``# save as NAME.py`` as the first line: the file a user is told to create;
  later blocks of the same page find it next to them. A ``test_*.py`` file is
  run by pytest, any other by python.

Blocks run two at a time (the machine may have two cores).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import cohort

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CONTINUES = "# continues the example above"
SAVE_AS = re.compile(r"# save as (?P<name>[A-Za-z_][A-Za-z0-9_]*\.py)\b")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)")
TIMEOUT_S = 90
# What a fresh project gets from `pip install cohort` and the extras the pages name
# (cohort[test]: pytest; cohort[cli]: starlette, httpx, uvicorn; cohort[otel]: the
# OpenTelemetry API, with the SDK docs/observe.md tells to install), besides the stdlib.
INSTALLED = {"cohort", "structlog", "pytest", "starlette", "httpx", "uvicorn", "opentelemetry"}


@dataclass
class Block:
    """One fenced python block, as the program that runs it."""

    page: Path
    line: int
    source: str
    program: str = ""
    name: str = ""
    helpers: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each fenced ``python`` block, fences not included."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened is None:
            i += 1
            continue
        indent, fence, lang = opened["indent"], opened["fence"], opened["lang"]
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        if lang in ("python", "py"):
            yield i - len(body) + 1, "\n".join(body) + "\n"
        i += 1


def collect(page: Path) -> list[Block]:
    blocks: list[Block] = []
    helpers: dict[str, str] = {}
    for line, source in python_blocks(page.read_text()):
        first = source.lstrip().splitlines()[0] if source.strip() else ""
        block = Block(page, line, source, helpers=dict(helpers))
        if first.startswith(CONTINUES):
            if not blocks:
                raise AssertionError(f"{block.id}: {CONTINUES!r} but no block above it")
            before = blocks[-1]
            block.program = before.program + "\n" + source
            block.name, block.helpers = before.name, before.helpers
        else:
            saved = SAVE_AS.match(first)
            block.program = source
            block.name = saved["name"] if saved else f"block_{line}.py"
            if saved and not block.name.startswith("test_"):
                helpers[block.name] = source
        blocks.append(block)
    return blocks


BLOCKS = [block for page in PAGES for block in collect(page)]


def _run(block: Block) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="cohort-docs-") as tmp:
        here = Path(tmp)
        for name, source in block.helpers.items():
            (here / name).write_text(source)
        (here / block.name).write_text(block.program)
        if block.name.startswith("test_"):
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", block.name]
        else:
            command = [sys.executable, block.name]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "COHORT_"))}
        env["PYTHONPATH"] = str(Path(cohort.__file__).resolve().parents[1])  # cohort only
        return subprocess.run(
            command, cwd=here, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )


@pytest.fixture(scope="module")
def results() -> dict[str, subprocess.CompletedProcess[str]]:
    # pytest starts slowly: its blocks first
    slow_first = sorted(BLOCKS, key=lambda b: not b.name.startswith("test_"))
    with ThreadPoolExecutor(max_workers=2) as threads:
        return dict(zip([b.id for b in slow_first], threads.map(_run, slow_first), strict=True))


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_every_python_block_runs_as_its_own_file(
    block: Block, results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    done = results[block.id]
    report = f"{block.id} ({block.name}):\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, report
    if block.name.startswith("test_"):  # pytest's own configuration advice aside
        assert " passed" in done.stdout, report
        assert "failed" not in done.stdout, report
    else:
        assert "Traceback" not in done.stderr, report
        assert "Warning" not in done.stderr, report


def test_the_block_markings_are_recognised() -> None:
    text = (
        "```python\nprint(1)\n```\n\n```python\n# continues the example above\nprint(2)\n```\n"
        "  ```python\n  # save as funcs.py\n  X = 1\n  ```\n"
        "```python\n# save as test_x.py\nfrom funcs import X\n```\n```sh\nls\n```\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        fake = Path(tmp) / "example.md"
        fake.write_text(text)
        blocks = collect(fake)
    assert [b.program for b in blocks] == [
        "print(1)\n",
        "print(1)\n\n# continues the example above\nprint(2)\n",
        "# save as funcs.py\nX = 1\n",
        "# save as test_x.py\nfrom funcs import X\n",
    ]
    assert [b.name for b in blocks] == ["block_2.py", "block_2.py", "funcs.py", "test_x.py"]
    assert blocks[3].helpers == {"funcs.py": "# save as funcs.py\nX = 1\n"}


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_blocks_import_only_what_a_fresh_install_has(block: Block) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(block.program)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.add(node.module.split(".")[0])
    own = {name.removesuffix(".py") for name in block.helpers}
    extra = imported - set(sys.stdlib_module_names) - INSTALLED - own
    assert not extra, f"{block.id} imports {sorted(extra)}: not in cohort or its extras"
