"""Module-level functions for cpu=True flow nodes (worker processes import them)."""

from __future__ import annotations

import cohort


def partition(data: list[int], parts: int) -> list[list[int]]:
    n = max(1, len(data) // parts)
    return [data[i : i + n] for i in range(0, len(data), n)]


def count(partition: list[int]) -> int:
    return sum(1 for x in partition if x % 3 == 0)


def total(count: list[int]) -> int:
    return sum(count)


# The documented decorator form: the module attribute is then the Node (or the
# stage, or the retrying wrapper), and worker processes must still find the
# plain function behind it.
decorated = cohort.Flow("decorated", inputs=["x", "xs"])


@decorated.node(cpu=True)
def doubled(x: int) -> int:
    return 2 * x


@decorated.node(cpu=True, map_over="xs")
def shifted(xs: int, doubled: int) -> int:
    return xs + doubled


@cohort.stage(cpu=True)
def tripled(x: int) -> int:
    return 3 * x


@cohort.Retry(attempts=2, backoff=0)
@cohort.cpu
def retried(x: int) -> int:
    return x + 10
