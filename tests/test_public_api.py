"""The public surface: `cohort.__all__` is sorted, complete and shows public names."""

from __future__ import annotations

import importlib
import pkgutil

import cohort


def test_all_is_sorted_and_unique() -> None:
    assert list(cohort.__all__) == sorted(set(cohort.__all__))


def test_every_public_name_is_exported() -> None:
    public = {n for n in vars(cohort) if n[0].isalpha()}  # pytest adds "@py_*" names
    submodules = {m.name for m in pkgutil.iter_modules(cohort.__path__)}
    assert public - submodules - {"annotations"} == set(cohort.__all__)


def test_reexported_names_show_the_public_module() -> None:
    for name in cohort.__all__:
        obj = getattr(cohort, name)
        module = getattr(obj, "__module__", "cohort")
        assert module == "cohort" or not module.startswith("cohort."), name


def test_private_modules_are_prefixed() -> None:
    for info in pkgutil.iter_modules(cohort.__path__):
        if info.name not in {"testing", "bridge", "pipeline", "cli", "examples"}:
            assert info.name.startswith("_"), info.name
        importlib.import_module(f"cohort.{info.name}")
