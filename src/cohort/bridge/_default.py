"""The default executor: ``to_process``, ``@cpu`` and ``set_default_executor``.

Unless ``set_default_executor`` chose one, each event loop gets its own
``ProcessPool``, created on first use and closed when the loop shuts down:
the pool's lifetime is tied to an async generator parked on that loop, which
``loop.shutdown_asyncgens()`` (run by ``asyncio.run``, ``asyncio.Runner``,
``cohort.run`` and pytest-asyncio) finalises before the loop closes. A loop
closed without that step still loses its workers: the pool's finaliser kills
them when the pool is collected or the interpreter exits.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Generic, Never, ParamSpec, TypeVar, TypeVarTuple, Unpack, cast, overload

from cohort._exceptions import SerializationError
from cohort._validate import keywords_refused
from cohort.bridge._executor import Executor
from cohort.bridge._pool import ProcessPool

_P = ParamSpec("_P")
_R = TypeVar("_R")
_Ts = TypeVarTuple("_Ts")

_global_executor: Executor | None = None
_loop_pools: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[ProcessPool, AsyncIterator[None]]
] = weakref.WeakKeyDictionary()


def set_default_executor(executor: Executor | None) -> None:
    """Make ``executor`` the one ``to_process`` and ``@cpu`` use (``None``: per-loop pools).

    The caller owns ``executor`` and closes it.

    Example:
        ```python
        async with cohort.bridge.DaskExecutor() as dask:
            cohort.set_default_executor(dask)
            await parse(raw)          # an @cohort.cpu function, now on the cluster
        ```
    """
    global _global_executor
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            f"set_default_executor() takes a cohort.Executor (ProcessPool, DaskExecutor) "
            f"or None, got {executor!r}"
        )
    _global_executor = executor


async def default_executor() -> Executor:
    """The executor ``to_process`` would use now (starting this loop's pool if needed)."""
    if _global_executor is not None:
        return _global_executor
    loop = asyncio.get_running_loop()
    entry = _loop_pools.get(loop)
    if entry is not None:
        return entry[0]
    pool = ProcessPool()
    lifetime = _pool_lifetime(pool)
    _loop_pools[loop] = (pool, lifetime)  # before any await: concurrent first calls share it
    await anext(lifetime)  # parked: loop.shutdown_asyncgens() will close it
    return pool


async def _pool_lifetime(pool: ProcessPool) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await pool.aclose()


async def to_process(
    fn: Callable[[Unpack[_Ts]], _R],
    *args: *_Ts,
    executor: Executor | None = None,
    **kwargs: Never,
) -> _R:
    """Run ``fn(*args)`` in another process (the default executor unless ``executor`` is given).

    Example:
        ```python
        digest = await cohort.to_process(hashlib.sha256, blob)
        ```
    """
    if kwargs:
        raise keywords_refused("cohort.to_process", fn, args, kwargs, ("executor",))
    ex = executor if executor is not None else await default_executor()
    return await ex.run(fn, *args)


class CpuFunction(Generic[_P, _R]):
    """A plain function that, when called, runs in a worker process and returns an awaitable.

    Pickles by reference to the plain function (``__wrapped__``), so it works with
    spawn and forkserver and inside ``functools.partial``.
    """

    __wrapped__: Callable[_P, _R]
    __name__: str
    __qualname__: str

    def __init__(self, fn: Callable[_P, _R], executor: Executor | None) -> None:
        if not callable(fn):
            raise TypeError(f"@cohort.cpu decorates a function, got {fn!r}")
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(f"executor= takes a cohort.Executor or None, got {executor!r}")
        qualname = getattr(fn, "__qualname__", "")
        if "<locals>" in qualname or "<lambda>" in qualname:
            raise SerializationError(
                f"@cohort.cpu needs a module-level function, got {qualname!r}: worker processes "
                "find the function by its module and name; move it to module level"
            )
        functools.update_wrapper(self, fn)
        self._cohort_cpu_target = fn
        self._ref = (str(getattr(fn, "__module__", "")), str(qualname))
        self._plain = _PlainCall(fn, self._ref)
        self._executor = executor

    def __repr__(self) -> str:
        return f"<cohort.cpu {self._ref[0]}.{self._ref[1]}>"

    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> Coroutine[Any, Any, _R]:
        plain = self._plain
        target = cast(Callable[..., _R], functools.partial(plain, **kwargs) if kwargs else plain)
        return to_process(target, *args, executor=self._executor)

    def __reduce__(self) -> tuple[Callable[[str, str], object], tuple[str, str]]:
        return _resolve_cpu_target, self._ref


class _PlainCall:
    """What ``CpuFunction`` hands to executors: calls the plain function in-process, and
    pickles as a reference to it, so any executor (local, cluster, inline) gets plain calls.
    """

    def __init__(self, fn: Callable[..., Any], ref: tuple[str, str]) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._ref = ref

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Callable[[str, str], object], tuple[str, str]]:
        return _resolve_cpu_target, self._ref


def by_reference(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fn``, to be sent to a worker process as a reference to its module and qualified
    name, the way ``@cohort.cpu`` functions travel (a nested function or a lambda is
    returned as is).

    A decorator that rebinds the function's name (``@flow.node(cpu=True)``,
    ``@cohort.stage(cpu=True)``) leaves the module attribute holding its wrapper;
    pickle then refuses the plain function ("not the same object"). The reference
    resolves in the worker through the wrapper's ``_cohort_cpu_target``.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return fn
    if "<locals>" in qualname or "<lambda>" in qualname:
        return fn
    return cast(Callable[_P, _R], _Reference(fn, (module, qualname)))


class _Reference(_PlainCall):
    """What :func:`by_reference` returns: a reference that is checked when pickled (the
    name must lead back to this very function, else it pickles as the function itself)."""

    def __reduce__(self) -> Any:
        try:
            found = _resolve_cpu_target(*self._ref)
        except (ImportError, AttributeError):
            found = None
        if found is not self._fn:
            return _identity, (self._fn,)  # pickled as is: pickle's own error names it
        return _resolve_cpu_target, self._ref


def _identity(fn: object) -> object:
    return fn


def _resolve_cpu_target(module: str, qualname: str) -> object:
    """Unpickling side of ``CpuFunction``: the plain function behind ``module.qualname``."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return getattr(obj, "_cohort_cpu_target", obj)


@overload
def cpu(fn: Callable[_P, _R], /) -> CpuFunction[_P, _R]: ...
@overload
def cpu(
    *, executor: Executor | None = None
) -> Callable[[Callable[_P, _R]], CpuFunction[_P, _R]]: ...
def cpu(
    fn: Callable[_P, _R] | None = None, /, *, executor: Executor | None = None
) -> CpuFunction[_P, _R] | Callable[[Callable[_P, _R]], CpuFunction[_P, _R]]:
    """Decorate a plain ``def`` so that ``await f(x)`` runs it in a worker process.

    Uses the default executor, or ``executor``. ``f.__wrapped__`` is the plain function.

    Example:
        ```python
        @cohort.cpu
        def parse(raw: bytes) -> dict[str, int]:
            return {"size": len(raw)}

        doc = await parse(raw)
        ```
    """
    if fn is not None:
        return CpuFunction(fn, executor)

    def decorate(f: Callable[_P, _R]) -> CpuFunction[_P, _R]:
        return CpuFunction(f, executor)

    return decorate
