"""The test harness of cohort.redis: a real redis-server per test process."""

from __future__ import annotations

import socket

from _redis_server import RedisServer


def _ping(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64)


def test_the_shared_server_answers_ping_on_loopback(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert _ping(redis_server.port) == b"+PONG\r\n"


def test_each_test_gets_a_namespace_of_its_own(namespace: str) -> None:
    assert namespace.startswith("test-")
    assert len(namespace) == len("test-") + 32


def test_a_restarted_server_keeps_its_port_and_loses_its_state(
    own_redis_server: RedisServer,
) -> None:
    port = own_redis_server.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"SET k v\r\n")
        assert s.recv(64) == b"+OK\r\n"
    own_redis_server.restart()
    assert own_redis_server.port == port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"EXISTS k\r\n")
        assert s.recv(64) == b":0\r\n"
