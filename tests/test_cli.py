"""The ``cohort`` command (cohort.cli), run as a subprocess: run, bench, demo, usage errors."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

import cohort
import cohort.cli
from _util import EXAMPLES, popen_python, run_python
from cohort.cli import _demo
from cohort.examples.etl.server import plan
from cohort.examples.fanout.loadtest import LOAD_STRATEGIES, Run

EXAMPLE = str(EXAMPLES / "cli_pipeline.py")


def cohort_cli(
    *args: str, stdin: str = "", cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "cohort.cli", *args, stdin=stdin, cwd=cwd, timeout=timeout)


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
    # Dates (and times, decimals, UUIDs, paths) are written as their text.
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
    assert "pipeline read=1 finished=1 " in result.stderr
    assert " | words in=1 out=1" in result.stderr
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
    proc = popen_python(
        "-m",
        "cohort.cli",
        "run",
        "slow:pipe",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
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


BENCHMARKS = sorted(
    p.stem.removeprefix("bench_")
    for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py")
)


def test_bench_an_unknown_name_is_a_one_line_error_that_lists_the_benchmarks() -> None:
    result = cohort_cli("bench", "no_such_bench")
    assert_usage_error(
        result, "unknown benchmark(s) no_such_bench", f"the benchmarks are {', '.join(BENCHMARKS)}"
    )


def test_bench_help_lists_the_benchmark_names() -> None:
    result = cohort_cli("bench", "--help")
    assert result.returncode == 0, result.stderr
    assert "core" in BENCHMARKS
    assert f"(default: all): {', '.join(BENCHMARKS)}" in " ".join(result.stdout.split())


def test_bench_without_the_bench_extra_says_what_to_install_in_one_line() -> None:
    # trio cannot be imported here, as if `cohort[bench]` were not installed
    code = (
        "import sys, cohort.cli\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'trio':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "sys.exit(cohort.cli.main(['bench', '--quick', 'core']))\n"
    )
    result = run_python("-c", code)
    assert_usage_error(result, "the benchmarks need trio", "pip install 'cohort[bench]'")


def test_bench_finds_the_suite_in_the_checkout_it_is_run_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cohort.cli import _bench

    checkout = Path(__file__).resolve().parents[1]
    # as if cohort were installed from a wheel, outside any checkout
    monkeypatch.setattr(cohort, "__file__", str(tmp_path / "site" / "cohort" / "__init__.py"))
    monkeypatch.chdir(checkout)
    assert _bench.find_benchmarks() == checkout
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in sys.path if Path(p or ".") != checkout])
    monkeypatch.delitem(sys.modules, "benchmarks", raising=False)
    assert _bench.find_benchmarks() is None


def test_bench_without_the_suite_is_a_one_line_error() -> None:
    code = (
        "import sys, cohort.cli, cohort.cli._bench as b\n"
        "b.find_benchmarks = lambda: None\n"
        "sys.exit(cohort.cli.main(['bench']))\n"
    )
    result = run_python("-c", code)
    assert_usage_error(result, "benchmark suite is not installed")


def demo_expectations(docs: int, seed: int) -> tuple[int, int]:
    """SQLite rows and dead letters of the demo's ETL part, from the document server's plan."""
    specs = plan(docs, seed)
    dead = sum(spec.kind in ("missing", "malformed") for spec in specs)
    return docs - dead, dead


QUORUM_AND_ALL = ["+ quorum reads", "+ hedging, mirror race"]


# The outage drill runs on the real clock, 2 x 3.5 s by default. What the breaker
# does in it is checked exactly on the virtual clock (test_examples_fanout); here
# 1.4 s runs show that the part runs and reports, whatever the machine's load.
# The demo with its defaults, breaker checks included, runs under `make soak`.
SHORT_DRILL = ("--drill-seconds", "1.4")


def check_demo(
    result: subprocess.CompletedProcess[str],
    requests: int,
    docs: int,
    seed: int,
    *,
    breaker_checks: bool,
) -> None:
    """The whole demo ran: the fan-out table, the outage drill, the ETL, the summary."""
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "1. Web fan-out: a Starlette service on http://127.0.0.1:" in out
    table = [line[3:] for line in out.splitlines() if line.startswith(("   plain", "   + "))]
    assert [row[:32].strip() for row in table] == ["plain (one replica each)", *QUORUM_AND_ALL]
    # every strategy ran on the 3 key sets, and every request ended (medians)
    assert [row[32:].split()[:2] for row in table] == [["3", str(requests)]] * 3
    assert "2. Outage drill: catalog-1 answers 503" in out
    assert " s  catalog-1 goes down (answers 503)\n" in out
    assert " s  catalog-1 is back\n" in out
    assert f"3. ETL: fetch {docs} documents" in out
    rows, dead = demo_expectations(docs, seed)
    assert f"read {docs}: 0 succeeded, 0 dropped, {rows} done, {dead} failed, 0 cancelled" in out
    summary = out[out.index("\nsummary\n") :].splitlines()[2:]
    assert summary[0].startswith(
        f"  fan-out: {requests} requests per strategy and key set; with all "
    )
    outage = re.fullmatch(
        r"  outage: catalog-1 got (\d+) calls while down with breakers \((\d+) failed fast\), "
        r"(\d+) without; errors \d+ vs \d+ of \d+ requests",
        summary[1],
    )
    assert outage is not None, summary[1]
    with_breakers, failed_fast, without = map(int, outage.groups())
    if breaker_checks:
        assert "breaker open" in out
        assert with_breakers < without
        assert failed_fast > 0
    assert summary[2].startswith(
        f"  etl: {docs} documents -> {rows} SQLite rows, {dead} dead letters"
    )
    assert summary[3] == "  every request, child task, server and worker process has ended."
    assert len(summary) == 4
    # live progress, one plain line per run's end when stderr is not a terminal
    ends = [line for line in result.stderr.splitlines() if line.endswith("(end)")]
    assert len(ends) == 3 * 3 + 1, result.stderr
    assert f"| fetch in={docs} " in ends[-1]


def test_demo_runs_the_fanout_load_and_the_etl_and_prints_its_summary() -> None:
    result = cohort_cli("demo", "--requests", "12", "--docs", "40", "--seed", "3", *SHORT_DRILL)
    check_demo(result, requests=12, docs=40, seed=3, breaker_checks=False)


@pytest.mark.soak
@pytest.mark.timeout(360)  # the whole demo, longer than the suite's per-test limit
def test_demo_with_its_defaults_runs_and_prints_its_summary() -> None:
    result = cohort_cli("demo", timeout=300)
    check_demo(result, requests=60, docs=120, seed=1, breaker_checks=True)


def test_demo_load_over_https_runs_every_strategy_on_every_key_set_and_prints_medians(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cohort demo --load --tls``: backends on HTTPS (a throw-away CA), the backends and
    each service in their own processes. Run in this process to see the runs themselves."""
    from cohort.examples.fanout import loadtest

    returned: list[list[Run]] = []

    async def load_test(**kwargs: Any) -> list[Run]:
        returned.append(await real_load_test(**kwargs))
        return returned[-1]

    real_load_test = loadtest.load_test
    monkeypatch.setattr(loadtest, "load_test", load_test)
    status = cohort.cli.main(["demo", "--load", "--tls", "--requests", "4", "--concurrency", "2"])
    out, err = capsys.readouterr()
    assert status == 0, err
    [runs] = returned
    assert sorted((r.label, r.keys) for r in runs) == sorted(
        (label, f"s{keys}") for label in LOAD_STRATEGIES for keys in (1, 2, 3)
    )
    # Every request got an answer from the service: 200, or the 502/504 it decided on.
    assert {status for r in runs for status in r.statuses} <= {200, 502, 504}
    assert all(sum(r.statuses.values()) == r.summary.requests == 4 for r in runs)
    assert "4 requests per run, 2 in flight" in out
    assert "backends (HTTPS)" in out
    lines = [line for line in out.splitlines() if " keys s" in line]
    assert len(lines) == len(runs)  # one line per run as it ends
    assert all(": 4 requests, " in line for line in lines)
    table = out[out.index("medians over the key sets:") :].splitlines()[2:]
    assert [line[:32].strip() for line in table[: len(LOAD_STRATEGIES)]] == list(LOAD_STRATEGIES)
    assert "  load: cohort with all tactics " in out
    assert "Traceback" not in out + err


@pytest.mark.soak
@pytest.mark.timeout(660)  # a full load test, longer than the suite's per-test limit
@pytest.mark.parametrize("tls", [[], ["--tls"]], ids=["http", "https"])
def test_demo_load_with_its_defaults_runs_every_strategy(tls: list[str]) -> None:
    result = cohort_cli("demo", "--load", *tls, timeout=600)
    assert result.returncode == 0, result.stderr
    runs = [line for line in result.stdout.splitlines() if " keys s" in line]
    assert len(runs) == len(LOAD_STRATEGIES) * 3
    assert all(": 500 requests, " in line for line in runs)
    assert "  load: cohort with all tactics " in result.stdout


def fake_load_test(monkeypatch: pytest.MonkeyPatch, *readings: _demo.LoadReading) -> None:
    """``cohort demo --load`` with these machine readings and one made-up run per
    strategy, instead of processes under load."""
    from cohort.examples.fanout import loadtest
    from cohort.examples.fanout.load import Record

    async def load_test(**_: object) -> list[loadtest.Run]:
        key = loadtest.keys_of("s1", 1)[0]
        return [
            loadtest.make_run(label, "s1", strategy, [Record(key, 200, 0.01, {})], 1.0)
            for label, (_, strategy) in LOAD_STRATEGIES.items()
        ]

    monkeypatch.setattr(loadtest, "load_test", load_test)
    monkeypatch.setattr(_demo, "read_load", iter(readings).__next__)


@pytest.mark.parametrize(
    ("before", "after", "why"),
    [
        (
            _demo.LoadReading(3.5, 2, 100, 10_000),
            _demo.LoadReading(9.0, 2, 100, 20_000),
            "1-minute load average 3.5 on 2 cores before the run",
        ),
        (
            _demo.LoadReading(0.5, 2, 100, 10_000),
            _demo.LoadReading(0.5, 2, 400, 20_000),
            "CPU steal 3.0% during the run",
        ),
    ],
    ids=["load-average", "steal"],
)
def test_demo_load_on_a_busy_machine_warns_before_and_after_the_table(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    before: _demo.LoadReading,
    after: _demo.LoadReading,
    why: str,
) -> None:
    fake_load_test(monkeypatch, before, after)
    assert cohort.cli.main(["demo", "--load", "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    top = lines.index("medians over the key sets:")
    end = top + 2 + len(LOAD_STRATEGIES)  # the title, the header, a row per strategy
    warning = f"warning: the machine was busy ({why}): the figures"
    advice = "are not reliable; rerun on an idle machine"
    assert lines[top - 2 : top] == [f"{warning} below {advice}", ""]
    assert lines[end] == f"{warning} above {advice}"
    assert sum("warning" in line for line in lines) == 2


def test_demo_load_on_an_idle_machine_prints_no_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the run's own processes raise the load average: only the one before counts;
    # steal of exactly 1% of the CPU time is not enough
    fake_load_test(
        monkeypatch, _demo.LoadReading(2.0, 2, 100, 10_000), _demo.LoadReading(8.0, 2, 200, 20_000)
    )
    assert cohort.cli.main(["demo", "--load", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "medians over the key sets:" in out
    assert "warning" not in out


def test_run_fails_clearly_on_an_output_json_cannot_hold(tmp_path: Path) -> None:
    module = tmp_path / "sets.py"
    module.write_text(
        "import cohort\n\n"
        "@cohort.stage\n"
        "async def pipeline(line: str) -> object:\n"
        "    return {line}\n"
    )
    result = cohort_cli("run", f"{module}:pipeline", stdin="a\nb\n")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "output 1 is a set, which JSON cannot hold" in result.stderr


def test_version() -> None:
    result = cohort_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"cohort {cohort.__version__}\n"


def test_demo_tls_without_load_is_a_usage_error() -> None:
    assert_usage_error(cohort_cli("demo", "--tls"), "--tls goes with --load")


def test_demo_no_progress_writes_nothing_on_stderr() -> None:
    result = cohort_cli(
        "demo", "--requests", "2", "--docs", "10", "--drill-seconds", "0.7", "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("flag", ["--requests", "--concurrency", "--docs"])
def test_demo_rejects_a_count_below_1(flag: str) -> None:
    assert_usage_error(cohort_cli("demo", flag, "0"), f"{flag} must be at least 1")


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf"])
def test_demo_rejects_a_drill_length_that_is_not_above_0(seconds: str) -> None:
    assert_usage_error(
        cohort_cli("demo", "--drill-seconds", seconds), "--drill-seconds must be a number"
    )


def test_demo_without_the_web_extras_says_what_to_install() -> None:
    code = (
        "import sys, cohort.cli\n"
        "sys.modules['uvicorn'] = None  # as if it were not installed\n"
        "sys.exit(cohort.cli.main(['demo']))\n"
    )
    result = run_python("-c", code)
    assert_usage_error(result, "the demo needs uvicorn", "pip install 'cohort[cli]'")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT stands for Ctrl-C on POSIX")
def test_demo_ctrl_c_prints_what_finished_and_stops_every_process() -> None:
    with popen_python(
        *(
            "-m",
            "cohort.cli",
            "demo",
            "--requests",
            "1",
            "--docs",
            "5000",
            "--drill-seconds",
            "0.7",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # the ETL's first progress line: its worker pool is running
            if "| fetch in=" in line:
                break
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers  # the parse stage's worker processes
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    summary = out[out.index("\nsummary (interrupted during the ETL pipeline)\n") :]
    assert "  fan-out: 1 requests per strategy" in summary
    assert "  etl:" not in summary
    assert out.rstrip().endswith("cohort: demo interrupted")
    assert "Traceback" not in out
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT stands for Ctrl-C on POSIX")
def test_demo_ctrl_c_during_the_fanout_says_which_runs_finished() -> None:
    with popen_python(
        *("-m", "cohort.cli", "demo", "--requests", "300", "--concurrency", "20"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as proc:
        assert proc.stdout is not None
        ends = 0
        for line in proc.stdout:  # a run's last progress line; at the second, the first
            if line.rstrip().endswith("(end)"):  # run is counted (the second began after)
                ends += 1
                if ends == 2:
                    break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    summary = out[out.index("\nsummary (interrupted during the fan-out load)\n") :]
    assert re.search(r"\n  fan-out: [12] of 9 runs finished\n", summary), summary
    assert "nothing finished" not in summary


def test_quorum_read_example_runs() -> None:
    result = run_python(str(EXAMPLES / "quorum_read.py"))
    assert result.returncode == 0, result.stderr
    assert "quorum of 2 reached in" in result.stdout
    assert "winner: mirror=42 (from us-2)" in result.stdout
    assert "timed out: True" in result.stdout
