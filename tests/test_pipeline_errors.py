"""Pipelines: error policies, retries, timeouts, source errors, fail-fast accounting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import cohort
from _util import now

vc = pytest.mark.virtual_clock


def failing_on(*bad: int, on_error: Any = "raise", workers: int = 2, **options: Any) -> Any:
    # Options forwarded as **Any match both of stage()'s keyword overloads: untyped.
    @cohort.stage(workers=workers, on_error=on_error, name="check", **options)  # type: ignore[untyped-decorator]
    async def check(x: int) -> int:
        await asyncio.sleep(0)
        if x in bad:
            raise ValueError(f"bad {x}")
        return x

    return check


@cohort.stage(workers=2)
async def plus_ten(x: int) -> int:
    return x + 10


async def test_raise_fails_fast_with_a_bare_pipeline_error() -> None:
    with pytest.raises(cohort.PipelineError) as info:
        await (plus_ten | failing_on(17)).run(range(1000))
    error = info.value
    assert (error.stage, error.item, error.index) == ("check", 17, 7)
    assert isinstance(error.__cause__, ValueError)
    assert "check" in str(error)
    assert "bad 17" in str(error)


async def test_raise_never_hangs_whatever_the_buffers() -> None:
    @cohort.stage(workers=1, buffer=1)
    async def stuck_downstream(x: int) -> int:
        await asyncio.sleep(0)
        return x

    for bad in (0, 1, 50, 999):
        with pytest.raises(cohort.PipelineError):
            await (failing_on(bad, buffer=1, workers=3) | stuck_downstream).run(range(1000))


async def test_skip_records_errors_and_goes_on() -> None:
    report = await (plus_ten | failing_on(12, 15, on_error="skip")).run(range(10))
    assert report.outputs == [10, 11, 13, 14, 16, 17, 18, 19]
    assert report.failed == 2
    assert [(e.item, e.index, e.stage, e.attempts) for e in report.errors] == [
        (12, 2, "check", 1),
        (15, 5, "check", 1),
    ]
    assert all(isinstance(e.exception, ValueError) for e in report.errors)
    assert report.stage("check").failed == 2
    assert report.counts_add_up()


@pytest.mark.parametrize("is_async", [False, True])
async def test_a_dead_letter_sink_gets_item_and_exception(is_async: bool) -> None:
    dead: list[tuple[Any, str]] = []

    def sink(item: Any, exc: BaseException) -> None:
        dead.append((item, str(exc)))

    async def async_sink(item: Any, exc: BaseException) -> None:
        await asyncio.sleep(0)
        dead.append((item, str(exc)))

    report = await failing_on(3, 4, on_error=async_sink if is_async else sink).run(range(6))
    assert sorted(dead) == [(3, "bad 3"), (4, "bad 4")]
    assert report.outputs == [0, 1, 2, 5]
    assert report.failed == 2


async def test_a_failing_dead_letter_sink_fails_the_run() -> None:
    def sink(item: Any, exc: BaseException) -> None:
        raise OSError("disk full")

    with pytest.raises(cohort.PipelineError, match="dead-letter") as info:
        await failing_on(3, on_error=sink).run(range(6))
    assert isinstance(info.value.__cause__, OSError)


async def test_max_errors_turns_skipped_errors_into_a_failure() -> None:
    stage = failing_on(1, 2, 3, on_error="skip", max_errors=2, workers=1)
    with pytest.raises(cohort.PipelineError, match="max_errors=2") as info:
        await stage.run(range(10))
    assert isinstance(info.value.__cause__, ValueError)
    report = await failing_on(1, 2, on_error="skip", max_errors=2).run(range(10))
    assert report.failed == 2


async def test_max_error_rate_is_judged_during_and_after_the_run() -> None:
    many_bad = failing_on(*range(0, 100, 2), on_error="skip", max_error_rate=0.2)
    with pytest.raises(cohort.PipelineError, match="max_error_rate"):
        await many_bad.run(range(100))
    few = failing_on(1, on_error="skip", max_error_rate=0.2)
    with pytest.raises(cohort.PipelineError, match="max_error_rate"):
        await few.run(range(3))  # 1 in 3, judged at the end
    report = await failing_on(1, on_error="skip", max_error_rate=0.2).run(range(10))
    assert report.failed == 1


@vc
async def test_retries_back_off_and_are_counted() -> None:
    attempts: dict[int, list[float]] = {}

    @cohort.stage(
        workers=1, retry=cohort.Retry(attempts=3, backoff=1.0, jitter=False), on_error="skip"
    )
    async def flaky(x: int) -> int:
        attempts.setdefault(x, []).append(now())
        if x == 1 and len(attempts[x]) < 3:
            raise ConnectionError("try again")
        if x == 2:
            raise ConnectionError("never")
        return x

    report = await flaky.run(range(4))
    assert report.outputs == [0, 1, 3]
    assert attempts[1] == [0.0, 1.0, 3.0]
    assert len(attempts[2]) == 3
    assert report.stage("flaky").retried == 4
    assert [(e.item, e.attempts) for e in report.errors] == [(2, 3)]


@vc
async def test_only_listed_exceptions_are_retried() -> None:
    calls = 0

    @cohort.stage(retry=cohort.Retry(attempts=5, backoff=0, on=(ConnectionError,)))
    async def picky(x: int) -> int:
        nonlocal calls
        calls += 1
        raise KeyError(x)

    with pytest.raises(cohort.PipelineError) as info:
        await picky.run([1])
    assert calls == 1
    assert isinstance(info.value.__cause__, KeyError)


async def test_a_stage_called_directly_raises_its_last_error_with_its_own_chain() -> None:
    root = OSError("connection reset")
    earlier = KeyError("cache miss")

    @cohort.stage(retry=cohort.Retry(attempts=2, backoff=0))
    async def fetch(x: int) -> int:
        try:
            raise earlier
        except KeyError:
            raise ValueError(x) from root

    try:
        raise RuntimeError("the caller is handling this")
    except RuntimeError:
        with pytest.raises(ValueError, match="1") as info:
            await fetch(1)
    assert info.value.__cause__ is root
    assert info.value.__context__ is earlier


@vc
async def test_timeout_is_per_attempt_and_fails_with_timeout_error() -> None:
    @cohort.stage(workers=2, timeout=1.0, on_error="skip", retry=cohort.Retry(2, backoff=0))
    async def slow(x: float) -> float:
        await asyncio.sleep(x)
        return x

    start = now()
    report = await slow.run([0.5, 5, 0.25])
    assert report.outputs == [0.5, 0.25]
    assert isinstance(report.errors[0].exception, TimeoutError)
    assert report.errors[0].attempts == 2
    assert now() - start == pytest.approx(2.0)


@vc
async def test_retries_never_duplicate_outputs() -> None:
    tries = 0

    @cohort.stage(retry=cohort.Retry(attempts=3, backoff=0.1))
    async def gen(x: int) -> AsyncIterator[int]:
        nonlocal tries
        yield x
        tries += 1
        if tries < 3:
            raise ConnectionError("half way")
        yield x + 100

    report = await gen.run([1])
    outputs: Any = report.outputs
    assert outputs == [1, 101]


async def test_a_source_error_fails_the_run_with_that_error() -> None:
    def source() -> Iterator[int]:
        yield from range(100)
        raise LookupError("source broke")

    with pytest.raises(LookupError, match="source broke"):
        await plus_ten.run(source())

    async def asource() -> AsyncIterator[int]:
        yield 1
        raise LookupError("async source broke")

    with pytest.raises(LookupError, match="async source broke"):
        await plus_ten.run(asource())


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_items_read_before_the_source_failed_are_counted_and_end(kind: str) -> None:
    @cohort.stage(workers=1, buffer=1)
    async def stuck(x: int) -> int:
        await asyncio.Event().wait()  # the source's failure cancels it
        return x

    def source() -> Iterator[int]:
        yield from range(10)
        raise LookupError("source broke")

    async def asource() -> AsyncIterator[int]:
        for i in range(10):
            yield i
        raise LookupError("source broke")

    stream = stuck.stream(source() if kind == "sync" else asource())
    with pytest.raises(LookupError, match="source broke"):
        async with stream as outputs:
            async for _ in outputs:
                pass
    report = stream.report
    assert report is not None
    assert report.read == 10
    assert report.counts_add_up()


async def test_fail_fast_reports_in_flight_items_as_cancelled() -> None:
    stream = (plus_ten | failing_on(500, workers=4)).stream(range(10_000))
    with pytest.raises(cohort.PipelineError):
        async with stream as outputs:
            async for _ in outputs:
                pass
    report = stream.report
    assert report is not None
    assert report.failed == 1
    assert report.cancelled > 0
    assert report.counts_add_up()
    assert report.read < 10_000  # the source stopped being read


async def test_a_fanned_out_item_fails_once() -> None:
    @cohort.stage
    async def triple(x: int) -> Any:
        return cohort.Many([x, x, x])

    report = await (triple | failing_on(1, on_error="skip")).run(range(3))
    assert report.failed == 1
    assert len(report.errors) == 3  # each failure recorded, the item counted once
    assert report.succeeded == 2
    assert report.counts_add_up()


# -- a stage call that ends with CancelledError although nothing cancelled the run -----


def _awaiting_a_cancelled_future(**options: Any) -> Any:
    """Items divisible by 4 await a future that was cancelled elsewhere (a shared cache
    entry, a pooled connection): their call ends with CancelledError on its own."""
    shared: asyncio.Future[int] | None = None

    @cohort.stage(name="lookup", **options)  # type: ignore[untyped-decorator]
    async def lookup(x: int) -> int:
        nonlocal shared
        if shared is None:
            shared = asyncio.get_running_loop().create_future()
            shared.cancel()
        await asyncio.sleep(0)
        if x % 4 == 0:
            return await shared
        return x

    return lookup


@pytest.mark.parametrize("stages", [1, 2])
@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("options", [{}, {"retry": cohort.Retry(attempts=2, backoff=0)}])
async def test_a_stray_cancellation_is_a_failure_of_its_item(
    stages: int, ordered: bool, options: dict[str, Any]
) -> None:
    first = _awaiting_a_cancelled_future(workers=4, on_error="skip", ordered=ordered, **options)
    pipe = first if stages == 1 else first | plus_ten
    async with asyncio.timeout(30):  # it used to hang with two stages
        report = await pipe.run(range(20))
    assert (report.read, report.succeeded, report.failed, report.cancelled) == (20, 15, 5, 0)
    assert sorted(e.index for e in report.errors) == [0, 4, 8, 12, 16]
    for record in report.errors:
        assert isinstance(record.exception, RuntimeError)
        assert "raised CancelledError without being cancelled" in str(record.exception)
        assert isinstance(record.exception.__cause__, asyncio.CancelledError)
        assert record.attempts == (2 if options else 1)
    offset = 0 if stages == 1 else 10
    expected = [x + offset for x in range(20) if x % 4]
    assert report.outputs == expected if ordered else sorted(report.outputs or []) == expected


async def test_a_stray_cancellation_fails_the_run_under_raise_and_goes_to_a_dead_letter() -> None:
    with pytest.raises(cohort.PipelineError) as info:
        await (_awaiting_a_cancelled_future(workers=2) | plus_ten).run(range(8))
    assert isinstance(info.value.__cause__, RuntimeError)
    dead: list[int] = []
    stage = _awaiting_a_cancelled_future(workers=2, on_error=lambda item, exc: dead.append(item))
    report = await stage.run(range(8))
    assert sorted(dead) == [0, 4]
    assert report.failed == 2


async def test_a_stray_cancellation_in_a_batch_stage_fails_the_batch() -> None:
    shared = asyncio.get_running_loop().create_future()
    shared.cancel()

    @cohort.stage(batch=4, on_error="skip")
    async def store(items: list[int]) -> None:
        if 0 in items:
            await shared

    report = await store.run(range(8))
    assert (report.failed, report.done, report.cancelled) == (4, 4, 0)


def _source_ending_in_a_stray_cancellation(kind: str) -> Any:
    """Three items, then the source ends with CancelledError although nothing
    cancelled the run (a sync one raises it; an async one awaits a future that
    was cancelled elsewhere)."""
    if kind == "sync":

        def source() -> Iterator[int]:
            yield from range(3)
            raise asyncio.CancelledError

        return source()

    async def asource() -> AsyncIterator[int]:
        for x in range(3):
            yield x
        shared = asyncio.get_running_loop().create_future()
        shared.cancel()
        await shared

    return asource()


def _check_stray_source_error(error: BaseException) -> None:
    assert isinstance(error, cohort.PipelineError)
    assert (error.stage, error.item, error.index) == ("<source>", None, None)
    assert "the source raised CancelledError without being cancelled" in str(error)
    assert isinstance(error.__cause__, RuntimeError)
    assert isinstance(error.__cause__.__cause__, asyncio.CancelledError)


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_stray_cancellation_from_the_source_fails_the_run_with_a_pipeline_error(
    kind: str,
) -> None:
    with pytest.raises(cohort.PipelineError) as info:
        await plus_ten.run(_source_ending_in_a_stray_cancellation(kind))
    _check_stray_source_error(info.value)

    stream = plus_ten.stream(_source_ending_in_a_stray_cancellation(kind))
    with pytest.raises(cohort.PipelineError) as info:
        async with stream as outputs:
            async for _ in outputs:
                pass
    _check_stray_source_error(info.value)
    report = stream.report
    assert report is not None
    # The items read before the source failed are counted and end like the others.
    assert report.read == 3
    assert report.counts_add_up()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_stray_cancellation_from_a_dead_letter_sink_fails_the_run_with_a_pipeline_error(
    kind: str,
) -> None:
    shared = asyncio.get_running_loop().create_future()
    shared.cancel()

    def sync_sink(item: int, exc: BaseException) -> None:
        raise asyncio.CancelledError

    async def async_sink(item: int, exc: BaseException) -> None:
        await shared

    sink = sync_sink if kind == "sync" else async_sink
    for streamed in (False, True):
        pipe = failing_on(2, on_error=sink)
        with pytest.raises(cohort.PipelineError) as info:
            if streamed:
                stream = pipe.stream(range(5))
                async with stream as outputs:
                    async for _ in outputs:
                        pass
            else:
                await pipe.run(range(5))
        error = info.value
        assert (error.stage, error.item, error.index) == ("check", 2, 2)
        assert "dead-letter sink of stage 'check' failed on item 2: RuntimeError" in str(error)
        assert isinstance(error.__cause__, RuntimeError)
        assert isinstance(error.__cause__.__cause__, asyncio.CancelledError)
        if streamed:
            report = stream.report
            assert report is not None
            assert report.failed == 1
            assert report.counts_add_up()


async def test_cancelling_the_run_is_still_a_cancellation_not_a_failure() -> None:
    started = asyncio.Event()

    @cohort.stage(workers=2)
    async def slow(x: int) -> int:
        started.set()
        await asyncio.sleep(3600)
        return x

    run = asyncio.ensure_future(slow.run(range(4)))
    await started.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


def test_retry_delays_cap_at_max_backoff_even_after_very_many_retries() -> None:
    retry = cohort.Retry(attempts=5000, backoff=0.1, max_backoff=30, jitter=False)
    assert [retry.delay(n) for n in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert retry.delay(2000) == 30  # no OverflowError past 2**1024
    assert cohort.Retry(backoff=0, jitter=False).delay(3000) == 0


def test_many_refuses_a_string() -> None:
    with pytest.raises(TypeError, match="one character per output"):
        cohort.Many("abc")
    assert cohort.Many(["abc"]).values == ["abc"]
