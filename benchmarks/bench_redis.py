"""cohort.redis against its floor and its peers, on a redis-server started on loopback.

* Lock: one uncontended ``async with lock:`` (acquire + release: two scripts,
  two round trips) against the floor, one ``EVALSHA`` round trip of a script
  that returns at once (redis-py asyncio, same run), against redis-py's own
  asyncio ``Lock`` and python-redis-lock's (sync, redis-py; a line says it was
  skipped when it is not installed).

* Barrier: 8 processes (spawned), each one party with a coordinator of its own, calling
  ``wait()`` back to back; a round is the time between two returns of ``wait()`` in
  a party (p50 and p90 over every party's rounds), and the scripts each party ran
  per round are counted (target: p50 <= 2 ms on loopback, <= 2 round trips), with
  the CPU time a party spent per round (its process's, so less swayed by a loaded
  machine than the round's wall time).

The lock cases are sampled interleaved (one op of each in turn), so a noisy
machine slows them alike; each line gives the median and the spread (p10-p90).
Target: cohort's acquire+release <= 1.5x the floor and below both peers.
Needs ``redis-server`` on PATH and redis-py; skipped without it.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

_ROUNDS = 2000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start() -> tuple[subprocess.Popen[bytes], int, tempfile.TemporaryDirectory[str]]:
    binary = shutil.which("redis-server")
    assert binary is not None
    tmp = tempfile.TemporaryDirectory()
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", tmp.name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(500):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port, tmp
        except OSError:
            time.sleep(0.01)
    proc.kill()
    raise RuntimeError("redis-server did not start")


Op = Callable[[], Awaitable[object]]


async def _sample(
    cases: list[tuple[str, Op | Callable[[], object]]], rounds: int
) -> dict[str, list[float]]:
    """Seconds per op of each case, interleaved: round r runs one op of every case."""
    samples: dict[str, list[float]] = {name: [] for name, _ in cases}
    clock = time.perf_counter
    for r in range(rounds + rounds // 10):
        for name, op in cases:
            t0 = clock()
            result = op()
            if inspect.isawaitable(result):
                await result
            if r >= rounds // 10:  # the first tenth warms up
                samples[name].append(clock() - t0)
    return samples


async def _run(url: str, rounds: int) -> tuple[dict[str, list[float]], str]:
    import redis.asyncio as aioredis

    from cohort.redis import Coordinator

    client = aioredis.Redis.from_url(url)
    floor_script = client.register_script("return 1")
    peer = client.lock(f"bench-{uuid.uuid4().hex}", timeout=10)

    async def floor() -> None:
        await floor_script(keys=["{bench}"], args=[])

    async def peer_lock() -> None:
        await peer.acquire()
        await peer.release()

    cases: list[tuple[str, Op | Callable[[], object]]] = []
    note = ""
    sync_client = None
    try:
        import redis
        import redis_lock  # type: ignore[import-untyped,import-not-found,unused-ignore]

        sync_client = redis.Redis.from_url(url)
        other = redis_lock.Lock(sync_client, f"bench-{uuid.uuid4().hex}", expire=10)

        def other_lock() -> None:
            other.acquire()
            other.release()

    except ImportError:
        note = "python-redis-lock: skipped (not installed: pip install python-redis-lock)\n"

    async with Coordinator(url, namespace=f"bench-{uuid.uuid4().hex}") as coord:
        lock = coord.lock("db")

        async def cohort_lock() -> None:
            async with lock:
                pass

        cases = [
            ("EVALSHA round trip (floor)", floor),
            ("cohort.redis Lock acquire+release", cohort_lock),
            ("redis-py asyncio Lock acquire+release", peer_lock),
        ]
        if sync_client is not None:
            cases.append(("python-redis-lock acquire+release (sync)", other_lock))
        samples = await _sample(cases, rounds)
    await client.aclose()
    if sync_client is not None:
        sync_client.close()
    return samples, note


_BARRIER_PARTIES = 8


def _barrier_party(url: str, namespace: str, index: int, rounds: int, out: Any) -> None:
    """One party in a process of its own: warm up, then time ``rounds`` rounds."""
    from cohort.redis import Coordinator
    from cohort.redis._client import Connection

    calls = 0
    call = Connection.call

    async def counting(self: Connection, *args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await call(self, *args)

    Connection.call = counting  # type: ignore[method-assign,assignment]

    async def run() -> tuple[list[float], float, float]:
        nonlocal calls
        async with Coordinator(url, namespace=namespace) as coord:
            barrier = coord.barrier("round", _BARRIER_PARTIES, party=f"p{index}")
            async with barrier:
                for _ in range(rounds // 10 + 5):
                    await barrier.wait()
                calls = 0
                times = []
                cpu = time.process_time()
                last = time.perf_counter()
                for _ in range(rounds):
                    await barrier.wait()
                    now = time.perf_counter()
                    times.append(now - last)
                    last = now
                cpu = (time.process_time() - cpu) / rounds
                per_round = calls / rounds
                # Leave together: nobody's leaving breaks the others' last round.
                await barrier.wait()
        return times, per_round, cpu

    out.put(asyncio.run(run()))


def _barrier_rounds(url: str, rounds: int) -> tuple[list[float], list[float], list[float]]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    namespace = f"bench-{uuid.uuid4().hex}"
    procs = [
        ctx.Process(target=_barrier_party, args=(url, namespace, i, rounds, out))
        for i in range(_BARRIER_PARTIES)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    times = sorted(t for r in results for t in r[0])
    return times, [r[1] for r in results], [r[2] for r in results]


def main(quick: bool = False) -> str:
    if shutil.which("redis-server") is None:
        return "## redis\n\nskipped: no redis-server on PATH (scripts/ensure-redis)\n"
    proc, port, tmp = _start()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        samples, note = asyncio.run(_run(url, _ROUNDS // (4 if quick else 1)))
        rounds, scripts, cpu = _barrier_rounds(url, 100 if quick else 500)
    finally:
        proc.kill()
        proc.wait()
        tmp.cleanup()
    floor = statistics.median(next(iter(samples.values())))
    lines = ["## redis (asyncio loop, loopback, interleaved samples)", "",
             "| case | median µs | p10-p90 µs | median x floor |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for name, seconds in samples.items():
        seconds.sort()
        p10, p90 = seconds[len(seconds) // 10], seconds[len(seconds) * 9 // 10]
        med = statistics.median(seconds)
        lines.append(f"| {name} | {med * 1e6:.1f} | {p10 * 1e6:.0f}-{p90 * 1e6:.0f} | "
                     f"{med / floor:.2f} |")  # fmt: skip
    p50, p90 = statistics.median(rounds), rounds[len(rounds) * 9 // 10]
    lines += ["", f"Barrier round, {_BARRIER_PARTIES} processes: p50 {p50 * 1e3:.2f} ms, "
              f"p90 {p90 * 1e3:.2f} ms; scripts (round trips) per party per round: "
              f"max {max(scripts):.2f}, mean {statistics.mean(scripts):.2f}; CPU per party "
              f"per round: mean {statistics.mean(cpu) * 1e6:.0f} µs"]  # fmt: skip
    return "\n".join(lines) + "\n" + (f"\n{note}" if note else "")


if __name__ == "__main__":
    print(main())
