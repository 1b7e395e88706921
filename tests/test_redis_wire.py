"""The pipelined RESP connection of cohort.redis: replies matched in order, cancelled
callers, cut replies, a server that does not answer."""

from __future__ import annotations

import asyncio

import pytest

import cohort
from _redis_server import RedisServer
from cohort.redis import Coordinator
from cohort.redis._wire import ReplyError, Wire, _parse, encode

BOUND = 10.0


def test_replies_cut_anywhere_parse_the_same() -> None:
    reply = b"*4\r\n:12\r\n$5\r\nhello\r\n$-1\r\n*2\r\n+OK\r\n-ERR bad\r\n"
    value, end = _parse(reply, 0)
    assert end == len(reply)
    assert isinstance(value, list)
    assert value[:3] == [12, "hello", None]
    assert value[3][0] == "OK"
    assert isinstance(value[3][1], ReplyError)
    for cut in range(len(reply)):
        with pytest.raises(Exception) as info:
            _parse(reply[:cut], 0)
        assert type(info.value).__name__ == "_Incomplete"


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert encode(("GET", "k", 3)) == b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$1\r\n3\r\n"
    with pytest.raises(TypeError, match="str, bytes or a number"):
        encode(("GET", None))


async def test_concurrent_calls_get_their_own_replies(redis_server: RedisServer) -> None:
    wire = Wire(port=redis_server.port, timeout=BOUND)
    try:
        replies = await asyncio.gather(*(wire.call("ECHO", f"m{i}") for i in range(50)))
        assert replies == [f"m{i}" for i in range(50)]
    finally:
        wire.close()


async def test_a_cancelled_callers_reply_is_dropped_and_the_stream_stays_in_step(
    redis_server: RedisServer,
) -> None:
    wire = Wire(port=redis_server.port, timeout=BOUND)
    try:
        await wire.call("PING")
        first = asyncio.create_task(wire.call("ECHO", "first"))
        await asyncio.sleep(0)  # the command is written
        first.cancel()
        assert await wire.call("ECHO", "second") == "second"
        with pytest.raises(ReplyError, match="wrong number of arguments"):
            await wire.call("GET")
        assert await wire.call("ECHO", "third") == "third"
    finally:
        wire.close()


async def test_a_server_that_never_answers_raises_coordinator_lost_within_the_bound() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def black_hole(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        coord = Coordinator(f"redis://127.0.0.1:{port}/0", namespace="x", unreachable=0.2)
        with pytest.raises(cohort.CoordinatorLost, match="did not answer"):
            async with asyncio.timeout(BOUND):
                await coord.__aenter__()
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


def test_urls_other_than_redis_rediss_and_unix_raise_at_the_call_site() -> None:
    with pytest.raises(ValueError, match="redis://, rediss:// \\(TLS\\) or unix://"):
        Coordinator("http://127.0.0.1:6379/0", namespace="x")


async def test_a_connection_lost_as_soon_as_it_is_made_fails_the_call_instead_of_hanging() -> None:
    # A server (or proxy) that accepts, answers AUTH and closes at once: the loss comes
    # before the request is written; the call must fail (its caller retries), not wait.
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"+OK\r\n")
        writer.transport.abort()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(5):
            wire = Wire(port=port, password="pw", timeout=60)  # no watchdog before 60 s
            try:
                with pytest.raises(ConnectionError):
                    async with asyncio.timeout(BOUND):
                        await wire.call("PING")
            finally:
                wire.close()
    finally:
        server.close()
        await server.wait_closed()
