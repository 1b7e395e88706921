"""The same fan-out endpoint written with plain asyncio, for comparison.

What a careful asyncio programmer writes without cohort: the same tactics
(a quorum of 2 catalog replicas with per-call timeouts, hedged pricing, a
first-wins mirror race, optional reviews) and the same per-request deadline
with ``asyncio.timeout``, ``asyncio.wait`` and one shared HTTP client:
``httpx.AsyncClient`` (the common choice) or an ``aiohttp.ClientSession``
(the client ``FanoutService`` uses), to tell what the client buys from what
cohort does. Under load it is the baseline of ``cohort.examples.fanout.loadtest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Coroutine, Mapping
from typing import Any, Literal

import aiohttp
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from cohort.examples.fanout.backends import CATALOG, MIRRORS, PRICING, REVIEWS
from cohort.examples.fanout.service import (
    CALL_TIMEOUT,
    DEADLINE,
    HEDGE_DELAY,
    BackendError,
    Reply,
    product_document,
)

__all__ = ["PlainService"]


class PlainService:
    """``GET /product/{key}`` with asyncio only, as a Starlette app (``.app``).

    Args:
        urls: base URL of every backend, by name.
        client: ``"httpx"`` or ``"aiohttp"``.
        tls: the context that verifies HTTPS backends (``None``: the default one).
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        client: Literal["httpx", "aiohttp"],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.urls = dict(urls)
        self.client = client
        self.tls = tls
        self._httpx: httpx.AsyncClient | None = None
        self._aiohttp: aiohttp.ClientSession | None = None
        self.app = Starlette(
            routes=[Route("/product/{key}", self.product_endpoint)], lifespan=self._lifespan
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.client == "httpx":
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
            verify = self.tls or True
            async with httpx.AsyncClient(limits=limits, timeout=10, verify=verify) as self._httpx:
                yield
        else:
            connector = aiohttp.TCPConnector(limit=0, ssl=self.tls or True)
            async with aiohttp.ClientSession(connector=connector) as self._aiohttp:
                yield

    async def product_endpoint(self, request: Request) -> JSONResponse:
        key = request.path_params["key"]
        deadline = asyncio.get_running_loop().time() + DEADLINE
        try:
            async with asyncio.timeout_at(deadline):
                body = await self.product(key, deadline)
        except TimeoutError:
            return JSONResponse({"key": key, "error": "deadline exceeded"}, status_code=504)
        except Exception as exc:
            return JSONResponse({"key": key, "error": repr(exc)}, status_code=502)
        return JSONResponse(body)

    async def product(self, key: str, deadline: float) -> dict[str, Any]:
        reviews = asyncio.create_task(  # optional: outside the group
            asyncio.wait_for(self.call(REVIEWS, key, deadline), CALL_TIMEOUT)
        )
        try:
            async with asyncio.TaskGroup() as tg:
                catalog = tg.create_task(self.read_catalog(key, deadline))
                price = tg.create_task(self.read_price(key, deadline))
                image = tg.create_task(self.find_image(key, deadline))
        finally:
            _cancel_all([reviews])
        review = None
        if reviews.done() and not reviews.cancelled() and reviews.exception() is None:
            review = reviews.result()
        return product_document(key, catalog.result(), price.result(), image.result(), review)

    async def read_catalog(self, key: str, deadline: float) -> list[Reply]:
        calls = [self._timed(self.call(r, key, deadline)) for r in CATALOG]
        return await _first(calls, 2)

    async def read_price(self, key: str, deadline: float) -> Reply:
        replicas = iter(PRICING)
        tasks: list[asyncio.Task[Reply]] = []
        try:
            while True:
                replica = next(replicas, None)
                if replica is not None:
                    tasks.append(asyncio.create_task(self.call(replica, key, deadline)))
                pending = [t for t in tasks if not t.done()]
                if not pending:
                    raise next(t.exception() for t in tasks if t.exception())  # type: ignore[misc]
                timeout = HEDGE_DELAY if replica is not None else None
                done, _ = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task.exception() is None:
                        return task.result()
        finally:
            _cancel_all(tasks)

    async def find_image(self, key: str, deadline: float) -> Reply:
        calls = [self._timed(self.call(m, key, deadline)) for m in MIRRORS]
        return (await _first(calls, 1))[0]

    @staticmethod
    def _timed(call: Coroutine[Any, Any, Reply]) -> Awaitable[Reply]:
        return asyncio.wait_for(call, CALL_TIMEOUT)

    async def call(self, backend: str, key: str, deadline: float) -> Reply:
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        url = f"{self.urls[backend]}/items/{key}"
        headers = {"x-timeout": f"{left:.3f}"}
        if self._httpx is not None:
            response = await self._httpx.get(url, headers=headers)
            if response.is_error:
                raise BackendError(backend, response.status_code)
            return Reply(backend, response.json())
        assert self._aiohttp is not None, "the app's lifespan has not started"
        async with self._aiohttp.get(url, headers=headers) as reply:
            if reply.status >= 400:
                raise BackendError(backend, reply.status)
            return Reply(backend, await reply.json())


async def _first(calls: list[Awaitable[Reply]], k: int) -> list[Reply]:
    """The first ``k`` successes of ``calls``; the rest are cancelled."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    wins: list[Reply] = []
    errors: list[Exception] = []
    try:
        for next_done in asyncio.as_completed(tasks):
            try:
                wins.append(await next_done)
            except Exception as exc:
                errors.append(exc)
                if len(tasks) - len(errors) < k:
                    raise ExceptionGroup("not enough replicas answered", errors) from None
            if len(wins) == k:
                return wins
        raise AssertionError("unreachable")
    finally:
        _cancel_all(tasks)


def _cancel_all(tasks: list[asyncio.Task[Reply]]) -> None:
    for task in tasks:
        task.cancel()
        # A loser that failed before the cancel: its error is not wanted.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
