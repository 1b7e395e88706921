"""The engine: long-lived workers per stage, bounded channels, one task group.

No task per item. A feeder reads the source in chunks into the first stage's
channel (``_feeder``); each stage's workers take chunks (sharing what is queued between the
idle workers, up to ``CHUNK`` items), call the stage function item by item,
and put their outputs into the next channel. An ordered stage releases
finished chunks in sequence through a reorder window bounded by its
``window`` option: a worker does not take items beyond it.

Accounting: each source item has an index; every item ends exactly once
as output, dropped, done or failed; what never ended is cancelled (the
tally of fates, ``_tally``, fanned-out items included).
"""

from __future__ import annotations

import asyncio
import inspect
import reprlib
from collections.abc import (
    AsyncIterable,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Sequence,
    Sized,
)
from time import perf_counter
from types import CoroutineType
from typing import Any

from cohort._core import _scopes
from cohort._core._coros import spawn_hook
from cohort._core._group import TaskGroup
from cohort._core._journal import journal_var
from cohort._exceptions import PipelineError
from cohort._observe._events import EVENTS
from cohort.pipeline._channel import CHUNK, Channel
from cohort.pipeline._feeder import read_async, read_sync
from cohort.pipeline._options import StageOptions
from cohort.pipeline._report import ErrorRecord, LatencySampler, Report, StageStatistics
from cohort.pipeline._retry import DROP, AttemptsFailed, Many, call_with_policy
from cohort.pipeline._tally import DONE, DROPPED, FAILED, Tally

# What the engine needs of a stage: its options and how to call it on one item.
StagePlan = tuple[StageOptions, Callable[[Any], Awaitable[Any]]]

# A stage's workers take all that is queued (up to CHUNK) once CALM sampled calls
# in a row did not wait on a future, while the sampled calls ran on the loop for
# under FAST seconds on average (a decaying mean, each sample counted up to 4 x FAST,
# so that one call slowed by a garbage collection does not change the mode).
CALM = 16
FAST = 50e-6
SAMPLE_EVERY = 8  # chunks per sampled call once a stage is calm
# Mean seconds per call under which a worker may take its share of a backlog
# (an item then waits for at most a few such calls before it moves on).
QUICK = 1e-3
# PipelineError.stage when the source itself failed (not a name cohort gives a stage).
SOURCE = "<source>"


_MIN_RATE_SAMPLE = 10  # items a stage must have seen before max_error_rate is judged mid-run
_reprer = reprlib.Repr()
_reprer.maxstring = _reprer.maxother = 60
_repr = _reprer.repr


class _Collector:
    """The last stage's output when running with ``run()``: outputs are settled at once."""

    __slots__ = ("engine", "outputs")

    def __init__(self, engine: Engine, collect: bool) -> None:
        self.engine = engine
        self.outputs: list[Any] | None = [] if collect else None

    async def put(self, idxs: list[int], vals: list[Any]) -> None:
        if self.outputs is not None:
            self.outputs.extend(vals)
        self.engine.tally.settle_outputs(idxs)

    def close(self, error: BaseException | None = None) -> None:
        pass


class Engine:
    """One run of a pipeline: the counters, the channels and the stages' workers."""

    def __init__(self, stages: Sequence[StagePlan], *, collect: bool, stream: bool) -> None:
        loop = asyncio.get_running_loop()
        self.loop = loop
        self.tally = Tally()
        self.errors: list[ErrorRecord] = []
        self.fatal: BaseException | None = None
        self.started = loop.time()
        self.ended: float | None = None
        self.total: int | None = None  # items in the source, when it has a length
        self.collector: _Collector | None = None
        labels = _labels([options.name for options, _ in stages])
        first = Channel(stages[0][0].capacity, loop)
        self.source_channel = first
        self.runs: list[StageRun] = []
        inp = first
        for i, (options, call) in enumerate(stages):
            out: Channel | _Collector
            if i + 1 < len(stages):
                out = Channel(stages[i + 1][0].capacity, loop)
            elif stream:
                out = Channel(max(CHUNK, options.capacity), loop)
            else:
                out = self.collector = _Collector(self, collect)
            self.runs.append(StageRun(self, options, call, labels[i], inp, out))
            if isinstance(out, Channel):
                inp = out
        self.output_channel = inp if stream else None

    # -- running ---------------------------------------------------------------------

    async def execute(
        self, source: Any, progress: Callable[[Engine], Awaitable[None]] | None
    ) -> None:
        """Run to the end; raise the fatal error (bare) if the run failed."""
        if EVENTS.on:
            EVENTS.log.info("pipeline.started", stages=[r.name for r in self.runs])
        fatal: BaseException | None = None
        if isinstance(source, Sized):
            self.total = len(source)
        # The engine's own workers are not the caller's children: a layer that
        # records children (cohort.durable) does not see them, nor journals their
        # decisions (workers take items in no fixed order).
        hook = spawn_hook.set(None)
        journal = journal_var.set(None)
        try:
            async with TaskGroup(name="pipeline") as g:
                g.spawn(self.feed, source, name="pipeline-source")
                for run in self.runs:
                    for w in range(run.options.workers):
                        g.spawn(run.worker, name=f"pipeline-{run.name}-{w}")
                if progress is not None:
                    g.spawn(progress, self, name="pipeline-progress", critical=False)
        except BaseExceptionGroup:
            if self.fatal is None:
                raise
            fatal = self.fatal
        finally:
            journal_var.reset(journal)
            spawn_hook.reset(hook)
            self.ended = self.loop.time()
        if fatal is None:
            fatal = self.fatal = self._judge_rates()
        if EVENTS.on:
            EVENTS.log.info("pipeline.finished", ok=fatal is None, **self.tally.summary())
        if fatal is not None:
            raise fatal

    async def feed(self, source: Any) -> None:
        first = self.source_channel
        try:
            if isinstance(source, AsyncIterable):
                await read_async(source, first, self.tally)
            else:
                await read_sync(iter(source), first, self.tally)
        except Exception as exc:
            if self.fatal is None:
                self.fatal = exc
            raise
        except asyncio.CancelledError as exc:
            stray = _scopes.stray(exc, "the source")
            if stray is None:
                raise  # the run is being cancelled
            error = PipelineError(
                f"the source failed after {self.tally.read} items: RuntimeError: {stray}",
                stage=SOURCE,
                item=None,
                index=None,
            )
            raise self.fail_fast(error) from stray
        first.close()

    def fail_fast(self, error: BaseException) -> BaseException:
        if self.fatal is None:
            self.fatal = error
        return error

    def _judge_rates(self) -> BaseException | None:
        for run in self.runs:
            error = run.rate_exceeded(final=True)
            if error is not None:
                return error
        return None

    # -- reporting ------------------------------------------------------------------------

    def report(self, outputs: list[Any] | None = None) -> Report[Any]:
        if self.collector is not None:
            outputs = self.collector.outputs
        end = self.ended if self.ended is not None else self.loop.time()
        s = self.tally.summary()
        return Report(
            outputs=outputs,
            errors=list(self.errors),
            read=s["read"],
            succeeded=s["succeeded"],
            dropped=s["dropped"],
            done=s["done"],
            failed=s["failed"],
            cancelled=s["cancelled"],
            stages=tuple(run.stats() for run in self.runs),
            elapsed=end - self.started,
        )


def _labels(names: Sequence[str]) -> list[str]:
    """Stage names for reports: a name used twice gets ``#2``, ``#3``..."""
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        n = seen[name] = seen.get(name, 0) + 1
        labels.append(name if n == 1 else f"{name}#{n}")
    return labels


class _Probe:
    """Awaits a sampled call's coroutine as ``await`` would, then tells the stage
    whether it ever waited on a future (a bare yield to the loop is not
    waiting), whether it yielded at all, and how long it ran (see ``_fast``)."""

    __slots__ = ("coro", "run")

    def __init__(self, run: StageRun, coro: Coroutine[Any, Any, Any]) -> None:
        self.run = run
        self.coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        sent: Any = None
        thrown: BaseException | None = None
        own = 0.0  # seconds spent running the coroutine's steps
        waited = yielded = False
        try:
            while True:
                t0 = perf_counter()
                try:
                    signal = coro.send(sent) if thrown is None else coro.throw(thrown)
                except StopIteration as stop:
                    return stop.value
                finally:
                    own += perf_counter() - t0
                thrown = None
                yielded = True
                if signal is not None:
                    waited = True
                try:
                    sent = yield signal
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as exc:
                    sent, thrown = None, exc
        finally:
            run = self.run
            run.calm = 0 if waited else run.calm + 1
            run.yields = yielded
            run.own += (min(own, 4 * FAST) - run.own) / 8


class StageRun:
    """One stage inside one run: its workers, reorder window and statistics."""

    def __init__(
        self,
        engine: Engine,
        opts: StageOptions,
        call: Callable[[Any], Awaitable[Any]],
        name: str,
        inp: Channel,
        out: Any,
    ) -> None:
        self.engine = engine
        self.options = opts
        self.name = name
        self.inp = inp
        self.out: Channel | _Collector = out
        self.call = call
        self.slow = opts.timeout is not None or opts.retry is not None
        self.window = opts.window if opts.ordered else 0
        self.limit = opts.batch or CHUNK
        # Calls that yield to the loop run side by side, and the more of them the
        # fewer turns of the loop per item: a worker of an ordered stage then
        # takes no more than its share of the window, which one chunk would fill.
        self.share = max(1, self.window // opts.workers) if self.window else CHUNK
        self.yields = False  # the last sampled call yielded to the loop
        self.next_release = 0
        self.pending: dict[int, tuple[int, list[int], list[Any]]] = {}
        self.releasing = False
        self.window_waiters: list[asyncio.Future[None]] = []
        self.alive = opts.workers
        self.active = 0  # workers calling the function (the others share what is queued)
        self.items_in = self.items_out = self.failed = self.retried = self.dropped = 0
        self.processed = 0  # items whose call finished (in flight: items_in - processed)
        self.calm = 0  # sampled calls in a row that never waited on a future (see _fast)
        self.chunks = 0  # chunks taken by process_items
        self.own = 0.0  # decaying mean of the sampled calls' time running on the loop
        self.busy = 0.0
        self.sampler = LatencySampler()

    # -- workers -----------------------------------------------------------------------

    async def worker(self) -> None:
        process = self.process_batch if self.options.batch else self.process_items
        if EVENTS.on and self.alive == self.options.workers:
            EVENTS.log.debug("pipeline.stage.started", stage=self.name)
        while (got := await self.take()) is not None:
            seq, idxs, vals = got
            self.items_in += len(idxs)
            self.active += 1
            if EVENTS.sink is None:
                oi, ov = await process(idxs, vals)
            else:
                oi, ov = await self._traced(process, idxs, vals)
            self.processed += len(idxs)
            self.active -= 1
            await self.emit(seq, len(idxs), oi, ov)
        self.alive -= 1
        if not self.alive:
            self.out.close()
            if EVENTS.on:
                EVENTS.log.info("pipeline.stage.finished", **self._stats_fields())

    async def _traced(
        self,
        process: Callable[[list[int], list[Any]], Awaitable[tuple[list[int], list[Any]]]],
        idxs: list[int],
        vals: list[Any],
    ) -> tuple[list[int], list[Any]]:
        """``process`` as a span of the stage's batch (while a sink such as
        OpenTelemetry's listens)."""
        sink = EVENTS.sink
        assert sink is not None
        span = sink.batch_started(self.name, len(idxs), self.inp.size)
        out: list[int] = []
        try:
            out, values = await process(idxs, vals)
            return out, values
        finally:
            sink.batch_ended(span, self.name, len(idxs), len(out))

    async def take(self) -> tuple[int, list[int], list[Any]] | None:
        inp = self.inp
        batch = self.options.batch
        deadline: float | None = None
        while True:
            room = self.limit
            if self.window:
                room = min(room, self.next_release + self.window - inp.head_seq)
                if room < (batch or 1):
                    await self._wait_window()
                    continue
            size = inp.size
            if not size:
                if self.window_waiters:
                    self._wake_one()  # not using the room: pass the wake-up on
                if inp.closed:
                    return None
                await inp.wait_readable()
                continue
            if batch is None:
                if self._fast():
                    n = min(room, size)  # quick calls: all that is queued
                    if self.yields and n > self.share:
                        n = self.share
                elif self.active + 1 < self.alive or not self._quick():
                    # An idle worker could take the next one, or calls are slow:
                    # no item waits behind another.
                    n = 1
                else:
                    # Every other worker is busy and calls are quick: a fair share
                    # of the backlog, so this one goes on to its next item
                    # without a round through the channels.
                    n = min(room, -(-size // self.alive))
                if self.window_waiters and n < room and n < size:
                    self._wake_one()
                return inp.take_now(n)
            if size < room and not inp.closed:
                timeout = self.options.batch_timeout
                if self.window_waiters:
                    self._wake_one()
                if timeout is None:
                    await inp.wait_readable()
                    continue
                if deadline is None:
                    deadline = self.engine.loop.time() + timeout
                if self.engine.loop.time() < deadline:
                    try:
                        async with asyncio.timeout_at(deadline):
                            await inp.wait_readable()
                    except TimeoutError:
                        pass
                    continue
            return inp.take_now(min(room, size))

    def _fast(self) -> bool:
        """True while this stage's calls are known not to need concurrent workers.

        A call that never waits on a future (it may yield to the loop, as
        ``await asyncio.sleep(0)`` does) gains nothing from running beside
        others on the same loop, and one that runs briefly does not hold the
        loop up: one worker taking all that is queued (up to ``CHUNK``) beats
        sharing it out, with fewer, larger chunks. Otherwise items are taken
        one at a time, so that every idle worker gets one and they all run
        concurrently (and a small input spreads over all workers).

        The first call of a chunk is sampled (``_sample``; every chunk's until
        the stage is calm, then every ``SAMPLE_EVERY``-th chunk's), so the mode
        follows the calls' behaviour both ways. It does not depend on how long
        a call stays suspended: that time includes the other workers' turns,
        which are longer while items are taken one at a time, so a wall-time
        rule would keep a stage in the mode it started in.
        """
        return self.calm >= CALM and self.own < FAST

    def _quick(self) -> bool:
        """True once this stage's calls are known to take under ``QUICK`` on average."""
        processed = self.processed
        return processed >= self.alive and self.busy < QUICK * processed

    async def _wait_window(self) -> None:
        fut = self.engine.loop.create_future()
        self.window_waiters.append(fut)
        await fut

    def _wake_one(self) -> None:
        # One at a time: the woken worker wakes the next if room is left after
        # its take, so a release does not wake workers that would find none.
        waiters = self.window_waiters
        while waiters:
            fut = waiters.pop(0)
            if not fut.done():
                fut.set_result(None)
                return

    async def emit(self, seq: int, k: int, oi: list[int], ov: list[Any]) -> None:
        if not self.window:
            if oi:
                await self.out.put(oi, ov)
            return
        pending = self.pending
        pending[seq] = (k, oi, ov)
        if self.releasing:
            return  # the releasing worker picks this chunk up when its turn comes
        self.releasing = True
        try:
            while (entry := pending.pop(self.next_release, None)) is not None:
                k, oi, ov = entry
                if oi:
                    await self.out.put(oi, ov)
                self.next_release += k
                if self.window_waiters:
                    self._wake_one()
        finally:
            self.releasing = False

    # -- calling the stage function ------------------------------------------------------

    def _on_retry(self, exc: Exception, attempt: int) -> None:
        self.retried += 1
        if EVENTS.on:
            EVENTS.log.info(
                "pipeline.item.retried", stage=self.name, attempt=attempt, error=repr(exc)
            )

    async def _call(self, value: Any) -> Any:
        opts = self.options
        return await call_with_policy(self.call, value, opts.timeout, opts.retry, self._on_retry)

    async def process_items(self, idxs: list[int], vals: list[Any]) -> tuple[list[int], list[Any]]:
        call = self._call if self.slow else self.call
        clock = self.engine.loop.time
        oi: list[int] = []
        ov: list[Any] = []
        # One clock reading per chunk for busy time; the latency sample is the
        # chunk's first item (chunks of slow stages are small, so most are sampled).
        start = clock()
        sampled = False
        # The chunk's first call is sampled (see _fast): every chunk's until the
        # stage is calm, then every SAMPLE_EVERY-th chunk's (a sample costs a few us).
        self.chunks += 1
        first = self.calm < CALM or not self.chunks % SAMPLE_EVERY
        for i, x in zip(idxs, vals, strict=True):
            try:
                if first:
                    first = False
                    y = await self._sample(call, x)
                else:
                    y = await call(x)
            except Exception as exc:
                sampled = True
                await self.fail([i], [x], exc)
                continue
            except asyncio.CancelledError as exc:
                stray = _scopes.stray(exc, f"stage {self.name}")
                if stray is None:
                    raise  # the run is being cancelled
                sampled = True
                await self.fail([i], [x], stray)
                continue
            if not sampled:
                sampled = True
                self.sampler.add(clock() - start)
            if y is DROP:
                self.drop(i)
            elif type(y) is Many:
                self.many(i, y, oi, ov)
            else:
                oi.append(i)
                ov.append(y)
        self.busy += clock() - start
        self.items_out += len(ov)
        return oi, ov

    def _sample(self, call: Callable[[Any], Awaitable[Any]], value: Any) -> Awaitable[Any]:
        """Call once, to be driven by a ``_Probe`` that sees whether it waits and how
        long it runs (a call that returns no coroutine counts as waiting)."""
        aw = call(value)
        if type(aw) is CoroutineType or isinstance(aw, Coroutine):
            return _Probe(self, aw)
        self.calm = 0
        return aw

    async def process_batch(self, idxs: list[int], vals: list[Any]) -> tuple[list[int], list[Any]]:
        clock = self.engine.loop.time
        t0 = clock()
        try:
            result = await (self._call(vals) if self.slow else self.call(vals))
            self._check_batch_result(vals, result)
        except (Exception, asyncio.CancelledError) as exc:
            error = (
                exc if isinstance(exc, Exception) else _scopes.stray(exc, f"stage {self.name!r}")
            )
            if error is None:
                raise  # the run is being cancelled
            self.busy += clock() - t0
            await self.fail(idxs, vals, error)
            return [], []
        t = clock() - t0
        self.busy += t
        self.sampler.add(t)
        if result is None:
            for i in idxs:
                self.engine.tally.settle(i, DONE)
            return [], []
        oi: list[int] = []
        ov: list[Any] = []
        for i, y in zip(idxs, result, strict=True):
            if y is DROP:
                self.drop(i)
            elif type(y) is Many:
                self.many(i, y, oi, ov)
            else:
                oi.append(i)
                ov.append(y)
        self.items_out += len(ov)
        return oi, ov

    def _check_batch_result(self, vals: list[Any], result: Any) -> None:
        if result is not None and (not isinstance(result, list) or len(result) != len(vals)):
            raise TypeError(
                f"batch stage {self.name!r} got {len(vals)} items and returned "
                f"{_repr(result)}: return a list of the same length (an output or "
                "cohort.DROP per item) or None"
            )

    def drop(self, index: int) -> None:
        self.dropped += 1
        self.engine.tally.settle(index, DROPPED)
        if EVENTS.on:
            EVENTS.log.debug("pipeline.item.dropped", stage=self.name, index=index)

    def many(self, index: int, many: Many[Any], oi: list[int], ov: list[Any]) -> None:
        values = many.values
        if not values:
            self.drop(index)
            return
        if len(values) > 1:
            self.engine.tally.fan(index, len(values))
        oi.extend([index] * len(values))
        ov.extend(values)

    async def fail(self, idxs: list[int], vals: list[Any], exc: Exception) -> None:
        """Record the failure of these items, then apply the stage's error policy."""
        attempts = 1
        if isinstance(exc, AttemptsFailed):
            attempts = exc.attempts
            exc = exc.exc
        engine = self.engine
        for i, x in zip(idxs, vals, strict=True):
            self.failed += 1
            engine.errors.append(ErrorRecord(x, i, self.name, exc, attempts))
            engine.tally.settle(i, FAILED)
            if EVENTS.on:
                EVENTS.log.warning(
                    "pipeline.item.failed", stage=self.name, index=i, error=repr(exc)
                )
        on_error = self.options.on_error
        if on_error == "raise":
            error = PipelineError(
                f"stage {self.name!r} failed on item {idxs[0]} ({_repr(vals[0])}): "
                f"{type(exc).__name__}: {exc}",
                stage=self.name,
                item=vals[0],
                index=idxs[0],
            )
            raise engine.fail_fast(error) from exc
        if callable(on_error):
            for i, x in zip(idxs, vals, strict=True):
                await self._dead_letter(on_error, i, x, exc)
        too_many = self.rate_exceeded(final=False)
        if too_many is not None:
            raise engine.fail_fast(too_many) from exc

    async def _dead_letter(
        self, sink: Callable[[Any, BaseException], Any], index: int, item: Any, exc: Exception
    ) -> None:
        try:
            result = sink(item, exc)
            if inspect.isawaitable(result):
                await result
        except (Exception, asyncio.CancelledError) as raised:
            what = f"the dead-letter sink of stage {self.name!r}"
            sink_error = raised if isinstance(raised, Exception) else _scopes.stray(raised, what)
            if sink_error is None:
                raise  # the run is being cancelled
            error = PipelineError(
                f"the dead-letter sink of stage {self.name!r} failed on item {index}: "
                f"{type(sink_error).__name__}: {sink_error}",
                stage=self.name,
                item=item,
                index=index,
            )
            raise self.engine.fail_fast(error) from sink_error

    def rate_exceeded(self, *, final: bool) -> PipelineError | None:
        opts = self.options
        if opts.max_errors is not None and self.failed > opts.max_errors:
            reason = f"{self.failed} errors, more than max_errors={opts.max_errors}"
        elif (
            opts.max_error_rate is not None
            and self.items_in
            and (final or self.items_in >= _MIN_RATE_SAMPLE)
            and self.failed / self.items_in > opts.max_error_rate
        ):
            reason = (
                f"{self.failed} errors in {self.items_in} items, more than "
                f"max_error_rate={opts.max_error_rate}"
            )
        else:
            return None
        last = self.engine.errors[-1] if self.engine.errors else None
        error = PipelineError(
            f"stage {self.name!r} failed: {reason}",
            stage=self.name,
            item=last.item if last else None,
            index=last.index if last else None,
        )
        if last is not None:
            error.__cause__ = last.exception
        return error

    # -- statistics ----------------------------------------------------------------------

    def stats(self) -> StageStatistics:
        return StageStatistics(
            name=self.name,
            workers=self.options.workers,
            items_in=self.items_in,
            items_out=self.items_out,
            failed=self.failed,
            retried=self.retried,
            dropped=self.dropped,
            latency_p50=self.sampler.quantile(0.5),
            latency_p99=self.sampler.quantile(0.99),
            busy=self.busy,
        )

    def _stats_fields(self) -> dict[str, Any]:
        s = self.stats()
        return {
            "stage": s.name,
            "items_in": s.items_in,
            "items_out": s.items_out,
            "failed": s.failed,
            "retried": s.retried,
            "dropped": s.dropped,
        }
