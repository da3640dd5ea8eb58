"""Logging: structlog, JSON lines on stderr unless stderr is a terminal.

stdout stays free for command output (``trader replay --json``); journald
collects both streams. Every line carries ``timestamp``, ``level``, ``event``
and, once bound, the ``run_id``. Secrets are redacted by a processor, so an
API key cannot reach a log line even if a caller passes it by mistake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

_SECRET_KEYS = ("secret", "password", "token", "api_key", "key_id", "authorization")
_secret_values: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret value so it is masked wherever it appears in a log line."""
    if value and len(value) >= 4:
        _secret_values.add(value)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "***"
    if _secret_values:
        for key, value in event.items():
            if isinstance(value, str):
                for secret in _secret_values:
                    if secret in value:
                        value = value.replace(secret, "***")
                event[key] = value
    return event


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is *now* (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(level: str = "info", *, stream: TextIO | None = None,
              json: bool | None = None) -> None:
    """Set up structlog for the process.

    Args:
        level: the minimum level.
        stream: where lines go (default stderr).
        json: force JSON (True) or console (False); default: JSON unless a TTY.
    """
    out: Any = stream or _CurrentStderr()
    as_json = json if json is not None else not out.isatty()
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    if as_json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def bind_run(run_id: str) -> None:
    """Attach the run id to every following log line."""
    structlog.contextvars.bind_contextvars(run_id=run_id)
