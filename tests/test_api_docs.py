"""The API reference covers every public name, and docstring examples are code that type-checks.

* Every name in ``__all__`` of ``cohort``, ``cohort.testing``,
  ``cohort.pipeline``, ``cohort.bridge``, ``cohort.durable`` and
  ``cohort.redis`` has a ``::: name`` entry in docs/api/*.md (the rendered
  reference) and a docstring, as mkdocstrings sees them (griffe, static
  analysis).
* Docstring examples are fenced ``python`` blocks (rendered as highlighted
  code), never reStructuredText ``Example::`` literal blocks (rendered as a
  stray ``::`` paragraph and unhighlighted text).
* Every such block appears verbatim in tests/typecheck_docstrings.py, which
  ``mypy --strict`` checks.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import griffe
import pytest

import cohort
import cohort.bridge
import cohort.durable
import cohort.pipeline
import cohort.redis
import cohort.testing

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "cohort"
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))
TYPECHECKED = ROOT / "tests" / "typecheck_docstrings.py"
MODULES = (
    cohort,
    cohort.testing,
    cohort.pipeline,
    cohort.bridge,
    cohort.durable,
    cohort.redis,
)
PUBLIC = [f"{m.__name__}.{name}" for m in MODULES for name in m.__all__]
FENCED = re.compile(r"^(?P<indent> *)```python\n(?P<code>.*?)^(?P=indent)```$", re.M | re.S)
LITERAL_BLOCK = re.compile(r"::\s*$", re.M)


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    loaded = griffe.load("cohort", search_paths=[str(SRC.parent)], resolve_aliases=True)
    assert isinstance(loaded, griffe.Module)
    return loaded


def _target(package: griffe.Module, dotted: str) -> griffe.Object | griffe.Alias:
    obj = package[dotted.removeprefix("cohort.")]
    return obj.final_target if isinstance(obj, griffe.Alias) else obj


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_an_api_entry_and_a_docstring(
    name: str, package: griffe.Module
) -> None:
    target = _target(package, name)
    entries = [
        entry for page in API_PAGES for entry in re.findall(r"^::: (\S+)", page.read_text(), re.M)
    ]
    documented = {_target(package, entry).path for entry in entries}
    assert target.path in documented, f"add '::: {name}' to one of docs/api/*.md"
    assert target.docstring is not None, f"{name} ({target.path}) has no docstring"
    assert target.docstring.value.strip()


def docstrings() -> Iterator[tuple[str, str]]:
    """(where, docstring) of every module, class and function in src/cohort."""
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        todo: list[tuple[ast.AST, str]] = [(ast.parse(path.read_text()), rel)]
        while todo:
            node, where = todo.pop()
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc:
                    yield where, doc
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    todo.append((child, f"{where}:{child.name}"))


def examples() -> list[tuple[str, str]]:
    """The python examples of the library's docstrings (not of the demo's services)."""
    return [
        (where, textwrap.dedent(m["code"]))
        for where, doc in docstrings()
        if not where.startswith(("examples/", "cli/"))
        for m in FENCED.finditer(doc)
    ]


def test_docstring_examples_are_fenced_code_blocks() -> None:
    literal = [where for where, doc in docstrings() if LITERAL_BLOCK.search(doc)]
    assert literal == [], "write examples as 'Example:' + an indented ```python block"
    assert len(examples()) >= 25


@pytest.mark.parametrize(("where", "code"), examples(), ids=[w for w, _ in examples()])
def test_every_docstring_example_is_type_checked(where: str, code: str) -> None:
    body = textwrap.indent(code, "    ")
    assert body in TYPECHECKED.read_text(), (
        f"the example of {where} changed: copy it into {TYPECHECKED.name} as the body of a "
        "function whose parameters stand for the names it uses, and run mypy --strict on it"
    )
