"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Put structlog's configuration back after each test.

    A test that runs the CLI in-process (``trader.cli.main``) configures
    structlog to print to the stderr pytest captured for that test; once that
    file is closed, every later log line would raise.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
