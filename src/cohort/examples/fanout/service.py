"""The fan-out API: one request in, a structured fan-out to the backends, one answer out.

``GET /product/{key}`` runs four dependencies in one ``cohort.TaskGroup``
with a per-request deadline. The default ``Gather`` policy fails fast: if a
critical dependency fails, the others are cancelled at once and the client
gets a ``502``; if the deadline passes first, everything is cancelled and the
client gets a ``504``. Either way, nothing keeps running after the response.

Query flags switch each tactic off, to compare with the plain approach of
asking one replica of everything: ``?quorum=0``, ``?hedge=0``, ``?mirrors=0``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import cohort
from cohort.examples.fanout.backends import CATALOG, MIRRORS, PRICING, REVIEWS

__all__ = [
    "CALL_TIMEOUT",
    "DEADLINE",
    "HEDGE_DELAY",
    "BackendError",
    "FanoutService",
    "Reply",
    "Strategy",
]

DEADLINE = 0.5
"""Per-request deadline, seconds."""
CALL_TIMEOUT = 0.2
"""Per-call timeout for catalog replicas, mirrors and reviews, seconds."""
HEDGE_DELAY = 0.05
"""Ask the next pricing replica when the previous one has not answered after this."""


@dataclass(frozen=True, slots=True)
class Strategy:
    """Which tactics a request uses (all of them by default)."""

    quorum: bool = True
    """Read the catalog from 2 of 3 replicas (else from replica 1 only)."""
    hedge: bool = True
    """Hedge pricing reads across replicas (else ask replica 1 only)."""
    mirrors: bool = True
    """Take the image from the first of 3 mirrors to answer (else from mirror 1)."""

    @classmethod
    def from_query(cls, query: QueryParams) -> Strategy:
        def flag(name: str) -> bool:
            return query.get(name, "1") not in ("0", "false", "no")

        return cls(quorum=flag("quorum"), hedge=flag("hedge"), mirrors=flag("mirrors"))

    def params(self) -> dict[str, str]:
        """The query parameters that select this strategy."""
        return {
            "quorum": str(int(self.quorum)),
            "hedge": str(int(self.hedge)),
            "mirrors": str(int(self.mirrors)),
        }


class BackendError(Exception):
    """A backend answered with an error status."""

    def __init__(self, backend: str, status: int) -> None:
        super().__init__(f"{backend} answered {status}")
        self.backend = backend
        self.status = status


@dataclass(frozen=True, slots=True)
class Reply:
    """A backend's successful answer."""

    backend: str
    data: dict[str, Any]


class FanoutService:
    """The fan-out API as a Starlette app (``.app``), over backends at ``urls``.

    Args:
        urls: base URL of every backend, by name (see ``fanout.backends``).
        deadline: per-request deadline, seconds.
        hedge_delay: seconds before a pricing read is hedged to the next replica.
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        deadline: float = DEADLINE,
        hedge_delay: float = HEDGE_DELAY,
    ) -> None:
        self.urls = dict(urls)
        self.deadline = deadline
        self.hedge_delay = hedge_delay
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[Route("/product/{key}", self.product_endpoint)], lifespan=self._lifespan
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # No connection limit: the fan-out itself is bounded by the load's concurrency.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=10) as self._client:
            yield

    # -- the endpoint --------------------------------------------------------------

    async def product_endpoint(self, request: Request) -> JSONResponse:
        key = request.path_params["key"]
        try:
            body = await self.product(key, Strategy.from_query(request.query_params))
        except TimeoutError:
            return JSONResponse({"key": key, "error": "deadline exceeded"}, status_code=504)
        except Exception as exc:  # an ExceptionGroup of the dependencies that failed
            return JSONResponse({"key": key, "error": _describe(exc)}, status_code=502)
        return JSONResponse(body)

    async def product(self, key: str, strategy: Strategy) -> dict[str, Any]:
        """Fan out to every dependency under one deadline; build the product document."""
        async with cohort.TaskGroup(timeout=self.deadline, name=f"product {key}") as g:
            catalog = g.spawn(self.read_catalog, key, strategy.quorum, name="catalog")
            price = g.spawn(self.read_price, key, strategy.hedge, name="price")
            image = g.spawn(self.find_image, key, strategy.mirrors, name="image")
            # Optional: cancelled if still running when the rest is done; a failure is ignored.
            reviews = g.spawn(
                self.call, REVIEWS, key, name="reviews", timeout=CALL_TIMEOUT, critical=False
            )
        review = reviews.result() if reviews.status is cohort.ChildStatus.SUCCEEDED else None
        return {
            "key": key,
            "title": catalog.result()[0].data["title"],
            "price": price.result().data["price"],
            "image": image.result().data["image"],
            "stars": review.data["stars"] if review else None,
            "sources": {
                "catalog": [reply.backend for reply in catalog.result()],
                "price": price.result().backend,
                "image": image.result().backend,
                "reviews": review.backend if review else None,
            },
        }

    # -- one function per tactic ------------------------------------------------

    async def read_catalog(self, key: str, quorum: bool) -> list[Reply]:
        """Read from 2 of the 3 replicas, each call limited to ``CALL_TIMEOUT``.

        The first two answers win; the third call is cancelled. A replica that
        fails or times out is simply outvoted.
        """
        if not quorum:
            with cohort.fail_after(CALL_TIMEOUT):
                return [await self.call(CATALOG[0], key)]
        async with cohort.TaskGroup(join=cohort.Quorum(2), name=f"catalog {key}") as g:
            for replica in CATALOG:
                g.spawn(self.call, replica, key, name=replica, timeout=CALL_TIMEOUT)
        return g.results

    async def read_price(self, key: str, hedge: bool) -> Reply:
        """Ask pricing replica 1; after ``hedge_delay`` without an answer, ask the next one too.

        The first answer wins and the slower call is cancelled. There is no
        per-call timeout: a slow price still beats no price, and the
        request's deadline bounds the wait.
        """
        if not hedge:
            return await self.call(PRICING[0], key)
        replicas = iter(PRICING)  # each attempt asks the next replica

        async def ask_next_replica() -> Reply:
            return await self.call(next(replicas), key)

        return await cohort.hedge(ask_next_replica, delay=self.hedge_delay, attempts=len(PRICING))

    async def find_image(self, key: str, mirrors: bool) -> Reply:
        """The first mirror to answer wins; the others are cancelled."""
        if not mirrors:
            with cohort.fail_after(CALL_TIMEOUT):
                return await self.call(MIRRORS[0], key)
        async with cohort.TaskGroup(join=cohort.FirstWins(), name=f"image {key}") as g:
            for mirror in MIRRORS:
                g.spawn(self.call, mirror, key, name=mirror, timeout=CALL_TIMEOUT)
        return g.result  # type: ignore[no-any-return]

    async def call(self, backend: str, key: str) -> Reply:
        """GET one backend. The time left before our deadline goes along as ``x-timeout``."""
        assert self._client is not None, "the app's lifespan has not started"
        headers = {}
        deadline = cohort.current_deadline()  # the nearest of every scope and group around us
        if deadline < math.inf:
            headers["x-timeout"] = f"{max(0.0, deadline - cohort.current_time()):.3f}"
        response = await self._client.get(f"{self.urls[backend]}/items/{key}", headers=headers)
        if response.is_error:
            raise BackendError(backend, response.status_code)
        return Reply(backend, response.json())


def _describe(exc: BaseException) -> str:
    """One line per underlying failure of a (nested) exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    if isinstance(exc, BackendError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
