"""Pipelines: stages, composition, options, ordering, running and streaming (cohort.pipeline)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Coroutine
from typing import Any, assert_type

import pytest

import cohort
from _util import now
from cohort.testing import wait_all_tasks_blocked

vc = pytest.mark.virtual_clock


@cohort.stage(workers=4)
async def inc(x: int) -> int:
    return x + 1


@cohort.stage(workers=4)
async def double(x: int) -> int:
    return x * 2


async def aiter_of(items: list[Any], delay: float = 0.0) -> AsyncIterator[Any]:
    for item in items:
        if delay:
            await asyncio.sleep(delay)
        yield item


# -- stages as values ------------------------------------------------------------------


async def test_a_stage_is_still_the_function() -> None:
    assert await inc(1) == 2
    assert inc.__name__ == "inc"
    assert inc.name == "inc"
    assert inc.__wrapped__ is inc.fn


def test_stages_keep_the_function_signature_for_type_checkers() -> None:
    @cohort.stage
    async def gen(x: int) -> AsyncIterator[str]:
        yield str(x)

    @cohort.stage(workers=2)
    def plain(x: int, y: str = "") -> bytes:
        return b""

    one_arg: cohort.Stage[int, int] = inc
    assert one_arg is inc
    as_list: cohort.Stage[int, str, [], list[str]] = gen
    two_args: cohort.Stage[int, bytes, [str], bytes] = plain
    assert_type(inc | double, cohort.Pipeline[int, int])
    assert_type(plain | gen, cohort.Pipeline[int, str])  # type: ignore[operator]
    assert_type(gen | gen, cohort.Pipeline[int, str])  # type: ignore[operator]
    call: Coroutine[Any, Any, bytes] = plain(1, y="a")
    assert as_list is gen
    assert two_args is plain
    call.close()


@vc
async def test_awaiting_a_stage_applies_timeout_and_retry() -> None:
    calls: list[float] = []

    @cohort.stage(timeout=1.0, retry=cohort.Retry(attempts=3, backoff=1.0, jitter=False))
    async def flaky(x: int) -> int:
        calls.append(now())
        if len(calls) < 3:
            await asyncio.sleep(5)  # times out after 1 s
        return x

    assert await flaky(7) == 7
    # attempt 1 at 0 (times out at 1), backoff 1 -> attempt 2 at 2 (out at 3), backoff 2 -> 5
    assert calls == [0.0, 2.0, 5.0]


@vc
async def test_awaiting_a_stage_raises_the_last_error_unwrapped() -> None:
    @cohort.stage(retry=cohort.Retry(attempts=2, backoff=0, jitter=False))
    async def bad(x: int) -> int:
        raise KeyError(x)

    with pytest.raises(KeyError):
        await bad(1)


async def test_stages_and_pipelines_are_immutable_and_reusable() -> None:
    with pytest.raises(AttributeError, match="with_options"):
        inc.fn = double.fn
    pipe = inc | double
    with pytest.raises(AttributeError, match="immutable"):
        pipe._stages = ()
    longer = pipe | inc
    assert [s.name for s in longer.stages] == ["inc", "double", "inc"]
    assert [s.name for s in pipe.stages] == ["inc", "double"]
    first, second = await asyncio.gather(pipe.run(range(5)), pipe.run(range(5, 10)))
    assert first.outputs == [2, 4, 6, 8, 10]
    assert second.outputs == [12, 14, 16, 18, 20]
    report = await longer.run([1])
    assert [s.name for s in report.stages] == ["inc", "double", "inc#2"]
    assert report.outputs == [5]
    assert repr(pipe) == "<cohort.Pipeline inc | double>"


def test_with_options_returns_a_changed_copy() -> None:
    wider = inc.with_options(workers=8, name="inc8")
    assert wider.options.workers == 8
    assert wider.name == "inc8"
    assert inc.options.workers == 4


def test_composing_a_plain_function_says_to_decorate_it() -> None:
    async def plain(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"@cohort\.stage"):
        _ = plain | inc  # type: ignore[operator]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"workers": 0}, "workers"),
        ({"buffer": 0}, "buffer"),
        ({"timeout": 0}, "timeout"),
        ({"on_error": "ignore"}, "on_error"),
        ({"batch": 4, "buffer": 2}, "smaller than batch"),
        ({"batch_timeout": 1.0}, "needs batch"),
        ({"max_error_rate": 1.5}, "max_error_rate"),
        ({"retry": 3}, "cohort.Retry"),
    ],
)
def test_bad_options_fail_at_the_decorator(options: dict[str, Any], message: str) -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises((ValueError, TypeError), match=message):
        cohort.stage(**options)(f)


def test_cpu_needs_a_plain_def() -> None:
    async def f(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="plain def"):
        cohort.stage(cpu=True)(f)


def test_retry_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match="attempts"):
        cohort.Retry(attempts=0)
    with pytest.raises(TypeError, match="exception classes"):
        cohort.Retry(on=(int,))  # type: ignore[arg-type]
    assert cohort.Retry(on=KeyError).on == (KeyError,)
    r = cohort.Retry(attempts=5, backoff=1.0, max_backoff=3.0, jitter=False)
    assert [r.delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]
    assert 0 <= cohort.Retry(backoff=1.0).delay(3) <= 4.0


async def test_bad_sources_fail_at_the_call_site() -> None:
    with pytest.raises(TypeError, match="iterable"):
        await inc.run(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one character"):
        await inc.run("abc")  # type: ignore[arg-type]


# -- running -----------------------------------------------------------------------------


async def test_run_reports_outputs_counts_and_stage_stats() -> None:
    report = await (inc | double).run(range(1000))
    assert report.outputs == [(x + 1) * 2 for x in range(1000)]
    assert (report.read, report.succeeded, report.cancelled) == (1000, 1000, 0)
    assert report.counts_add_up()
    stats = report.stage("inc")
    assert (stats.items_in, stats.items_out, stats.failed, stats.workers) == (1000, 1000, 0, 4)
    assert report.stage("double").items_in == 1000
    assert "read 1000" in str(report)
    with pytest.raises(KeyError, match="no stage"):
        report.stage("nope")


async def test_collect_false_keeps_no_outputs() -> None:
    report = await inc.run(range(10), collect=False)
    assert report.outputs is None
    assert report.succeeded == 10


async def test_an_empty_source_runs_to_an_empty_report() -> None:
    report = await (inc | double).run([])
    assert report.outputs == []
    assert report.read == 0


async def test_async_sources_are_consumed() -> None:
    report = await (inc | double).run(aiter_of(list(range(100))))
    assert report.outputs == [(x + 1) * 2 for x in range(100)]


@vc
async def test_the_source_is_consumed_lazily_with_backpressure() -> None:
    pulled: list[int] = []

    def source() -> Any:
        for i in range(10_000):
            pulled.append(i)
            yield i

    gate = asyncio.Event()

    @cohort.stage(workers=2, buffer=4)
    async def blocked(x: int) -> int:
        await gate.wait()
        return x

    task = asyncio.create_task(blocked.run(source()))
    await wait_all_tasks_blocked()
    assert len(pulled) <= 2 * 64 + 4  # a chunk in flight and one queued at most
    gate.set()
    report = await task
    assert report.outputs == list(range(10_000))


@vc
async def test_ordered_output_under_random_latencies() -> None:
    rng = random.Random(7)
    delays = [rng.uniform(0, 1) for _ in range(300)]

    @cohort.stage(workers=8)
    async def jitter(i: int) -> int:
        await asyncio.sleep(delays[i])
        return i

    @cohort.stage(workers=3)
    async def jitter2(i: int) -> int:
        await asyncio.sleep(delays[-1 - i] / 3)
        return i

    report = await (jitter | jitter2).run(range(300))
    assert report.outputs == list(range(300))


@vc
async def test_unordered_stages_emit_in_completion_order() -> None:
    @cohort.stage(workers=4, ordered=False)
    async def slow_first(i: int) -> int:
        await asyncio.sleep(10 if i == 0 else 1)
        return i

    report = await slow_first.run(range(8))
    assert report.outputs is not None
    assert sorted(report.outputs) == list(range(8))
    assert report.outputs[-1] == 0


@vc
async def test_the_reorder_window_bounds_work_started_past_a_slow_item() -> None:
    started: list[int] = []

    @cohort.stage(workers=3, buffer=2)  # window = buffer + workers = 5
    async def head_slow(i: int) -> int:
        started.append(i)
        await asyncio.sleep(100 if i == 0 else 1)
        return i

    task = asyncio.create_task(head_slow.run(range(50)))
    await asyncio.sleep(50)
    assert max(started) < 5  # nothing beyond the window while item 0 is running
    report = await task
    assert report.outputs == list(range(50))


@vc
async def test_workers_run_concurrently() -> None:
    @cohort.stage(workers=10)
    async def sleepy(i: int) -> int:
        await asyncio.sleep(1)
        return i

    start = now()
    await sleepy.run(range(100))
    assert now() - start == pytest.approx(10)


async def test_a_stage_that_only_yields_to_the_loop_takes_chunks_however_busy_the_loop() -> None:
    # Its calls never wait on anything, so workers running them side by side gain
    # nothing: a worker takes runs of items, although each call stays suspended
    # long (over 1 ms: another task holds the loop up at every turn).
    import time

    done = False
    by_task: dict[asyncio.Task[Any] | None, list[int]] = {}

    async def hog() -> None:
        while not done:
            until = time.perf_counter() + 1.2e-3
            while time.perf_counter() < until:
                pass
            await asyncio.sleep(0)

    @cohort.stage(workers=4)
    async def yielding(i: int) -> int:
        by_task.setdefault(asyncio.current_task(), []).append(i)
        await asyncio.sleep(0)
        return i

    hogging = asyncio.create_task(hog())
    try:
        report = await yielding.run(range(400), collect=False)
    finally:
        done = True
        await hogging
    assert report.succeeded == 400
    # Items a worker took right after the one before it: nearly all in chunks of up
    # to 64, far fewer when each idle worker is handed one item at a time.
    in_runs = sum(b == a + 1 for items in by_task.values() for a, b in itertools.pairwise(items))
    assert in_runs > 0.8 * 400


async def test_ordered_stages_that_yield_keep_every_worker_busy_once_they_take_chunks() -> None:
    # Each worker takes its share of the reorder window (128 items / 8 workers),
    # not a whole chunk of 64 that would leave room for two workers only.
    in_flight = 0
    most = 0

    @cohort.stage(workers=8, buffer=120)  # window = buffer + workers
    async def yielding(i: int) -> int:
        nonlocal in_flight, most
        in_flight += 1
        if i >= 1000:  # long after the stage took to chunks
            most = max(most, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1
        return i

    report = await yielding.run(range(3000))
    assert report.outputs == list(range(3000))
    assert most == 8


async def test_many_drop_and_generators() -> None:
    @cohort.stage
    async def split(s: str) -> Any:
        if s == "skip":
            return cohort.DROP
        return cohort.Many(s.split())

    @cohort.stage(workers=2)
    async def shout(word: str) -> AsyncIterator[str]:
        yield word.upper()
        yield word.upper() + "!"

    report = await (split | shout).run(["a b", "skip", "c", ""])
    outputs: Any = report.outputs
    assert outputs == ["A", "A!", "B", "B!", "C", "C!"]
    assert (report.succeeded, report.dropped) == (2, 2)  # "" is Many([]): a drop
    assert report.stage("split").items_out == 3
    assert report.stage("shout").items_out == 6
    assert report.counts_add_up()


async def test_plain_def_stages_run_in_threads() -> None:
    import threading

    main = threading.get_ident()

    @cohort.stage(workers=2)
    def where(x: int) -> tuple[int, bool]:
        return x, threading.get_ident() != main

    @cohort.stage
    def pairs(x: tuple[int, bool]) -> Any:
        yield x
        yield x

    report = await (where | pairs).run(range(3))
    assert report.outputs == [(0, True), (0, True), (1, True), (1, True), (2, True), (2, True)]
    assert await where(5) == (5, True)


@vc
async def test_stage_latency_and_busy_time() -> None:
    @cohort.stage(workers=2)
    async def second(i: int) -> int:
        await asyncio.sleep(1)
        return i

    report = await second.run(range(6))
    stats = report.stage("second")
    assert stats.latency_p50 == pytest.approx(1.0)
    assert stats.latency_p99 == pytest.approx(1.0)
    assert stats.busy == pytest.approx(6.0)
    assert report.elapsed == pytest.approx(3.0)


# -- batches -------------------------------------------------------------------------------


async def test_batches_deliver_lists_and_map_results_back() -> None:
    seen: list[list[int]] = []

    @cohort.stage(batch=4)
    async def evens(xs: list[int]) -> list[Any]:
        seen.append(xs)
        return [x if x % 2 == 0 else cohort.DROP for x in xs]

    report = await evens.run(range(10))
    assert report.outputs == [0, 2, 4, 6, 8]
    assert report.dropped == 5
    assert all(1 <= len(b) <= 4 for b in seen)
    assert [x for b in seen for x in b] == list(range(10))


async def test_a_batch_sink_returning_none_counts_items_done() -> None:
    stored: list[int] = []

    @cohort.stage(batch=3)
    async def store(xs: list[int]) -> None:
        stored.extend(xs)

    report = await (inc | store).run(range(7))
    assert sorted(stored) == list(range(1, 8))
    assert (report.done, report.succeeded, report.outputs) == (7, 0, [])
    assert report.counts_add_up()


@vc
async def test_batch_timeout_flushes_a_partial_batch() -> None:
    sizes: list[Any] = []

    @cohort.stage(batch=10, batch_timeout=0.5)
    async def sink(xs: list[int]) -> None:
        sizes.append((now(), len(xs)))

    async def source() -> AsyncIterator[int]:
        for i in range(2):
            await asyncio.sleep(0.1)
            yield i
        await asyncio.sleep(5)
        yield 2

    await sink.run(source())
    # the first item waited from 0.1 to 0.6; the last batch flushes when the source ends
    assert sizes == [(pytest.approx(0.6), 2), (pytest.approx(5.2), 1)]


async def test_a_batch_returning_the_wrong_length_fails_its_items() -> None:
    @cohort.stage(batch=5, on_error="skip")
    async def wrong(xs: list[int]) -> list[int]:
        return xs[:1]

    report = await wrong.run(range(3))
    assert report.failed == 3
    assert isinstance(report.errors[0].exception, TypeError)
    assert "same length" in str(report.errors[0].exception)


# -- bounded resources ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 5000])
async def test_the_number_of_tasks_does_not_grow_with_items(n: int) -> None:
    peak = 0

    @cohort.stage(workers=3)
    async def count_tasks(x: int) -> int:
        nonlocal peak
        peak = max(peak, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return x

    before = len(asyncio.all_tasks())
    await (count_tasks | count_tasks | count_tasks).run(range(n))
    assert peak - before <= 1 + 3 * 3  # the feeder and the workers
    assert len(asyncio.all_tasks()) == before


# -- streaming --------------------------------------------------------------------------------


async def test_stream_yields_outputs_then_fills_the_report() -> None:
    stream = (inc | double).stream(range(100))
    async with stream as outputs:
        got = [x async for x in outputs]
    assert got == [(x + 1) * 2 for x in range(100)]
    assert stream.report is not None
    assert stream.report.succeeded == 100
    assert stream.report.outputs is None


async def test_leaving_a_stream_early_cancels_the_rest() -> None:
    before = len(asyncio.all_tasks())
    stream = (inc | double).stream(range(10_000))
    async with stream as outputs:
        async for x in outputs:
            if x == 20:
                break
    report = stream.report
    assert report is not None
    assert report.succeeded == 10
    assert report.cancelled == report.read - 10
    assert report.counts_add_up()
    assert len(asyncio.all_tasks()) == before


async def test_a_stream_raises_a_fail_fast_error_from_the_iteration() -> None:
    @cohort.stage
    async def boom(x: int) -> int:
        if x == 5:
            raise ValueError("five")
        return x

    got: list[int] = []
    stream = boom.stream(range(10))
    with pytest.raises(cohort.PipelineError) as info:
        async with stream as outputs:
            async for x in outputs:
                got.append(x)
    assert info.value.index == 5
    assert got == [0, 1, 2, 3, 4] or got == got[:5]
    assert stream.report is not None
    assert stream.report.failed == 1


async def test_a_stream_error_raises_at_exit_when_not_iterated() -> None:
    @cohort.stage
    async def boom(x: int) -> int:
        raise ValueError("no")

    with pytest.raises(cohort.PipelineError):
        async with boom.stream(range(3)):
            await asyncio.sleep(0.01)


async def test_an_error_in_the_stream_body_propagates_unchanged() -> None:
    with pytest.raises(KeyError):
        async with inc.stream(range(1000)) as outputs:
            async for _ in outputs:
                raise KeyError("mine")


# -- cancellation -------------------------------------------------------------------------------


@vc
async def test_cancelling_a_run_stops_everything() -> None:
    started = 0

    @cohort.stage(workers=4)
    async def forever(x: int) -> int:
        nonlocal started
        started += 1
        await asyncio.sleep(1000)
        return x

    before = asyncio.all_tasks()
    task = asyncio.create_task((inc | forever).run(range(100)))
    await wait_all_tasks_blocked()
    assert started == 4
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == before


@vc
async def test_an_enclosing_timeout_stops_a_run() -> None:
    @cohort.stage(workers=2)
    async def slow(x: int) -> int:
        await asyncio.sleep(1)
        return x

    with cohort.move_on_after(3.5) as scope:
        await slow.run(range(100))
    assert scope.cancel_called
    assert now() == 3.5
    assert len(asyncio.all_tasks()) == 1


@vc
async def test_a_stream_left_while_its_consumer_is_cancelled_again_still_stops_the_run() -> None:
    release = asyncio.Event()
    in_cleanup = asyncio.Event()
    got_one = asyncio.Event()

    @cohort.stage(workers=2)
    async def slow(x: int) -> int:
        if x == 0:
            return x
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            in_cleanup.set()
            await release.wait()  # cleanup that takes a while (closing a connection)
            raise
        return x

    stream = slow.stream(range(4))

    async def consumer() -> None:
        async with stream as outputs:
            async for _ in outputs:
                got_one.set()
                await asyncio.sleep(3600)

    task = asyncio.ensure_future(consumer())
    await got_one.wait()
    task.cancel()  # the block is left: the run is being stopped
    await in_cleanup.wait()
    task.cancel()  # and cancelled again while it waits for the run to stop
    await wait_all_tasks_blocked()
    assert not task.done()  # still stopping the run, not gone with tasks left behind
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert asyncio.all_tasks() == {asyncio.current_task()}
    report = stream.report
    assert report is not None
    assert (report.read, report.succeeded) == (4, 1)
    assert report.succeeded + report.failed + report.cancelled == 4


@vc
async def test_leaving_a_stream_early_closes_its_iterator() -> None:
    # Not closed by the block, the iterator (an async generator) was closed by
    # the loop's finalizer in a task of its own once the consumer was gone.
    stream = inc.stream(range(100))
    iterator: Any = None

    async def consumer() -> None:
        nonlocal iterator
        async with stream as items:
            iterator = items
            async for _ in items:
                break

    await asyncio.create_task(consumer())
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert iterator.ag_frame is None  # closed
    assert stream.report is not None
    assert stream.report.counts_add_up()


@vc
async def test_a_stage_that_starts_waiting_shares_its_items_out_again() -> None:
    @cohort.stage(workers=8, ordered=False)
    async def turns_slow(i: int) -> int:
        await asyncio.sleep(0 if i < 640 else 1)
        return i

    start = now()
    report = await turns_slow.run(range(1280))
    assert report.succeeded == 1280
    # A sampled call that waits ends chunk mode: the chunks already taken run to
    # their end (64 s at most), then the slow items go one at a time to 8 workers.
    assert now() - start < 100
