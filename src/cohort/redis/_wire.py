"""A lean, pipelined RESP2 connection for the scripts of ``cohort.redis``.

Each operation of a primitive is one ``EVALSHA``; going through redis-py's
client (connection pool checkout, retry wrapper, generic parser) costs more than
the round trip itself on loopback. This connection writes the command and
waits for its reply on one socket shared by every task of the coordinator:
requests are pipelined and replies matched first in, first out.

A reply that does not come within ``timeout`` seconds (a hung or black-holed
server) aborts the connection: every pending call fails with
``TimeoutError``, and the next call connects again. A lost connection fails
the pending calls with ``ConnectionError``. A cancelled caller's reply is read
and dropped, so the stream stays in step.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl as _ssl
from collections.abc import Callable
from typing import Any, Final, cast

__all__ = ["ReplyError", "Wire", "encode"]

_CRLF: Final = b"\r\n"


class ReplyError(Exception):
    """An error reply (``-ERR ...``) from the server, as text."""


class _Incomplete(Exception):
    pass


def encode(args: tuple[object, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"a Redis command argument must be str, bytes or a number: {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _parse(buf: bytes, pos: int) -> tuple[object, int]:
    """One reply starting at ``pos``: (value, position after it); ``_Incomplete`` if cut."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind, line = buf[pos : pos + 1], buf[pos + 1 : end]
    pos = end + 2
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, pos
        if len(buf) < pos + size + 2:
            raise _Incomplete
        return buf[pos : pos + size].decode(), pos + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == b"+":
        return line.decode(), pos
    if kind == b"-":
        return ReplyError(line.decode()), pos
    raise ConnectionError(f"unexpected reply from the Redis server: {buf[pos - 2 :][:64]!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self, on_push: Callable[[object], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[asyncio.Future[object]] = collections.deque()
        self.buf = b""
        self.lost: Exception | None = None
        self.on_push = on_push  # a subscriber's connection: every reply is a message
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        pending = self.pending
        try:
            while pos < len(buf):
                value, pos = _parse(buf, pos)
                if self.on_push is not None:
                    self.on_push(value)
                    continue
                if not pending:
                    self._abort("a reply came unasked")
                    return
                future = pending.popleft()
                if not future.done():
                    if isinstance(value, ReplyError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError) as exc:
            self._abort(str(exc))
            return
        self.buf = buf[pos:]

    def _abort(self, why: str) -> None:
        self.fail(ConnectionError(f"bad reply from the Redis server: {why}"))
        assert self.transport is not None
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(
            self.lost or ConnectionError(f"the connection to the Redis server closed ({exc})")
        )
        if not self.closed.done():
            self.closed.set_result(None)

    def fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(exc)


class Wire:
    """One pipelined connection, opened on first use and again after it was lost."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        timeout: float,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._ssl = ssl
        self._hello: list[tuple[object, ...]] = []
        if password is not None:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._hello.append(("SELECT", db))
        self._timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._listener: _Protocol | None = None
        self._closing: list[_Protocol] = []

    async def _connect(self, on_push: Callable[[object], None] | None = None) -> _Protocol:
        loop = asyncio.get_running_loop()
        factory = functools.partial(_Protocol, None)
        async with asyncio.timeout(self._timeout):
            if self._path is not None:
                _, protocol = await loop.create_unix_connection(factory, self._path)
            else:
                _, protocol = await loop.create_connection(
                    factory,
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
            for command in self._hello:
                future: asyncio.Future[object] = loop.create_future()
                protocol.pending.append(future)
                assert protocol.transport is not None
                protocol.transport.write(encode(command))
                await future
        protocol.on_push = on_push
        return protocol

    async def listen(self, pattern: str, on_message: Callable[[str, str], None]) -> None:
        """Subscribe to ``pattern`` on a connection of its own; call ``on_message`` with the
        channel and the payload of each message. Returns once subscribed; ``listening()``
        ends with it."""
        subscribed = asyncio.get_running_loop().create_future()

        def push(value: object) -> None:
            if isinstance(value, list) and value:
                if value[0] == "pmessage" and len(value) == 4:
                    on_message(str(value[2]), str(value[3]))
                elif value[0] == "psubscribe" and not subscribed.done():
                    subscribed.set_result(None)

        protocol = await self._connect(push)
        self._listener = protocol
        assert protocol.transport is not None
        protocol.transport.write(encode(("PSUBSCRIBE", pattern)))
        try:
            async with asyncio.timeout(self._timeout):
                await asyncio.wait([subscribed, protocol.closed], return_when="FIRST_COMPLETED")
        except BaseException:
            protocol.transport.abort()
            raise
        if not subscribed.done():
            raise ConnectionError("the connection to the Redis server closed while subscribing")

    async def listening(self) -> None:
        """Wait until the subscriber's connection is lost."""
        listener = self._listener
        if listener is not None:
            await asyncio.shield(listener.closed)

    async def _ready(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_task(self._connect())
        connecting = self._connecting
        try:
            protocol = await asyncio.shield(connecting)
        finally:
            if connecting.done():
                self._connecting = None
        self._protocol = protocol
        return protocol

    async def call(self, *args: object) -> Any:
        """Send one command and return its reply (``ReplyError`` raised for an error reply)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._ready()
            if protocol.lost is not None:  # lost while connecting: nobody would answer
                raise ConnectionError(
                    f"the connection to the Redis server was lost at once ({protocol.lost})"
                )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        protocol.pending.append(future)
        transport = protocol.transport
        assert transport is not None
        transport.write(encode(args))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._timeout, self._check, future)
        return await future

    def _check(self, future: asyncio.Future[object]) -> None:
        """If ``future`` is still the oldest pending request, it went unanswered too long."""
        self._watchdog = None
        protocol = self._protocol
        if protocol is None or protocol.lost is not None or not protocol.pending:
            return
        if protocol.pending[0] is future:
            protocol.fail(
                TimeoutError(f"the Redis server did not answer within {self._timeout:g} s")
            )
            assert protocol.transport is not None
            protocol.transport.abort()
            return
        # That request was answered: watch the oldest one now pending, for a full timeout.
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(self._timeout, self._check, protocol.pending[0])

    async def wait_closed(self) -> None:
        """Wait until the connections ``close()`` closed are gone (a TLS one sends its
        close_notify first); past ``timeout`` they are aborted."""
        closing, self._closing = self._closing, []
        pending = [p.closed for p in closing if not p.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=self._timeout)
        for protocol in closing:
            if not protocol.closed.done() and protocol.transport is not None:
                protocol.transport.abort()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for protocol in (self._protocol, self._listener):
            if protocol is not None and protocol.transport is not None:
                protocol.transport.close()
                self._closing.append(protocol)
        self._protocol = self._listener = None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
