"""Calling one node: its timeout and retries, element by element for ``map_over``,
on the loop, in a thread (a plain ``def``) or in a worker process (``cpu=True``,
``executor=``) through the bridge (``_extras``, loaded on a cpu node's first call)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import cohort._flow as package
from cohort._core._group import TaskGroup
from cohort._core._retry import attempt_all
from cohort._core._scopes import fail_after

if TYPE_CHECKING:
    from cohort._flow._graph import Node

__all__ = ["Threads", "call"]

# The threads of plain-def nodes cut short, with whether each has returned since.
Threads = list[tuple[str, threading.Event]]


async def call(node: Node[Any], kwargs: dict[str, Any], tally: list[int], threads: Threads) -> Any:
    """``node``'s value from ``kwargs``, with its timeout, retries and ``map_over``;
    ``tally[0]`` counts the attempts, ``threads`` gets a thread left running."""
    if node.map_over is None:
        invoke = functools.partial(_once, node, kwargs, threads)
    else:
        invoke = functools.partial(_map, node, kwargs, threads)
    if node.retry is not None:
        return await attempt_all(node.retry, invoke, node.name, tally)
    return await invoke()


async def _once(node: Node[Any], kwargs: dict[str, Any], threads: Threads) -> Any:
    if node.timeout is None:
        return await _invoke(node, kwargs, threads)
    with fail_after(node.timeout):
        return await _invoke(node, kwargs, threads)


async def _invoke(node: Node[Any], kwargs: dict[str, Any], threads: Threads) -> Any:
    if node.kind == "async":
        return await node.fn(**kwargs)
    if node.kind == "thread":
        return await _in_thread(node, kwargs, threads)
    work = functools.partial(node.target, **kwargs)
    return await package._extras.to_process(work, executor=node.executor)


async def _in_thread(node: Node[Any], kwargs: dict[str, Any], threads: Threads) -> Any:
    """``asyncio.to_thread``, remembering a thread left running when cut short."""
    ended = threading.Event()
    work = functools.partial(_thread_body, ended, node.fn, kwargs)
    future = asyncio.get_running_loop().run_in_executor(
        None, functools.partial(contextvars.copy_context().run, work)
    )
    try:
        return await future
    except asyncio.CancelledError:
        if not ended.is_set():
            threads.append((node.name, ended))
        raise


async def _map(node: Node[Any], kwargs: dict[str, Any], threads: Threads) -> list[Any]:
    assert node.map_over is not None
    elements = kwargs[node.map_over]
    if isinstance(elements, str | bytes) or not isinstance(elements, Iterable):
        raise TypeError(
            f"node {node.name!r} maps over {node.map_over!r}, which is not a collection "
            f"of elements: {type(elements).__name__}"
        )
    items = list(elements)
    if node.kind == "cpu" and node.timeout is None and node.limit is None:
        executor = node.executor
        if executor is None:
            executor = await package._extras.default_executor()
        rest = {k: v for k, v in kwargs.items() if k != node.map_over}
        fn = functools.partial(_call_with, node.target, node.map_over, rest)
        return list(await executor.map(fn, items))
    async with TaskGroup(limit=node.limit, name=f"{node.name} map") as group:
        for i, item in enumerate(items):
            one = {**kwargs, node.map_over: item}
            group.spawn(_once, node, one, threads, name=f"{node.name}[{i}]")
    return group.results


def _call_with(fn: Callable[..., Any], param: str, rest: dict[str, Any], item: Any) -> Any:
    """In a worker: ``fn(**rest, param=item)`` (a ``map_over`` node's call on one element)."""
    return fn(**rest, **{param: item})


def _thread_body(ended: threading.Event, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """In a worker thread: ``fn(**kwargs)``, then ``ended`` set however it ends."""
    try:
        return fn(**kwargs)
    finally:
        ended.set()
