"""Request parsing and error responses shared by the sandbox's HTTP handlers.

alpaca-py sends query booleans as ``True``/``False``, datetimes with ``+00:00``,
lists comma-joined, and JSON *numbers* where Alpaca's docs say strings; every
parser here accepts all of those. A bad parameter raises :class:`RequestError`,
which :func:`trader.sandbox.app` turns into Alpaca's ``{"code", "message"}`` body.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from trader.errors import BrokerRejected
from trader.sandbox.wire import error, parse_time

_encoder = msgspec.json.Encoder()


class RequestError(Exception):
    """A request the sandbox refuses, with its HTTP status and Alpaca error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(message: str) -> RequestError:
    """Alpaca's validation failure: HTTP 422, code 40010001."""
    return RequestError(422, 40010001, message)


def rejected(exc: BrokerRejected) -> RequestError:
    """An exchange refusal as the HTTP error Alpaca would send."""
    code = int(exc.code) if exc.code.isdigit() else exc.status * 100_000
    return RequestError(exc.status or 422, code, exc.reason)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


def error_response(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encoder.encode(error(code, message)),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    low = raw.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise invalid(f"invalid {name}: {raw!r}")


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"invalid {name}: {raw!r}") from None
    if not lo <= value <= hi:
        raise invalid(f"{name} must be between {lo} and {hi}")
    return value


def query_time(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    # An unescaped "+00:00" arrives as " 00:00" (form decoding); take it back.
    raw = raw.replace(" ", "+")
    try:
        return parse_time(raw)
    except ValueError:
        raise invalid(f"invalid {name}: {raw!r}") from None


def query_choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in choices:
        raise invalid(f"invalid {name}: {raw!r} (one of {', '.join(choices)})")
    return raw.lower()


def query_list(request: web.Request, name: str) -> list[str]:
    raw = request.query.get(name, "")
    return [s.strip() for s in raw.split(",") if s.strip()]


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object.

    Raises:
        RequestError: not JSON, or not an object (400).
    """
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw) if raw else {}
    except msgspec.DecodeError:
        raise RequestError(400, 40010000, "request body format is invalid") from None
    if not isinstance(body, dict):
        raise RequestError(400, 40010000, "request body must be a JSON object")
    return body


def number(body: Mapping[str, Any], name: str) -> float | None:
    """A decimal field sent as a JSON number or a string; None when absent or null.

    Raises:
        RequestError: not a positive finite number (422).
    """
    raw = body.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise invalid(f"invalid {name}")
    try:
        value = float(raw)
    except ValueError:
        raise invalid(f"invalid {name}: {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise invalid(f"{name} must be > 0")
    return value
