"""``Coordinator``: one Redis server, one namespace, the primitives named in it."""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from cohort._core._policies import Gather, JoinPolicy
from cohort._validate import check_callable, check_count, check_seconds
from cohort.redis._barrier import Barrier
from cohort.redis._client import Connection
from cohort.redis._flags import EventFlags
from cohort.redis._group import Group, Member, group_refusal
from cohort.redis._latch import Latch
from cohort.redis._lock import Lock, RWLock, Semaphore

__all__ = ["Coordinator"]


class Coordinator:
    """Coordination of processes (on one machine or many) through one Redis server.

    ``async with Coordinator(url, namespace="jobs") as coord:`` opens one
    connection pool and one pub/sub subscription for the namespace; primitives
    created from it with the same name (and namespace, and server) are the
    same primitive in every process.

    Args:
        url: the server, as redis-py takes it: ``redis://host:6379/0``,
            ``unix:///run/redis.sock?db=0``, or ``rediss://host:6380/0`` for TLS,
            whose query may name ``ssl_ca_certs``, ``ssl_certfile``,
            ``ssl_keyfile``, ``ssl_cert_reqs`` and ``ssl_check_hostname``.
        namespace: a prefix of every key and channel; processes that must meet
            use the same one.
        lease: default lease of the primitives' grants, in seconds: how long
            the server keeps a grant whose holder stopped renewing it.
        poll: how often a waiter re-reads the state when no wake-up message
            came (pub/sub messages can be lost), in seconds.
        unreachable: how long calls retry an unreachable server before they
            raise :class:`cohort.CoordinatorLost`, in seconds.
        ssl: the TLS context of a ``rediss://`` URL, instead of the one its
            query describes.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        lease: float = 10.0,
        poll: float = 0.25,
        unreachable: float = 5.0,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise TypeError(f"Coordinator url must be a redis:// URL (a str), got {url!r}")
        if not isinstance(namespace, str) or not namespace:
            raise TypeError(f"Coordinator namespace must be a non-empty str, got {namespace!r}")
        self._lease = check_seconds("Coordinator lease", lease, zero=False, inf=False)
        poll = check_seconds("Coordinator poll", poll, zero=False, inf=False)
        unreachable = check_seconds("Coordinator unreachable", unreachable, zero=False, inf=False)
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise TypeError(f"Coordinator ssl must be an ssl.SSLContext or None, got {ssl!r}")
        self._connection = Connection(url, namespace, poll=poll, unreachable=unreachable, ssl=ssl)

    def __repr__(self) -> str:
        c = self._connection
        return f"<cohort.redis.Coordinator {c.url} namespace={c.namespace!r}>"

    @property
    def url(self) -> str:
        return self._connection.url

    @property
    def namespace(self) -> str:
        return self._connection.namespace

    async def __aenter__(self) -> Self:
        await self._connection.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._connection.close()

    def _lease_of(self, what: str, lease: float | None) -> float:
        if lease is None:
            return self._lease
        return check_seconds(f"{what} lease", lease, zero=False, inf=False)

    def lock(self, name: str, *, lease: float | None = None) -> Lock:
        """The lock ``name``: ``async with coord.lock("db") as lease: ... lease.token``.

        ``lease`` (seconds, default the coordinator's) bounds how long the lock
        stays held after its holder died or stopped renewing.
        """
        return Lock(self._connection, name, lease=self._lease_of("Lock", lease))

    def rwlock(self, name: str, *, lease: float | None = None) -> RWLock:
        """The reader-writer lock ``name``: ``async with coord.rwlock("cfg").reader: ...``
        or ``.writer``; writer-preferring, each grant a lease with a fencing token."""
        return RWLock(self._connection, name, lease=self._lease_of("RWLock", lease))

    def semaphore(self, name: str, permits: int, *, lease: float | None = None) -> Semaphore:
        """The semaphore ``name`` of ``permits`` permits: ``async with coord.semaphore("gpu",
        2) as lease: ...``; each permit is a lease of its own, with a fencing token.

        ``lease`` (seconds, default the coordinator's) bounds how long a dead
        holder's permit stays taken.
        """
        return Semaphore(
            self._connection,
            name,
            check_count("Semaphore permits", permits),
            lease=self._lease_of("Semaphore", lease),
        )

    def event_flags(self, name: str, *names: str) -> EventFlags:
        """The flags ``name`` with the flag names ``names``:
        ``await coord.event_flags("job", "ready", "done").wait_all("ready")``."""
        return EventFlags(self._connection, name, names)

    def latch(
        self, name: str, count: int, *, lease: float | None = None, party: str | None = None
    ) -> Latch:
        """The latch ``name``, open once ``count`` distinct tokens counted down.

        ``await coord.latch("loaded", 8).wait()``; a worker: ``async with
        coord.latch("loaded", 8) as latch: ...; await latch.count_down()``.
        ``party`` is this object's default token (and its name in errors);
        ``lease`` (seconds) bounds how long a joined party's death goes unnoticed.
        """
        if party is not None and (not isinstance(party, str) or not party):
            raise TypeError(f"Latch party must be a non-empty str or None, got {party!r}")
        return Latch(
            self._connection,
            name,
            check_count("Latch count", count, least=0),
            lease=self._lease_of("Latch", lease),
            party=party,
        )

    def barrier(
        self,
        name: str,
        parties: int,
        *,
        action: Callable[[], Awaitable[object] | object] | None = None,
        lease: float | None = None,
        party: str | None = None,
    ) -> Barrier:
        """One party of the barrier ``name`` of ``parties`` parties.

        ``async with coord.barrier("phase", 8) as b: await b.wait()``. ``party``
        names this party in the errors the others get (default: host, pid and a
        random suffix); ``lease`` (seconds) bounds how long a dead party goes
        unnoticed.
        """
        return Barrier(
            self._connection,
            name,
            check_count("Barrier parties", parties),
            lease=self._lease_of("Barrier", lease),
            action=check_callable("Barrier action", action, none=True),
            party=party,
        )

    def group(
        self,
        name: str,
        *,
        parties: int,
        join: JoinPolicy | None = None,
        timeout: float | None = None,
        on_timeout: str = "raise",
        lease: float | None = None,
    ) -> Group:
        """The coordinating side of the distributed group ``name`` of ``parties`` members.

        ``async with coord.group("job-7", parties=4, join=cohort.Quorum(2),
        timeout=30) as g: ...`` then ``g.results``; see :class:`Group`.
        ``join`` is any :class:`cohort.JoinPolicy` (``Gather()`` by default)
        that does not override ``on_spawn``; ``timeout`` (seconds from entry)
        and ``on_timeout`` (``"raise"`` or ``"partial"``) as for
        :class:`cohort.TaskGroup`; ``lease`` (seconds) bounds how long the
        members go on after this process died or hung.
        """
        join = Gather() if join is None else join
        refusal = group_refusal(join)
        if refusal is not None:
            raise TypeError(refusal)
        if on_timeout not in ("raise", "partial"):
            raise ValueError(f"Group on_timeout must be 'raise' or 'partial', got {on_timeout!r}")
        return Group(
            self._connection,
            name,
            check_count("Group parties", parties),
            join,
            timeout=check_seconds("Group timeout", timeout, none=True),
            on_timeout=on_timeout,
            lease=self._lease_of("Group", lease),
        )

    def member(self, group: str, *, name: str | None = None, lease: float | None = None) -> Member:
        """A member of the distributed group ``group``: ``async with coord.member("job-7",
        name="worker-3") as m: ...; await m.done(value)``; see :class:`Member`.

        ``name`` names it in the coordinator's errors (default: host, pid and a
        random suffix); ``lease`` (seconds) bounds how long its death goes
        unnoticed.
        """
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"Member name must be a non-empty str or None, got {name!r}")
        if not isinstance(group, str) or not group:
            raise TypeError(f"a cohort.redis group needs a non-empty str name, got {group!r}")
        return Member(self._connection, group, name=name, lease=self._lease_of("Member", lease))
