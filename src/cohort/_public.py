"""Making re-exported names look public."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def publish(namespace: dict[str, Any], module: str, names: Iterable[str] | None = None) -> None:
    """Set ``__module__`` of the names in ``namespace["__all__"]`` (or ``names``) to ``module``.

    Tracebacks, reprs and docs then show ``cohort.TaskGroup`` rather than
    ``cohort._core._group.TaskGroup``, and pickles refer to the public path.
    """
    prefix = module + "."
    for name in namespace["__all__"] if names is None else names:
        obj = namespace[name]
        if getattr(obj, "__module__", "").startswith(prefix):
            obj.__module__ = module
