"""Fixtures shared by the test modules."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import cohort
from _redis_server import MISSING, RedisServer


@pytest.fixture
def events() -> Iterator[list[MutableMapping[str, Any]]]:
    """Cohort's structlog events, switched on and captured for one test."""
    with capture_logs() as logs:
        cohort.enable_events()
        try:
            yield logs
        finally:
            cohort.enable_events(False)


@pytest.fixture(params=["spawn", "start_soon"])
def how(request: pytest.FixtureRequest) -> str:
    """How a test starts its children: ``TaskGroup.spawn`` or ``TaskGroup.start_soon``
    (for tests whose guarantees hold for both; see ``_util.start``)."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real ``redis-server`` per test process (per xdist worker), stopped at the end."""
    if shutil.which("redis-server") is None:
        pytest.skip(MISSING)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` for one test alone: for tests that stop or restart it."""
    if shutil.which("redis-server") is None:
        pytest.skip(MISSING)
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of this process's shared ``redis-server``."""
    return redis_server.url


@pytest.fixture
def namespace() -> str:
    """A namespace of this test's own: nothing it creates meets another test's keys."""
    return f"test-{uuid.uuid4().hex}"
