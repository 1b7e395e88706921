"""The ETL example's document server: N generated documents, some slow, some failing.

Everything follows from a seed (``plan``): which documents are fine, slow,
transiently unavailable (503 on the first request, 200 afterwards), missing
(always 404) or malformed (200 with a body the parser rejects), and the text
of each. The app is a Starlette app; ``cohort.examples.servers.serve`` runs
it on uvicorn on 127.0.0.1 on a port the kernel picks.

A document is a small structured text: ``key: value`` header lines, a blank
line, then the body:

```text
id: 17
title: Amber harbor notes
author: ada

the quiet river carries ...
```
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["DocSpec", "Kind", "document_app", "plan"]

Kind = Literal["ok", "slow", "transient", "missing", "malformed"]

# The share of each kind among the documents (the rest are "ok"); each kind
# present at least once when there are enough documents.
SHARES: dict[Kind, float] = {"slow": 0.08, "transient": 0.10, "missing": 0.04, "malformed": 0.05}
SLOW_DELAY = (0.05, 0.25)  # seconds a slow document takes, well under the fetch timeout

WORDS = (
    *("amber", "river", "quiet", "harbor", "stone", "lantern", "orchard", "meadow"),
    *("signal", "copper", "winter", "garden", "thread", "window", "morning", "silver"),
    *("forest", "valley", "ember", "falcon", "cedar", "tide"),
)
AUTHORS = ("ada", "grace", "edsger", "barbara", "ken", "donald")


@dataclass(frozen=True, slots=True)
class DocSpec:
    """One document: its id, how the server treats it, and its text."""

    id: int
    kind: Kind
    delay: float  # seconds the server waits before answering (slow documents)
    text: str

    @property
    def path(self) -> str:
        return f"/docs/{self.id}"


def plan(docs: int, seed: int) -> list[DocSpec]:
    """The documents the server holds, deterministic from ``seed``."""
    rng = random.Random(seed)
    kinds: list[Kind] = []
    for kind, share in SHARES.items():
        count = round(share * docs)
        if docs >= 2 * len(SHARES):
            count = max(1, count)
        kinds += [kind] * count
    kinds += ["ok"] * (docs - len(kinds))
    kinds = kinds[:docs]
    rng.shuffle(kinds)
    specs = []
    malformed = 0  # the n-th malformed document gets flaw n % 3
    for i, kind in enumerate(kinds):
        delay = rng.uniform(*SLOW_DELAY) if kind == "slow" else 0.0
        flaw = malformed % 3 if kind == "malformed" else None
        malformed += kind == "malformed"
        specs.append(DocSpec(i, kind, round(delay, 3), _text(i, flaw, rng)))
    return specs


def _text(doc_id: int, flaw: int | None, rng: random.Random) -> str:
    title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))).capitalize()
    body_lines = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
        for _ in range(rng.randint(1, 5))
    ]
    header = [f"id: {doc_id}", f"title: {title}", f"author: {rng.choice(AUTHORS)}"]
    if flaw is not None:  # three ways to be broken, all rejected by the parser
        if flaw == 0:
            header = [line for line in header if not line.startswith("title:")]
        elif flaw == 1:
            header[0] = f"id: {doc_id}x"
        else:
            return "\n".join(header + body_lines) + "\n"  # no blank line after the header
    return "\n".join([*header, "", *body_lines]) + "\n"


def document_app(specs: list[DocSpec]) -> Starlette:
    """A Starlette app serving ``GET /docs/{id}``; ``app.state.hits`` counts requests per id."""
    by_id = {spec.id: spec for spec in specs}
    hits: Counter[int] = Counter()

    async def get_doc(request: Request) -> Response:
        doc_id = int(request.path_params["doc_id"])
        spec = by_id.get(doc_id)
        hits[doc_id] += 1
        if spec is None or spec.kind == "missing":
            return PlainTextResponse("no such document\n", status_code=404)
        if spec.kind == "transient" and hits[doc_id] == 1:
            return PlainTextResponse("busy, try again\n", status_code=503)
        if spec.delay:
            await asyncio.sleep(spec.delay)
        return PlainTextResponse(spec.text)

    app = Starlette(routes=[Route("/docs/{doc_id:int}", get_doc)])
    app.state.hits = hits
    return app
