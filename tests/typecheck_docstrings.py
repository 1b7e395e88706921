"""The examples in cohort's docstrings, checked by `mypy --strict` in `make test`.

Not run: each example is the body of a function whose parameters and local
definitions stand for the names it only mentions. tests/test_api_docs.py
checks that every fenced ``python`` block of a docstring in src/cohort is here
verbatim, so an example cannot drift from the API without failing mypy.
"""

# fmt: off
# ruff: noqa: E501, F841, PIE790, SIM117, B007

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import cohort
import cohort.bridge
from cohort.testing import VirtualClockLoop


@dataclass
class Doc:
    size: int


Shard = list[int]
Fetch = Callable[[str], Awaitable[bytes]]


async def barrier(
    shards: list[Shard], steps: int, merge_partial_results: Callable[[], None],
    compute: Callable[[Shard, int], None],
) -> None:
    barrier = cohort.Barrier(len(shards), action=merge_partial_results)

    async def worker(shard: Shard) -> None:
        for step in range(steps):
            compute(shard, step)
            await barrier.wait()   # merge runs once, then all go on


async def gather(fetch: Fetch, urls: list[str]) -> None:
    pages = await cohort.gather(*(fetch(u) for u in urls), limit=10, timeout=5)


async def settle(fetch: Fetch, urls: list[str]) -> None:
    pages = await cohort.settle(*(fetch(u) for u in urls), limit=10)
    for url, page in zip(urls, pages, strict=True):
        if isinstance(page, Exception):
            print(f"{url} failed: {page!r}")


async def race(ask: Callable[[str], Awaitable[str]], primary: str, backup: str) -> None:
    answer = await cohort.race(ask(primary), ask(backup))


async def hedge(
    read_replica: Callable[[int], Awaitable[str]], read: Callable[[str, int], Awaitable[str]],
    key: int, replicas: list[str],
) -> None:
    row = await cohort.hedge(read_replica, key, delay=0.05, attempts=3)
    row = await cohort.hedge([partial(read, r, key) for r in replicas], delay=0.05)


class JoinPolicyModule:
    class TwoOrThreeStrikes(cohort.JoinPolicy):
        '''Done when 2 children succeed; failed after 3 failures.'''

        def on_child_done(
            self, group: cohort.GroupView, handle: cohort.ChildView
        ) -> cohort.Decision:
            if group.succeeded >= 2:
                return cohort.Decision.DONE
            if group.failed >= 3:
                return cohort.Decision.FAIL
            return cohort.Decision.CONTINUE


async def move_on_after(fetch: Callable[[], Awaitable[bytes]], cached: bytes) -> None:
    with cohort.move_on_after(0.5) as scope:
        data = await fetch()
    if scope.cancelled_caught:
        data = cached


async def event_flags() -> None:
    flags = cohort.EventFlags("config", "db", "cache")

    async def start() -> None:
        flags.set("config")
        ...

    await flags.wait_all("config", "db")            # both set at once
    seen = await flags.wait_any("db", "cache", clear=True)


async def event_flags_sync() -> None:
    flags = cohort.EventFlags("a", "b", "c")
    # in task a:
    await flags.sync(set="a", wait_all=("a", "b", "c"))


class User:
    pass


class Item:
    pass


async def flow(
    load_user: Callable[[str], Awaitable[User]], recommend: Callable[[User], Awaitable[list[Item]]]
) -> None:
    page = cohort.Flow("page", inputs=["user_id"])

    @page.node
    async def user(user_id: str) -> User:
        return await load_user(user_id)

    @page.node(timeout=0.4)
    async def recs(user: User) -> list[Item]:
        return await recommend(user)

    @page.node(join=cohort.Quorum(1))
    async def render(user: User, recs: list[Item] | None) -> str:
        return f"{user}: {len(recs or [])} recommendations"

    result = await page.run(user_id="u1")
    html = result[render]


async def task_group(read: Callable[[str, int], Awaitable[str]], replicas: list[str], key: int) -> None:
    async with cohort.TaskGroup(join=cohort.Quorum(2), timeout=1.5) as g:
        for replica in replicas:
            g.spawn(read, replica, key, name=f"read-{replica}")
    print(g.results)   # the first two values, in completion order


async def latch(connect: Callable[[], Awaitable[None]], serve: Callable[[], Awaitable[None]]) -> None:
    ready = cohort.Latch(3)

    async def worker() -> None:
        await connect()
        ready.count_down()
        await serve()

    async with asyncio.TaskGroup() as tg:
        for _ in range(3):
            tg.create_task(worker())
        await ready.wait()  # all three connected; they keep serving


async def rwlock() -> None:
    rw = cohort.RWLock()
    config: dict[str, str] = {}


    async def read(key: str) -> str | None:
        async with rw.reader:
            return config.get(key)


    async def update(key: str, value: str) -> None:
        async with rw.writer:
            config[key] = value


class _Client:
    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def get(self, url: str) -> bytes:
        return url.encode()


class httpx:  # stands for the module
    AsyncClient = _Client


async def linger(mirrors: list[str]) -> None:
    async with cohort.Linger(grace=0.25) as linger, httpx.AsyncClient() as client:
        async with cohort.TaskGroup(join=cohort.FirstWins()) as g:
            for mirror in mirrors:
                g.spawn(linger.call, client.get, mirror)
        # the losers were cancelled; their requests complete in the
        # background and their connections go back to the pool


class HTTPError(Exception):
    status: int = 500


async def retry(http_get: Fetch, url: str, g: cohort.TaskGroup) -> None:
    async def fetch(url: str) -> bytes:
        return await http_get(url)

    data = await cohort.retry(fetch, url, policy=cohort.Retry(attempts=4, backoff=0.05))
    g.spawn(fetch, url, retry=cohort.Retry(attempts=3))

    @cohort.Retry(on=lambda e: isinstance(e, HTTPError) and e.status >= 500)
    async def fetch_page(url: str) -> bytes:  # every call retried
        return await http_get(url)


def run(work: Callable[[int], Awaitable[int]]) -> None:
    async def main(n: int) -> tuple[int, ...]:
        return await cohort.gather(*(work(i) for i in range(n)), limit=8)

    print(cohort.run(main, 100))


async def cancel_scope() -> None:
    with cohort.CancelScope() as scope:
        ...
        scope.cancel()          # the block ends at its next await
    if scope.cancelled_caught:
        ...


async def result_stream(fetch: Fetch, urls: list[str], is_enough: Callable[[bytes], bool]) -> None:
    async with cohort.map(fetch, urls, limit=10) as pages:
        async for page in pages:
            if is_enough(page):
                break          # the other fetches are cancelled and awaited here


async def map_(fetch: Fetch, urls: list[str]) -> None:
    async with cohort.map(fetch, urls, limit=10) as pages:
        async for page in pages:
            print(page)


async def as_completed(probe: Callable[[str], Awaitable[str]], hosts: list[str]) -> None:
    async with cohort.as_completed([probe(h) for h in hosts], limit=50) as replies:
        async for reply in replies:
            print(reply)


async def dask_executor(
    score: Callable[[list[float]], float], rows: list[list[float]],
    search: Callable[[range], int], space: range,
) -> None:
    async with cohort.bridge.DaskExecutor("tcp://scheduler:8786") as dask:
        total = sum(await dask.map(score, rows))
        best = await dask.run(search, space)


async def set_default_executor(parse: cohort.bridge.CpuFunction[[bytes], Doc], raw: bytes) -> None:
    async with cohort.bridge.DaskExecutor() as dask:
        cohort.set_default_executor(dask)
        await parse(raw)          # an @cohort.cpu function, now on the cluster


async def to_process(blob: bytes) -> None:
    digest = await cohort.to_process(hashlib.sha256, blob)


async def cpu(raw: bytes) -> None:
    @cohort.cpu
    def parse(raw: bytes) -> dict[str, int]:
        return {"size": len(raw)}

    doc = await parse(raw)


async def process_pool(
    sha: Callable[[bytes], str], blob: bytes, len_of: Callable[[str], int], paths: list[str],
    parse: Callable[[str], Doc], lines: list[str],
) -> None:
    async with cohort.ProcessPool(workers=4) as pool:
        digest = await pool.run(sha, blob)        # cancelling kills the worker
        sizes = await pool.map(len_of, paths)     # auto-chunked
        async for doc in pool.imap(parse, lines, ordered=False):
            ...


async def process_pool_share(
    pool: cohort.ProcessPool, big_array: bytes, total: Callable[[cohort.Shared[bytes], range], int],
    ranges: list[range],
) -> None:
    with await pool.share(big_array) as data:
        parts = await pool.map(functools.partial(total, data), ranges)


async def pipeline_module(http_get: Fetch, urls: list[str]) -> None:
    @cohort.stage(workers=32, timeout=2.0, retry=cohort.Retry(attempts=3, backoff=0.05))
    async def fetch(url: str) -> bytes:
        return await http_get(url)

    @cohort.stage(cpu=True, workers=2)
    def parse(raw: bytes) -> dict[str, int]:
        return {"size": len(raw)}

    report = await (fetch | parse).run(urls)


async def fork(
    primary: Callable[[str], Awaitable[bytes]], replica_a: Callable[[str], Awaitable[bytes]],
    replica_b: Callable[[str], Awaitable[bytes]], parse: cohort.Pipeline[bytes, str],
    store: cohort.Pipeline[dict[str, bytes], None], keys: list[bytes],
) -> None:
    lookup = cohort.fork(primary, replica_a, replica_b, join=cohort.Quorum(2), timeout=0.5)
    report = await (parse | lookup | store).run(keys)


async def pipeline(
    fetch: cohort.Pipeline[str, bytes], parse: cohort.Pipeline[bytes, Doc],
    store: cohort.Pipeline[Doc, None], urls: list[str],
) -> None:
    report = await (fetch | parse | store).run(urls, progress=True)
    async with (fetch | parse).stream(urls) as docs:
        async for doc in docs:
            ...


async def pipeline_stream(
    pipe: cohort.Pipeline[str, Doc], urls: list[str], index: Callable[[Doc], None]
) -> None:
    async with pipe.stream(urls) as docs:
        async for doc in docs:
            index(doc)


async def many() -> None:
    @cohort.stage
    async def split(line: str) -> cohort.Many[str]:
        return cohort.Many(line.split())


async def stage(
    http_get: Fetch, parse: cohort.Pipeline[bytes, Doc], store: cohort.Pipeline[Doc, None],
    urls: list[str],
) -> None:
    @cohort.stage(workers=32, timeout=2.0, retry=cohort.Retry(attempts=3, backoff=0.05))
    async def fetch(url: str) -> bytes:
        return await http_get(url)

    report = await (fetch | parse | store).run(urls)


async def virtual_clock_loop() -> None:
    loop = VirtualClockLoop()
    loop.run_until_complete(asyncio.sleep(3600))   # returns at once
    assert loop.time() == 3600


def instrument() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    cohort.instrument(tracer_provider=TracerProvider())
