"""The public surface: `cohort.__all__` is sorted, complete and shows public names."""

from __future__ import annotations

import importlib
import pkgutil

import cohort


def test_all_is_sorted_and_unique() -> None:
    assert list(cohort.__all__) == sorted(set(cohort.__all__))


def test_every_public_name_is_exported() -> None:
    public = {n for n in dir(cohort) if n[0].isalpha()}  # pytest adds "@py_*" names
    submodules = {m.name for m in pkgutil.iter_modules(cohort.__path__)}
    assert public - submodules - {"annotations"} == set(cohort.__all__)


def test_reexported_names_show_the_public_module() -> None:
    for name in cohort.__all__:
        obj = getattr(cohort, name)
        module = getattr(obj, "__module__", "cohort")
        assert module == "cohort" or not module.startswith("cohort."), name


def test_private_modules_are_prefixed() -> None:
    for info in pkgutil.iter_modules(cohort.__path__):
        if info.name not in {"testing", "bridge", "pipeline", "redis", "cli", "examples"}:
            assert info.name.startswith("_"), info.name
        importlib.import_module(f"cohort.{info.name}")


def test_version_and_the_testing_subpackage_after_a_bare_import() -> None:
    from _util import run_python

    code = (
        "import sys, cohort\n"
        "print(cohort.__version__)\n"
        "print('structlog' in sys.modules)  # imported once events are switched on\n"
        "print(cohort.testing.run(lambda: __import__('asyncio').sleep(0, 'ran')))\n"
        "cohort.enable_events()\n"
        "print('structlog' in sys.modules)\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [cohort.__version__, "False", "ran", "True"]
    assert cohort.__version__.count(".") == 2


def test_import_cohort_leaves_the_heavy_layers_for_first_use() -> None:
    from _util import run_python

    heavy = [
        "multiprocessing",
        "tempfile",
        "structlog",
        "cohort.bridge",
        "cohort.pipeline",
        "cohort._flow._flow",
        "cohort._resilience._guards",
        "cohort.redis",
        "redis",
    ]
    code = (
        "import sys, cohort\n"
        f"heavy = {heavy!r}\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "print(sorted(set(cohort.__all__) - set(dir(cohort))))\n"
        "from cohort import Stage\n"
        "print(Stage.__module__, cohort.ProcessPool.__module__, cohort.stage is cohort.stage)\n"
        "print(sorted(m for m in heavy[:2] + heavy[3:5] if m not in sys.modules))\n"
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "[]", "cohort cohort True", "[]"]
