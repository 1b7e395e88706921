"""Serve ASGI apps with uvicorn on 127.0.0.1, each on its own ephemeral port."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import uvicorn

import cohort

__all__ = ["serve"]


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the program around it.

    uvicorn installs SIGINT/SIGTERM handlers while it serves and restores the
    old ones afterwards; several servers in one program would restore each
    other's handlers out of order. Here Ctrl-C is ``cohort.run``'s business:
    it cancels the program, and ``serve()`` shuts the servers down.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen_on_loopback() -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only
    # when it can tell they are TCP; with Nagle on, every response waits ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))  # loopback only; the kernel picks a free port
    # Listening now (not when uvicorn starts) means clients can connect at
    # once: their connections wait in the backlog until the server accepts.
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve(
    apps: Mapping[str, Any], *, tls: tuple[str, str] | None = None
) -> AsyncIterator[dict[str, str]]:
    """Serve each ASGI app on 127.0.0.1; yield ``{name: base URL}``.

    ``tls=(certfile, keyfile)`` serves HTTPS with that certificate (PEM files).

    The servers are children of one task group: leaving the block, also by
    an error or a cancellation, asks each to shut down gracefully (finish the
    requests in progress, close connections, run the app's shutdown) and
    waits until they have; if a server crashes, the block is cancelled and
    the crash raised.

    Example:

    ```python
    async with serve({"api": app}) as urls:
        response = await client.get(f"{urls['api']}/health")
    ```
    """
    servers: dict[str, tuple[uvicorn.Server, socket.socket]] = {}
    for name, app in apps.items():
        config = uvicorn.Config(
            app,
            log_config=None,  # leave the program's logging alone
            log_level="warning",
            access_log=False,
            timeout_keep_alive=60,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        servers[name] = (_EmbeddedServer(config), _listen_on_loopback())
    scheme = "https" if tls else "http"
    urls = {
        name: f"{scheme}://127.0.0.1:{sock.getsockname()[1]}" for name, (_, sock) in servers.items()
    }
    async with cohort.TaskGroup(name="servers") as group:
        handles = [
            group.spawn(server.serve, [sock], name=f"serve {name}")
            for name, (server, sock) in servers.items()
        ]
        try:
            yield urls
        finally:
            for server, _ in servers.values():
                server.should_exit = True
            # Wait here for the graceful shutdown, also when the block was
            # cancelled (Ctrl-C): left to the group, an outside cancellation
            # would cancel the servers mid-request instead.
            for handle in handles:
                with contextlib.suppress(Exception):  # a crash is raised by the group
                    await handle
