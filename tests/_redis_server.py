"""A real ``redis-server`` for the tests of ``cohort.redis`` (imported by conftest).

One server per test process (per xdist worker): started on 127.0.0.1 and a free
port in a temporary directory, with no persistence (``--save ''
--appendonly no``), and stopped at the end of the session. Each test works in
a namespace of its own (a fresh uuid), so two copies of the suite can share a
machine. Without the binary the tests that need it skip with one line saying
how to get it (``scripts/ensure-redis``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

MISSING = (
    "redis-server not found: run scripts/ensure-redis "
    "(apt-get install -y redis-server as root) to run the cohort.redis tests"
)
_START_TRIES = 5
_READY_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """A ``redis-server`` process this test process started and owns."""

    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on a free port (a fresh one if another process took it first); wait for PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError(MISSING)
        keep_port = self.port  # a restart keeps its port, so clients reconnect to it
        last = ""
        for _ in range(_START_TRIES):
            port = keep_port or _free_port()
            log = self.directory / f"redis-{port}.log"
            process = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.directory), "--logfile", str(log),
                 "--protected-mode", "no"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + _READY_S
            while time.monotonic() < deadline and process.poll() is None:
                if _ping(port):
                    self.port, self.process = port, process
                    return
                time.sleep(0.01)
            process.kill()
            process.wait()
            last = log.read_text(errors="replace")[-500:] if log.exists() else ""
        raise RuntimeError(f"redis-server did not start in {_START_TRIES} tries; last log:\n{last}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: its state is gone, as after a crash) and reap it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        """Stop, then start an empty server on the same port."""
        self.stop()
        self.start()
