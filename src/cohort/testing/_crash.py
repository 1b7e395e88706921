"""A crash-loop harness: run a program, SIGKILL it, restart it until it finishes.

For programs that resume after a crash (``cohort.durable`` runs): each run
is killed with SIGKILL at a random moment (uniform over the crash-free run's
duration, interpreter start-up included) or at an injected crash point
(``COHORT_DURABLE_CRASH=point@n`` in its environment), restarted, and so on
until a run exits 0; its standard output is then compared with a crash-free
run's.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["CRASH_POINTS", "CrashLoopError", "CrashLoopResult", "crash_loop"]

CRASH_POINTS = ("before-effect", "after-effect", "in-commit", "decision")
"""The crash points a durable run can be killed at (``COHORT_DURABLE_CRASH=point@n``):
before an effect, after the effect and before its commit, in the middle of a
commit, while journaling a decision."""


class CrashLoopError(AssertionError):
    """The program failed (an exit status other than 0 or SIGKILL), hung, never
    finished, or finished with another output than the crash-free run."""


@dataclass(frozen=True, slots=True)
class CrashLoopResult:
    """How a crash loop went."""

    output: str  #: standard output of the run that finished
    expected: str  #: standard output of the crash-free run ("" without one)
    runs: int  #: runs started, the crash-free one excluded
    kills: int  #: runs that died of SIGKILL (random moments and crash points)
    point_kills: int  #: of which at an injected crash point


def _start(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(args),
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(
    proc: subprocess.Popen[str], timeout: float, kill_after: float | None
) -> tuple[int, str, str]:
    """Wait for ``proc`` (SIGKILL it after ``kill_after`` seconds, if given)."""
    if kill_after is not None:
        try:
            out, err = proc.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        else:
            return proc.returncode, out, err
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise CrashLoopError(f"{proc.args!r} did not end within {timeout} s: a hang") from None
    return proc.returncode, out, err


def crash_loop(
    args: Sequence[str],
    *,
    reference: Sequence[str] | None = None,
    random_kills: int = 3,
    crash_point: str | None = None,
    point_kills: int = 1,
    point_range: int = 1,
    seed: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    max_runs: int = 100,
) -> CrashLoopResult:
    """Run ``args`` again and again, killed with SIGKILL, until a run exits 0.

    Args:
        args: the command (e.g. ``[sys.executable, "job.py", "runs.db"]``); every
            restart runs the same command, so it must resume its own state.
        reference: the command of a crash-free run (e.g. the same program on
            another database), run first: its duration bounds the random
            kills, and the final output must equal its output. None: no
            comparison, random kills over ``timeout``'s first second.
        random_kills: runs killed at a random moment.
        crash_point: one of :data:`CRASH_POINTS`; then the first ``point_kills``
            runs are armed with ``COHORT_DURABLE_CRASH=point@n``, ``n`` drawn from
            1..``point_range`` (before the random kills, so they land whatever the
            timing: a random moment can fall after a run has already finished).
        seed: seeds the random moments and ``n``.
        env: the environment of the runs (default: this process's).
        timeout: seconds a single run may take before it counts as a hang.
        max_runs: runs after which the program counts as never finishing.

    Raises :class:`CrashLoopError` when a run fails, hangs, the loop never
    ends, or the final output differs from the reference's.
    """
    if crash_point is not None and crash_point not in CRASH_POINTS:
        raise ValueError(f"crash_point is one of {CRASH_POINTS}, got {crash_point!r}")
    for what, count in (("random_kills", random_kills), ("point_kills", point_kills)):
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"{what} is an int >= 0, got {count!r}")
    if not isinstance(point_range, int) or point_range < 1:
        raise ValueError(f"point_range is an int >= 1, got {point_range!r}")
    base = dict(os.environ if env is None else env)
    base.pop("COHORT_DURABLE_CRASH", None)
    rng = random.Random(seed)
    expected = ""
    horizon = 1.0
    if reference is not None:
        t0 = time.monotonic()
        code, expected, err = _finish(_start(reference, base), timeout, None)
        horizon = time.monotonic() - t0
        if code != 0:
            raise CrashLoopError(f"the crash-free run {reference!r} failed ({code}):\n{err}")
    kills = points = 0
    planned_points = point_kills if crash_point is not None else 0
    for runs in range(1, max_runs + 1):
        run_env = dict(base)
        kill_after: float | None = None
        armed = False
        if runs <= planned_points:
            run_env["COHORT_DURABLE_CRASH"] = f"{crash_point}@{rng.randint(1, point_range)}"
            armed = True
        elif runs <= planned_points + random_kills:
            kill_after = rng.uniform(0, horizon)
        code, out, err = _finish(_start(args, run_env), timeout, kill_after)
        if code == 0:
            if reference is not None and out != expected:
                raise CrashLoopError(
                    f"after {kills} kill(s) the output differs from the crash-free run's:\n"
                    f"got:      {out[:2000]!r}\nexpected: {expected[:2000]!r}"
                )
            return CrashLoopResult(out, expected, runs, kills, points)
        if code != -signal.SIGKILL:
            raise CrashLoopError(f"run {runs} of {list(args)!r} failed ({code}):\n{err[-4000:]}")
        kills += 1  # noqa: SIM113 (counts SIGKILLed runs only)
        points += armed
    raise CrashLoopError(f"{list(args)!r} did not finish in {max_runs} runs")
