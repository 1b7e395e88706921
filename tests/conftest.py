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
from _ledger import Ledger
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


# -- durable ledgers: the same durability tests on SQLite and on Postgres ---------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A throw-away PostgreSQL cluster for this test session (this xdist worker):
    skipped, with one line saying what to install, when the binaries are missing."""
    from _pg_server import find_bin_dir, server

    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/ensure-postgres"
        )
    pytest.importorskip("psycopg", reason="psycopg 3 missing: pip install 'cohort[postgres]'")
    with server(bin_dir) as pg:
        yield pg


@pytest.fixture
def pg_dsn(pg_server: Any) -> str:
    """A fresh empty schema on the session's Postgres server; a URL that uses it."""
    dsn: str = pg_server.new_schema()
    return dsn


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Any) -> Ledger:
    """The ledger of a durability test, once on SQLite and once on Postgres."""
    if request.param == "sqlite":
        return Ledger("sqlite", tmp_path / "runs.db")
    return Ledger("postgres", request.getfixturevalue("pg_dsn"))


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
