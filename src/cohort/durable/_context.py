"""The run context: the durable run and structural path the calling code runs in,
and the module-level functions that act on that run."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from cohort.durable._run import DurableRun

__all__ = [
    "current_run",
    "epoch",
    "idempotency_key",
    "name_of",
    "path_var",
    "run_var",
    "step",
    "write_rows",
]

T = TypeVar("T")

run_var: ContextVar[DurableRun | None] = ContextVar("cohort_durable_run", default=None)
# The structural path of the code running now: () in a run's body, else the
# segments of the child or step it runs in.
path_var: ContextVar[tuple[str, ...]] = ContextVar("cohort_durable_path", default=())


def name_of(fn: object, name: str | None, where: str) -> str:
    """The name given, or the function's; checked."""
    if name is None:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(f"{where}() in a durable run needs name= for {fn!r}")
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"a name in a durable run is a non-empty string without '/', got {name!r}")
    return name


def current_run() -> DurableRun:
    """The durable run the calling code runs in; ``LookupError`` outside one."""
    active = run_var.get()
    if active is None:
        raise LookupError("no durable run is active here: use `async with cohort.durable.run(...)`")
    return active


@overload
async def step(
    fn: Callable[..., Awaitable[T]], *args: Any, name: str | None = None, effect: bool = False
) -> T: ...


@overload
async def step(
    fn: Callable[..., T], *args: Any, name: str | None = None, effect: bool = False
) -> T: ...


async def step(
    fn: Callable[..., Any], *args: Any, name: str | None = None, effect: bool = False
) -> Any:
    """``current_run().step(fn, *args, name=name, effect=effect)``."""
    return await current_run().step(fn, *args, name=name, effect=effect)


async def write_rows(sql: str, rows: Iterable[Sequence[Any]], *, name: str) -> int:
    """``current_run().write_rows(sql, rows, name=name)``: rows committed exactly once,
    in the ledger's transaction."""
    return await current_run().write_rows(sql, rows, name=name)


def idempotency_key() -> str:
    """A key for the step running now, the same on every attempt and resume: pass it
    to an external service to make its effect happen once (hash of run id and path)."""
    active = current_run()
    path = "/".join(path_var.get())
    return hashlib.sha256(f"{active.run_id}\0{path}".encode()).hexdigest()


def epoch() -> int:
    """The current owner's epoch of the run: a fencing token for other stores (a
    write carrying an older epoch than one already seen must be refused)."""
    return current_run().epoch
