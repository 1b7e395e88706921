"""Examples 3 and 5, map-reduce word count (examples/wordcount.py), end to end.

The counts from worker processes (a local ``ProcessPool``, and with the
``--dask`` flag a Dask LocalCluster) must equal the serial run's exactly, and
both must equal a count made here with a different tokenizer. While the map
runs its workers exist; afterwards none is left, nor the temporary corpus.
Timings and the speedup are printed by the example, never asserted.
"""

from __future__ import annotations

import os
import pickle
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

import cohort
from _bridge_util import start_forkserver
from _util import EXAMPLES, live_children, run_python

sys.path.insert(0, str(EXAMPLES))

import wordcount as wc
from wordcount_corpus import write_corpus

DOCS, SHARD, SEED = 24, 4, 3

CountFn = Callable[[cohort.Executor, Sequence[wc.Shard]], Coroutine[Any, Any, Counter[str]]]


def count_by_splitting(paths: Iterable[Path]) -> Counter[str]:
    """The expected counts, by another method: split on whitespace, strip punctuation."""
    counts: Counter[str] = Counter()
    for path in paths:
        counts.update(w.strip(".,?!") for w in path.read_text(encoding="utf-8").lower().split())
    return counts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"), DOCS, SEED)


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example's temporary directory (corpus, Dask scratch space) goes under tmp_path."""
    start_forkserver()  # process-wide and long-lived: its socket's directory is not the example's
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


class MapSpy:
    """Wraps ``wc.count_parallel``: records the executor and the processes alive while it maps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.original: CountFn = wc.count_parallel
        self.executor: cohort.Executor | None = None
        self.during: set[int] = set()
        self.dask_workers: set[int] = set()
        monkeypatch.setattr(wc, "count_parallel", self)

    async def __call__(self, executor: cohort.Executor, work: Sequence[wc.Shard]) -> Counter[str]:
        self.executor = executor
        counts = await self.original(executor, work)
        self.during = live_children()
        if isinstance(executor, cohort.bridge.DaskExecutor):
            self.dask_workers = set((await executor.client.run(os.getpid)).values())
        return counts


def test_the_map_function_pickles_by_reference() -> None:
    assert pickle.loads(pickle.dumps(wc.count_shard)) is wc.count_shard


def test_the_corpus_is_zipf_like_and_the_same_for_the_same_seed(
    corpus: list[Path], tmp_path: Path
) -> None:
    again = write_corpus(tmp_path / "again", DOCS, SEED)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in corpus]
    other = write_corpus(tmp_path / "other", 2, SEED + 1)
    assert other[0].read_bytes() != corpus[0].read_bytes()
    ranked = count_by_splitting(corpus).most_common()
    assert [w for w, _ in ranked[:3]] == ["the", "of", "and"]
    assert ranked[0][1] > 1.7 * ranked[1][1]  # Zipf, exponent 1.07: 2**1.07 = 2.1


def test_the_serial_count_equals_an_independent_count(corpus: list[Path]) -> None:
    work = wc.shards(corpus, SHARD)
    assert [len(s) for s in work] == [SHARD] * (DOCS // SHARD)
    assert wc.count_serial(work) == count_by_splitting(corpus)


async def test_map_reduce_on_the_process_pool_equals_serial_and_leaves_no_worker(
    corpus: list[Path], tmp_path: Path
) -> None:
    start_forkserver()  # long-lived, started once: part of the baseline
    before = live_children()
    work = wc.shards(corpus, SHARD)
    async with wc.open_executor(wc.Settings(workers=2), tmp_path) as executor:
        assert isinstance(executor, cohort.ProcessPool)
        unordered = await wc.count_parallel(executor, work)
        in_order = await executor.map(wc.count_shard, work, chunksize=1)
        workers = live_children() - before
        assert len(workers) == 2
    # Exactly equal: same words, same counts, whatever order the shards came back in.
    assert unordered == wc.count_serial(work) == count_by_splitting(corpus)
    assert in_order == [wc.count_shard(s) for s in work]  # map(ordered=True): input order
    assert not workers & live_children(), "workers left running after the pool closed"
    assert live_children() <= before


def run_wordcount(
    settings: wc.Settings, monkeypatch: pytest.MonkeyPatch
) -> tuple[wc.Report, MapSpy]:
    """The example's whole run, as ``main`` does it, with the map spied on."""
    spy = MapSpy(monkeypatch)
    start_forkserver()
    before = live_children()
    report: wc.Report = cohort.run(wc.wordcount, settings)
    assert spy.during - before, "no worker process was seen while mapping"
    assert not (spy.during - before) & live_children(), "worker processes left behind"
    assert live_children() <= before
    return report, spy


def test_wordcount_on_the_local_pool(
    in_tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = wc.Settings(docs=DOCS, workers=2, shard_size=SHARD, seed=SEED)
    report, spy = run_wordcount(settings, monkeypatch)
    assert isinstance(spy.executor, cohort.ProcessPool)
    assert report.identical
    assert report.parallel == report.serial
    assert report.backend == "ProcessPool, 2 workers"
    assert report.documents == DOCS
    assert list(in_tmp_path.iterdir()) == [], "the temporary corpus was not removed"
    wc.print_report(report, 3)
    print(capsys.readouterr().out)  # visible with -s: the speedup, measured, never asserted


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")
def test_the_dask_flag_runs_the_same_map_reduce_on_a_local_cluster(
    in_tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corpus: list[Path]
) -> None:
    pytest.importorskip("distributed")
    settings = wc.Settings(docs=DOCS, workers=1, shard_size=SHARD, seed=SEED, dask=True)
    report, spy = run_wordcount(settings, monkeypatch)
    assert isinstance(spy.executor, cohort.bridge.DaskExecutor)
    assert isinstance(spy.executor, cohort.Executor)
    assert report.backend == "Dask LocalCluster, 1 worker"
    assert len(spy.dask_workers) == 1
    assert spy.dask_workers <= spy.during  # the cluster's worker is a process of ours, now gone
    # Same seed, same corpus: the cluster's counts equal the serial ones and ours.
    assert report.parallel == report.serial == count_by_splitting(corpus)
    assert list(in_tmp_path.iterdir()) == [], "the corpus or Dask's scratch space was left behind"


def test_the_script_prints_the_counts_the_timings_and_the_top_words(corpus: list[Path]) -> None:
    args = ["--docs", str(DOCS), "--workers", "2", "--shard-size", str(SHARD)]
    args += ["--seed", str(SEED), "--top", "3"]
    result = run_python(str(EXAMPLES / "wordcount.py"), *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    expected = count_by_splitting(corpus)
    assert lines[0].startswith(f"corpus: {DOCS} documents, {expected.total():,} words, ")
    assert re.fullmatch(r"serial, one process +\d+\.\d\d s", lines[1])
    assert re.fullmatch(
        r"map-reduce \(ProcessPool, 2 workers\) +\d+\.\d\d s  speedup \d+\.\d\dx"
        r"  \(\+\d+\.\d\d s to start it\)",
        lines[2],
    )
    assert lines[3] == f"identical counts: yes ({len(expected):,} distinct words)"
    assert lines[5] == "top 3 words:"
    top = [line.split() for line in lines[6:]]
    assert [(rank, word, count) for rank, word, count, _ in top] == [
        (str(i), w, f"{n:,}") for i, (w, n) in enumerate(expected.most_common(3), 1)
    ]


@pytest.mark.parametrize("bad", [["--docs", "0"], ["--workers", "0"], ["--shard-size", "-1"]])
def test_bad_arguments_exit_2_with_a_message(
    bad: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["wordcount.py", *bad])
    with pytest.raises(SystemExit) as exit_info:
        wc.parse_args()
    assert exit_info.value.code == 2
    assert f"{bad[0]} must be at least 1" in capsys.readouterr().err
