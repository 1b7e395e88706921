"""Parent kill -9 while large calls are in flight: how many segments are left in /dev/shm.

Each run starts a parent process with a pool of two workers sending large
bytes, bytearrays, numpy arrays and shared objects, which SIGKILLs itself
at a random point; once its workers are gone, the segments left under that
pool's prefix are counted (and removed). The target is 0 over 100 kills.
The test suite runs two of these (tests/test_bridge_shm.py).

Usage: ``python -m benchmarks.parent_kill [--kills 100] [--seed 1]`` (Linux).
Exit status 0 when no kill left a segment, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _parent_kill import kill_parent_once, remove


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parent_kill", description=__doc__)
    parser.add_argument("--kills", type=int, default=100, help="parent kills (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="first random seed (default 1)")
    args = parser.parse_args(argv)
    dirty = 0
    total = 0
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.kills):
            left = kill_parent_once(Path(tmp) / str(i), args.seed + i)
            if left:
                dirty += 1
                total += len(left)
                print(f"kill {i}: {len(left)} segments left: {left}")
                remove(left)
    elapsed = time.monotonic() - start
    print(
        f"parent_kill: {args.kills} kills in {elapsed:.0f} s; "
        f"{dirty} left segments ({total} segments in all)"
    )
    return 1 if dirty else 0


if __name__ == "__main__":
    sys.exit(main())
