"""Checked by `mypy --strict` in `make test` (not run by pytest): the public API's types."""

from __future__ import annotations

import asyncio
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
