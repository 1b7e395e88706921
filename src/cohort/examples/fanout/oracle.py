"""What the fan-out service must answer for a key, predicted from the backends' plan.

The backends' latency and failures are a function of ``(seed, backend,
key)``, so each request's status, latency and answering replicas follow from
the tactics' rules alone (quorum, hedge, first wins, deadlines). The tests
check every answer against it on the virtual clock; the load test uses it to
tell the errors the backends were told to make from the errors load caused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cohort.examples.fanout.backends import CATALOG, MIRRORS, PRICING, REVIEWS, Backend, plan
from cohort.examples.fanout.service import CALL_TIMEOUT, DEADLINE, HEDGE_DELAY, Strategy

__all__ = ["Oracle", "Outcome", "Prediction"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """When a dependency (or a request) is decided, whether it succeeded, who answered."""

    at: float
    ok: bool
    sources: tuple[str, ...] = ()


class Oracle:
    """Predicts the service's answers from the backends' seeded behaviour (``plan``)."""

    def __init__(self, backends: Sequence[Backend], seed: int) -> None:
        self.backends = {b.name: b for b in backends}
        self.seed = seed

    def call(self, name: str, key: str, timeout: float = math.inf) -> Outcome:
        behaviour = plan(self.backends[name], key, self.seed)
        if behaviour.delay > timeout:
            return Outcome(timeout, False)
        return Outcome(behaviour.delay, not behaviour.fails, (name,))

    def quorum(self, k: int, calls: list[Outcome]) -> Outcome:
        """Decided at the k-th success, or when k successes are out of reach."""
        ok: list[Outcome] = []
        failed = 0
        for call in sorted(calls, key=lambda c: c.at):
            if call.ok:
                ok.append(call)
                if len(ok) == k:
                    return Outcome(call.at, True, sum((c.sources for c in ok), ()))
            else:
                failed += 1
                if len(calls) - failed < k:
                    return Outcome(call.at, False)
        raise AssertionError("unreachable")

    def hedge(self, key: str) -> Outcome:
        """Attempt n+1 starts HEDGE_DELAY after attempt n, or at once when one fails."""
        plans = [plan(self.backends[name], key, self.seed) for name in PRICING]
        starts = [0.0]
        used_failures = 0
        while len(starts) < len(plans):
            failures = sorted(s + p.delay for s, p in zip(starts, plans, strict=False) if p.fails)
            start = starts[-1] + HEDGE_DELAY
            if failures[used_failures:] and failures[used_failures] < start:
                start = max(starts[-1], failures[used_failures])
                used_failures += 1
            starts.append(start)
        calls = [
            Outcome(s + p.delay, not p.fails, (name,))
            for s, p, name in zip(starts, plans, PRICING, strict=True)
        ]
        return self.quorum(1, calls)

    def product(self, key: str, strategy: Strategy) -> Prediction:
        """What ``GET /product/{key}`` answers, and when."""
        if strategy.quorum:
            catalog = self.quorum(2, [self.call(r, key, CALL_TIMEOUT) for r in CATALOG])
        else:
            catalog = self.call(CATALOG[0], key, CALL_TIMEOUT)
        price = self.hedge(key) if strategy.hedge else self.call(PRICING[0], key)
        if strategy.mirrors:
            image = self.quorum(1, [self.call(m, key, CALL_TIMEOUT) for m in MIRRORS])
        else:
            image = self.call(MIRRORS[0], key, CALL_TIMEOUT)
        deps = (catalog, price, image)
        first_failure = min((d.at for d in deps if not d.ok), default=math.inf)
        if first_failure < DEADLINE:
            return Prediction(502, first_failure)  # Gather fails fast
        done = max(d.at for d in deps)
        if done >= DEADLINE:
            return Prediction(504, DEADLINE)
        reviews = self.call(REVIEWS, key, CALL_TIMEOUT)  # optional: only if done in time
        return Prediction(
            200,
            done,
            {
                "catalog": list(catalog.sources),
                "price": price.sources[0],
                "image": image.sources[0],
                "reviews": REVIEWS if reviews.ok and reviews.at < done else None,
            },
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    """A request's predicted status, latency and (for a 200) answering backends."""

    status: int
    latency: float
    sources: dict[str, object] | None = None
