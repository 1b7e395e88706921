"""The fan-out API: one request in, a structured fan-out to the backends, one answer out.

``GET /product/{key}`` runs four dependencies in one ``cohort.TaskGroup``
with a per-request deadline. The default ``Gather`` policy fails fast: if a
critical dependency fails, the others are cancelled at once and the client
gets a ``502``; if the deadline passes first, everything is cancelled and the
client gets a ``504``. Either way, nothing keeps running after the response.

Query flags switch each tactic off, to compare with the plain approach of
asking one replica of everything: ``?quorum=0``, ``?hedge=0``, ``?mirrors=0``.

``?guard=1`` adds the resilience guards, shared by all requests: a circuit
breaker per backend (five failures in its last twenty calls open it; an
open breaker fails fast, so the quorum and the hedge route around that
replica without waiting for it; after ``BREAKER_RECOVERY`` seconds a probe
call decides whether it closes), a hedging budget (at most 20 % extra
pricing calls, so hedging cannot amplify an overload) and a retry of the
optional reviews call on ``503``, which the request's deadline cuts short.
The guards depend on the order requests arrive in, so they are off by
default: without them every answer is a function of the key alone.

Under load, the cancelled losers are what costs most: a quorum's third
call, a hedge's slower attempt, a call past its timeout. An HTTP/1.1 request
cancelled half-way leaves its connection unusable, so the client closes it
and the next call opens a new one (a TCP handshake, a new socket, a pool
scan). Here each backend call goes through a ``cohort.Linger``: a cancelled
call's request finishes in the background for a bounded time and its
connection goes back to the pool (``?linger=0`` turns that off). The
backends honour the ``x-timeout`` header, so a lingering call ends soon
after the request's deadline at the latest. The client is aiohttp, one
session per backend: a third of httpx's CPU per call, measured under load.
"""

from __future__ import annotations

import contextlib
import functools
import math
import ssl
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import cohort
from cohort.examples.fanout.backends import CATALOG, MIRRORS, PRICING, REVIEWS
from cohort.examples.fanout.page import PAGE, render

__all__ = [
    "BREAKER_RECOVERY",
    "CALL_TIMEOUT",
    "DEADLINE",
    "HEDGE_DELAY",
    "BackendError",
    "FanoutService",
    "Reply",
    "Strategy",
    "product_document",
]

DEADLINE = 0.5
"""Per-request deadline, seconds."""
CALL_TIMEOUT = 0.2
"""Per-call timeout for catalog replicas, mirrors and reviews, seconds."""
HEDGE_DELAY = 0.05
"""Ask the next pricing replica when the previous one has not answered after this."""
LINGER = 0.1
"""Seconds past the request's deadline a cancelled call may run to keep its connection."""
BREAKER_RECOVERY = 0.5
"""Seconds an open breaker fails fast before it lets a probe call through."""
HEDGE_BUDGET = 0.2
"""Extra pricing calls (hedges) as a fraction of requests, with ``?guard=1``."""
_linger: ContextVar[bool] = ContextVar("fanout_linger", default=True)
_guard: ContextVar[bool] = ContextVar("fanout_guard", default=False)


@dataclass(frozen=True, slots=True)
class Strategy:
    """Which tactics a request uses (all of them by default)."""

    quorum: bool = True
    """Read the catalog from 2 of 3 replicas (else from replica 1 only)."""
    hedge: bool = True
    """Hedge pricing reads across replicas (else ask replica 1 only)."""
    mirrors: bool = True
    """Take the image from the first of 3 mirrors to answer (else from mirror 1)."""
    linger: bool = True
    """Let cancelled calls finish in the background (else they close their connection)."""
    guard: bool = False
    """Circuit breakers per backend, a hedging budget, retried reviews (see the module)."""

    @classmethod
    def from_query(cls, query: QueryParams) -> Strategy:
        def flag(name: str, default: str = "1") -> bool:
            return query.get(name, default) not in ("0", "false", "no")

        return cls(
            quorum=flag("quorum"),
            hedge=flag("hedge"),
            mirrors=flag("mirrors"),
            linger=flag("linger"),
            guard=flag("guard", "0"),
        )

    def params(self) -> dict[str, str]:
        """The query parameters that select this strategy."""
        return {
            "quorum": str(int(self.quorum)),
            "hedge": str(int(self.hedge)),
            "mirrors": str(int(self.mirrors)),
            "linger": str(int(self.linger)),
            "guard": str(int(self.guard)),
        }


class BackendError(Exception):
    """A backend answered with an error status."""

    def __init__(self, backend: str, status: int) -> None:
        super().__init__(f"{backend} answered {status}")
        self.backend = backend
        self.status = status


def backend_failure(exc: BaseException) -> bool:
    """What counts against a backend's breaker: a 5xx, a broken connection, a timeout."""
    if isinstance(exc, BackendError):
        return exc.status >= 500
    return isinstance(exc, aiohttp.ClientError | OSError | TimeoutError)


REVIEW_RETRY = cohort.Retry(
    attempts=2,
    backoff=0.01,
    on=lambda exc: isinstance(exc, BackendError) and exc.status == 503,  # not 404 or 504
)
"""How the optional reviews call is retried with ``?guard=1`` (within the deadline)."""


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
        tls: the context that verifies HTTPS backends (``None``: the default one).
        metrics: serve ``/metrics`` in Prometheus' text format: cohort's metrics
            (``cohort.instrument()`` into an OpenTelemetry SDK meter provider with an
            in-memory reader, while the service runs). Needs ``opentelemetry-sdk``.
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        deadline: float = DEADLINE,
        hedge_delay: float = HEDGE_DELAY,
        tls: ssl.SSLContext | None = None,
        metrics: bool = False,
    ) -> None:
        self.urls = dict(urls)
        self.tls = tls
        self.deadline = deadline
        self.hedge_delay = hedge_delay
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._linger: cohort.Linger | None = None
        self.breakers = {
            name: cohort.CircuitBreaker(
                failures=5,
                window=20,
                recovery_timeout=BREAKER_RECOVERY,
                on=backend_failure,
                name=name,
            )
            for name in self.urls
        }
        """One circuit breaker per backend, shared by every ``?guard=1`` request."""
        self.hedge_budget = cohort.HedgeBudget(HEDGE_BUDGET)
        """Pays for the pricing hedges of ``?guard=1`` requests."""
        routes = [
            Route("/product/{key}", self.product_endpoint),
            Route("/page/{key}", self.page_endpoint),
        ]
        self.metrics: Any = None  # the SDK's metric reader, with metrics=True
        if metrics:
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            self.metrics = InMemoryMetricReader()
            routes.append(Route("/metrics", self.metrics_endpoint))
        self.app = Starlette(routes=routes, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as sessions:
            for name, url in self.urls.items():
                # No connection limit: the load's concurrency bounds the fan-out.
                connector = aiohttp.TCPConnector(limit=0, ssl=self.tls or True)
                session = aiohttp.ClientSession(url, connector=connector)
                self._sessions[name] = await sessions.enter_async_context(session)
            # Inside the sessions: shutting down waits for the lingering calls first.
            # They end by the deadline the backends were given, plus LINGER.
            if self.metrics is not None:
                from opentelemetry.sdk.metrics import MeterProvider

                cohort.instrument(meter_provider=MeterProvider([self.metrics]))
                sessions.callback(cohort.uninstrument)
            async with cohort.Linger(grace=self.deadline + LINGER) as self._linger:
                yield

    # -- the endpoint --------------------------------------------------------------

    async def product_endpoint(self, request: Request) -> JSONResponse:
        key = request.path_params["key"]
        strategy = Strategy.from_query(request.query_params)
        _linger.set(strategy.linger)  # seen by every call of this request (child tasks too)
        _guard.set(strategy.guard)
        try:
            body = await self.product(key, strategy)
        except TimeoutError:
            return JSONResponse({"key": key, "error": "deadline exceeded"}, status_code=504)
        except Exception as exc:  # an ExceptionGroup of the dependencies that failed
            return JSONResponse({"key": key, "error": _describe(exc)}, status_code=502)
        return JSONResponse(body)

    async def metrics_endpoint(self, request: Request) -> PlainTextResponse:
        """cohort's metrics in Prometheus' text exposition format (0.0.4)."""
        return PlainTextResponse(
            prometheus_text(self.metrics.get_metrics_data()),
            media_type="text/plain; version=0.0.4; charset=utf-8",
        )

    async def page_endpoint(self, request: Request) -> JSONResponse:
        """The product page as a ``cohort.Flow`` (``fanout.page``), under the same deadline."""
        key = request.path_params["key"]
        try:
            result = await PAGE.run(service=self, key=key, timeout=self.deadline)
        except TimeoutError:
            return JSONResponse({"key": key, "error": "deadline exceeded"}, status_code=504)
        except cohort.FlowError as exc:
            return JSONResponse({"key": key, "error": str(exc)}, status_code=502)
        return JSONResponse(result[render])

    async def product(self, key: str, strategy: Strategy) -> dict[str, Any]:
        """Fan out to every dependency under one deadline; build the product document."""
        async with cohort.TaskGroup(timeout=self.deadline, name=f"product {key}") as g:
            catalog = g.spawn(self.read_catalog, key, strategy.quorum, name="catalog")
            price = g.spawn(self.read_price, key, strategy.hedge, name="price")
            image = g.spawn(self.find_image, key, strategy.mirrors, name="image")
            # Optional: cancelled if still running when the rest is done; a failure is ignored.
            reviews = g.spawn(
                self.call,
                REVIEWS,
                key,
                name="reviews",
                timeout=CALL_TIMEOUT,
                critical=False,
                retry=REVIEW_RETRY if strategy.guard else None,
            )
        review = reviews.result() if reviews.status is cohort.ChildStatus.SUCCEEDED else None
        return product_document(key, catalog.result(), price.result(), image.result(), review)

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
        # one attempt per replica, in order
        attempts = [functools.partial(self.call, replica, key) for replica in PRICING]
        budget = self.hedge_budget if _guard.get() else None
        return await cohort.hedge(attempts, delay=self.hedge_delay, budget=budget)

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
        assert self._linger is not None, "the app's lifespan has not started"
        headers = {}
        deadline = cohort.current_deadline()  # the nearest of every scope and group around us
        if deadline < math.inf:
            headers["x-timeout"] = f"{max(0.0, deadline - cohort.current_time()):.3f}"
        if _guard.get():  # an open breaker raises CircuitOpenError here, at once
            return await self.breakers[backend].call(self._linger_or_not, backend, key, headers)
        return await self._linger_or_not(backend, key, headers)

    async def _linger_or_not(self, backend: str, key: str, headers: dict[str, str]) -> Reply:
        assert self._linger is not None
        if _linger.get():
            return await self._linger.call(self._get, backend, key, headers)
        return await self._get(backend, key, headers)

    async def _get(self, backend: str, key: str, headers: dict[str, str]) -> Reply:
        async with self._sessions[backend].get(f"/items/{key}", headers=headers) as response:
            if response.status >= 400:
                raise BackendError(backend, response.status)
            return Reply(backend, await response.json())


def product_document(
    key: str, catalog: list[Reply], price: Reply, image: Reply, review: Reply | None
) -> dict[str, Any]:
    """The answer to ``GET /product/{key}``, from the replies of its dependencies."""
    return {
        "key": key,
        "title": catalog[0].data["title"],
        "price": price.data["price"],
        "image": image.data["image"],
        "stars": review.data["stars"] if review else None,
        "sources": {
            "catalog": [reply.backend for reply in catalog],
            "price": price.backend,
            "image": image.backend,
            "reviews": review.backend if review else None,
        },
    }


def _describe(exc: BaseException) -> str:
    """One line per underlying failure of a (nested) exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    if isinstance(exc, BackendError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def prometheus_text(data: Any) -> str:
    """OpenTelemetry SDK ``MetricsData`` as Prometheus text: dots become underscores,
    a monotonic sum is a ``counter`` (``_total``), any other sum a ``gauge``, a
    histogram ``_bucket``/``_sum``/``_count`` series with cumulative buckets."""
    lines: list[str] = []
    metrics = [] if data is None else [
        m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    ]  # fmt: skip
    for metric in metrics:
        name = metric.name.replace(".", "_").replace("-", "_")
        points = metric.data.data_points
        histogram = hasattr(points[0], "bucket_counts") if points else False
        if histogram:
            kind = "histogram"
        elif getattr(metric.data, "is_monotonic", False):
            kind, name = "counter", f"{name}_total"
        else:
            kind = "gauge"
        lines.append(f"# HELP {name} {metric.description}")
        lines.append(f"# TYPE {name} {kind}")
        for p in points:
            labels = {k.replace(".", "_"): str(v) for k, v in (p.attributes or {}).items()}
            if not histogram:
                lines.append(f"{name}{_labels(labels)} {p.value}")
                continue
            total = 0
            bounds = [*p.explicit_bounds, math.inf]
            for bound, count in zip(bounds, p.bucket_counts, strict=True):
                total += count
                le = "+Inf" if bound == math.inf else repr(float(bound))
                lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {total}")
            lines.append(f"{name}_sum{_labels(labels)} {p.sum}")
            lines.append(f"{name}_count{_labels(labels)} {p.count}")
    return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    escaped = (
        v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for v in labels.values()
    )
    return "{" + ",".join(f'{k}="{v}"' for k, v in zip(labels, escaped, strict=True)) + "}"
