"""The product page as a ``cohort.Flow``: the same backends, wired as a graph.

``GET /page/{key}`` of the fan-out service runs this flow: recommendations
from the three catalog replicas (each at most ``RECS_TIMEOUT``; the page
needs two of them, and the third is cancelled once two have answered), the
price (hedged across the pricing replicas) and the reviews (optional: the
page renders without them) start together as soon as ``user`` is known, and
``render`` starts the moment its inputs are ready. The run has the service's
per-request deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cohort
from cohort.examples.fanout.backends import CATALOG, REVIEWS

if TYPE_CHECKING:
    from cohort.examples.fanout.service import FanoutService, Reply

__all__ = ["PAGE", "RECS_TIMEOUT", "render"]

RECS_TIMEOUT = 0.4
"""Seconds each recommendation source may take."""

PAGE = cohort.Flow("product page", inputs=["service", "key"])


@PAGE.node
async def user(key: str) -> str:
    """Who the page is for (here the key itself; a real service reads the session)."""
    return key


def _recs_from(replica: str) -> Any:
    async def source(service: FanoutService, user: str) -> Reply:
        return await service.call(replica, user)

    return source


for _i, _replica in enumerate(CATALOG, start=1):
    PAGE.node(name=f"recs_{_i}", timeout=RECS_TIMEOUT)(_recs_from(_replica))


@PAGE.node(join=cohort.Quorum(2))
async def recs(recs_1: Reply | None, recs_2: Reply | None, recs_3: Reply | None) -> list[Reply]:
    """The first two sources to answer (the third is cancelled)."""
    return [r for r in (recs_1, recs_2, recs_3) if r is not None]


@PAGE.node
async def price(service: FanoutService, user: str) -> Reply:
    """Hedged across the pricing replicas."""
    return await service.read_price(user, True)


@PAGE.node(critical=False, timeout=0.2)
async def reviews(service: FanoutService, user: str) -> Reply:
    """Optional: a failure or a timeout leaves the page without stars."""
    return await service.call(REVIEWS, user)


@PAGE.node
async def render(
    user: str, recs: list[Reply], price: Reply, reviews: Reply | None
) -> dict[str, Any]:
    """The page document."""
    return {
        "key": user,
        "title": recs[0].data["title"],
        "price": price.data["price"],
        "stars": reviews.data["stars"] if reviews else None,
        "sources": {
            "recs": sorted(r.backend for r in recs),
            "price": price.backend,
            "reviews": reviews.backend if reviews else None,
        },
    }
