"""Logging: structlog, JSON lines on stderr unless stderr is a terminal.

stdout stays free for command output (``trader replay --json``); journald
collects both streams. Every line carries ``timestamp``, ``level``, ``event``
and, once bound, the ``run_id``. Secrets are redacted by a processor, so an
API key cannot reach a log line even if a caller passes it by mistake.

Levels: one default (``--log-level``, ``[logging] level``, ``[run]
log_level``) and optionally one per actor (``[logging.actors]``), so
``risk = "debug"`` shows risk's reasoning without the feed's chatter.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
# What each logging method weighs; ``exception`` logs at error.
_METHOD_LEVELS = {**_LEVELS, "warn": logging.WARNING, "exception": logging.ERROR,
                  "critical": logging.CRITICAL, "fatal": logging.CRITICAL}

#: The actor a logger speaks for (``[logging.actors]``): the module that logs,
#: so a line is filtered by who said it, not by whom it mentions.
LOGGER_ACTORS = {
    "trader.feed": "feed",
    "trader.replay": "feed",
    "trader.strategy": "strategy",
    "trader.scorer": "scorer",
    "trader.risk": "risk",
    "trader.execution": "execution",
    "trader.brokers.alpaca": "execution",
    "trader.recorder": "recorder",
}

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


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that remembers the name it was asked for (``get_logger(name)``),
    which structlog's own factory drops, so processors can filter by it."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        name = args[0] if args and isinstance(args[0], str) else ""
        return _NamedPrintLogger(self._file, name)


def _actor_filter(default: int, actors: Mapping[str, int]) -> Any:
    """A processor dropping lines below their actor's level (or the default)."""

    def drop_below_level(
        logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        actor = LOGGER_ACTORS.get(getattr(logger, "name", ""))
        threshold = actors.get(actor, default) if actor is not None else default
        if _METHOD_LEVELS.get(method, logging.CRITICAL) < threshold:
            raise structlog.DropEvent
        return event

    return drop_below_level


def configure(level: str = "info", *, stream: TextIO | None = None,
              json: bool | None = None, actors: Mapping[str, str] | None = None) -> None:
    """Set up structlog for the process.

    Args:
        level: the minimum level.
        stream: where lines go (default stderr).
        json: force JSON (True) or console (False); default: JSON unless a TTY.
        actors: a minimum level per actor (``[logging.actors]``), below or
            above ``level``; see :data:`LOGGER_ACTORS` for which loggers
            belong to which actor.

    Raises:
        KeyError: a level that is not debug, info, warning or error (the
            config has already refused it with the field's name).
    """
    out: Any = stream or _CurrentStderr()
    as_json = json if json is not None else not out.isatty()
    default = _LEVELS[level]
    per_actor = {actor: _LEVELS[lv] for actor, lv in (actors or {}).items()}
    processors: list[Any] = []
    if per_actor:
        # The bound logger lets through the lowest level anyone wants; this
        # processor then holds each line to its own actor's level. Without
        # per-actor levels it is left out, so a debug call stays free.
        processors.append(_actor_filter(default, per_actor))
    processors += [
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
        wrapper_class=structlog.make_filtering_bound_logger(
            min([default, *per_actor.values()])),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def bind_run(run_id: str) -> None:
    """Attach the run id to every following log line."""
    structlog.contextvars.bind_contextvars(run_id=run_id)
