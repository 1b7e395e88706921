"""Find the pipeline that ``cohort run MODULE:PIPELINE`` names, or say in one line why not."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from cohort.cli._common import UsageError
from cohort.pipeline import Pipeline

__all__ = ["load_pipeline"]

_EXAMPLE = "e.g. examples/cli_pipeline.py:pipeline or mypackage.jobs:pipe"


def load_pipeline(target: str) -> Pipeline[Any, Any]:
    """Import ``MODULE`` (a dotted name or a path to a .py file) and return its ``PIPELINE``."""
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:PIPELINE ({_EXAMPLE}), got {target!r}")
    module = _import(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = _pipelines_in(module)
            hint = f"; pipelines in it: {', '.join(found)}" if found else "; it defines no pipeline"
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}{hint}") from None
    if not isinstance(obj, Pipeline):
        hint = "; decorate it with @cohort.stage" if callable(obj) else ""
        raise UsageError(
            f"{target} is a {type(obj).__name__}, not a cohort.Pipeline or cohort.Stage{hint}"
        )
    return obj


def _import(name: str) -> ModuleType:
    if name.endswith(".py") or os.sep in name or "/" in name:
        return _import_path(Path(name))
    # Like `python -m`: modules in the current directory are importable.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(f"no module named {exc.name!r}") from None
        raise UsageError(f"importing {name!r} failed: {_one_line(exc)}") from None
    except Exception as exc:
        raise UsageError(f"importing {name!r} failed: {_one_line(exc)}") from None


def _import_path(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"no such file: {str(path)!r}")
    # The file's directory goes on sys.path and the module is registered under its
    # stem, so worker processes (cpu=True stages) can import it by name too.
    sys.path.insert(0, str(path.resolve().parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {str(path)!r}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[path.stem]
        raise UsageError(f"importing {str(path)!r} failed: {_one_line(exc)}") from None
    return module


def _pipelines_in(module: ModuleType) -> list[str]:
    return sorted(k for k, v in vars(module).items() if isinstance(v, Pipeline))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
