"""``@cohort.stage``: a function plus the options that say how a pipeline runs it.

A stage is still the function: ``await fetch(url)`` runs it once with the
stage's ``timeout`` and ``retry`` (so stages are unit-testable), and it is a
one-stage ``Pipeline`` (``fetch.run(urls)``, ``fetch | parse``).

How the function runs:

* ``async def``: on the event loop;
* ``async def`` generator: each yielded value is an output (collected per
  attempt, so a retry never duplicates an output);
* plain ``def`` with ``cpu=True`` or ``executor=``: in the process bridge;
* plain ``def`` otherwise: in a thread (``asyncio.to_thread``), since it may block.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Protocol, overload

from cohort._core._retry import own_chain
from cohort.bridge import CpuFunction, Executor
from cohort.pipeline._options import OnError, StageOptions
from cohort.pipeline._pipeline import Pipeline
from cohort.pipeline._retry import AttemptsFailed, Many, Retry, call_with_policy

__all__ = ["Stage", "stage"]

if TYPE_CHECKING:
    # Defaults (PEP 696) let annotations say just `Stage[str, bytes]`.
    from typing_extensions import ParamSpec, TypeVar

    In = TypeVar("In", contravariant=True)
    Out = TypeVar("Out", covariant=True)
    P = ParamSpec("P", default=...)
    R = TypeVar("R", default=Out)
else:
    from typing import ParamSpec, TypeVar

    In = TypeVar("In", contravariant=True)
    Out = TypeVar("Out", covariant=True)
    P = ParamSpec("P")
    R = TypeVar("R")

X = TypeVar("X")
Y = TypeVar("Y")
Q = ParamSpec("Q")


async def _collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [value async for value in agen]


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


def _classify(fn: Callable[..., Any], opts: StageOptions) -> tuple[str, Callable[..., Any]]:
    """How to call ``fn``: its kind and an async callable taking the same arguments."""
    off_loop = opts.cpu or opts.executor is not None
    if isinstance(fn, CpuFunction):
        return "cpu", fn
    if inspect.isasyncgenfunction(fn) or _is_async(fn):
        if off_loop:
            raise TypeError(
                f"cpu=True/executor= need a plain def, but {fn!r} is async; "
                "drop cpu= (it runs on the loop) or make it a plain def"
            )
        if inspect.isasyncgenfunction(fn):

            def agen(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, list[Any]]:
                return _collect(fn(*args, **kwargs))

            return "agen", agen
        return "async", fn
    if not callable(fn):
        raise TypeError(f"@cohort.stage decorates a function, got {fn!r}")
    if inspect.isgeneratorfunction(fn):
        if off_loop:
            raise TypeError(
                f"{fn!r} is a generator: a cpu stage must return its values "
                "(return cohort.Many(list_of_values))"
            )

        def gen(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, list[Any]]:
            return asyncio.to_thread(lambda: list(fn(*args, **kwargs)))

        return "agen", gen
    if off_loop:
        return "cpu", CpuFunction(fn, opts.executor)
    return "thread", functools.partial(asyncio.to_thread, fn)


class Stage(Pipeline[In, Out], Generic[In, Out, P, R]):
    """A stage of a pipeline: a function plus how to run it. Immutable; reusable.

    Build one with ``@cohort.stage``. ``await stage(item, *args)`` calls the
    function once with the stage's ``timeout`` and ``retry``; ``stage | other``
    builds a ``Pipeline``; ``stage.run(source)`` runs it as a one-stage pipeline.

    Typed ``Stage[In, Out, P, R]``: it takes items ``In`` and emits outputs ``Out``
    (a stage returning ``cohort.Many`` or an async generator of ``Y`` emits
    ``Y``s); ``P`` are the function's parameters after the item and ``R`` what
    a direct call returns (both default to "any" and ``Out``: ``Stage[str, bytes]``).
    """

    fn: Callable[Concatenate[In, P], Any]
    options: StageOptions
    kind: str
    __name__: str
    __qualname__: str
    __wrapped__: Callable[Concatenate[In, P], Any]
    _invoke_args: Callable[..., Any]

    def __init__(self, fn: Callable[Concatenate[In, P], Any], options: StageOptions) -> None:
        kind, invoke = _classify(fn, options)
        setattr_ = object.__setattr__
        setattr_(self, "_stages", (self,))
        setattr_(self, "fn", fn)
        setattr_(self, "options", options)
        setattr_(self, "kind", kind)
        setattr_(self, "_invoke_args", invoke)
        # Worker processes find a cpu stage's plain function through the module
        # attribute that holds this stage (see CpuFunction's pickling).
        setattr_(self, "_cohort_cpu_target", fn)
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            if hasattr(fn, attr):
                setattr_(self, attr, getattr(fn, attr))
        setattr_(self, "__wrapped__", fn)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"{self!r} is immutable; use .with_options({name}=...) to get a changed copy"
        )

    def __repr__(self) -> str:
        return f"<cohort.Stage {self.name!r} {self.kind} workers={self.options.workers}>"

    @property
    def name(self) -> str:
        """The stage's name (the function's, unless ``name=`` was given)."""
        return self.options.name

    def with_options(self, **changes: Any) -> Stage[In, Out, P, R]:
        """A copy of this stage with some options changed (``workers=8``, ``name=``...)."""
        return Stage(self.fn, dataclasses.replace(self.options, **changes))

    def __call__(self, item: In, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Call the function once, with the stage's timeout and retry."""
        return self._direct((item, *args), kwargs)

    async def _direct(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        opts = self.options
        invoke = self._invoke_args
        if opts.timeout is None and opts.retry is None:
            result: R = await invoke(*args, **kwargs)
            return result
        try:
            return await call_with_policy(  # type: ignore[no-any-return]
                lambda _: invoke(*args, **kwargs), None, opts.timeout, opts.retry
            )
        except AttemptsFailed as failed:
            exc = failed.exc
        with own_chain(exc):
            raise exc

    # -- what the engine uses ----------------------------------------------------------

    def engine_call(self) -> Callable[[Any], Awaitable[Any]]:
        """An async callable of one item whose result is a value, ``Many`` or ``DROP``."""
        invoke: Callable[[Any], Awaitable[Any]] = self._invoke_args
        if self.kind == "agen":

            async def many(item: Any) -> Many[Any]:
                return Many(await invoke(item))

            return many
        return invoke

    @property
    def workers(self) -> int:
        """How many workers call the function concurrently."""
        return self.options.workers


class _StageDecorator(Protocol):
    @overload
    def __call__(
        self, fn: Callable[Concatenate[X, Q], AsyncIterator[Y]], /
    ) -> Stage[X, Y, Q, list[Y]]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[X, Q], Awaitable[Many[Y]]], /
    ) -> Stage[X, Y, Q, Many[Y]]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[X, Q], Awaitable[Y]], /) -> Stage[X, Y, Q, Y]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[X, Q], Many[Y]], /) -> Stage[X, Y, Q, Many[Y]]: ...
    @overload
    def __call__(self, fn: Callable[Concatenate[X, Q], Y], /) -> Stage[X, Y, Q, Y]: ...


class _BatchStageDecorator(Protocol):
    """``@cohort.stage(batch=n)``: the function takes a list of items and returns a
    list of outputs (or ``None``, a sink)."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[list[X], Q], Awaitable[list[Y]]], /
    ) -> Stage[X, Y, Q, list[Y]]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[list[X], Q], Awaitable[None]], /
    ) -> Stage[X, None, Q, None]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[list[X], Q], list[Y]], /
    ) -> Stage[X, Y, Q, list[Y]]: ...
    @overload
    def __call__(
        self, fn: Callable[Concatenate[list[X], Q], None], /
    ) -> Stage[X, None, Q, None]: ...


@overload
def stage(fn: Callable[Concatenate[X, Q], AsyncIterator[Y]], /) -> Stage[X, Y, Q, list[Y]]: ...
@overload
def stage(fn: Callable[Concatenate[X, Q], Awaitable[Many[Y]]], /) -> Stage[X, Y, Q, Many[Y]]: ...
@overload
def stage(fn: Callable[Concatenate[X, Q], Awaitable[Y]], /) -> Stage[X, Y, Q, Y]: ...
@overload
def stage(fn: Callable[Concatenate[X, Q], Many[Y]], /) -> Stage[X, Y, Q, Many[Y]]: ...
@overload
def stage(fn: Callable[Concatenate[X, Q], Y], /) -> Stage[X, Y, Q, Y]: ...
@overload
def stage(
    *,
    workers: int = 1,
    buffer: int | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    on_error: OnError = "raise",
    ordered: bool = True,
    batch: None = None,
    batch_timeout: float | None = None,
    cpu: bool = False,
    executor: Executor | None = None,
    max_errors: int | None = None,
    max_error_rate: float | None = None,
    name: str | None = None,
) -> _StageDecorator: ...
@overload
def stage(
    *,
    workers: int = 1,
    buffer: int | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    on_error: OnError = "raise",
    ordered: bool = True,
    batch: int,
    batch_timeout: float | None = None,
    cpu: bool = False,
    executor: Executor | None = None,
    max_errors: int | None = None,
    max_error_rate: float | None = None,
    name: str | None = None,
) -> _BatchStageDecorator: ...
def stage(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    workers: int = 1,
    buffer: int | None = None,
    timeout: float | None = None,
    retry: Retry | None = None,
    on_error: OnError = "raise",
    ordered: bool = True,
    batch: int | None = None,
    batch_timeout: float | None = None,
    cpu: bool = False,
    executor: Executor | None = None,
    max_errors: int | None = None,
    max_error_rate: float | None = None,
    name: str | None = None,
) -> Any:
    """Make a function a pipeline stage (``@cohort.stage`` or ``@cohort.stage(...)``).

    Args:
        workers: long-lived workers running the function concurrently.
        buffer: items the stage's input queue holds (default ``2 * workers``).
        timeout: seconds per attempt (``TimeoutError`` when exceeded).
        retry: a ``cohort.Retry``; retries never duplicate an output.
        on_error: ``"raise"`` (fail fast with ``cohort.PipelineError``),
            ``"skip"`` (record in ``report.errors`` and go on), or a callable
            (sync or async) dead-letter sink called with ``(item, exception)``.
        ordered: emit outputs in input order (a bounded reorder window).
        batch: call the function with lists of up to ``batch`` items; it returns
            a list of the same length (an output or ``DROP`` per item) or
            ``None`` (a sink: every item done).
        batch_timeout: flush a partial batch after this many seconds (default:
            wait for a full batch or the end of the input).
        cpu: run a plain ``def`` in worker processes (the default executor).
        executor: run a plain ``def`` on this ``cohort.Executor``.
        max_errors: fail the run once more errors than this were skipped.
        max_error_rate: fail the run once a larger fraction of the items
            entering the stage failed and were skipped.
        name: the stage's name in reports, logs and errors (default: the
            function's ``__name__``).

    Example:
        ```python
        @cohort.stage(workers=32, timeout=2.0, retry=cohort.Retry(attempts=3, backoff=0.05))
        async def fetch(url: str) -> bytes:
            return await http_get(url)

        report = await (fetch | parse | store).run(urls)
        ```
    """
    options = {
        "workers": workers,
        "buffer": buffer,
        "timeout": timeout,
        "retry": retry,
        "on_error": on_error,
        "ordered": ordered,
        "batch": batch,
        "batch_timeout": batch_timeout,
        "cpu": cpu,
        "executor": executor,
        "max_errors": max_errors,
        "max_error_rate": max_error_rate,
    }

    # Checked here, at the call, not when the decorator is applied.
    checked = StageOptions(name="stage" if name is None else name, **options)  # type: ignore[arg-type]

    def decorate(f: Callable[..., Any]) -> Stage[Any, Any, ..., Any]:
        if isinstance(f, Stage):
            f = f.fn
        if not callable(f):
            raise TypeError(f"@cohort.stage decorates a function, got {f!r}")
        label = name if name is not None else getattr(f, "__name__", None)
        if not isinstance(label, str) or not label:
            raise TypeError(f"cannot name a stage after {f!r}; pass name=")
        return Stage(f, dataclasses.replace(checked, name=label))

    if fn is not None:
        return decorate(fn)
    return decorate
