"""A parent process SIGKILLed at a random point while large calls are in flight.

The parent (a script of its own) runs a pool of two workers that records
their pids, then sends a random mix of large calls (bytes, bytearray, numpy
arrays, shared objects) until a thread of its own SIGKILLs it after a random
delay: in the middle of anything, writing a segment included. Once the
parent and every worker it had are gone, the segments left under that
pool's prefix are counted (target: none). Used by the test suite (a few
kills) and by ``benchmarks/parent_kill.py`` (many).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from cohort.bridge._shm import segment_names

PARENT = """
import asyncio, os, random, signal, sys, threading, time

import numpy as np

import cohort


def record(path):
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\\n")


def echo(x):
    return x


def nbytes(x):
    return len(x)


def total(handle):
    return float(handle.value.sum())


def kill_me_after(delay):
    def kill():
        time.sleep(delay)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()


async def main(directory, delay, seed):
    rng = random.Random(seed)
    pids = os.path.join(directory, "pids")
    async with cohort.ProcessPool(2, initializer=record, initargs=(pids,)) as pool:
        with open(os.path.join(directory, "prefix"), "w") as f:
            f.write(pool.segment_prefix)
        await asyncio.gather(pool.run(nbytes, b""), pool.run(nbytes, b""))
        kill_me_after(delay)
        while True:
            calls = []
            for _ in range(rng.randint(1, 6)):
                size = rng.choice([1 << 18, 1 << 20, 1 << 22])
                kind = rng.random()
                if kind < 0.3:
                    calls.append(pool.run(echo, np.ones(size // 8)))
                elif kind < 0.6:
                    calls.append(pool.run(echo, b"x" * size))
                elif kind < 0.8:
                    calls.append(pool.run(nbytes, bytearray(size)))
                else:
                    calls.append(pool.run(total, await pool.share(np.ones(size // 8))))
            await asyncio.gather(*calls)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""

MAX_DELAY = 0.3  # seconds: the kill comes at a random point within this after warm-up


def segments(prefix: str) -> list[str]:
    """The segments in /dev/shm whose names start with ``prefix`` (one pool's)."""
    return segment_names(prefix)


def kill_parent_once(directory: Path, seed: int) -> list[str]:
    """Run the parent, killed at a random point; return the segments its pool left."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "parent.py"
    script.write_text(PARENT)
    delay = random.Random(seed).uniform(0.0, MAX_DELAY)
    proc = subprocess.run(
        [sys.executable, str(script), str(directory), str(delay), str(seed)],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    if proc.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the parent did not die by SIGKILL ({proc.returncode}): {proc.stderr}")
    prefix = (directory / "prefix").read_text()
    for pid in {int(line) for line in (directory / "pids").read_text().split()}:
        # Each worker removes the pool's segments before it exits.
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(timeout=30)
    return segments(prefix)


def remove(names: list[str]) -> None:
    for name in names:
        os.unlink(f"/dev/shm/{name}")
