"""cohort.run: asyncio.run on uvloop when available (cohort._core._runtime)."""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys

import pytest

import cohort
from _util import popen_python


async def loop_kind() -> str:
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


@pytest.fixture(autouse=True)
def _no_env_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COHORT_LOOP", raising=False)


def test_uses_uvloop_when_installed() -> None:
    assert cohort.run(loop_kind) == "uvloop"


def test_uvloop_false_uses_the_default_asyncio_loop() -> None:
    assert cohort.run(loop_kind, uvloop=False) == "asyncio"


def test_environment_variable_chooses_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHORT_LOOP", "asyncio")
    assert cohort.run(loop_kind) == "asyncio"
    assert cohort.run(loop_kind, uvloop=True) == "uvloop"  # an explicit argument wins
    monkeypatch.setenv("COHORT_LOOP", " UVLOOP ")
    assert cohort.run(loop_kind) == "uvloop"
    assert cohort.run(loop_kind, uvloop=False) == "asyncio"


def test_unknown_environment_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHORT_LOOP", "trio")
    coro = loop_kind()
    with pytest.raises(ValueError, match="COHORT_LOOP must be 'asyncio' or 'uvloop'"):
        cohort.run(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_uvloop_true_without_uvloop_installed_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # makes `import uvloop` fail
    with pytest.raises(RuntimeError, match=r"uvloop=True.*not installed"):
        cohort.run(loop_kind, uvloop=True)
    monkeypatch.setenv("COHORT_LOOP", "uvloop")
    with pytest.raises(RuntimeError, match=r"COHORT_LOOP=uvloop.*not installed"):
        cohort.run(loop_kind)
    monkeypatch.delenv("COHORT_LOOP")
    assert cohort.run(loop_kind) == "asyncio"  # uvloop=None falls back quietly


def test_passes_arguments_returns_the_result_and_propagates_errors() -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    async def fail() -> None:
        raise KeyError("boom")

    assert cohort.run(add, 2, 3) == 5
    assert cohort.run(add(4, 5), uvloop=False) == 9
    with pytest.raises(KeyError, match="boom"):
        cohort.run(fail)


def test_debug_mode_reaches_the_loop() -> None:
    async def debug() -> bool:
        return asyncio.get_running_loop().get_debug()

    assert cohort.run(debug, debug=True) is True
    assert cohort.run(debug, uvloop=False, debug=True) is True
    assert cohort.run(debug, uvloop=False) is False


def test_tasks_left_running_are_cancelled_at_the_end() -> None:
    cleaned: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.append("done")

    async def main() -> None:
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)

    cohort.run(main)
    assert cleaned == ["done"]


def test_bad_main_is_refused_at_the_call_site() -> None:
    def not_async() -> int:
        return 1

    coro = loop_kind()
    with pytest.raises(TypeError, match="coroutine object and arguments"):
        cohort.run(coro, 1)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    with pytest.raises(TypeError, match="async function"):
        cohort.run(not_async)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async function or a coroutine"):
        cohort.run(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="uvloop must be"):
        cohort.run(loop_kind, uvloop="yes")  # type: ignore[arg-type]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a coroutine left never awaited fails
async def test_run_inside_a_running_loop_says_to_await_main_and_closes_the_coroutine() -> None:
    coro = loop_kind()
    with pytest.raises(RuntimeError, match=r"running event loop.*`await loop_kind\(...\)`"):
        cohort.run(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited"
    called: list[int] = []

    async def main(n: int) -> None:
        called.append(n)

    with pytest.raises(RuntimeError, match=r"`await main\(...\)` instead"):
        cohort.run(main, 1)
    assert called == []  # main was not even called
    with pytest.raises(RuntimeError, match=r"`await main\(...\)` instead"):
        cohort.testing.run(main, 1)
    assert called == []


def test_helpers_run_under_cohort_run() -> None:
    async def main(n: int) -> tuple[int, ...]:
        return await cohort.gather(*(asyncio.sleep(0, i) for i in range(n)), limit=3)

    assert cohort.run(main, 5) == (0, 1, 2, 3, 4)


_INTERRUPTED_SCRIPT = """
import asyncio, sys, cohort

@cohort.stage(workers=2)
async def slow(x: int) -> int:
    if x >= 3:
        await asyncio.sleep(3600)
    return x

async def main() -> None:
    async with cohort.TaskGroup() as g:
        g.spawn(asyncio.sleep, 3600)
        async with (slow | slow).stream(range(10)) as out:
            async for x in out:
                if x == 2:
                    print("ready", flush=True)

cohort.run(main, on_interrupt=sys.argv[1])
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT stands for Ctrl-C on POSIX")
@pytest.mark.parametrize("mode", ["exit", "raise"])
def test_ctrl_c_stops_everything_and_exits_130_with_a_short_summary(mode: str) -> None:
    proc = popen_python(
        "-c", _INTERRUPTED_SCRIPT, mode, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"  # the group and the stream are under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if mode == "raise":
        assert proc.returncode != 0
        assert err.rstrip().endswith("KeyboardInterrupt"), err
        return
    assert proc.returncode == 130, err
    lines = err.splitlines()
    assert lines[-1] == "cohort: interrupted (Ctrl-C); every task was stopped"
    assert lines[0].startswith("cohort: cut short: <cohort.Pipeline slow | slow>: read 10: ")
    assert "3 succeeded" in lines[0]
    assert len(lines) == 2, err  # no traceback


def test_on_interrupt_must_be_exit_or_raise() -> None:
    async def main() -> None:
        pass

    coro = main()
    with pytest.raises(ValueError, match='on_interrupt must be "exit" or "raise"'):
        cohort.run(coro, on_interrupt="quit")  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
