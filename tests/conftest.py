"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
from structlog.testing import capture_logs

import cohort


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
