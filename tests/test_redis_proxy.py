"""Faults on one party's connection: a TCP proxy in the test forwards it to the server and
then black-holes it (the bytes stop flowing both ways, the connection stays open), delays
it (latency added to every chunk) or drops it (closes it), as a partitioned network, a
slow link or a reset would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import cohort
from cohort.redis import Coordinator, LeaseLost

BOUND = 10.0
FAST: dict[str, Any] = {"lease": 0.3, "poll": 0.05, "unreachable": 0.5}


class Proxy:
    """Forwards 127.0.0.1:port to the server. ``black_hole = True`` drops every byte since;
    ``delay = s`` holds each chunk ``s`` seconds before forwarding it (in order; latency, not
    a throughput cap); ``drop()`` closes every connection it forwards now, and ``refuse =
    True`` closes new ones as soon as they come."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.black_hole = False
        self.mute_replies = False  # the server's replies only are dropped
        self.delay = 0.0
        self.refuse = False
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()
        self._came = asyncio.Event()

    async def accepted_at_least(self, count: int) -> None:
        """Wait until ``count`` connections came in all (refused ones included)."""
        while self.accepted < count:
            self._came.clear()
            await self._came.wait()

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop(self) -> None:
        """Close every connection forwarded now, both ways (a reset); new ones still come."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._came.set()
        if self.refuse:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer, replies=True)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool = False
    ) -> None:
        """Read chunks as they come; a second task forwards each when its delay is over."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while data := (item := await queue.get())[1]:  # b"": the end of the stream
                if (wait := item[0] - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if writer.is_closing():  # dropped
                    return
                if not self.black_hole and not (replies and self.mute_replies):
                    writer.write(data)
                    await writer.drain()

        forwarder = asyncio.create_task(forward())
        self._pumps.add(forwarder)
        forwarder.add_done_callback(self._pumps.discard)
        try:
            # A dropped connection: uvloop raises RuntimeError where asyncio raises
            # ConnectionError (the transport's handle is closed).
            with contextlib.suppress(ConnectionError, RuntimeError):
                while data := await reader.read(65536):
                    if not self.black_hole:
                        queue.put_nowait((loop.time() + self.delay, data))
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await forwarder
        finally:
            forwarder.cancel()
            writer.close()


@contextlib.asynccontextmanager
async def cut_and_direct(
    redis_url: str, namespace: str, bound: float, options: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Proxy, Coordinator, Coordinator]]:
    """A proxy to the server, a coordinator through it (``cut``: its replies can be muted,
    its connection dropped or black-holed) and one straight to the server, both made with
    ``options`` (by default a long lease and `unreachable` and a short poll: for a call
    whose reply is lost); all within ``bound`` seconds."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    if options is None:
        options = {"lease": 5.0, "poll": 0.05, "unreachable": 5.0}
    async with (
        Proxy(port) as proxy,
        Coordinator(proxy.url, namespace=namespace, **options) as cut,
        Coordinator(redis_url, namespace=namespace, **options) as direct,
        asyncio.timeout(bound),
    ):
        yield proxy, cut, direct


async def test_a_black_holed_party_breaks_the_barrier_and_itself_gets_coordinator_lost(
    redis_url: str, namespace: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        Proxy(port) as proxy,
        Coordinator(proxy.url, namespace=namespace, **FAST) as cut,
        Coordinator(redis_url, namespace=namespace, **FAST) as ok,
    ):
        victim = cut.barrier("phase", 3, party="cut-off")
        others = [ok.barrier("phase", 3, party=f"ok{i}") for i in range(2)]

        async def party(b: cohort.redis.Barrier) -> BaseException:
            try:
                async with b:
                    await b.wait()  # generation 0 passes: everyone is connected
                    if b is victim:
                        proxy.black_hole = True
                    await b.wait()
            except (cohort.BrokenBarrierError, cohort.CoordinatorLost) as exc:
                return exc
            pytest.fail(f"{b!r} passed a generation that a cut-off party never reached")

        async with asyncio.timeout(BOUND):
            victim_error, *errors = await asyncio.gather(*(party(b) for b in (victim, *others)))
    assert isinstance(victim_error, cohort.CoordinatorLost)
    for error in errors:
        assert isinstance(error, cohort.BrokenBarrierError)
        assert "cut-off's lease lapsed" in str(error)


async def test_a_black_holed_lock_holder_loses_its_lease_and_another_gets_a_larger_token(
    redis_url: str, namespace: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        Proxy(port) as proxy,
        Coordinator(proxy.url, namespace=namespace, **FAST) as cut,
        Coordinator(redis_url, namespace=namespace, **FAST) as ok,
    ):
        holding = asyncio.Event()
        reached_after = False

        async def holder() -> LeaseLost:
            nonlocal reached_after
            with pytest.raises(LeaseLost) as info:
                async with cut.lock("db"):
                    holding.set()
                    proxy.black_hole = True
                    await asyncio.Event().wait()  # cancelled by the loss
                    reached_after = True
            return info.value

        async def other() -> int:
            await holding.wait()
            async with ok.lock("db") as lease:
                return lease.token

        async with asyncio.timeout(BOUND):
            lost, token = await asyncio.gather(holder(), other())
    assert not reached_after
    assert token > lost.token
    assert "not renewed in time" in lost.reason or "coordinator" in lost.reason


async def test_a_delayed_connection_keeps_its_replies_in_order(
    redis_url: str, namespace: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        Proxy(port) as proxy,
        Coordinator(proxy.url, namespace=namespace, lease=5, poll=0.05, unreachable=5) as slow,
        asyncio.timeout(BOUND),
    ):
        proxy.delay = 0.02
        flags = slow.event_flags("f", "a", "b", "c")
        for name in ("a", "b", "c"):
            await flags.set(name)
        tokens = []
        for _ in range(3):
            async with slow.lock("l") as lease:
                tokens.append(lease.token)
        assert await flags.wait_all("a", "b", "c") == {"a", "b", "c"}
    assert tokens == sorted(set(tokens))


async def test_a_connection_delayed_past_the_lease_loses_the_lease_to_a_larger_token(
    redis_url: str, namespace: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        Proxy(port) as proxy,
        Coordinator(proxy.url, namespace=namespace, **FAST) as slow,
        Coordinator(redis_url, namespace=namespace, **FAST) as ok,
        asyncio.timeout(BOUND),
    ):
        holding = asyncio.Event()

        async def holder() -> LeaseLost:
            with pytest.raises(LeaseLost) as info:
                async with slow.lock("db"):
                    proxy.delay = 4 * FAST["lease"]  # every renewal comes back too late
                    holding.set()
                    await asyncio.Event().wait()  # cancelled by the loss
            return info.value

        async def other() -> int:
            await holding.wait()
            async with ok.lock("db") as lease:
                return lease.token

        lost, token = await asyncio.gather(holder(), other())
    assert token > lost.token


async def test_a_dropped_connection_is_made_again_and_the_holder_keeps_its_lease(
    redis_url: str, namespace: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        Proxy(port) as proxy,
        Coordinator(proxy.url, namespace=namespace, lease=5, poll=0.05, unreachable=5) as coord,
        asyncio.timeout(BOUND),
    ):
        async with coord.lock("db") as lease:
            before = proxy.accepted  # the scripts' connection and the subscription
            proxy.drop()
            await proxy.accepted_at_least(before + 1)  # the subscription, made again
            assert not lease.lost
        # The release went through a new connection and found the grant: no LeaseLost.
        assert proxy.accepted >= before + 2
        async with coord.lock("db") as again:
            assert again.token > lease.token


async def test_a_refused_party_gets_coordinator_lost_within_its_bound(
    redis_url: str, namespace: str
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    async with (
        Proxy(port) as proxy,
        Coordinator(proxy.url, namespace=namespace, **FAST) as cut,
        asyncio.timeout(BOUND),
    ):
        proxy.refuse = True
        proxy.drop()
        with pytest.raises(cohort.CoordinatorLost):
            await cut.event_flags("f", "a").set("a")
