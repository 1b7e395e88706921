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
