"""The ``cohort`` command (cohort.cli), run as a subprocess: run, bench, demo, usage errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = str(ROOT / "examples" / "cli_pipeline.py")


def cohort_cli(
    *args: str, stdin: str = "", cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cohort.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def assert_usage_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cohort: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("command", [[], ["run"], ["bench"], ["demo"]])
def test_help_for_each_command_exits_0(command: list[str]) -> None:
    result = cohort_cli(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: {' '.join(['cohort', *command])}")


def test_run_writes_one_json_line_per_output_and_the_report_on_stderr(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("hello world\nasync is fun\n\nno-newline-at-end")
    result = cohort_cli("run", f"{EXAMPLE}:pipeline", "--input", str(source))
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [
        {"words": 2, "longest": "hello"},
        {"words": 3, "longest": "async"},
        {"words": 0, "longest": ""},
        {"words": 1, "longest": "no-newline-at-end"},
    ]
    assert result.stderr.startswith("read 4: 4 succeeded")


def test_run_reads_stdin_and_writes_an_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = cohort_cli(
        "run", f"{EXAMPLE}:pipeline", "--input", "-", "-o", str(out), stdin="a bb\r\nccc\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert json_lines(out.read_text()) == [
        {"words": 2, "longest": "bb"},
        {"words": 1, "longest": "ccc"},
    ]


def test_run_json_lines_parses_each_line_and_skips_blank_ones() -> None:
    stdin = '{"text": "hi", "n": 1}\n\n{"text": "yo"}\n'
    result = cohort_cli("run", f"{EXAMPLE}:shout", "--json-lines", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [{"text": "HI", "n": 1}, {"text": "YO"}]


def test_run_imports_a_dotted_module_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(
        "import cohort, datetime\n"
        "@cohort.stage\n"
        "async def stamp(line: str) -> object:\n"
        "    return [line, datetime.date(2024, 1, int(line))]\n"
    )
    result = cohort_cli("run", "jobs:stamp", stdin="1\n2\n", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Values json cannot encode are written with str().
    assert json_lines(result.stdout) == [["1", "2024-01-01"], ["2", "2024-01-02"]]


def test_run_exits_1_when_a_stage_fails_under_on_error_raise() -> None:
    result = cohort_cli("run", f"{EXAMPLE}:strict", stdin="a\nboom\nc\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("cohort: run failed: PipelineError")
    assert "cannot handle 'boom'" in last


def test_run_exits_0_when_the_error_policy_skips_the_failures() -> None:
    result = cohort_cli("run", f"{EXAMPLE}:lenient", stdin="a\nboom\nc\n")
    assert result.returncode == 0, result.stderr
    assert len(json_lines(result.stdout)) == 2
    assert result.stderr.startswith("read 3: 2 succeeded, 0 dropped, 0 done, 1 failed")


def test_run_exits_1_on_an_input_line_that_is_not_json() -> None:
    result = cohort_cli("run", f"{EXAMPLE}:shout", "--json-lines", stdin='{"text": "a"}\n{oops\n')
    assert result.returncode == 1
    assert "cohort: run failed: input line 2 is not JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_progress_writes_progress_lines_to_stderr_only() -> None:
    result = cohort_cli("run", f"{EXAMPLE}:pipeline", "--progress", stdin="x y\n")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stdout) == [{"words": 2, "longest": "x"}]
    assert "pipeline read=1 | words in=1 out=1" in result.stderr
    assert "(end)" in result.stderr


def test_run_log_format_json_ends_with_a_json_summary() -> None:
    result = cohort_cli("run", f"{EXAMPLE}:pipeline", "--log-format", "json", stdin="x\n")
    assert result.returncode == 0, result.stderr
    events = json_lines(result.stderr)
    assert {"event": "pipeline.started", "stages": ["words", "summarize"]}.items() <= (
        events[0].items()
    )
    assert events[-1] == {
        "event": "cohort.run.finished",
        "exit_status": 0,
        "read": 1,
        "succeeded": 1,
        "dropped": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 0,
        "elapsed": events[-1]["elapsed"],
    }


@pytest.mark.parametrize(
    ("target", "needles"),
    [
        ("no_such_module_xyz:pipe", ["no module named 'no_such_module_xyz'"]),
        ("missing/file.py:pipe", ["no such file", "missing/file.py"]),
        (f"{EXAMPLE}:nope", ["has no attribute 'nope'", "pipelines in it:", "strict"]),
        (f"{EXAMPLE}:Any", ["not a cohort.Pipeline or cohort.Stage"]),
        ("cohort.cli:main", ["function, not a cohort.Pipeline", "decorate it with @cohort.stage"]),
        (EXAMPLE, ["expected MODULE:PIPELINE"]),
        ("json:", ["expected MODULE:PIPELINE"]),
    ],
)
def test_run_reports_a_bad_target_in_one_line_with_status_2(
    target: str, needles: list[str]
) -> None:
    assert_usage_error(cohort_cli("run", target), *needles)


def test_run_reports_a_module_that_fails_to_import_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import cohort\nraise RuntimeError('bad config')\n")
    result = cohort_cli("run", "broken:pipe", cwd=tmp_path)
    assert_usage_error(result, "importing 'broken' failed: RuntimeError: bad config")


def test_run_reports_a_missing_input_file_with_status_2(tmp_path: Path) -> None:
    result = cohort_cli("run", f"{EXAMPLE}:pipeline", "--input", str(tmp_path / "nope.txt"))
    assert_usage_error(result, "cannot read input", "No such file or directory")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["run"],
        ["run", f"{EXAMPLE}:pipeline", "--bogus"],
        ["run", "--log-format", "xml", "a:b"],
    ],
)
def test_bad_arguments_give_one_line_and_status_2(args: list[str]) -> None:
    assert_usage_error(cohort_cli(*args), "--help")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT stands for Ctrl-C on POSIX")
def test_ctrl_c_stops_the_run_with_a_one_line_summary_and_status_130(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(
        "import asyncio, cohort\n"
        "@cohort.stage(workers=2)\n"
        "async def pipe(line: str) -> str:\n"
        "    if line != 'fast':\n"
        "        await asyncio.sleep(60)\n"
        "    return line\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cohort.cli", "run", "slow:pipe"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write("fast\nslow\n")
    proc.stdin.flush()  # stdin stays open: the reader is blocked on it too
    assert proc.stdout.readline() == '"fast"\n'  # the run is under way
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert len(err.splitlines()) == 1, err
    assert err.startswith("cohort: interrupted: read 2: 1 succeeded")
    assert "1 cancelled" in err


def test_bench_runs_the_suite_from_the_checkout() -> None:
    result = cohort_cli("bench", "--quick", "sync")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# cohort benchmarks")
    assert "cohort.Barrier" in result.stdout


def test_bench_passes_an_unknown_name_to_the_suite_which_exits_2() -> None:
    result = cohort_cli("bench", "no_such_bench")
    assert result.returncode == 2
    assert "unknown benchmark" in result.stderr


def test_bench_without_the_suite_is_a_one_line_error() -> None:
    code = (
        "import sys, cohort.cli, cohort.cli._bench as b\n"
        "b.find_benchmarks = lambda: None\n"
        "sys.exit(cohort.cli.main(['bench']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert_usage_error(result, "benchmark suite is not installed")


def test_demo_exits_0_and_prints_its_summary() -> None:
    result = cohort_cli("demo")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "quorum reached in" in out
    assert "read 600: 594 succeeded, 0 dropped, 0 done, 6 failed, 0 cancelled" in out
    assert out.rstrip().endswith("nothing left running.")
    assert "(end)" in result.stderr  # the progress display's last line
