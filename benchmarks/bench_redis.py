"""cohort.redis against its floor and its peer, on a redis-server started on loopback.

* Lock: one uncontended ``async with lock:`` (acquire + release: two scripts)
  against the floor, one ``EVALSHA`` round trip of a script that returns at
  once (redis-py asyncio, same connection settings, same run), and against
  redis-py's own ``Lock`` (acquire + release).

Target: cohort's acquire+release <= 1.5x the floor (not met yet: it makes
two scripts, acquire and release, and starts and stops a renewal task), and
below redis-py's Lock. Needs ``redis-server`` on PATH and redis-py; skipped without it.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable

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


async def _median_us(op: Callable[[], Awaitable[object]], rounds: int) -> float:
    for _ in range(rounds // 10):
        await op()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


async def _run(url: str, rounds: int) -> list[tuple[str, float]]:
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

    async with Coordinator(url, namespace=f"bench-{uuid.uuid4().hex}") as coord:
        lock = coord.lock("db")

        async def cohort_lock() -> None:
            async with lock:
                pass

        results = [
            ("EVALSHA round trip (floor)", await _median_us(floor, rounds)),
            ("cohort.redis Lock acquire+release", await _median_us(cohort_lock, rounds)),
            ("redis-py Lock acquire+release", await _median_us(peer_lock, rounds)),
        ]
    await client.aclose()
    return results


def main(quick: bool = False) -> str:
    if shutil.which("redis-server") is None:
        return "## redis\n\nskipped: no redis-server on PATH (scripts/ensure-redis)\n"
    proc, port, tmp = _start()
    try:
        results = asyncio.run(_run(f"redis://127.0.0.1:{port}/0", _ROUNDS // (4 if quick else 1)))
    finally:
        proc.kill()
        proc.wait()
        tmp.cleanup()
    floor = results[0][1]
    lines = ["## redis (asyncio loop, loopback, median of each op)", "",
             "| case | µs | x floor |", "| --- | --- | --- |"]  # fmt: skip
    lines += [f"| {name} | {us:.1f} | {us / floor:.2f} |" for name, us in results]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main())
