"""``EventFlags``: named flags shared by processes; wait for all or any, optionally consuming."""

from __future__ import annotations

import asyncio
import math
import uuid
from typing import Any, Final

from cohort.redis._client import Connection, Primitive
from cohort.redis._scripts import FLAGS_OP

__all__ = ["EventFlags"]

# How long (in `unreachable`s) the server keeps a consuming wait's reply for a retry: a
# reply is lost within one `unreachable` of the script, and the call retried within another.
_KEEP_UNREACHABLES: Final = 3
# Give-backs of cancelled consuming waits in flight (kept referenced until done).
_giving_back: set[asyncio.Task[Any]] = set()


def _gave_back(task: asyncio.Task[Any]) -> None:
    """A give-back ended. One that failed (the server lost or unreachable, or the
    coordinator closed before it was sent) leaves the setting consumed."""
    _giving_back.discard(task)
    if not task.cancelled():
        task.exception()


class EventFlags(Primitive):
    """Named flags that every process naming them shares, as :class:`cohort.EventFlags`.

    ``await flags.set("ready")``, ``await flags.clear("ready")``,
    ``await flags.wait_all("a", "b")``, ``await flags.wait_any("a", "b")``.
    ``clear=True`` consumes: the flags waited for are cleared in the same
    script that found the wait satisfied, so of several consumers waiting for
    one setting exactly one gets it. A wait returns every flag set at the
    moment it was satisfied (before consuming). Flags live on the server
    until cleared; no lease is involved.

    Obtained from :meth:`cohort.redis.Coordinator.event_flags`.
    """

    kind = "flags"

    def __init__(self, connection: Connection, name: str, names: tuple[str, ...]) -> None:
        super().__init__(connection, name)
        if not names:
            raise ValueError("EventFlags needs at least one flag name, e.g. ('ready',)")
        bad = [n for n in names if not isinstance(n, str) or not n]
        if bad:
            raise TypeError(f"EventFlags takes flag names (non-empty str), got {bad[0]!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"EventFlags names must be unique, got {names!r}")
        self.names = names
        self._keys = [f"{self.tag}:set"]

    def __repr__(self) -> str:
        return f"<cohort.redis.EventFlags {self.name!r} names={self.names!r}>"

    def _check(self, names: tuple[str, ...], what: str) -> tuple[str, ...]:
        if not names:
            raise ValueError(f"{self!r}: {what}() needs at least one flag name")
        for n in names:
            if n not in self.names:
                raise KeyError(f"{self!r} has no flag {n!r}; known flags: {', '.join(self.names)}")
        return names

    async def _op(self, op: str, names: tuple[str, ...], wait: str = "") -> list[Any]:
        if not wait:
            return await self.run(FLAGS_OP, self._keys, [self.channel, op, 0, *names])
        # A consuming wait's record: its consumption, answered again to a retried call.
        keep = math.ceil(1000 * _KEEP_UNREACHABLES * self.connection.unreachable)
        keys = [*self._keys, f"{self.tag}:took:{wait}"]
        return await self.run(FLAGS_OP, keys, [self.channel, op, keep, *names])

    async def set(self, *names: str) -> None:
        """Set ``names`` (already set ones stay set); wakes the waiters in every process."""
        await self._op("set", self._check(names, "set"))

    async def clear(self, *names: str) -> None:
        """Clear ``names``."""
        await self._op("clear", self._check(names, "clear"))

    async def snapshot(self) -> frozenset[str]:
        """The flags set now."""
        _, _, now = await self._op("any", self.names)
        return frozenset(now)

    async def is_set(self, name: str) -> bool:
        """Whether ``name`` is set now."""
        _, taken, _ = await self._op("any", self._check((name,), "is_set"))
        return bool(taken)

    async def wait_all(self, *names: str, clear: bool = False) -> frozenset[str]:
        """Wait until every one of ``names`` is set at once; ``clear`` consumes them."""
        return await self._wait("all!" if clear else "all", self._check(names, "wait_all"))

    async def wait_any(self, *names: str, clear: bool = False) -> frozenset[str]:
        """Wait until at least one of ``names`` is set; ``clear`` consumes ``names``."""
        return await self._wait("any!" if clear else "any", self._check(names, "wait_any"))

    def _give_back(self, names: tuple[str, ...], wait: str) -> None:
        """Set again what the consuming wait ``wait`` took, if its script ran (in a task
        of its own: the caller's cancellation goes on at once). Sent after the wait's own
        script, so it finds its record; a wait that took nothing gives nothing back."""
        task = asyncio.get_running_loop().create_task(self._op("back", names, wait))
        _giving_back.add(task)
        task.add_done_callback(_gave_back)

    async def _wait(self, op: str, names: tuple[str, ...]) -> frozenset[str]:
        connection = self.connection
        # The id of this wait: a consumption whose reply was lost is answered again, not
        # made twice (a second setting taken, the first lost).
        wait = uuid.uuid4().hex if op.endswith("!") else ""
        event = connection.watch(self.channel)
        try:
            while True:
                event.clear()
                try:
                    _, taken, now = await self._op(op, names, wait)
                except asyncio.CancelledError:
                    if wait:  # it may have consumed on the server: give that back
                        self._give_back(names, wait)
                    raise
                if taken:
                    return frozenset(now)
                await connection.pause(event, connection.poll)
        finally:
            connection.unwatch(self.channel, event)
