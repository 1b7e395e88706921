"""Map-reduce word count: map in worker processes, reduce in the parent; serial run to compare.

A seeded corpus of text files (examples/wordcount_corpus.py: Zipf-distributed
words) is cut into shards of documents. The map step, ``count_shard``, reads
a shard's files and counts their words in a worker process, returning one
``Counter`` per shard (a combiner: the parent merges a few hundred counters,
not one per document). The reduce step merges them in the parent as they
arrive (``imap(ordered=False)``). The same map and reduce also run serially
in this process first; both must give identical counts.

``--dask`` runs the very same map-reduce on a Dask ``LocalCluster`` through
``cohort.bridge.DaskExecutor``: both backends implement ``cohort.Executor``,
and ``count_parallel`` takes either. (On a real cluster, pass the scheduler's
address to ``DaskExecutor`` and keep the corpus on storage every worker sees.)

    python examples/wordcount.py                    # 2,000 documents, local ProcessPool
    python examples/wordcount.py --docs 500 --workers 2
    python examples/wordcount.py --dask             # the same code on a Dask LocalCluster
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wordcount_corpus import write_corpus

import cohort

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")

Shard = tuple[str, ...]  # the paths of a few documents: what one map call gets


# -- map and reduce (the same functions on every backend) -----------------------------


def count_shard(paths: Shard) -> Counter[str]:
    """Map: the words of a shard's documents, counted (runs in a worker process)."""
    counts: Counter[str] = Counter()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            counts.update(WORD.findall(f.read().lower()))
    return counts


def shards(paths: Sequence[Path], size: int) -> list[Shard]:
    """Cut the corpus into shards of ``size`` documents."""
    names = [str(p) for p in paths]
    return [tuple(names[i : i + size]) for i in range(0, len(names), size)]


def reduce_counts(total: Counter[str], counts: Counter[str]) -> Counter[str]:
    """Reduce: merge one shard's counts into the total."""
    total.update(counts)
    return total


def count_serial(work: Iterable[Shard]) -> Counter[str]:
    """The same map and reduce, one shard after another, in this process."""
    total: Counter[str] = Counter()
    for shard in work:
        reduce_counts(total, count_shard(shard))
    return total


async def count_parallel(executor: cohort.Executor, work: Sequence[Shard]) -> Counter[str]:
    """Map in ``executor``'s workers; reduce here as each shard's counts arrive."""
    total: Counter[str] = Counter()
    results = executor.imap(count_shard, work, ordered=False)
    async with contextlib.aclosing(results):  # on an error, the shards in flight are cancelled
        async for counts in results:
            reduce_counts(total, counts)
    return total


# -- the one flag: where the map runs ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    docs: int = 2_000
    workers: int | None = None  # None: the CPUs this process may use
    shard_size: int = 25  # documents per map call
    seed: int = 7
    top: int = 10
    dask: bool = False


def worker_count(settings: Settings) -> int:
    if settings.workers is not None:
        return settings.workers
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def backend_name(settings: Settings) -> str:
    n = worker_count(settings)
    kind = "Dask LocalCluster" if settings.dask else "ProcessPool"
    return f"{kind}, {n} worker{'s' * (n != 1)}"


@contextlib.asynccontextmanager
async def open_executor(settings: Settings, scratch: Path) -> AsyncIterator[cohort.Executor]:
    """A local ``ProcessPool``, or with ``dask`` a ``DaskExecutor`` on a new LocalCluster.

    Either way the executor is closed on exit: no worker process outlives the block.
    """
    executor: cohort.Executor
    if settings.dask:
        executor = cohort.bridge.DaskExecutor(
            cluster_options={
                "n_workers": worker_count(settings),
                "threads_per_worker": 1,  # counting holds the GIL: one process per core
                # Workers and scheduler keep their scratch files (and lock files) in ours.
                "local_directory": str(scratch),
                "scheduler_kwargs": {"local_directory": str(scratch)},
            }
        )
    else:
        executor = cohort.ProcessPool(worker_count(settings))
    try:
        yield executor
    finally:
        await executor.aclose()


# -- the run ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Report:
    backend: str
    documents: int
    megabytes: float
    generate_s: float
    serial: Counter[str]
    serial_s: float
    start_s: float  # starting the executor (pool or cluster) and one empty call
    parallel: Counter[str]
    parallel_s: float

    @property
    def identical(self) -> bool:
        return self.serial == self.parallel

    @property
    def speedup(self) -> float:
        return self.serial_s / self.parallel_s


async def wordcount(settings: Settings) -> Report:
    """Generate the corpus, count it serially, then with map-reduce on the chosen backend."""
    with tempfile.TemporaryDirectory(prefix="cohort-wordcount-") as tmp:
        t = time.perf_counter()
        paths = write_corpus(Path(tmp, "corpus"), settings.docs, settings.seed)
        generate_s = time.perf_counter() - t
        megabytes = sum(p.stat().st_size for p in paths) / 1e6
        work = shards(paths, settings.shard_size)

        # Serial first: a Dask LocalCluster's scheduler runs on this event loop,
        # and a long blocking count would starve its heartbeats.
        t = time.perf_counter()
        serial = count_serial(work)
        serial_s = time.perf_counter() - t

        t = time.perf_counter()
        async with open_executor(settings, Path(tmp)) as executor:
            await executor.run(count_shard, ())  # started and answering
            start_s = time.perf_counter() - t
            t = time.perf_counter()
            parallel = await count_parallel(executor, work)
            parallel_s = time.perf_counter() - t
    return Report(
        backend=backend_name(settings),
        documents=len(paths),
        megabytes=megabytes,
        generate_s=generate_s,
        serial=serial,
        serial_s=serial_s,
        start_s=start_s,
        parallel=parallel,
        parallel_s=parallel_s,
    )


def print_report(report: Report, top: int) -> None:
    words = report.serial.total()
    print(
        f"corpus: {report.documents:,} documents, {words:,} words, {report.megabytes:.1f} MB "
        f"(generated in {report.generate_s:.2f} s)"
    )
    mapped = f"map-reduce ({report.backend})"
    width = max(len(mapped), 20)
    print(f"{'serial, one process':<{width}} {report.serial_s:6.2f} s")
    print(
        f"{mapped:<{width}} {report.parallel_s:6.2f} s  speedup {report.speedup:.2f}x"
        f"  (+{report.start_s:.2f} s to start it)"
    )
    verdict = "yes" if report.identical else "NO"
    print(f"identical counts: {verdict} ({len(report.serial):,} distinct words)")
    print(f"\ntop {top} words:")
    for rank, (word, n) in enumerate(report.parallel.most_common(top), 1):
        print(f"{rank:>4}  {word:<8} {n:>12,}  {n / words:6.2%}")


def parse_args() -> Settings:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=defaults.docs, metavar="N")
    parser.add_argument(
        "--workers", type=int, default=None, metavar="N", help="default: the CPUs usable here"
    )
    parser.add_argument("--shard-size", type=int, default=defaults.shard_size, metavar="N")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--top", type=int, default=defaults.top, metavar="N")
    parser.add_argument(
        "--dask", action="store_true", help="map on a Dask LocalCluster instead of a ProcessPool"
    )
    args = parser.parse_args()
    if args.dask and importlib.util.find_spec("distributed") is None:
        parser.error("--dask needs Dask distributed: pip install 'cohort[dask]'")
    for name in ("docs", "shard_size", "workers", "top"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return Settings(
        docs=args.docs,
        workers=args.workers,
        shard_size=args.shard_size,
        seed=args.seed,
        top=args.top,
        dask=args.dask,
    )


async def main(settings: Settings) -> int:
    report = await wordcount(settings)
    print_report(report, settings.top)
    return 0 if report.identical else 1


if __name__ == "__main__":
    try:
        raise SystemExit(cohort.run(main, parse_args()))
    except KeyboardInterrupt:  # the executor was closed: no worker is left running
        raise SystemExit("interrupted") from None
