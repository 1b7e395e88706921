"""Faults on one party's connection: a TCP proxy in the test forwards it to the server and
then black-holes it (the bytes stop flowing both ways, the connection stays open), as a
partitioned network or a stalled link would."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import cohort
from cohort.redis import Coordinator, LeaseLost

BOUND = 10.0
FAST = {"lease": 0.3, "poll": 0.05, "unreachable": 0.5}


class Proxy:
    """Forwards 127.0.0.1:port to the server; ``black_hole = True`` drops every byte since."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.black_hole = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task[None]] = set()

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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self._writers += [writer, up_writer]
        for pump in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not self.black_hole:
                    writer.write(data)
                    await writer.drain()
        writer.close()


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
