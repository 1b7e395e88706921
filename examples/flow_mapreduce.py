"""Map-reduce over partitions as a cohort.Flow, in worker processes or on Dask.

``partitions`` splits a generated corpus; ``counts`` maps a plain function
over the partitions (``cpu=True``, ``map_over=``): each partition is counted
in a worker process; ``total`` reduces. ``--dask`` runs the same flow on a
Dask LocalCluster through ``executor=`` (``pip install 'cohort[dask]'``).

    python examples/flow_mapreduce.py [--parts N] [--dask]
"""

from __future__ import annotations

import argparse
import collections
import random
from typing import Any

import cohort


def partitions(words: int, parts: int) -> list[list[str]]:
    """A seeded corpus, split in ``parts`` partitions."""
    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(200)]
    corpus = rng.choices(vocabulary, weights=[1 / (i + 1) for i in range(200)], k=words)
    size = -(-len(corpus) // parts)
    return [corpus[i : i + size] for i in range(0, len(corpus), size)]


def counts(partitions: list[str]) -> dict[str, int]:
    """One partition's word counts (runs in a worker process)."""
    return dict(collections.Counter(partitions))


def total(counts: list[dict[str, int]]) -> list[tuple[str, int]]:
    """Merge the partitions' counts; the ten most common words."""
    merged: collections.Counter[str] = collections.Counter()
    for part in counts:
        merged.update(part)
    return merged.most_common(10)


def build(executor: Any = None) -> cohort.Flow:
    flow = cohort.Flow("wordcount", inputs=["words", "parts"])
    flow.node(partitions)
    flow.node(cpu=executor is None, executor=executor, map_over="partitions")(counts)
    flow.node(total)
    return flow


async def main(words: int, parts: int, dask: bool) -> list[tuple[str, int]]:
    if dask:
        from cohort.bridge import DaskExecutor

        async with DaskExecutor(cluster_options={"n_workers": 2}) as cluster:
            result = await build(cluster).run(words=words, parts=parts)
    else:
        result = await build().run(words=words, parts=parts)
    top = result["total"]
    print(f"{words:,} words in {parts} partitions on {'Dask' if dask else 'worker processes'}:")
    for word, n in top:
        print(f"  {word:<5} {n:>7,}")
    return list(top)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--words", type=int, default=200_000)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--dask", action="store_true")
    args = parser.parse_args()
    cohort.run(main, args.words, args.parts, args.dask)
