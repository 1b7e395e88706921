"""Worker processes in phases, kept in step by a Redis barrier; one of them dies mid-run.

Four worker processes each run five phases and meet at a ``cohort.redis``
barrier after each. Worker 2 is killed (SIGKILL: no clean-up of any kind)
during phase 2. Its lease on the barrier lapses on the server, so the other
three, waiting at the end of phase 2, get ``BrokenBarrierError`` naming it
and stop cleanly, instead of waiting forever.

    python examples/redis_phases.py [redis://host:port/0]

Without a URL it starts a throw-away ``redis-server`` (it must be on PATH).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import cohort
from cohort.redis import Coordinator

WORKERS = 4
PHASES = 5
DOOMED, DIES_IN = 2, 2  # worker 2 is killed during phase 2


async def work(url: str, namespace: str, me: int) -> None:
    # A short lease and poll: a death is noticed within 0.5 s + 2 x 0.05 s.
    async with Coordinator(url, namespace=namespace, lease=0.5, poll=0.05) as coord:
        barrier = coord.barrier("phases", WORKERS, party=f"worker-{me}")
        async with barrier:
            for phase in range(PHASES):
                await asyncio.sleep(0.02 * (me + 1))  # this phase's work
                if me == DOOMED and phase == DIES_IN:
                    print(f"worker-{me}: killed during phase {phase}", flush=True)
                    os.kill(os.getpid(), signal.SIGKILL)
                try:
                    await barrier.wait()
                except cohort.BrokenBarrierError as exc:
                    print(f"worker-{me}: stopped cleanly after phase {phase}: {exc}", flush=True)
                    return
                print(f"worker-{me}: phase {phase} done, all {WORKERS} in step", flush=True)


def worker(url: str, namespace: str, me: int) -> None:
    asyncio.run(work(url, namespace, me))


def _server() -> tuple[str, subprocess.Popen[bytes], tempfile.TemporaryDirectory[str]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: install it, or pass a redis:// URL")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.TemporaryDirectory()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", tmp.name],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.01)
    return f"redis://127.0.0.1:{port}/0", server, tmp


def main() -> None:
    server = tmp = None
    if len(sys.argv) > 1:
        url = sys.argv[1]
    else:
        url, server, tmp = _server()
    namespace = f"example-{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker, args=(url, namespace, i)) for i in range(WORKERS)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
        print("exit codes:", {f"worker-{i}": p.exitcode for i, p in enumerate(procs)})
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        if server is not None:
            server.kill()
            server.wait()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
