"""The connection a coordinator owns: scripts, retries, pub/sub wake-ups.

redis-py is imported here and only here (and only by ``cohort.redis``), with an
error that names the extra when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import Any, Final

from cohort._exceptions import CoordinatorLost

try:
    import redis.asyncio as aioredis
    import redis.exceptions as redis_errors
    from redis.commands.core import AsyncScript
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "cohort.redis needs redis-py (redis.asyncio): pip install 'cohort[redis]'"
    ) from exc

__all__ = ["Connection", "Primitive"]

# What redis-py raises when the server cannot be reached or does not answer in time.
_UNREACHABLE: Final = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
_LOST_PREFIX: Final = "COHORT_LOST"


class Connection:
    """One connection pool to one server, a namespace, and the pub/sub reader.

    The reader holds one pattern subscription for the whole namespace from
    ``open()`` on, so a waiter is always subscribed before it reads state; it
    sets the events of the waiters of each channel. Messages can be lost
    (pub/sub is at most once, and a reconnect drops them): waiters poll too.
    """

    def __init__(self, url: str, namespace: str, *, poll: float, unreachable: float) -> None:
        self.url = url
        self.namespace = namespace
        self.poll = poll
        self.unreachable = unreachable
        self.client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._scripts: dict[str, AsyncScript] = {}

    def key(self, kind: str, name: str) -> str:
        """The hash tag of one primitive: all its keys live in one cluster slot."""
        return f"{{cohort:{self.namespace}:{kind}:{name}}}"

    def channel(self, kind: str, name: str) -> str:
        return f"cohort:{self.namespace}:{kind}:{name}"

    async def open(self) -> None:
        client = aioredis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_timeout=self.unreachable,
            socket_connect_timeout=self.unreachable,
        )
        self.client = client
        try:
            await self._retrying(client.ping)
            self._pubsub = client.pubsub(ignore_subscribe_messages=True)
            await self._retrying(self._pubsub.psubscribe, f"cohort:{self.namespace}:*")
        except BaseException:
            await self.close()
            raise
        self._reader = asyncio.create_task(self._read(), name=f"cohort.redis reader {self.url}")

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(*_UNREACHABLE):
                await pubsub.aclose()
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(*_UNREACHABLE):
                await client.aclose()

    async def _read(self) -> None:
        pubsub = self._pubsub
        while True:
            try:
                message = await pubsub.get_message(timeout=self.poll)
            except _UNREACHABLE:
                # The waiters poll meanwhile; get_message reconnects and subscribes again.
                await asyncio.sleep(self.poll)
                continue
            if message is None:
                continue
            for event in self._watchers.get(message["channel"], ()):
                event.set()

    def watch(self, channel: str) -> asyncio.Event:
        """An event set on every message to ``channel`` (until ``unwatch``)."""
        event = asyncio.Event()
        self._watchers.setdefault(channel, set()).add(event)
        return event

    def unwatch(self, channel: str, event: asyncio.Event) -> None:
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
        """Run one script (EVALSHA; EVAL once if the server does not know it)."""
        client = self.client
        if client is None:
            raise RuntimeError(
                "this cohort.redis primitive's Coordinator is not open: "
                "use it inside `async with Coordinator(...)`"
            )
        script = self._scripts.get(lua)
        if script is None:
            script = self._scripts[lua] = client.register_script(lua)
        try:
            reply: list[Any] = await self._retrying(script, keys=list(keys), args=list(args))
        except redis_errors.ResponseError as exc:
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
                if loop.time() + self.poll > give_up:
                    raise CoordinatorLost(
                        f"the Redis server at {self.url} did not answer for "
                        f"{self.unreachable:g} s ({exc!r}); check that it runs and is reachable"
                    ) from exc
                await asyncio.sleep(self.poll)


class Primitive:
    """What every primitive shares: its keys, its channel, the epoch it saw last."""

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
        self._epoch = ""

    async def run(self, lua: str, keys: Sequence[str], args: Sequence[object]) -> list[Any]:
        """One script on this primitive; checks and remembers its epoch."""
        reply = await self.connection.call(
            lua, [self.meta, *keys], [self._epoch, uuid.uuid4().hex, *args]
        )
        self._epoch = reply[0]
        return reply
