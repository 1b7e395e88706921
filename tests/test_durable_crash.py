"""Durable runs killed for real (SIGKILL at injected crash points), restarted until done."""

from __future__ import annotations

import functools
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import cohort.durable as durable

PROGRAM = Path(__file__).with_name("_durable_prog.py")
SRC = Path(__file__).resolve().parents[1] / "src"


def _run(db: Path, crash: str = "", program: Path = PROGRAM) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COHORT_DURABLE_CRASH": crash}
    return subprocess.run(
        [sys.executable, str(program), str(db)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _until_done(db: Path, crash: str) -> tuple[str, int]:
    """Run until the program finishes, the crash point armed in the first run only
    (a point reached again at every restart, as a decision is, would loop for ever;
    the soak kills many times); (output, kills)."""
    for kills in range(50):
        result = _run(db, crash if kills < 1 else "")
        if result.returncode == 0:
            return result.stdout, kills
        assert result.returncode == -9, result.stderr
    raise AssertionError("never finished")


@functools.cache
def _crash_free_output() -> str:
    """The fan-out program's output without a crash (run once for the module)."""
    with tempfile.TemporaryDirectory(prefix="cohort-test-durable-") as where:
        expected = _run(Path(where) / "clean.db")
    assert expected.returncode == 0, expected.stderr
    return expected.stdout


# after-effect: the sink's, flow's and pipeline's tests here, and the soak (every point).
@pytest.mark.parametrize("crash", ["decision@1", "in-commit@3"])
def test_a_fanout_killed_at_a_crash_point_resumes_to_the_crash_free_output(
    tmp_path: Path, crash: str
) -> None:
    output, kills = _until_done(tmp_path / "crashed.db", crash)
    assert kills >= 1  # it was killed, for real, and resumed
    assert output == _crash_free_output()


_EFFECT = textwrap.dedent(
    """
    import asyncio, os, sys
    import cohort.durable as durable

    async def main(db, mode):
        async with durable.run("r", store=db, on_ambiguous=mode) as run:
            async def charge():
                print("charged", durable.idempotency_key()[:8], flush=True)
                return "receipt"
            print(await run.step(charge, effect=True), flush=True)

    try:
        asyncio.run(main(sys.argv[1], os.environ.get("MODE", "fail")))
    except durable.AmbiguousStepError as exc:
        print("ambiguous:", exc)
        sys.exit(3)
    """
)


def test_an_effect_killed_before_its_result_is_reported_on_resume(tmp_path: Path) -> None:
    program = tmp_path / "effect.py"
    program.write_text(_EFFECT)
    db = tmp_path / "runs.db"
    killed = _run(db, "before-effect", program)
    assert killed.returncode == -9
    refused = _run(db, "", program)
    assert refused.returncode == 3
    assert "step 'charge'" in refused.stdout
    assert 'on_ambiguous="rerun" or "skip"' in refused.stdout
    os.environ["MODE"] = "rerun"
    try:
        rerun = _run(db, "", program)
    finally:
        del os.environ["MODE"]
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.splitlines()[1] == "receipt"
    assert rerun.stdout.startswith("charged ")
    store = durable.SQLiteStore(db)
    [step] = store.load("r")[0]
    store.close()
    assert (step.status, step.attempt) == ("ok", 2)


SINK = Path(__file__).with_name("_durable_sink_prog.py")


# in-commit: the harness's test below (the same program), and the soak.
@pytest.mark.parametrize("crash", ["after-effect@17"])
def test_a_transactional_sink_killed_mid_run_writes_every_row_exactly_once(
    tmp_path: Path, crash: str
) -> None:
    db = tmp_path / "runs.db"
    for kills in range(10):
        result = _run(db, crash if kills < 1 else "", SINK)
        if result.returncode == 0:
            break
        assert result.returncode == -9, result.stderr
    else:
        raise AssertionError("never finished")
    assert kills >= 1
    assert result.stdout == "400\n"
    with sqlite3.connect(db) as check:
        rows = check.execute("SELECT batch, item, v FROM sink").fetchall()
    check.close()
    assert len(rows) == 400  # 0 duplicates ...
    assert sorted(rows) == [(b, i, b * 100 + i) for b in range(40) for i in range(10)]  # 0 lost


def test_the_crash_loop_harness_kills_at_random_moments_and_points_then_compares(
    tmp_path: Path,
) -> None:
    from cohort.durable._crash import CRASH_POINTS as DURABLE_POINTS
    from cohort.testing import CRASH_POINTS, CrashLoopError, crash_loop

    assert CRASH_POINTS == DURABLE_POINTS
    command = [sys.executable, str(SINK)]
    result = crash_loop(
        [*command, str(tmp_path / "runs.db")],
        reference=[*command, str(tmp_path / "clean.db")],
        random_kills=1,
        crash_point="in-commit",
        point_range=1,  # the first commit of the run armed: it always comes
        seed=5,
    )
    assert result.output == result.expected == "400\n"
    assert result.point_kills == 1  # the armed run comes first: it is killed, whatever the timing
    assert result.kills >= 1
    assert result.runs == result.kills + 1
    with sqlite3.connect(tmp_path / "runs.db") as check:
        assert check.execute("SELECT count(*), count(DISTINCT v) FROM sink").fetchone() == (
            400,
            400,
        )
    check.close()
    with pytest.raises(CrashLoopError, match=r"failed \(1\)"):
        crash_loop([sys.executable, "-c", "raise SystemExit(1)"], random_kills=0)
    with pytest.raises(ValueError, match="crash_point is one of"):
        crash_loop(command, crash_point="nowhere")


_TWICE = textwrap.dedent(
    """
    import asyncio, sys
    import cohort.durable as durable
    async def main(db, log):
        async with durable.run("r", store=db) as run:
            def send():
                with open(log, "a") as out:
                    out.write(durable.idempotency_key() + "\\n")
                return "sent"
            print(await run.step(send))
    asyncio.run(main(sys.argv[1], sys.argv[1] + ".log"))
    """
)


def test_a_step_body_killed_before_its_record_commits_runs_again_with_the_same_key(
    tmp_path: Path,
) -> None:
    program = tmp_path / "twice.py"
    program.write_text(_TWICE)
    db = tmp_path / "runs.db"
    assert _run(db, "after-effect", program).returncode == -9  # body done, record not
    resumed = _run(db, "", program)
    assert (resumed.returncode, resumed.stdout) == (0, "sent\n")
    keys = Path(f"{db}.log").read_text().splitlines()
    assert len(keys) == 2  # at least once: twice here
    assert keys[0] == keys[1]  # one idempotency key for both: a service can drop the second
