"""Bad arguments to the core raise at the call site, with the type of error a
caller expects (TypeError for the wrong kind of value, ValueError for a value
out of range) and a message naming the argument; nothing is left half-made."""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import cohort

NAN = math.nan


async def echo(x: int = 0) -> int:
    return x


def _calls() -> list[tuple[str, Callable[[], object], type[Exception], str]]:
    """(case, call, error type, text the message must contain)."""
    return [
        ("Barrier(True)", lambda: cohort.Barrier(True), TypeError, "parties"),
        ("Barrier(1.5)", lambda: cohort.Barrier(1.5), TypeError, "parties"),  # type: ignore[arg-type]
        ("Barrier(nan)", lambda: cohort.Barrier(NAN), TypeError, "parties"),  # type: ignore[arg-type]
        ("Barrier('2')", lambda: cohort.Barrier("2"), TypeError, "parties"),  # type: ignore[arg-type]
        ("Barrier(0)", lambda: cohort.Barrier(0), ValueError, ">= 1"),
        ("Barrier(action=3)", lambda: cohort.Barrier(2, action=3), TypeError, "action"),  # type: ignore[arg-type]
        ("add_parties(0)", lambda: cohort.Barrier(2).add_parties(0), ValueError, "add_parties"),
        (
            "add_parties(True)",
            lambda: cohort.Barrier(2).add_parties(True),
            TypeError,
            "add_parties",
        ),
        ("Latch(-1)", lambda: cohort.Latch(-1), ValueError, "count"),
        ("Latch(nan)", lambda: cohort.Latch(NAN), TypeError, "count"),  # type: ignore[arg-type]
        ("Latch(True)", lambda: cohort.Latch(True), TypeError, "count"),
        ("count_down(0)", lambda: cohort.Latch(2).count_down(0), ValueError, "count_down"),
        ("count_down(1.0)", lambda: cohort.Latch(2).count_down(1.0), TypeError, "count_down"),  # type: ignore[arg-type]
        ("EventFlags()", lambda: cohort.EventFlags(), ValueError, "at least one"),
        ("EventFlags(1, 2)", lambda: cohort.EventFlags(1, 2), TypeError, "str"),  # type: ignore[arg-type]
        ("EventFlags(a, a)", lambda: cohort.EventFlags("a", "a"), ValueError, "unique"),
        ("Quorum(0)", lambda: cohort.Quorum(0), ValueError, "Quorum(k)"),
        ("Quorum(True)", lambda: cohort.Quorum(True), TypeError, "Quorum(k)"),
        ("Quorum(2.0)", lambda: cohort.Quorum(2.0), TypeError, "Quorum(k)"),  # type: ignore[arg-type]
        ("TaskGroup(limit=True)", lambda: cohort.TaskGroup(limit=True), TypeError, "limit"),
        ("TaskGroup(limit=0)", lambda: cohort.TaskGroup(limit=0), ValueError, "limit"),
        ("TaskGroup(limit=2.5)", lambda: cohort.TaskGroup(limit=2.5), TypeError, "limit"),  # type: ignore[arg-type]
        ("TaskGroup(timeout=nan)", lambda: cohort.TaskGroup(timeout=NAN), ValueError, "timeout"),
        ("TaskGroup(timeout=-1)", lambda: cohort.TaskGroup(timeout=-1), ValueError, "timeout"),
        (
            "TaskGroup(on_timeout=None)",
            lambda: cohort.TaskGroup(on_timeout=None),  # type: ignore[arg-type]
            TypeError,
            "on_timeout",
        ),
        (
            "TaskGroup(on_timeout='x')",
            lambda: cohort.TaskGroup(on_timeout="x"),  # type: ignore[arg-type]
            ValueError,
            "on_timeout",
        ),
        ("TaskGroup(timeout='1')", lambda: cohort.TaskGroup(timeout="1"), TypeError, "timeout"),  # type: ignore[arg-type]
        ("move_on_after('1')", lambda: cohort.move_on_after("1"), TypeError, "seconds"),  # type: ignore[arg-type]
        ("move_on_after(nan)", lambda: cohort.move_on_after(NAN), ValueError, "NaN"),
        ("fail_after(True)", lambda: cohort.fail_after(True), TypeError, "seconds"),
        ("move_on_at('x')", lambda: cohort.move_on_at("x"), TypeError, "deadline"),  # type: ignore[arg-type]
        ("fail_at(nan)", lambda: cohort.fail_at(NAN), ValueError, "NaN"),
        (
            "CancelScope(deadline=None)",
            lambda: cohort.CancelScope(deadline=None),  # type: ignore[arg-type]
            TypeError,
            "deadline",
        ),
        ("map(limit=True)", lambda: cohort.map(echo, [1], limit=True), TypeError, "limit"),
        ("map(limit=0)", lambda: cohort.map(echo, [1], limit=0), ValueError, "limit"),
        ("map(3, [])", lambda: cohort.map(3, [], limit=2), TypeError, "async callable"),  # type: ignore[arg-type]
        ("as_completed(limit=0)", lambda: cohort.as_completed([], limit=0), ValueError, "limit"),
        ("as_completed(a, b)", lambda: cohort.as_completed(echo()), TypeError, "iterable"),  # type: ignore[arg-type]
    ]


CASES = _calls()


@pytest.mark.parametrize(
    ("call", "error", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.filterwarnings("error::RuntimeWarning")  # a coroutine left never awaited fails
def test_bad_arguments_raise_at_the_call_site(
    call: Callable[[], object], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=None) as info:
        call()
    assert text in str(info.value)
    assert type(info.value) is error


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"delay": 0.1, "attempts": 0}, ValueError),
        ({"delay": 0.1, "attempts": True}, TypeError),
        ({"delay": 0.1, "attempts": 1.5}, TypeError),
        ({"delay": -1}, ValueError),
        ({"delay": NAN}, ValueError),
        ({"delay": "0.1"}, TypeError),
    ],
)
async def test_hedge_refuses_bad_attempts_and_delay(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error, match=r"attempts|delay"):
        await cohort.hedge(echo, **kwargs)


@pytest.mark.parametrize(
    ("timeout", "error"), [(NAN, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)]
)
async def test_spawn_refuses_a_bad_timeout_and_closes_the_coroutine(
    timeout: object, error: type
) -> None:
    coro = echo()
    async with cohort.TaskGroup() as g:
        with pytest.raises(error, match="timeout"):
            g.spawn(coro, timeout=timeout)  # type: ignore[arg-type]
    assert g.outcomes == []
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # never "never awaited"


async def test_a_scope_deadline_must_be_a_number() -> None:
    with cohort.CancelScope() as scope:
        with pytest.raises(TypeError, match="deadline"):
            scope.deadline = "soon"  # type: ignore[assignment]
        with pytest.raises(ValueError, match="NaN"):
            scope.deadline = NAN
        assert scope.deadline == math.inf
    await asyncio.sleep(0)


# -- pipelines: stage options, Retry, fork, run -----------------------------------------


def _stage_option_cases() -> list[tuple[str, dict[str, Any], type[Exception], str]]:
    cases: list[tuple[str, dict[str, Any], type[Exception], str]] = []
    table: dict[str, list[tuple[object, type[Exception]]]] = {
        "workers": [(0, ValueError), (-1, ValueError), (True, TypeError), (2.5, TypeError),
                    ("4", TypeError), (None, TypeError), (NAN, TypeError)],
        "buffer": [(0, ValueError), (True, TypeError), (1.5, TypeError)],
        "timeout": [(0, ValueError), (-1, ValueError), (NAN, ValueError), ("1", TypeError),
                    (True, TypeError)],
        "ordered": [("no", TypeError), (None, TypeError), (1, TypeError)],
        "cpu": [("yes", TypeError), (1, TypeError)],
        "batch": [(0, ValueError), (True, TypeError), (2.0, TypeError)],
        "max_errors": [(-1, ValueError), (True, TypeError), (NAN, TypeError)],
        "max_error_rate": [(1.5, ValueError), (-0.1, ValueError), (NAN, ValueError),
                           (True, TypeError), ("0.1", TypeError)],
        "on_error": [("ignore", ValueError), (None, ValueError)],
        "retry": [(3, TypeError)],
        "name": [("", TypeError), (3, TypeError)],
    }  # fmt: skip
    for option, values in table.items():
        for value, error in values:
            cases.append((f"stage({option}={value!r})", {option: value}, error, option))
    cases.append(("stage(batch_timeout=nan)", {"batch": 2, "batch_timeout": NAN}, ValueError,
                  "batch_timeout"))  # fmt: skip
    cases.append(("stage(batch_timeout without batch)", {"batch_timeout": 1}, ValueError, "batch"))
    return cases


STAGE_CASES = _stage_option_cases()


@pytest.mark.parametrize(
    ("options", "error", "text"), [c[1:] for c in STAGE_CASES], ids=[c[0] for c in STAGE_CASES]
)
def test_stage_options_are_checked_when_stage_is_called(
    options: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        cohort.stage(**options)  # before any function is decorated
    assert text in str(info.value)
    assert type(info.value) is error


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"attempts": True}, TypeError),
        ({"attempts": 0}, ValueError),
        ({"attempts": 2.0}, TypeError),
        ({"backoff": NAN}, ValueError),
        ({"backoff": -1}, ValueError),
        ({"backoff": math.inf}, ValueError),
        ({"backoff": "1"}, TypeError),
        ({"max_backoff": -1}, ValueError),
        ({"jitter": "no"}, TypeError),
        ({"on": ValueError()}, TypeError),
        ({"on": ()}, TypeError),
    ],
)
def test_retry_checks_its_arguments(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="Retry"):
        cohort.Retry(**kwargs)


def test_fork_and_run_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="at least one branch"):
        cohort.fork()
    with pytest.raises(TypeError, match="functions or stages as branches"):
        cohort.fork(echo, 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="join"):
        cohort.fork(echo, join="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        cohort.fork(echo, timeout=-1)
    with pytest.raises(TypeError, match="workers"):
        cohort.fork(echo, workers="2")
    stage = cohort.stage(echo)
    for bad in ({"collect": "yes"}, {"progress": 1}):
        coro = stage.run([1], **bad)
        with pytest.raises(TypeError, match="must be True or False"):
            coro.send(None)
        coro.close()
    with pytest.raises(TypeError, match="source"):
        stage.stream(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="progress"):
        stage.stream([1], progress="on")  # type: ignore[arg-type]


# -- the process bridge -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"workers": 0}, ValueError, "workers"),
        ({"workers": 2.5}, TypeError, "workers"),
        ({"workers": True}, TypeError, "workers"),
        ({"workers": "2"}, TypeError, "workers"),
        ({"kill_grace": None}, TypeError, "kill_grace"),
        ({"kill_grace": -1}, ValueError, "kill_grace"),
        ({"kill_grace": NAN}, ValueError, "kill_grace"),
        ({"kill_grace": math.inf}, ValueError, "kill_grace"),
        ({"max_crashes": 0}, ValueError, "max_crashes"),
        ({"max_crashes": -1}, ValueError, "max_crashes"),
        ({"max_crashes": True}, TypeError, "max_crashes"),
        ({"crash_window": NAN}, ValueError, "crash_window"),
        ({"crash_window": -1}, ValueError, "crash_window"),
        ({"crash_window": 0}, ValueError, "crash_window"),
        ({"heartbeat": 0}, ValueError, "heartbeat"),
        ({"heartbeat": -1}, ValueError, "heartbeat"),
        ({"heartbeat": math.inf}, ValueError, "heartbeat"),
        ({"heartbeat": "5"}, TypeError, "heartbeat"),
        ({"max_tasks_per_worker": 0}, ValueError, "max_tasks_per_worker"),
        ({"max_tasks_per_worker": 1.5}, TypeError, "max_tasks_per_worker"),
        ({"start_method": "threads"}, ValueError, "start_method"),
        ({"initializer": 3}, TypeError, "callable"),
        ({"initargs": 3}, TypeError, "initargs"),
    ],
)
def test_process_pool_checks_its_arguments_when_made(
    kwargs: dict[str, Any], error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        cohort.ProcessPool(**kwargs)
    assert text in str(info.value)
    assert type(info.value) is error


def test_pool_map_and_imap_check_their_arguments_at_the_call() -> None:
    pool = cohort.ProcessPool(1)  # never started: the checks come first
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"chunksize": 0}, ValueError),
        ({"chunksize": True}, TypeError),
        ({"ordered": "no"}, TypeError),
    ]
    for kwargs, error in cases:
        with pytest.raises(error):
            pool.imap(abs, [1], **kwargs)
    with pytest.raises(TypeError, match="one character at a time"):
        pool.imap(len, "abc")
    with pytest.raises(TypeError, match="iterable"):
        pool.imap(abs, 3)  # type: ignore[arg-type]


def test_executor_hooks_check_their_arguments() -> None:
    with pytest.raises(TypeError, match=r"cohort\.Executor"):
        cohort.set_default_executor("dask")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="decorates a function"):
        cohort.cpu(3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="executor="):
        cohort.cpu(executor="dask")(abs)  # type: ignore[call-overload]
    from cohort.bridge import DaskExecutor

    with pytest.raises(TypeError, match="hard_stop"):
        DaskExecutor(hard_stop="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scheduler address"):
        DaskExecutor(8786)
    with pytest.raises(ValueError, match="cluster_options"):
        DaskExecutor("tcp://127.0.0.1:8786", cluster_options={"n_workers": 2})
    with pytest.raises(TypeError, match="cluster_options"):
        DaskExecutor(cluster_options=[("n_workers", 2)])  # type: ignore[arg-type]
    dask = DaskExecutor()
    with pytest.raises(ValueError, match="chunksize"):
        dask.imap(abs, [1], chunksize=0)


# -- mistakes where Python's own message says little -------------------------------------


async def _async_double(x: int) -> int:
    return 2 * x


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the refused coroutine is closed
async def test_a_worker_process_refuses_async_functions_and_coroutines_at_the_call() -> None:
    pool = cohort.ProcessPool(1)  # never started: the checks come first
    with pytest.raises(TypeError, match=r"cannot run the async function .*_async_double"):
        await pool.run(_async_double, 1)  # type: ignore[unused-coroutine]
    with pytest.raises(TypeError, match="cannot run the coroutine object"):
        await pool.run(_async_double(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot run the async function"):
        pool.imap(_async_double, [1])
    from cohort.bridge import DaskExecutor

    dask = DaskExecutor()  # never started either
    with pytest.raises(TypeError, match="cannot run the async function"):
        await dask.run(_async_double, 1)  # type: ignore[unused-coroutine]
    with pytest.raises(TypeError, match="cannot run the async function"):
        dask.imap(_async_double, [1])


async def test_async_with_on_a_cancel_scope_says_to_use_with() -> None:
    with pytest.raises(TypeError, match=r"write `with cohort.fail_after\(...\)`, not `async with`"):
        async with cohort.fail_after(1):
            pass


def test_a_stage_composed_with_a_plain_function_says_to_decorate_it() -> None:
    @cohort.stage
    async def first(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"decorate it with @cohort\.stage"):
        first | _async_double  # type: ignore[operator]


def test_cohort_on_trio_says_it_needs_asyncio() -> None:
    import trio

    async def group() -> None:
        async with cohort.TaskGroup():
            pass

    async def scope() -> None:
        with cohort.move_on_after(1):
            pass

    for main in (group, scope):
        with pytest.raises(RuntimeError, match=r"cohort runs on asyncio .* not on trio"):
            trio.run(main)


# -- keyword arguments meant for the function -------------------------------------------


SPAWN_PARTIAL = "functools.partial(echo, 1, foo=2)"


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a coroutine left never awaited fails
async def test_keyword_arguments_for_the_child_suggest_functools_partial() -> None:
    pool = cohort.ProcessPool(1)  # never started: the check comes first
    calls: list[tuple[str, Callable[[], object], str]] = []
    async with cohort.TaskGroup() as g:
        calls += [
            ("spawn", lambda: g.spawn(echo, 1, foo=2), SPAWN_PARTIAL),  # type: ignore[arg-type]
            ("start_soon", lambda: g.start_soon(echo, 1, foo=2), SPAWN_PARTIAL),  # type: ignore[arg-type]
            (
                "cohort.map",
                lambda: cohort.map(echo, [1], limit=2, foo=2),  # type: ignore[arg-type]
                "cohort.map(functools.partial(echo, foo=2), items)",
            ),
        ]
        for where, call, text in calls:
            with pytest.raises(TypeError) as info:
                call()
            message = str(info.value)
            assert f"{where}() got unexpected keyword argument(s) 'foo'" in message
            assert text in message
            assert "own options are" in message
    assert g.outcomes == []
    awaited: list[tuple[str, Callable[[], Awaitable[object]], str]] = [
        ("cohort.hedge", lambda: cohort.hedge(echo, 1, foo=2, delay=1), SPAWN_PARTIAL),  # type: ignore[call-overload]
        ("cohort.retry", lambda: cohort.retry(echo, 1, foo=2), SPAWN_PARTIAL),  # type: ignore[arg-type]
        ("pool.run", lambda: pool.run(abs, 1, foo=2), "functools.partial(abs, 1, foo=2)"),  # type: ignore[arg-type]
        (
            "cohort.to_process",
            lambda: cohort.to_process(abs, 1, foo=2),  # type: ignore[arg-type]
            "functools.partial(abs, 1, foo=2)",
        ),
    ]
    for where, acall, text in awaited:
        with pytest.raises(TypeError, match=rf"{where}\(\) got unexpected keyword") as info:
            await acall()
        assert text in str(info.value)
        if where == "pool.run":
            assert str(info.value).endswith("pool.run() has no options of its own")


def test_keyword_arguments_for_main_suggest_functools_partial() -> None:
    for where, run in (("cohort.run", cohort.run), ("cohort.testing.run", cohort.testing.run)):
        with pytest.raises(TypeError, match=rf"{where}\(\) got unexpected") as info:
            run(echo, 1, foo=2)  # type: ignore[arg-type]
        assert SPAWN_PARTIAL in str(info.value)


@pytest.mark.filterwarnings("error::RuntimeWarning")
async def test_a_misspelt_spawn_option_is_named_and_the_coroutine_closed() -> None:
    coro = echo()
    async with cohort.TaskGroup() as g:
        with pytest.raises(TypeError, match=r"did you mean timeout= \(for timout=\)\?"):
            g.spawn(coro, timout=3)  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert g.outcomes == []
