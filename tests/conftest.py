"""Fixtures for the whole suite."""

from __future__ import annotations

import os
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


@pytest.fixture(autouse=True, scope="session")
def _no_proxy_for_localhost() -> Iterator[None]:
    """Keep ``requests`` (alpaca-py's REST) from sending 127.0.0.1 through a proxy."""
    saved = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")}
    for k in saved:
        os.environ[k] = ",".join(filter(None, [saved[k], "127.0.0.1", "localhost"]))
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
