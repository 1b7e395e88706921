"""A throw-away PostgreSQL server for the tests: ``initdb`` in a temp dir, ``pg_ctl``
on 127.0.0.1 and a free port, a fresh database per test, removed at the end.

The binaries are found on PATH or in ``/usr/lib/postgresql/<version>/bin``
(Debian's layout; ``scripts/ensure-postgres`` installs them). ``initdb``
refuses to run as root: as root, the cluster is created and run as the
unprivileged user ``postgres`` (Debian's package creates it; created with
``useradd`` if missing) through ``runuser``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["PgServer", "TcpProxy", "find_bin_dir"]

_USER = "postgres"


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for where in candidates:
        if all((where / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return where
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PgServer:
    """One cluster, started by :meth:`start`, stopped and removed by :meth:`stop`."""

    def __init__(self, bin_dir: Path, *, fsync: bool = False) -> None:
        self.bin_dir = bin_dir
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="cohort-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._names = itertools.count()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam(_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", _USER], check=True)
                entry = pwd.getpwnam(_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self._as_user = ["runuser", "-u", _USER, "--"]

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, check=False, timeout=120
        )

    def start(self) -> None:
        done = self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr or done.stdout}")
        options = (
            f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            f"-c fsync={'on' if self.fsync else 'off'} -c max_connections=200 "
            "-c shared_buffers=32MB"
        )
        if not self.fsync:
            options += " -c synchronous_commit=off -c full_page_writes=off"
        for _ in range(5):  # a port taken meanwhile: try another
            self.port = _free_port()
            done = self._run(
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"{options} -p {self.port}",
                "start",
            )
            if done.returncode == 0:
                return
        log = (self.root / "log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pg_ctl start failed: {done.stderr or done.stdout}\n{log}")

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh empty database; its connection string."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def new_schema(self) -> str:
        """A fresh empty schema in the server's ``postgres`` database; a URL whose
        connections use it (``search_path``): cheaper than a database per test."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.dsn()}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def server(bin_dir: Path, *, fsync: bool = False) -> Iterator[PgServer]:
    pg = PgServer(bin_dir, fsync=fsync)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()


class TcpProxy:
    """A TCP proxy on loopback, in a thread of its own: ``block()`` holds every byte in
    both directions (a network partition), ``unblock()`` lets them through."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._ready.wait(30)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._open.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except asyncio.CancelledError:
            writer.close()  # the proxy closes: its connections end with it
            up_writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._open.wait()
                writer.write(data)
                await writer.drain()
            await self._open.wait()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def block(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def unblock(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        self.unblock()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
