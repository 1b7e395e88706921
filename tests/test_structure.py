"""The shape of the code: who may read whose private state, and which way imports point.

Three rules, each checked over the source tree (``src/cohort``) by reading it
with ``ast`` (nothing is imported):

* **No reach-through.** A module never touches another object's private
  names (``_x``, not ``__x__``): not by attribute (read, call, assignment,
  ``del``, augmented assignment), not through ``getattr``/``setattr``/
  ``hasattr``/``delattr`` with a constant name, not by importing a private
  name (``from cohort._core._handle import _coro_name``), not through a module
  (``_scopes._base_deadline``), and not by importing a private module of a
  package that is neither its own nor an ancestor (``cohort.bridge._default``
  from ``cohort._flow._graph``). ``self``, ``cls`` and ``super()`` are the object's
  own; a private module imported inside its package is not a reach-through.
* **No hidden arrows.** No function-local import of a cohort module: every
  dependency is at the top of the module, where a reader (and the layer
  check) sees it. A type-only import under ``TYPE_CHECKING`` is fine, and so
  is a package's module ``__getattr__``, which is a lazy loader by design.
* **Layers.** Imports only point down the layers of docs/architecture.md
  (``LAYERS`` below, bottom up), and the runtime import graph (module-level
  and function-local imports, type-only ones left out) has no cycle.

What is there today and breaks a rule is listed below, each with its reason:
the debt that the redesign removes. A new case fails its test (add a public
property or method, or move the import, or add an entry here with the
reason); an entry that no longer matches anything fails too (delete it).

Limits: the checks see names, not types. A subclass touching the private
state it inherits from a class of another module (``self._deadline`` in a
``CancelScope`` subclass) is ``self`` to them, and a private name reached
through a value of unknown type is reported by its expression, whichever
class it belongs to. The mutation tests at the end add each kind of
reach-through, hidden import, upward import and cycle to a scratch copy of
the source and check that the rules catch it.
"""

from __future__ import annotations

import ast
import functools
import re
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

# -- the allow-lists: the debt, each entry with its reason -------------------------

_SAME_MODULE = "same module (a class reading its own module's class)"

# (file under src, what is reached) -> why
REACH_THROUGHS: dict[tuple[str, str], str] = {
    # Within one module: a class and the class it works for.
    **{("cohort/_core/_scopes.py", f"{name}.{attr}"): "same module (the scope machinery)"
       for name, attrs in {
           "scope": ("_cancel_requests", "_deadline", "_effective", "_fail", "_phase",
                     "_raised", "_reason", "_relative", "_shield", "_state"),
           "pending[0]": ("_why",),
       }.items()
       for attr in attrs},
    # A task's stack of scopes and its timer work for CancelScope (one seam, two
    # modules: the stack below, the with-block above).
    **{("cohort/_core/_taskstate.py", f"{name}.{attr}"): "the scope machinery under CancelScope"
       for name, attrs in {
           "scope": ("_deadline", "_deliver", "_effective", "_enter_late", "_expire",
                     "_phase", "_reason"),
           "inner": ("_anyio", "_held_back", "_shield"),
           "s": ("_shield",),
       }.items()
       for attr in attrs},
    ("cohort/_core/_taskstate.py", "scope._shield"): (
        "the scope machinery, and anyio's scopes (read with getattr, as below)"
    ),
    ("cohort/_core/_group.py", "scope._enter_in"): (
        "a group enters its own scope (a CancelScope subclass) in one call that also "
        "returns the deadline in force, not through __enter__ and current_deadline()"
    ),
    ("cohort/_core/_state.py", "g._tasks"): "same class (a group finds the group it runs in)",
    ("cohort/_core/_taskstate.py", "owner._body_scope"): (
        "the Deferrable protocol: a deferred scope's owner (a task group) makes it when needed"
    ),
    **{("cohort/_core/_state.py", f"self._group.{attr}"): "the group's body scope, for its group"
       for attr in ("_cancel_reason", "_on_timeout", "_outside")},
    **{("cohort/bridge/_dask.py", f"self.executor.{attr}"): _SAME_MODULE
       for attr in ("_cancel", "_wait")},
    **{("cohort/bridge/_pool.py", f"self.pool.{attr}"): _SAME_MODULE
       for attr in ("_abandon", "_submit")},
    ("cohort/pipeline/_pipeline.py", "other._stages"): "same class (composition with |)",
    ("cohort/pipeline/_pipeline.py", "self._pipe._plans"): _SAME_MODULE,
    ("cohort/_resilience/_bulkhead.py", "bulkhead._keyed"): _SAME_MODULE,
    **{("cohort/testing/_clock.py", f"loop.{attr}"): "same module (the virtual clock)"
       for attr in ("_blocked_waiters", "_explain_timeout", "_io_jump_count", "_jump",
                    "_wake_blocked_waiters")},
    **{(where, "from cohort._core._retry import _name"): "Retry's name for a callable"
       for where in ("cohort/_core/_combinators.py", "cohort/_core/_coros.py")},
    # Across modules: the group and the scope machinery.
    **{(where, "_scopes._base_deadline"): "the deadline children inherit (a context var)"
       for where in ("cohort/_core/_coros.py", "cohort/_core/_group.py",
                     "cohort/_core/_stream.py")},
    ("cohort/_core/_coros.py", "_scopes._state_var"): "a detached context starts with no scopes",
    **{("cohort/_core/_group.py", f"scope.{attr}"): "the group's body scope, exited by the group"
       for attr in ("_cancelled_from_outside", "_exit")},
    ("cohort/_core/_tree.py", "g._tree_rows"): "the task tree reads each group's children",
    # Across modules of the bridge.
    **{(where, f"{name}._cohort_cpu_target"): "the marker a @cpu wrapper carries to workers"
       for where, name in (("cohort/bridge/_default.py", "obj"),
                           ("cohort/bridge/_pool.py", "holder"),
                           ("cohort/bridge/_wire.py", "self.fn"),
                           ("cohort/bridge/_worker.py", "fn"))},
    ("cohort/bridge/_shared.py", "_shm._pread_all"): "reads a segment as _shm does",
    ("cohort/_flow/_extras.py", "from cohort.bridge._default import ..."): (
        "a cpu node's function by reference, as @cpu sends it"
    ),
    # Outside cohort: the standard library and anyio.
    **{(where, "sys._getframe"): "documented CPython function"
       for where in ("cohort/_core/_child.py", "cohort/_core/_scopes.py")},
    ("cohort/_observe/_watchdog.py", "sys._current_frames"): (
        "documented CPython function: the blocked loop thread's stack"
    ),
    ("cohort/bridge/_worker.py", "os._exit"): "documented standard library function",
    ("cohort/bridge/_leftovers.py", "asyncio._get_running_loop"): (
        "in asyncio.__all__: the running loop or None, without raising"
    ),
    ("cohort/_core/_taskstate.py", "asyncio.tasks._current_tasks"): (
        "3.11 only: the dict behind asyncio.current_task, read without its Python wrapper"
    ),
    ("cohort/bridge/_pool.py", "multiprocessing.current_process()._inheriting"): (
        "the stdlib has no public way to tell a worker's import of __main__"
    ),
    ("cohort/bridge/_procs.py", "multiprocessing.forkserver._forkserver"): (
        "the stdlib has no public way to read the forkserver's preload list"
    ),
    ("cohort/bridge/_procs.py", "server._preload_modules"): "the same preload list",
    ("cohort/_core/_taskstate.py", "backend._task_states"): "anyio keeps its shields to itself",
    **{("cohort/_core/_taskstate.py", f"scope.{attr}"): (
        "anyio has no public way to walk a task's scopes to find a shield"
    ) for attr in ("_host_task", "_parent_scope")},
}  # fmt: skip

# (file under src, module imported inside a function) -> why
LOCAL_IMPORTS: dict[tuple[str, str], str] = {
    **{("cohort/cli/__init__.py", module): "a subcommand's module, imported when it runs"
       for module in ("cohort", "cohort.cli._bench", "cohort.cli._demo", "cohort.cli._ps",
                       "cohort.cli._run", "cohort.cli._runs")},
    **{("cohort/cli/_demo.py", f"cohort.examples.fanout.{name}"): (
        "the demo's web examples need the optional web extras"
    ) for name in ("backends", "drill", "load", "loadtest", "service", "stack")},
    ("cohort/cli/_demo.py", "cohort.examples.etl.pipeline"): (
        "the demo's web examples need the optional web extras"
    ),
    ("cohort/examples/fanout/loadtest.py", "cohort.examples.fanout.plain"): (
        "the plain baseline needs httpx and aiohttp"
    ),
    ("cohort/_core/_coros.py", "cohort._core._retry"): (
        "retries load on first use of spawn(retry=), so import cohort stays light"
    ),
    **{("cohort/_core/_combinators.py", module): (
        "retry() and hedge()'s budget load on first use, so import cohort stays light"
    ) for module in ("cohort._core._retry", "cohort._resilience._hedge")},
}  # fmt: skip

# The layers of docs/architecture.md, bottom up: a module or a package (with
# everything under it). An import points to the same layer or one below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "cohort._exceptions",
            "cohort._validate",
            "cohort._observe",
            "cohort._public",
            "cohort._core._journal",
        ),
    ),
    ("scopes", ("cohort._core._taskstate", "cohort._core._scopes")),
    (
        "groups",
        (
            "cohort._core._child",
            "cohort._core._coros",
            "cohort._core._handle",
            "cohort._core._policies",
            "cohort._core._retry",
            "cohort._core._state",
            "cohort._core._group",
            "cohort._core._why",
        ),
    ),
    (
        "helpers",
        (
            "cohort._core",
            "cohort._core._combinators",
            "cohort._core._stream",
            "cohort._core._tree",
            "cohort._core._runtime",
        ),
    ),
    ("sync", ("cohort._sync",)),
    ("resilience", ("cohort._resilience",)),
    ("bridge", ("cohort.bridge",)),
    ("distributed", ("cohort.redis",)),
    ("durable", ("cohort.durable",)),
    ("pipeline", ("cohort.pipeline",)),
    ("flow", ("cohort._flow",)),
    (
        "observe",
        (
            "cohort._observe._hangs",
            "cohort._observe._watchdog",
            "cohort._observe._dump",
            "cohort._observe._otel",
        ),
    ),
    ("testing", ("cohort.testing",)),
    ("api", ("cohort",)),
    ("applications", ("cohort.cli", "cohort.examples")),
]

# (importer, imported) pointing up -> why
UPWARD_IMPORTS: dict[tuple[str, str], str] = {
    ("cohort._core._combinators", "cohort._resilience._hedge"): (
        "hedge() takes a HedgeBudget, a guard of the resilience layer"
    ),
}

# Sets of modules importing each other at run time -> why
CYCLES: dict[frozenset[str], str] = {}

# -- reading the tree ------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One module imported by one import statement."""

    module: str  # what runs: a cohort module (a package's ``__init__`` by its name)
    local: bool  # inside a function
    type_only: bool  # under ``if TYPE_CHECKING``
    lazy_loader: bool  # inside a package's module-level ``__getattr__``


@dataclass(frozen=True)
class Module:
    """One parsed module of a tree."""

    name: str
    where: str  # the file, relative to the root
    package: str
    tree: ast.Module


def is_private(name: str) -> bool:
    """``_x`` and ``__x`` are private; ``__x__`` and ``_`` are not."""
    dunder = name.startswith("__") and name.endswith("__") and len(name) > 4
    return name.startswith("_") and name != "_" and not dunder


@functools.cache
def _parse(text: str) -> ast.Module:
    # Scratch copies share all files but one with the source: parse each text once.
    return ast.parse(text)


def modules(root: Path) -> dict[str, Module]:
    """Every module under ``root/cohort``, by dotted name."""
    found: dict[str, Module] = {}
    for path in sorted((root / "cohort").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        package = name if is_package else name.rpartition(".")[0]
        tree = _parse(path.read_text(encoding="utf-8"))
        found[name] = Module(name, path.relative_to(root).as_posix(), package, tree)
    return found


def source_of(node: ast.ImportFrom, package: str) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    parts = parts[: len(parts) - node.level + 1]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _is_type_checking(test: ast.expr) -> bool:
    return ast.unparse(test).rpartition(".")[2].lstrip("_") == "TYPE_CHECKING"


def _walk_imports(
    nodes: Iterable[ast.AST], *, local: bool, type_only: bool, lazy: bool, top: bool
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool, bool]]:
    """Each import statement under ``nodes``: whether it is inside a function, under
    ``if TYPE_CHECKING``, and inside a module-level ``__getattr__`` (``top``: still at
    module level)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, local, type_only, lazy
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            flags = {"local": local, "lazy": lazy, "top": top}
            yield from _walk_imports(node.body, type_only=True, **flags)
            yield from _walk_imports(node.orelse, type_only=type_only, **flags)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            loader = top and node.name == "__getattr__"
            yield from _walk_imports(
                ast.iter_child_nodes(node),
                local=True,
                type_only=type_only,
                lazy=lazy or loader,
                top=False,
            )
        else:
            yield from _walk_imports(
                ast.iter_child_nodes(node),
                local=local,
                type_only=type_only,
                lazy=lazy,
                top=top and not isinstance(node, ast.ClassDef),
            )


@dataclass(frozen=True)
class Names:
    """The module names of a tree, and which of them are packages."""

    modules: frozenset[str]
    packages: frozenset[str]

    @classmethod
    def of(cls, known: dict[str, Module]) -> Names:
        return cls(
            frozenset(known), frozenset(m.name for m in known.values() if m.name == m.package)
        )

    def package_of(self, name: str) -> str:
        return name if name in self.packages else name.rpartition(".")[0]


def imports(module: Module, names: Names) -> tuple[Import, ...]:
    """The cohort modules ``module`` imports, statement by statement."""
    return _imports(module, names)


@functools.cache
def _imports(module: Module, names: Names) -> tuple[Import, ...]:
    found: list[Import] = []
    is_init = module.where.endswith("__init__.py")
    for node, local, type_only, lazy in _walk_imports(
        module.tree.body, local=False, type_only=False, lazy=False, top=True
    ):
        targets: set[str] = set()
        if isinstance(node, ast.Import):
            targets = {alias.name for alias in node.names if alias.name in names.modules}
        else:
            source = source_of(node, module.package)
            for alias in node.names:
                if f"{source}.{alias.name}" in names.modules:
                    targets.add(f"{source}.{alias.name}")
                elif source in names.modules:
                    targets.add(source)
        found += [Import(t, local, type_only, lazy and is_init) for t in sorted(targets)]
    return tuple(found)


def _owned(owner: ast.expr) -> bool:
    if isinstance(owner, ast.Name):
        return owner.id in {"self", "cls"}
    return (
        isinstance(owner, ast.Call)
        and isinstance(owner.func, ast.Name)
        and owner.func.id == "super"
    )


REFLECTION = {"getattr", "setattr", "hasattr", "delattr"}


def reach_throughs(root: Path) -> set[tuple[str, str]]:
    """Every ``(file, what)`` where a module touches private names it does not own."""
    known = modules(root)
    names = Names.of(known)
    return {found for module in known.values() for found in _reach_throughs(module, names)}


@functools.cache
def _reach_throughs(module: Module, names: Names) -> frozenset[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    aliases: dict[str, str] = {}  # a name bound to a module -> that module
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    aliases[alias.name.partition(".")[0]] = alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = source_of(node, module.package)
            for alias in node.names:
                if f"{source}.{alias.name}" in names.modules:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                elif is_private(alias.name):
                    found.add((module.where, f"from {source} import {alias.name}"))
            if _foreign_private_module(module, source, names):
                found.add((module.where, f"from {source} import ..."))

    def dotted(node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return aliases.get(node.id)
        if isinstance(node, ast.Attribute):
            base = dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        return None

    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            if not _owned(node.value) and dotted(node) not in names.modules:
                found.add((module.where, f"{ast.unparse(node.value)}.{node.attr}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in REFLECTION
            and len(node.args) >= 2
            and isinstance(name := node.args[1], ast.Constant)
            and isinstance(name.value, str)
            and is_private(name.value)
            and not _owned(node.args[0])
        ):
            found.add((module.where, f"{ast.unparse(node.args[0])}.{name.value}"))
    return frozenset(found)


def _foreign_private_module(module: Module, source: str, names: Names) -> bool:
    """Whether ``source`` is a private module of a package that is neither
    ``module``'s own nor an ancestor of it."""
    if source not in names.modules or not is_private(source.rpartition(".")[2]):
        return False
    owner = _public_owner(names.package_of(source))
    return not (module.package == owner or module.package.startswith(owner + "."))


def _public_owner(package: str) -> str:
    """The nearest public package at or above ``package``: a private package
    (``cohort._core``) is its parent's internals, shared by that parent's layers."""
    while is_private(package.rpartition(".")[2]):
        package = package.rpartition(".")[0]
    return package


def local_imports(root: Path) -> set[tuple[str, str]]:
    """``(file, module)`` for each cohort module imported inside a function.

    Type-only imports and a package's lazy-loading ``__getattr__`` are not counted.
    """
    known = modules(root)
    names = Names.of(known)
    return {
        (module.where, imp.module)
        for module in known.values()
        for imp in imports(module, names)
        if imp.local and not imp.type_only and not imp.lazy_loader
    }


def layer_of(name: str) -> int:
    """The index in ``LAYERS`` of the most specific entry that covers ``name``."""
    best, best_len = -1, -1
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            covers = name == member or (name.startswith(member + ".") and member.count(".") >= 1)
            if covers and len(member) > best_len:
                best, best_len = index, len(member)
    return best


def runtime_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the cohort modules it imports at run time (anywhere, type-only left out)."""
    known = modules(root)
    names = Names.of(known)
    return {
        module.name: {
            imp.module
            for imp in imports(module, names)
            if not imp.type_only and imp.module != module.name
        }
        for module in known.values()
    }


def upward_imports(root: Path) -> set[tuple[str, str]]:
    """``(importer, imported)`` where an import points to a higher layer."""
    return {
        (name, target)
        for name, targets in runtime_graph(root).items()
        for target in targets
        if layer_of(target) > layer_of(name)
    }


def cycles(root: Path) -> set[frozenset[str]]:
    """The strongly connected sets of modules of more than one (Tarjan's algorithm)."""
    graph = runtime_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members: set[str] = set()
            while True:
                member = stack.pop()
                members.add(member)
                if member == node:
                    break
            if len(members) > 1:
                found.add(frozenset(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _stale(entries: object) -> str:
    return f"allow-list entries that match nothing any more (delete them): {entries!r}"


# -- the rules -------------------------------------------------------------------


def test_no_module_reaches_into_another_objects_private_names() -> None:
    found = reach_throughs(SRC)
    new = sorted(found - REACH_THROUGHS.keys())
    assert new == [], (
        "private names touched from outside their object (add a public property or "
        "method, or an entry in REACH_THROUGHS with the reason): "
        + ", ".join(f"{where}: {what}" for where, what in new)
    )
    stale = sorted(REACH_THROUGHS.keys() - found)
    assert stale == [], _stale(stale)


def test_no_function_local_import_hides_a_dependency() -> None:
    found = local_imports(SRC)
    new = sorted(found - LOCAL_IMPORTS.keys())
    assert new == [], (
        "cohort modules imported inside a function (import them at the top of the "
        "module, under TYPE_CHECKING if only for types): "
        + ", ".join(f"{where}: {module}" for where, module in new)
    )
    stale = sorted(LOCAL_IMPORTS.keys() - found)
    assert stale == [], _stale(stale)


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(name for name in modules(SRC) if layer_of(name) < 0)
    assert unplaced == [], f"modules in no layer (add them to LAYERS): {unplaced}"


def test_imports_point_down_the_layers() -> None:
    found = upward_imports(SRC)
    new = sorted(found - UPWARD_IMPORTS.keys())
    assert new == [], "imports pointing up the layers of docs/architecture.md: " + ", ".join(
        f"{a} ({LAYERS[layer_of(a)][0]}) -> {b} ({LAYERS[layer_of(b)][0]})" for a, b in new
    )
    stale = sorted(UPWARD_IMPORTS.keys() - found)
    assert stale == [], _stale(stale)


def test_the_runtime_import_graph_has_no_cycle() -> None:
    found = cycles(SRC)
    new = [sorted(c) for c in found - CYCLES.keys()]
    assert new == [], f"modules importing each other at run time: {new}"
    stale = [sorted(c) for c in CYCLES.keys() - found]
    assert stale == [], _stale(stale)


MAP_ROW = re.compile(r"^\|\s*`(?P<name>cohort(?:\.\w+)*)`\s*\|", re.MULTILINE)


def test_the_module_map_names_every_module_under_src() -> None:
    """docs/architecture.md has one module-map row per module: none missing, none stale."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rows = [m["name"] for m in MAP_ROW.finditer(text)]
    on_disk = set(modules(SRC))
    missing = sorted(on_disk - set(rows))
    assert missing == [], (
        f"modules not in the module map of {ARCHITECTURE.relative_to(ROOT)} "
        f"(add a row '| `name` | what it does |'): {missing}"
    )
    gone = sorted(set(rows) - on_disk)
    assert gone == [], f"module-map rows for modules that do not exist: {gone}"
    twice = sorted({name for name in rows if rows.count(name) > 1})
    assert twice == [], f"modules with more than one module-map row: {twice}"


def test_the_documented_layers_are_the_checked_ones() -> None:
    """Each layer of ``LAYERS`` is a heading of docs/architecture.md, in the same order."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    headings = re.findall(r"^### \d+\. (\w+)", text, re.MULTILINE)
    assert headings == [name for name, _ in LAYERS]


# -- the proof: each kind of breach, made in a scratch copy, is caught -----------------


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of ``src/cohort`` to break."""
    shutil.copytree(SRC / "cohort", tmp_path / "cohort", ignore=shutil.ignore_patterns("*.pyc"))
    return tmp_path


def _append(root: Path, where: str, code: str) -> None:
    path = root / where
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code, encoding="utf-8")


REACH_THROUGH_KINDS = {
    "attribute read": ("def probe(g):\n    return g._probe\n", "g._probe"),
    "method call": ("def probe(g):\n    return g._probe()\n", "g._probe"),
    "attribute set": ("def probe(g):\n    g._probe = 1\n", "g._probe"),
    "augmented assignment": ("def probe(g):\n    g._probe += 1\n", "g._probe"),
    "del": ("def probe(g):\n    del g._probe\n", "g._probe"),
    "getattr": ('def probe(g):\n    return getattr(g, "_probe", None)\n', "g._probe"),
    "setattr": ('def probe(g):\n    setattr(g, "_probe", 1)\n', "g._probe"),
    "hasattr": ('def probe(g):\n    return hasattr(g, "_probe")\n', "g._probe"),
    "name-mangled attribute": ("def probe(g):\n    return g.__probe\n", "g.__probe"),
    "attribute of an attribute": ("def probe(g):\n    return g.child._probe\n", "g.child._probe"),
    "class attribute": (
        "from cohort._core._group import TaskGroup\n\ndef probe():\n    return TaskGroup._probe\n",
        "TaskGroup._probe",
    ),
    "private name imported": (
        "from cohort._core._group import _probe\n",
        "from cohort._core._group import _probe",
    ),
    "private name imported under a public alias": (
        "from cohort._core._group import _probe as probe\n",
        "from cohort._core._group import _probe",
    ),
    "private name imported relatively": (
        "from ._group import _probe\n",
        "from cohort._core._group import _probe",
    ),
    "private name imported inside a function": (
        "def probe():\n    from cohort._core._group import _probe\n    return _probe\n",
        "from cohort._core._group import _probe",
    ),
    "through a module alias": (
        "import cohort._core._group as m\n\ndef probe():\n    return m._probe\n",
        "m._probe",
    ),
    "through a module imported from its package": (
        "from cohort._core import _group\n\ndef probe():\n    return _group._probe\n",
        "_group._probe",
    ),
    "through a dotted module path": (
        "import cohort._core._group\n\ndef probe():\n    return cohort._core._group._probe\n",
        "cohort._core._group._probe",
    ),
}


@pytest.mark.parametrize("kind", sorted(REACH_THROUGH_KINDS))
def test_each_kind_of_reach_through_is_caught(scratch: Path, kind: str) -> None:
    code, expected = REACH_THROUGH_KINDS[kind]
    _append(scratch, "cohort/_core/_tree.py", code)
    new = reach_throughs(scratch) - REACH_THROUGHS.keys()
    assert new == {("cohort/_core/_tree.py", expected)}


def test_a_private_module_of_a_sibling_package_is_a_reach_through(scratch: Path) -> None:
    _append(scratch, "cohort/pipeline/_channel.py", "from cohort.bridge._shm import OOB_MIN\n")
    new = reach_throughs(scratch) - REACH_THROUGHS.keys()
    assert new == {("cohort/pipeline/_channel.py", "from cohort.bridge._shm import ...")}


NOT_REACH_THROUGHS = {
    "own attribute": "class C:\n    def f(self):\n        return self._x\n",
    "own class attribute": "class C:\n    @classmethod\n    def f(cls):\n        return cls._x\n",
    "inherited method through super()": (
        "class C(int):\n    def f(self):\n        return super()._x()\n"
    ),
    "own attribute through getattr": (
        'class C:\n    def f(self):\n        return getattr(self, "_x", None)\n'
    ),
    "dunder attribute": "def probe(g):\n    return g.__class__.__name__\n",
    "a private module imported within its package": (
        "from cohort._core import _scopes\nimport cohort._core._group\n\n"
        "def probe():\n    return cohort._core._group, _scopes.current_time\n"
    ),
}


@pytest.mark.parametrize("kind", sorted(NOT_REACH_THROUGHS))
def test_what_is_not_a_reach_through_passes(scratch: Path, kind: str) -> None:
    _append(scratch, "cohort/_core/_tree.py", NOT_REACH_THROUGHS[kind])
    assert reach_throughs(scratch) - REACH_THROUGHS.keys() == set()


LOCAL_IMPORT_KINDS = {
    "from-import in a function": (
        "def probe():\n    from cohort._core import _group\n",
        "cohort._core._group",
    ),
    "import in a method": (
        "class P:\n    def probe(self):\n        import cohort.bridge\n",
        "cohort.bridge",
    ),
    "relative import in an async function": (
        "async def probe():\n    from ..pipeline import Pipeline\n",
        "cohort.pipeline",
    ),
    "a module-level __getattr__ outside a package's __init__": (
        "def __getattr__(name):\n    import cohort._core._group\n",
        "cohort._core._group",
    ),
}


@pytest.mark.parametrize("kind", sorted(LOCAL_IMPORT_KINDS))
def test_each_kind_of_function_local_import_is_caught(scratch: Path, kind: str) -> None:
    code, expected = LOCAL_IMPORT_KINDS[kind]
    _append(scratch, "cohort/_core/_tree.py", code)
    assert local_imports(scratch) - LOCAL_IMPORTS.keys() == {("cohort/_core/_tree.py", expected)}


def test_type_only_imports_and_a_packages_lazy_loader_are_not_hidden_arrows(
    scratch: Path,
) -> None:
    _append(
        scratch,
        "cohort/_core/_tree.py",
        "def probe():\n    if TYPE_CHECKING:\n        from cohort.pipeline import Pipeline\n",
    )
    _append(
        scratch,
        "cohort/bridge/__init__.py",
        "def __getattr__(name):\n    import cohort.bridge._dask\n    from cohort import pipeline\n",
    )
    assert local_imports(scratch) - LOCAL_IMPORTS.keys() == set()


def test_an_upward_import_is_caught_at_the_top_or_hidden_in_a_function(scratch: Path) -> None:
    _append(scratch, "cohort/_core/_scopes.py", "from cohort._core._group import TaskGroup\n")
    _append(scratch, "cohort/bridge/_wire.py", "def probe():\n    from cohort import pipeline\n")
    assert upward_imports(scratch) - UPWARD_IMPORTS.keys() == {
        ("cohort._core._scopes", "cohort._core._group"),
        ("cohort.bridge._wire", "cohort.pipeline"),
    }


def test_a_type_only_upward_import_is_not_an_arrow(scratch: Path) -> None:
    _append(
        scratch,
        "cohort/_core/_scopes.py",
        "if TYPE_CHECKING:\n    from cohort._core._group import TaskGroup\n",
    )
    assert upward_imports(scratch) - UPWARD_IMPORTS.keys() == set()


def test_an_import_cycle_is_caught_even_through_a_function_local_import(
    scratch: Path,
) -> None:
    _append(
        scratch,
        "cohort/_core/_handle.py",
        "def probe():\n    from cohort._core._group import TaskGroup\n",
    )
    # _group imports _handle, and through _state too: one cycle of the three.
    assert cycles(scratch) - CYCLES.keys() == {
        frozenset({"cohort._core._group", "cohort._core._handle", "cohort._core._state"})
    }


def test_a_module_missing_from_the_map_is_caught(scratch: Path) -> None:
    (scratch / "cohort" / "_probe.py").write_text('"""A new module."""\n', encoding="utf-8")
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rows = {m["name"] for m in MAP_ROW.finditer(text)}
    assert set(modules(scratch)) - rows == {"cohort._probe"}
    assert layer_of("cohort._probe") < 0
