"""``import cohort`` against ``import asyncio`` (and anyio), fresh interpreters in pairs.

Each pair runs ``import asyncio`` in one fresh interpreter and ``import cohort``
in the next (the order alternating from pair to pair); the cohort interpreter
also times its ``import asyncio`` part, which gives cohort's own share.
Bytecode is cached first (in a temporary ``PYTHONPYCACHEPREFIX``, whatever
``PYTHONDONTWRITEBYTECODE`` says), as it is for an installed package, so that
compiling is not measured.

Reported: medians, min-max and max/min of each, the per-pair difference and
ratio, the modules ``import cohort`` adds to ``import asyncio``'s (none of
multiprocessing, tempfile, structlog or the bridge/pipeline/Flow/resilience
layers should be among them), and the top of ``-X importtime``.

Target: ``import cohort`` <= ``import asyncio`` + 10 ms.
Usage: ``python -m benchmarks import_time`` (``--quick``: 5 pairs instead of 20).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile

import cohort

_TIMED = (
    "import time\n"
    "t0 = time.perf_counter()\n"
    "import asyncio\n"
    "t1 = time.perf_counter()\n"
    "{more}"
    "t2 = time.perf_counter()\n"
    "print(t1 - t0, t2 - t0)\n"
)
_HEAVY = ("multiprocessing", "tempfile", "structlog", "cohort.bridge", "cohort.pipeline")
_LAYERS = ("cohort._flow._flow", "cohort._resilience._guards", "cohort.bridge._shm")


def _env(cache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = cache
    # The cohort this process imports, not another installed copy.
    src = os.path.dirname(os.path.dirname(os.path.abspath(cohort.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


def _python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=True
    )


def _timed(env: dict[str, str], module: str | None) -> tuple[float, float]:
    """(seconds importing asyncio, seconds importing asyncio then ``module``)."""
    more = f"import {module}\n" if module else ""
    first, total = _python(env, "-c", _TIMED.format(more=more)).stdout.split()
    return float(first), float(total)


def _stats(name: str, xs: list[float]) -> str:
    return (
        f"| {name} | {statistics.median(xs) * 1e3:.1f} ms | "
        f"{min(xs) * 1e3:.1f}-{max(xs) * 1e3:.1f} ms | {max(xs) / min(xs):.2f} |"
    )


def _added_modules(env: dict[str, str]) -> list[str]:
    code = "import sys, asyncio\nbase = set(sys.modules)\nimport cohort\n"
    code += "print(' '.join(sorted(set(sys.modules) - base)))"
    return _python(env, "-c", code).stdout.split()


def _importtime_top(env: dict[str, str], n: int) -> list[str]:
    err = _python(env, "-X", "importtime", "-c", "import cohort").stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, self_us, cumulative, name = (
            part.strip() for part in line.replace(":", "|", 1).split("|")
        )
        rows.append((int(cumulative), int(self_us), name))
    rows.sort(reverse=True)
    return [f"| {name} | {cum / 1e3:.1f} ms | {own / 1e3:.1f} ms |" for cum, own, name in rows[:n]]


def main(quick: bool) -> str:
    pairs = 5 if quick else 20
    has_anyio = True
    try:
        import anyio  # noqa: F401
    except ImportError:
        has_anyio = False
    with tempfile.TemporaryDirectory(prefix="cohort-bench-pyc-") as cache:
        env = _env(cache)
        for module in ("cohort", "anyio" if has_anyio else None):
            _timed(env, module)  # caches the bytecode
        asyncio_s: list[float] = []
        cohort_s: list[float] = []
        own_s: list[float] = []
        anyio_s: list[float] = []
        for i in range(pairs):
            runs = [None, "cohort"] if i % 2 == 0 else ["cohort", None]
            for module in runs:
                first, total = _timed(env, module)
                if module is None:
                    asyncio_s.append(total)
                else:
                    cohort_s.append(total)
                    own_s.append(total - first)
            if has_anyio:
                anyio_s.append(_timed(env, "anyio")[1])
        added = _added_modules(env)
        top = _importtime_top(env, 20)
    diffs = [c - a for c, a in zip(cohort_s, asyncio_s, strict=True)]
    ratios = [c / a for c, a in zip(cohort_s, asyncio_s, strict=True)]
    verdict = "met" if statistics.median(diffs) <= 0.010 else "missed"
    lines = [
        f"## Import time, {pairs} pairs of fresh interpreters (bytecode cached)",
        "",
        "| import | median | min-max | max/min |",
        "|---|---|---|---|",
        _stats("asyncio", asyncio_s),
        _stats("cohort (asyncio included)", cohort_s),
        _stats("cohort's own share (after asyncio, same interpreter)", own_s),
    ]
    if anyio_s:
        lines.append(_stats("anyio (asyncio included)", anyio_s))
    lines += [
        "",
        f"- cohort - asyncio, per pair: median {statistics.median(diffs) * 1e3:.1f} ms "
        f"({min(diffs) * 1e3:.1f} to {max(diffs) * 1e3:.1f}); ratio median "
        f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}); "
        f"target <= asyncio + 10 ms: **{verdict}**",
        f"- modules `import cohort` adds to `import asyncio`'s ({len(added)}): {' '.join(added)}",
        "- heavy ones among them: "
        + (", ".join(m for m in added if m.startswith(_HEAVY + _LAYERS)) or "none"),
        "",
        "Top of `python -X importtime -c 'import cohort'` (by cumulative time):",
        "",
        "| module | cumulative | self |",
        "|---|---|---|",
        *top,
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main("--quick" in sys.argv))
