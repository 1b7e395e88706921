"""Example 1, the web fan-out service (cohort.examples.fanout), end to end on real local servers.

The async tests run on cohort's virtual clock: the backends' simulated
service times are the only thing that takes time, so every request's status,
latency and answer source follow from the backends' seeded behaviour
(``plan()``), and the tests predict and check them exactly. HTTP still goes
through real uvicorn servers on 127.0.0.1 and an httpx client; the
``autojump_threshold`` lets loopback I/O land before the clock jumps. No
wall-clock duration is asserted.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace

import httpx
import pytest

import cohort
import cohort.testing
from _util import EXAMPLES, popen_python, run_python
from cohort.examples.fanout.backends import (
    CATALOG,
    DEFAULT_BACKENDS,
    GRACE,
    MIRRORS,
    PRICING,
    REVIEWS,
    Backend,
    backend_app,
    plan,
)
from cohort.examples.fanout.load import Record, percentile, run_load, summarize
from cohort.examples.fanout.service import CALL_TIMEOUT, DEADLINE, HEDGE_DELAY, Strategy
from cohort.examples.fanout.stack import STRATEGIES, compare, local_stack
from cohort.examples.servers import serve

SEED = 1
KEYS = [f"sku-{i}" for i in range(30)]
PLAIN, QUORUM, ALL = STRATEGIES.values()

AUTOJUMP = 0.002  # real seconds the clock waits for loopback I/O before jumping
virtual_clock = pytest.mark.virtual_clock(autojump_threshold=AUTOJUMP)


# -- an oracle: what the service must answer, from the backends' behaviour -------------


@dataclass(frozen=True)
class Outcome:
    """When a dependency (or a request) is decided, whether it succeeded, who answered."""

    at: float
    ok: bool
    sources: tuple[str, ...] = ()


class Oracle:
    def __init__(self, backends: Sequence[Backend], seed: int = SEED) -> None:
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


@dataclass(frozen=True)
class Prediction:
    status: int
    latency: float
    sources: dict[str, object] | None = None


def check(records: list[Record], oracle: Oracle, strategy: Strategy) -> None:
    """Every record is exactly what the oracle predicts."""
    assert sorted(r.key for r in records) == sorted(KEYS)
    for record in records:
        expected = oracle.product(record.key, strategy)
        assert record.status == expected.status, record
        assert record.latency == pytest.approx(expected.latency, abs=1e-6), record
        if expected.sources is not None:
            assert record.body["sources"] == expected.sources, record
            assert (record.body["stars"] is None) == (expected.sources["reviews"] is None)


# -- the tests ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs() -> dict[str, list[Record]]:
    """The same 30 requests with each strategy of STRATEGIES, on a virtual-clock loop."""
    loop_errors: list[dict[str, object]] = []

    async def run() -> dict[str, list[Record]]:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: loop_errors.append(ctx))
        async with local_stack(SEED) as url:
            return await compare(url, KEYS, concurrency=6)

    records = cohort.testing.run(run, autojump_threshold=AUTOJUMP)
    assert loop_errors == []
    return records


def test_every_answer_status_source_and_latency_is_the_predicted_one(
    runs: dict[str, list[Record]],
) -> None:
    oracle = Oracle(DEFAULT_BACKENDS)
    for label, strategy in STRATEGIES.items():
        check(runs[label], oracle, strategy)


def test_quorum_and_hedging_cut_errors_and_the_latency_tail(
    runs: dict[str, list[Record]],
) -> None:
    plain, quorum, everything = (summarize(label, records) for label, records in runs.items())
    assert plain.requests == quorum.requests == everything.requests == len(KEYS)
    # Quorum reads mask failing catalog replicas; hedging and the mirror race
    # mask slow and failing pricing replicas and mirrors.
    assert everything.errors < quorum.errors < plain.errors
    # Without hedging, slow pricing replicas run into the request deadline.
    assert plain.p95 == pytest.approx(DEADLINE)
    assert everything.p95 < CALL_TIMEOUT
    # The summary is the percentiles of the recorded latencies.
    latencies = [r.latency for r in runs["+ hedging, mirror race"]]
    assert everything.p99 == percentile(latencies, 99) == max(latencies)


# A topology with one broken thing per dependency, every other backend healthy.
BROKEN = (
    Backend("catalog-1", 0.030),
    Backend("catalog-2", 0.010, failure_rate=1.0),  # always fails
    Backend("catalog-3", 0.020),
    Backend("pricing-1", 0.020, slow_rate=1.0, slow_latency=2.0),  # always too slow
    Backend("pricing-2", 0.020),
    Backend("pricing-3", 0.020),
    Backend("cdn-eu", 0.015, failure_rate=1.0),  # down
    Backend("cdn-us", 0.040),
    Backend("cdn-ap", 0.080),
    Backend("reviews", 0.001),
)


@virtual_clock
async def test_quorum_outvotes_a_failing_replica_and_hedging_routes_around_a_slow_one() -> None:
    keys = KEYS[:10]
    async with local_stack(SEED, BROKEN) as url, httpx.AsyncClient() as client:
        answers = await run_load(client, url, keys, ALL, concurrency=5)
        plain = await run_load(client, url, keys, PLAIN, concurrency=5)
    oracle = Oracle(BROKEN)
    for record in answers:
        assert record.status == 200
        sources = record.body["sources"]
        assert sorted(sources["catalog"]) == ["catalog-1", "catalog-3"]
        assert sources["price"] == "pricing-2"  # the hedge, HEDGE_DELAY after pricing-1
        assert sources["image"] == "cdn-us"
        assert sources["reviews"] == "reviews"  # fast enough to make it in
        assert record.latency == pytest.approx(oracle.product(record.key, ALL).latency)
    # Asking replica 1 of everything: the failing mirror answers first (502).
    assert [r.status for r in plain] == [502] * len(keys)
    assert all("cdn-eu answered 503" in r.body["error"] for r in plain)


@virtual_clock
async def test_the_request_deadline_answers_504() -> None:
    slow_pricing = tuple(
        replace(b, slow_rate=1.0, slow_latency=5.0) if b.name in PRICING else b for b in BROKEN
    )
    async with local_stack(SEED, slow_pricing) as url, httpx.AsyncClient() as client:
        records = await run_load(client, url, KEYS[:4], ALL, concurrency=4)
    assert [r.status for r in records] == [504] * 4
    assert [r.latency for r in records] == pytest.approx([DEADLINE] * 4)
    assert records[0].body == {"key": records[0].key, "error": "deadline exceeded"}


@virtual_clock
async def test_a_backend_stops_working_soon_after_its_callers_deadline() -> None:
    slow = Backend("catalog-1", 0.010, slow_rate=1.0, slow_latency=10.0)
    async with serve({"slow": backend_app(slow, SEED)}) as urls, httpx.AsyncClient() as client:
        start = cohort.current_time()
        response = await client.get(f"{urls['slow']}/items/k", headers={"x-timeout": "0.1"})
        took = cohort.current_time() - start
    assert (response.status_code, response.json()["error"]) == (504, "gave up")
    assert took == pytest.approx(0.1 + GRACE)


def test_the_script_runs_and_prints_the_comparison() -> None:
    result = run_python(str(EXAMPLES / "fanout_service.py"), "--requests", "12")
    assert result.returncode == 0, result.stderr
    assert "GET /product/sku-0 -> " in result.stdout
    for label in STRATEGIES:
        assert f"{label:<30} {12:>8}" in result.stdout
    assert result.stderr == ""


def test_ctrl_c_shuts_the_servers_down_cleanly() -> None:
    script = str(EXAMPLES / "fanout_service.py")
    with popen_python(
        "-u", script, "--requests", "100000", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:  # the load starts right after the sample request
            if line.startswith("GET /product/"):
                break
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert (process.returncode, stderr) == (
        130,
        "cohort: interrupted (Ctrl-C); every task was stopped\n",
    )
