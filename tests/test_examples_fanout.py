"""Example 1, the web fan-out service (cohort.examples.fanout), end to end on real local servers.

The async tests run on cohort's virtual clock: the backends' simulated
service times are the only thing that takes time, so every request's status,
latency and answer source follow from the backends' seeded behaviour
(``plan()``), and the tests predict and check them exactly. HTTP still goes
through real uvicorn servers on 127.0.0.1 and aiohttp clients; the
``autojump_threshold`` lets loopback I/O land before the clock jumps. No
wall-clock duration is asserted.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
from dataclasses import replace
from typing import Literal

import aiohttp
import httpx
import pytest

import cohort
import cohort.testing
from _util import EXAMPLES, popen_python, run_python
from cohort.examples.fanout.backends import (
    DEFAULT_BACKENDS,
    GRACE,
    PRICING,
    Backend,
    backend_app,
)
from cohort.examples.fanout.load import Record, percentile, run_load, summarize
from cohort.examples.fanout.loadtest import make_run
from cohort.examples.fanout.oracle import Oracle
from cohort.examples.fanout.plain import PlainService
from cohort.examples.fanout.service import CALL_TIMEOUT, DEADLINE, Strategy
from cohort.examples.fanout.stack import STRATEGIES, compare, local_service, local_stack
from cohort.examples.servers import serve

SEED = 1
KEYS = [f"sku-{i}" for i in range(30)]
PLAIN, QUORUM, ALL = STRATEGIES.values()

AUTOJUMP = 0.002  # real seconds the clock waits for loopback I/O before jumping
virtual_clock = pytest.mark.virtual_clock(autojump_threshold=AUTOJUMP)


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
    oracle = Oracle(DEFAULT_BACKENDS, SEED)
    for label, strategy in STRATEGIES.items():
        check(runs[label], oracle, strategy)
        # the load test's count of errors the plan did not call for
        assert make_run(label, "sku", strategy, runs[label], 1.0).unplanned == 0


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
    async with local_stack(SEED, BROKEN) as url, aiohttp.ClientSession() as client:
        answers = await run_load(client, url, keys, ALL, concurrency=5)
        plain = await run_load(client, url, keys, PLAIN, concurrency=5)
    oracle = Oracle(BROKEN, SEED)
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
    async with local_stack(SEED, slow_pricing) as url, aiohttp.ClientSession() as client:
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


@pytest.mark.parametrize("client", ["httpx", "aiohttp"])
def test_the_plain_asyncio_service_answers_like_the_cohort_one(
    client: Literal["httpx", "aiohttp"],
) -> None:
    """The load test's baseline is the same endpoint: same statuses, sources and times."""

    async def run() -> list[Record]:
        async with serve({b.name: backend_app(b, SEED) for b in DEFAULT_BACKENDS}) as backends:
            service = PlainService(backends, client=client)
            async with serve({"plain": service.app}) as urls, aiohttp.ClientSession() as session:
                return await run_load(session, urls["plain"], KEYS, ALL, concurrency=6)

    records = cohort.testing.run(run, autojump_threshold=AUTOJUMP)
    check(records, Oracle(DEFAULT_BACKENDS, SEED), ALL)


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


@virtual_clock
async def test_the_outage_drill_opens_probes_and_closes_the_breaker() -> None:
    from cohort.examples.fanout.drill import drill
    from cohort.examples.fanout.service import BREAKER_RECOVERY

    runs = {
        guard: await drill(SEED, guard=guard, down_at=0.2, up_at=1.0, until=1.8, rate=25.0)
        for guard in (False, True)
    }
    plain, guarded = runs[False], runs[True]
    assert len(plain.records) == len(guarded.records) == 45
    states = [state for _, state in guarded.transitions]
    assert states[0] == "open"
    assert states[-2:] == ["half_open", "closed"]
    # While down, each probe fails and the breaker opens again: half-open, open, ...
    assert states[1:-2] == ["half_open", "open"] * ((len(states) - 3) // 2)
    times = [t for t, _ in guarded.transitions]
    assert 0.2 <= times[0] < 1.0  # opened while down
    opened = [t for t, s in guarded.transitions if s == "open"]
    probes = [t for t, s in guarded.transitions if s == "half_open"]
    assert all(p >= o + BREAKER_RECOVERY - 1e-9 for o, p in zip(opened, probes, strict=False))
    assert times[-1] >= 1.0  # closed only once the backend was back
    # Calls the sick backend got while down: all of them without breakers, a few probes with.
    assert plain.calls_while_down > 3 * guarded.calls_while_down
    assert guarded.failed_fast > 0


@virtual_clock
async def test_the_page_flow_answers_from_two_catalog_sources_and_cancels_the_third() -> None:
    from cohort.examples.fanout.page import PAGE

    oracle = Oracle(DEFAULT_BACKENDS, SEED)
    async with local_stack(SEED) as url, aiohttp.ClientSession() as client:
        for key in KEYS[:8]:
            start = cohort.current_time()
            async with client.get(f"{url}/page/{key}") as response:
                body = await response.json()
            took = cohort.current_time() - start
            answered = sorted(
                (oracle.call(r, key, 0.4).at, r)
                for r in ("catalog-1", "catalog-2", "catalog-3")
                if oracle.call(r, key, 0.4).ok
            )
            if len(answered) < 2:
                assert response.status == 502, body
                continue
            assert response.status == 200, body
            assert body["sources"]["recs"] == sorted(r for _, r in answered[:2])
            assert took < DEADLINE
    assert "recs_1" in PAGE.to_mermaid()


@virtual_clock
async def test_the_metrics_endpoint_serves_cohorts_metrics_in_prometheus_text() -> None:
    async with (
        local_service(SEED, BROKEN, metrics=True) as (url, _),
        aiohttp.ClientSession() as client,
    ):
        await run_load(client, url, KEYS[:3], ALL, concurrency=3)
        async with client.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
    lines = text.splitlines()
    assert "# TYPE cohort_children_started_total counter" in lines
    assert "# TYPE cohort_group_duration histogram" in lines
    started = [ln for ln in lines if ln.startswith("cohort_children_started_total{")]
    assert started
    assert sum(float(ln.rsplit(" ", 1)[1]) for ln in started) > 0
    assert any(ln.startswith("cohort_group_duration_bucket{") and 'le="+Inf"' in ln for ln in lines)
