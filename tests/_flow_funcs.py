"""Module-level functions for cpu=True flow nodes (worker processes import them)."""

from __future__ import annotations


def partition(data: list[int], parts: int) -> list[list[int]]:
    n = max(1, len(data) // parts)
    return [data[i : i + n] for i in range(0, len(data), n)]


def count(partition: list[int]) -> int:
    return sum(1 for x in partition if x % 3 == 0)


def total(count: list[int]) -> int:
    return sum(count)
