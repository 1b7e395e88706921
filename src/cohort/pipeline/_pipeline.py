"""``Pipeline``: stages composed with ``|``, run to a ``Report`` or streamed.

Pipelines are immutable values: ``a | b`` builds a new one, and the same
pipeline may run many times, concurrently, on any event loop.
"""

from __future__ import annotations

import asyncio
import reprlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from cohort._core import _scopes
from cohort._core._runtime import note_cut_short
from cohort._validate import check_flag
from cohort.pipeline._report import Report

if TYPE_CHECKING:
    from cohort.pipeline._engine import Engine, StagePlan
    from cohort.pipeline._retry import DropType
    from cohort.pipeline._stage import Stage

__all__ = ["Pipeline", "PipelineStream"]

I_contra = TypeVar("I_contra", contravariant=True)
O_co = TypeVar("O_co", covariant=True)
R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


class Pipeline(Generic[I_contra, O_co]):
    """Stages run one after the other, each by its own long-lived workers.

    Build with ``|`` from stages (``fetch | parse | store``); compose further
    (``pipe | more``) and reuse freely. Typed by the items it takes and the
    outputs it gives: ``Pipeline[str, bytes]``; type checkers reject a stage
    whose input does not match the outputs before it, and a source of the
    wrong items. ``cohort.DROP`` in an output type is dropped in between.

    Example:
        ```python
        report = await (fetch | parse | store).run(urls, progress=True)
        async with (fetch | parse).stream(urls) as docs:
            async for doc in docs:
                ...
        ```
    """

    __slots__ = ("_stages",)
    _stages: tuple[Stage[Any, Any, ..., Any], ...]

    def __init__(self, stages: Iterable[Stage[Any, Any, ..., Any]]) -> None:
        stages = tuple(stages)
        if not stages:
            raise ValueError("a Pipeline needs at least one stage")
        object.__setattr__(self, "_stages", stages)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{self!r} is immutable; compose a new one with |")

    @property
    def stages(self) -> tuple[Stage[Any, Any, ..., Any], ...]:
        """The stages, in order (a single stage is a pipeline of one)."""
        return self._stages

    def _plans(self) -> list[StagePlan]:
        """What the engine runs: each stage's options and its call on one item."""
        return [(st.options, st.engine_call()) for st in self._stages]

    def __repr__(self) -> str:
        return f"<cohort.Pipeline {' | '.join(s.name for s in self._stages)}>"

    def __or__(self: Pipeline[A, B | DropType], other: Pipeline[B, C]) -> Pipeline[A, C]:
        if not isinstance(other, Pipeline):
            if callable(other):  # `stage | plain_function`: say what to do
                raise TypeError(
                    f"cannot compose {self!r} with {other!r}: decorate it with @cohort.stage first"
                )
            return NotImplemented
        return Pipeline((*self._stages, *other._stages))

    if not TYPE_CHECKING:  # hidden from type checkers: `a | b` with mismatched types must fail

        def __ror__(self, other: object) -> Pipeline[Any, Any]:
            # `plain_function | stage`: say what to do instead of a bare TypeError.
            raise TypeError(
                f"cannot compose {other!r} with {self!r}: decorate it with @cohort.stage first"
            )

    async def run(
        self: Pipeline[A, B | DropType],
        source: Iterable[A] | AsyncIterable[A],
        *,
        collect: bool = True,
        progress: bool = False,
    ) -> Report[B]:
        """Run every item of ``source`` through the pipeline and report.

        Args:
            source: a sync or async iterable, consumed lazily.
            collect: keep the outputs in ``report.outputs`` (``False`` for a run
                whose last stage is a sink, or to keep memory flat).
            progress: show live per-stage progress (a terminal display, or a
                periodic log line on stderr when not on a terminal).

        Raises:
            cohort.PipelineError: a stage failed under ``on_error="raise"``, or
                ``max_errors``/``max_error_rate`` was exceeded (the stage's
                exception is the ``__cause__``); the source, or a dead-letter
                sink, ended with ``CancelledError`` although the run was not
                cancelled (``stage="<source>"`` for the source).
            Exception: what the source raised, unchanged.
        """
        from cohort.pipeline._engine import Engine
        from cohort.pipeline._progress import progress_task

        check_source(source, self)
        check_flag("collect", collect)
        check_flag("progress", progress)
        engine = Engine(self._plans(), collect=collect, stream=False)
        try:
            await engine.execute(source, progress_task() if progress else None)
        except asyncio.CancelledError:
            _note_cut_short(self, engine)
            raise
        return engine.report()

    def stream(
        self: Pipeline[A, B | DropType],
        source: Iterable[A] | AsyncIterable[A],
        *,
        progress: bool = False,
    ) -> PipelineStream[B]:
        """An async context manager giving the outputs as an async iterator.

        The pipeline runs while the block runs; leaving the block stops it
        (items not yet delivered count as cancelled). ``.report`` is filled
        when the block ends. A fail-fast error raises from the iteration.

        Example:
            ```python
            async with pipe.stream(urls) as docs:
                async for doc in docs:
                    index(doc)
            ```
        """
        check_source(source, self)
        check_flag("progress", progress)
        return PipelineStream[B](self, source, progress)


class PipelineStream(Generic[R]):
    """The ``async with pipe.stream(source) as outputs`` context and its iterator."""

    def __init__(
        self, pipe: Pipeline[Any, Any], source: Iterable[Any] | AsyncIterable[Any], progress: bool
    ) -> None:
        self._pipe = pipe
        self._source = source
        self._progress = progress
        self._engine: Engine | None = None
        self._task: asyncio.Task[None] | None = None
        self._buffer: deque[tuple[int, Any]] = deque()
        self._iterator: AsyncGenerator[R, None] | None = None
        self._delivered: BaseException | None = None
        self.report: Report[R] | None = None

    def __repr__(self) -> str:
        return f"<PipelineStream of {self._pipe!r}>"

    async def __aenter__(self) -> AsyncIterator[R]:
        from cohort.pipeline._engine import Engine
        from cohort.pipeline._progress import progress_task

        if self._engine is not None:
            raise RuntimeError(f"{self!r} was already entered; call pipe.stream() again")
        engine = self._engine = Engine(self._pipe._plans(), collect=False, stream=True)
        progress = progress_task() if self._progress else None
        self._task = asyncio.get_running_loop().create_task(
            self._drive(engine, progress), name="pipeline-stream"
        )
        self._iterator = self._outputs()
        return self._iterator

    async def _drive(self, engine: Engine, progress: Any) -> None:
        assert engine.output_channel is not None
        try:
            await engine.execute(self._source, progress)
        except Exception as exc:
            # Delivered to the reader through the output channel.
            engine.output_channel.close(exc)

    async def _outputs(self) -> AsyncGenerator[R, None]:
        engine = self._engine
        assert engine is not None
        assert engine.output_channel is not None
        channel = engine.output_channel
        buffer = self._buffer
        while True:
            while buffer:
                index, value = buffer.popleft()
                engine.tally.settle_outputs([index])
                yield value
            if channel.error is not None:
                self._delivered = channel.error
                raise channel.error
            if channel.size:
                _, idxs, vals = channel.take_now(channel.size)
                buffer.extend(zip(idxs, vals, strict=True))
            elif channel.closed:
                return
            else:
                await channel.wait_readable()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, engine = self._task, self._engine
        assert task is not None
        assert engine is not None
        if not task.done():
            task.cancel()
        # Stop the run completely even if this task is cancelled meanwhile (the
        # run's own cancellation is what ends it): then re-raise that cancellation.
        interrupted = await _scopes.wait_finished(task)
        if self._iterator is not None:
            # Closed here, not later by the loop's finalizer in a task of its own.
            await self._iterator.aclose()
        self._buffer.clear()
        self.report = engine.report()
        if interrupted is not None or isinstance(exc, asyncio.CancelledError):
            _note_cut_short(self._pipe, engine)
        if interrupted is not None:
            raise interrupted
        error = engine.output_channel.error if engine.output_channel is not None else None
        if exc is None and error is not None and self._delivered is None:
            raise error


def _note_cut_short(pipe: Pipeline[Any, Any], engine: Engine) -> None:
    """Tell ``cohort.run`` what this cancelled run had done, for its Ctrl-C summary."""
    headline = str(engine.report()).splitlines()[0]
    note_cut_short(f"{pipe!r}: {headline}")


def check_source(source: object, pipe: object) -> None:
    """A clear error at the call site when the source cannot be iterated."""
    if not isinstance(source, AsyncIterable | Iterable):
        raise TypeError(
            f"{pipe!r}.run() needs an iterable or async iterable source, got {reprlib.repr(source)}"
        )
    if isinstance(source, str | bytes):
        raise TypeError(
            f"{pipe!r} got a {type(source).__name__} as its source, which would feed one "
            "character at a time; pass a list of them"
        )
