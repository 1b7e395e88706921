"""Checked by `mypy --strict` and `pyright` in `make test` (not run by pytest): API types."""
# pyright: reportUnnecessaryTypeIgnoreComment=true

from __future__ import annotations

import asyncio
import contextvars
from typing import assert_type

import cohort


async def read(replica: str, key: int) -> bytes:
    await asyncio.sleep(0)
    return b""


async def seconds() -> float:
    await asyncio.sleep(0)
    return 1.0


async def main() -> None:
    async with cohort.TaskGroup(join=cohort.Quorum(2), limit=4, timeout=1.0) as g:
        h = g.spawn(read, "eu-1", 42, name="read")
        assert_type(h, cohort.Handle[bytes])
        g.spawn(read(replica="us-1", key=1))
        g.start_soon(read, "eu-2", 42, name="read", critical=False)
        g.start_soon(read, "eu-2", "42")  # type: ignore[arg-type]  # args checked against fn
        ctx = contextvars.copy_context()
        assert_type(g.spawn(read, "eu-3", 42, context=ctx), cohort.Handle[bytes])
        g.start_soon(read, "eu-3", 42, context=ctx)
    assert_type(await h, bytes)
    assert_type(h.result(), bytes)
    assert_type(h.status, cohort.ChildStatus)
    outcomes: list[cohort.Outcome] = g.outcomes
    assert outcomes is not None
    with cohort.move_on_after(1.0) as scope:
        assert_type(scope, cohort.CancelScope)
    with cohort.fail_at(cohort.current_time() + 1):
        pass
    assert_type(cohort.current_deadline(), float)
    pair = await cohort.gather(read("eu-1", 1), seconds())
    assert_type(pair, tuple[bytes, float])
    settled = await cohort.settle(read("eu-1", 1), seconds())
    assert_type(settled, tuple[bytes | Exception, float | Exception])
    value, failure = settled
    assert_type(value, bytes | Exception)
    assert_type(failure, float | Exception)
    assert_type(await cohort.race(read("eu-1", 1), seconds()), bytes | float)
    async with cohort.Linger(grace=0.5) as linger:
        assert_type(await linger.call(read, "eu-1", key=2), bytes)
    async with cohort.TaskGroup() as g2:
        g2.start_soon(read, "eu-1", 3)
    assert_type(g2.statistics().succeeded, int)
    async with cohort.ProcessPool(1) as pool:
        with await pool.share(b"blob") as blob:
            assert_type(blob, cohort.Shared[bytes])
            assert_type(blob.value, bytes)
            assert_type(await pool.run(len, blob.value), int)


@cohort.stage
async def upper(text: str) -> str:
    return text.upper()


@cohort.stage(workers=4)
async def parse(raw: bytes) -> int:
    return len(raw)


@cohort.stage
async def fetch(url: str) -> bytes:
    await asyncio.sleep(0)
    return url.encode()


@cohort.stage
async def only_short(text: str) -> str | cohort.DropType:
    return text if len(text) < 10 else cohort.DROP


@cohort.stage(batch=10)
async def store(rows: list[int]) -> None:
    await asyncio.sleep(0)


async def pipelines() -> None:
    """Composition and sources are checked: each stage's input is the outputs before it."""
    pipe = fetch | parse | store
    assert_type(pipe, cohort.Pipeline[str, None])
    assert_type(only_short | fetch, cohort.Pipeline[str, bytes])  # DROP is dropped in between
    assert_type((await (fetch | parse).run(["a"])).outputs, list[int] | None)
    assert_type(await upper("a"), str)
    # The wrong ones: an error for both checkers, whose unneeded-ignore reports fail
    # the check if either stops seeing it.
    _ = upper | parse  # type: ignore[operator]
    await fetch.run([1, 2])  # type: ignore[list-item]


page = cohort.Flow("page", inputs=["key"])


@page.node
async def title(key: int) -> str:
    return str(key)


@page.node(join=cohort.Quorum(1))
async def shown(title: str | None) -> bytes:
    return (title or "").encode()


async def flows() -> None:
    """A flow's result is typed by node."""
    result = await page.run(key=1)
    assert_type(result[title], str)
    assert_type(result[shown], bytes)
    assert_type(result.outcome(shown), cohort.Outcome)
