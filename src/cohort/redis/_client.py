"""The connection a coordinator owns: scripts, retries, pub/sub wake-ups.

redis-py is imported here and only here (and only by ``cohort.redis``), with an
error that names the extra when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl as _ssl
import uuid
from collections.abc import Sequence
from typing import Any, Final

from cohort._exceptions import CoordinatorLost
from cohort.redis._wire import ReplyError, Wire

try:
    import redis.exceptions as redis_errors
    from redis.connection import parse_url
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "cohort.redis needs redis-py (redis.asyncio): pip install 'cohort[redis]'"
    ) from exc

__all__ = ["Connection", "Primitive", "Watch"]

# What redis-py raises when the server cannot be reached or does not answer in time.
_UNREACHABLE: Final = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
_LOST_PREFIX: Final = "COHORT_LOST"


class Watch(asyncio.Event):
    """Set by every message to one channel, and when the subscription was made again;
    ``messages`` holds the payloads since the last ``clear()``, ``None`` for a subscription
    made again (messages sent meanwhile are lost: the waiter must re-read the state)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str | None] = []

    def wake(self, message: str | None) -> None:
        self.messages.append(message)
        self.set()

    def clear(self) -> None:
        super().clear()
        self.messages.clear()


class Connection:
    """The connections to one server for one namespace: scripts and wake-ups.

    Scripts go through one pipelined connection (``_wire.Wire``). A second
    connection holds one pattern subscription for the whole namespace from
    ``open()`` on, so a waiter is always subscribed before it reads state; each
    message sets the events of the waiters of its channel. Messages can be lost
    (pub/sub is at most once, and a reconnect drops them): waiters poll too, and
    after the subscription is made again every waiter is woken to re-read.
    """

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        poll: float,
        unreachable: float,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.poll = poll
        self.unreachable = unreachable
        self.opened = False
        self._reader: asyncio.Task[None] | None = None
        self._watchers: dict[str, set[Watch]] = {}
        self._shas: dict[str, str] = {}
        # The epoch this coordinator saw last, per primitive (its meta key): shared by every
        # object of the primitive, so a new object after a restart cannot start afresh.
        self.epochs: dict[str, str] = {}
        self._wire = _wire_for(url, unreachable, ssl)

    def key(self, kind: str, name: str) -> str:
        """The hash tag of one primitive: all its keys live in one cluster slot."""
        return f"{{cohort:{self.namespace}:{kind}:{name}}}"

    def channel(self, kind: str, name: str) -> str:
        return f"cohort:{self.namespace}:{kind}:{name}"

    async def open(self) -> None:
        try:
            await self._retrying(self._wire.call, "PING")
            await self._retrying(self._subscribe)
        except BaseException:
            await self.close()
            raise
        self.opened = True
        self._reader = asyncio.create_task(self._read(), name=f"cohort.redis reader {self.url}")

    async def _subscribe(self) -> None:
        await self._wire.listen(f"cohort:{self.namespace}:*", self._message)

    def _message(self, channel: str, message: str) -> None:
        for watch in self._watchers.get(channel, ()):
            watch.wake(message)

    async def close(self) -> None:
        self.opened = False
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._wire.close()
        await self._wire.wait_closed()

    async def _read(self) -> None:
        """Subscribe again whenever the subscription's connection is lost."""
        while True:
            await self._wire.listening()
            while True:
                await asyncio.sleep(self.poll)  # the waiters poll meanwhile
                try:
                    await self._subscribe()
                except _UNREACHABLE:
                    continue
                break
            # Messages sent while unsubscribed are lost: every waiter re-reads the state.
            for watches in self._watchers.values():
                for watch in watches:
                    watch.wake(None)

    def watch(self, channel: str) -> Watch:
        """An event set on every message to ``channel`` (until ``unwatch``)."""
        watch = Watch()
        self._watchers.setdefault(channel, set()).add(watch)
        return watch

    def unwatch(self, channel: str, event: Watch) -> None:
        watchers = self._watchers.get(channel)
        if watchers is not None:
            watchers.discard(event)
            if not watchers:
                del self._watchers[channel]

    async def pause(self, event: asyncio.Event, seconds: float) -> None:
        """Wait for ``event`` (a wake-up message) or ``seconds`` (the poll), whichever first."""
        if event.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()

    async def call(self, lua: str, keys: Sequence[str], args: Sequence[object]) -> list[Any]:
        """Run one script: ``EVALSHA`` (one round trip), ``EVAL`` once if the server lacks it."""
        wire = self._wire
        if not self.opened:
            raise RuntimeError(
                "this cohort.redis primitive's Coordinator is not open: "
                "use it inside `async with Coordinator(...)`"
            )
        sha = self._shas.get(lua)
        if sha is None:
            sha = self._shas[lua] = hashlib.sha1(lua.encode()).hexdigest()
        try:
            try:
                try:
                    reply: list[Any] = await wire.call("EVALSHA", sha, len(keys), *keys, *args)
                except _UNREACHABLE as exc:
                    if isinstance(exc, _ssl.SSLCertVerificationError):
                        raise  # no retry makes a certificate valid
                    if isinstance(exc, TimeoutError):  # it waited the whole `unreachable`
                        raise self._lost(exc) from exc
                    reply = await self._retrying(wire.call, "EVALSHA", sha, len(keys), *keys, *args)
            except ReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
                reply = await self._retrying(wire.call, "EVAL", lua, len(keys), *keys, *args)
        except ReplyError as exc:
            if str(exc).startswith(_LOST_PREFIX):
                raise CoordinatorLost(
                    f"the Redis server at {self.url} lost the state of a primitive "
                    f"({str(exc)[len(_LOST_PREFIX) + 1 :]}): it restarted or failed over; "
                    "start again with a new Coordinator"
                ) from None
            raise
        return reply

    async def _retrying(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn`` retried every poll interval while the server is unreachable, for at most
        ``unreachable`` seconds; then ``CoordinatorLost``."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.unreachable
        while True:
            try:
                return await fn(*args, **kwargs)
            except _UNREACHABLE as exc:
                if isinstance(exc, _ssl.SSLCertVerificationError):
                    raise  # no retry makes a certificate valid: the URL or ssl= must change
                if loop.time() + self.poll > give_up:
                    raise self._lost(exc) from exc
                await asyncio.sleep(self.poll)

    def _lost(self, exc: BaseException) -> CoordinatorLost:
        return CoordinatorLost(
            f"the Redis server at {self.url} did not answer for "
            f"{self.unreachable:g} s ({exc!r}); check that it runs and is reachable"
        )


_CERT_REQS: Final = {
    "none": _ssl.CERT_NONE,
    "optional": _ssl.CERT_OPTIONAL,
    "required": _ssl.CERT_REQUIRED,
}


def _wire_for(url: str, timeout: float, context: _ssl.SSLContext | None) -> Wire:
    """The scripts' connection to the server ``url`` names (``redis://``, ``rediss://`` for
    TLS, or ``unix://``)."""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"cohort.redis connects with redis://, rediss:// (TLS) or unix:// URLs, not {url!r}"
        )
    if context is not None and not url.startswith("rediss://"):
        raise ValueError(
            f"Coordinator ssl= is for rediss:// URLs, got {url!r}: use rediss://host:port/db"
        )
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    if url.startswith("rediss://") and context is None:
        context = _context_of(url, options)
    return Wire(
        host=options.get("host", "127.0.0.1"),
        port=int(options.get("port", 6379)),
        path=options.get("path"),
        db=int(options.get("db", 0)),
        username=options.get("username"),
        password=options.get("password"),
        ssl=context,
        timeout=timeout,
    )


def _context_of(url: str, options: dict[str, Any]) -> _ssl.SSLContext:
    """The TLS context a ``rediss://`` URL's query asks for, with redis-py's names:
    ``ssl_ca_certs`` (CA file; default the system's), ``ssl_certfile``/``ssl_keyfile`` (a
    client certificate), ``ssl_cert_reqs`` (none, optional, required: the default) and
    ``ssl_check_hostname`` (default true when certificates are required)."""
    reqs = str(options.get("ssl_cert_reqs", "required")).lower()
    if reqs not in _CERT_REQS:
        raise ValueError(
            f"ssl_cert_reqs must be none, optional or required, got {reqs!r} in {url!r}"
        )
    context = _ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    context.check_hostname = bool(options.get("ssl_check_hostname", reqs == "required"))
    context.verify_mode = _CERT_REQS[reqs]
    if "ssl_certfile" in options:
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    elif "ssl_keyfile" in options:
        raise ValueError(f"ssl_keyfile without ssl_certfile in {url!r}: give both")
    return context


class Primitive:
    """What every primitive shares: its keys, its channel; the epoch its coordinator saw."""

    kind: str = ""

    def __init__(self, connection: Connection, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"a cohort.redis {self.kind} needs a non-empty str name, got {name!r}")
        self.connection = connection
        self.name = name
        tag = connection.key(self.kind, name)
        self.meta = f"{tag}:meta"
        self.tag = tag
        self.channel = connection.channel(self.kind, name)

    async def run(self, lua: str, keys: Sequence[str], args: Sequence[object]) -> list[Any]:
        """One script on this primitive; checks and remembers the coordinator's epoch of it."""
        epochs = self.connection.epochs
        seen = epochs.get(self.meta, "")
        # A fresh epoch only matters on first use (the script ignores it once it saw one).
        fresh = uuid.uuid4().hex if not seen else "-"
        reply = await self.connection.call(lua, [self.meta, *keys], [seen, fresh, *args])
        # A call sent before this coordinator saw an epoch may come back with another one
        # (it was retried on a restarted server): the coordinator saw the state lost.
        if epochs.setdefault(self.meta, reply[0]) != reply[0]:
            raise CoordinatorLost(
                f"the Redis server at {self.connection.url} lost the state of a primitive "
                f"({self.meta} was created again): it restarted or failed over; "
                "start again with a new Coordinator"
            )
        return reply
