"""Alpaca's JSON shapes, rendered from the exchange's state.

Every function here is pure: it takes the sandbox's own objects (a
:class:`~trader.brokers.simulated.SimOrder`, the ledger, a calendar session)
and returns the dict Alpaca would send. The shapes follow
``/work/shared/docs/alpaca-protocol.md`` section 2.3: money as decimal
*strings* (:func:`trader.money.cents_str`), every key present with ``null``
where unset, strict enum values, ``class`` (not ``asset_class``) on assets,
``HH:MM`` calendar times.

What it is not: a parser. Request bodies are read in :mod:`trader.sandbox.rest`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from trader import calendar
from trader.brokers.ledger import Position
from trader.brokers.simulated import ExecReport, SimOrder
from trader.calendar import NEW_YORK, Session
from trader.money import cents_str, value_cents

NS_PER_SECOND = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_IDS = uuid.UUID("0b5d1f36-3f5e-4c1b-a3a8-5ad1b0c0ffee")

Json = dict[str, Any]


# --- time ----------------------------------------------------------------------


def rfc3339(ts_ns: int) -> str:
    """UTC nanoseconds as RFC 3339 with ``Z`` and only as many fraction digits as needed."""
    seconds, frac = divmod(ts_ns, NS_PER_SECOND)
    stamp = (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if not frac:
        return f"{stamp}Z"
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z"


def rfc3339_or_none(ts_ns: int | None) -> str | None:
    return None if ts_ns is None else rfc3339(ts_ns)


def eastern(ts_ns: int) -> str:
    """UTC nanoseconds as New York wall time with its offset, as ``/v2/clock`` sends it."""
    utc = _EPOCH + dt.timedelta(microseconds=ts_ns // 1000)
    return utc.astimezone(NEW_YORK).isoformat()


def to_datetime(ts_ns: int) -> dt.datetime:
    """UTC nanoseconds as an aware datetime (microsecond precision)."""
    return _EPOCH + dt.timedelta(microseconds=ts_ns // 1000)


def from_datetime(when: dt.datetime) -> int:
    """An aware datetime as UTC nanoseconds; naive means UTC (as alpaca-py sends it)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return ((when - _EPOCH) // dt.timedelta(microseconds=1)) * 1000


def parse_time(text: str) -> int:
    """RFC 3339 (``Z`` or offset, up to 9 fraction digits) or a date, as UTC nanoseconds.

    A bare date means midnight New York, as Alpaca reads ``start=2024-01-02``.

    Raises:
        ValueError: not a timestamp.
    """
    text = text.strip()
    if len(text) == 10:
        day = dt.date.fromisoformat(text)
        return from_datetime(dt.datetime.combine(day, dt.time(), tzinfo=NEW_YORK))
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    extra_ns = 0
    dot = text.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(text) and text[end].isdigit():
            end += 1
        digits = text[dot + 1 : end]
        if len(digits) > 6:  # fromisoformat keeps microseconds only
            extra_ns = int(digits[6:9].ljust(3, "0"))
            text = text[: dot + 7] + text[end:]
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return from_datetime(when) + extra_ns


# --- numbers -------------------------------------------------------------------


def num_str(x: float) -> str:
    """A float as the shortest plain decimal string (``"100"``, ``"0.25"``, never ``1e-05``)."""
    if x == 0:
        return "0"
    text = format(Decimal(repr(x)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def num_str_or_none(x: float | None) -> str | None:
    return None if x is None else num_str(x)


# --- ids -----------------------------------------------------------------------


def asset_id(symbol: str) -> str:
    """A stable UUID per symbol, so asset ids survive restarts."""
    return str(uuid.uuid5(_IDS, f"asset:{symbol}"))


def account_id(key_id: str) -> str:
    return str(uuid.uuid5(_IDS, f"account:{key_id}"))


def asset_class(symbol: str) -> str:
    return "crypto" if "/" in symbol else "us_equity"


def exchange_of(symbol: str) -> str:
    """A plausible listing venue: ``CRYPTO`` for pairs, else NYSE for 1-3 letter
    tickers and NASDAQ for longer ones (the old listing convention). Alpaca's
    enum has no ``IEX``, so the feed name must never leak in here."""
    if "/" in symbol:
        return "CRYPTO"
    return "NYSE" if len(symbol) <= 3 else "NASDAQ"


# --- objects -------------------------------------------------------------------


def order(
    o: SimOrder,
    *,
    status: str | None = None,
    replaced_by: str | None = None,
    replaces: str | None = None,
    legs: list[Json] | None = None,
) -> Json:
    """An Order object with every key Alpaca sends.

    Args:
        o: the exchange's order.
        status: override the status (``accepted`` in a submit response,
            ``replaced`` for an order canceled by a replace).
        replaced_by: id of the order that replaced this one.
        replaces: id of the order this one replaced.
        legs: a bracket entry's legs, rendered (None for any other order).
    """
    st = status or o.status
    replaced_at = o.canceled_ns if replaced_by is not None else None
    canceled_ns = None if replaced_by is not None else o.canceled_ns
    return {
        "id": o.id,
        "client_order_id": o.client_order_id,
        "created_at": rfc3339(o.created_ns),
        "updated_at": rfc3339(o.updated_ns),
        "submitted_at": rfc3339(o.created_ns),
        "filled_at": rfc3339_or_none(o.filled_ns),
        "expired_at": rfc3339_or_none(o.expired_ns),
        "expires_at": rfc3339_or_none(o.expires_ns),
        "canceled_at": rfc3339_or_none(canceled_ns),
        "failed_at": None,
        "replaced_at": rfc3339_or_none(replaced_at),
        "replaced_by": replaced_by,
        "replaces": replaces,
        "asset_id": asset_id(o.symbol),
        "symbol": o.symbol,
        "asset_class": asset_class(o.symbol),
        "notional": None if o.notional_cents is None else cents_str(o.notional_cents),
        "qty": num_str_or_none(o.qty),
        "filled_qty": num_str(o.filled_qty),
        "filled_avg_price": num_str_or_none(o.filled_avg_price),
        "order_class": o.order_class,
        "order_type": o.order_type,
        "type": o.order_type,
        "side": o.side,
        "position_intent": None,
        "time_in_force": o.time_in_force,
        "limit_price": num_str_or_none(o.limit_price),
        "stop_price": num_str_or_none(o.stop_price),
        "status": st,
        "extended_hours": False,
        "legs": legs,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
        "subtag": None,
        "source": None,
    }


def trade_update(report: ExecReport, order_json: Json, event: str | None = None) -> Json:
    """One trade-updates stream message (``timestamp`` always present: alpaca-py needs it)."""
    data: Json = {
        "event": event or report.event,
        "timestamp": rfc3339(report.ts_ns),
        "order": order_json,
    }
    if report.execution_id is not None:
        data["execution_id"] = report.execution_id
    if report.price is not None:
        data["price"] = num_str(report.price)
    if report.qty is not None:
        data["qty"] = num_str(report.qty)
    if report.position_qty is not None:
        data["position_qty"] = num_str(report.position_qty)
    return {"stream": "trade_updates", "data": data}


def position(
    pos: Position, *, last_price: float, lastday_price: float | None, available: float
) -> Json:
    """A Position object; values come from the ledger so they add up to the cent."""
    market_cents = value_cents(pos.qty, last_price)
    unrealized = market_cents - pos.cost_cents
    plpc = unrealized / abs(pos.cost_cents) if pos.cost_cents else 0.0
    ref = lastday_price if lastday_price is not None else last_price
    intraday = market_cents - value_cents(pos.qty, ref)
    ref_cents = abs(value_cents(pos.qty, ref))
    money = {
        "avg_entry_price": num_str(round(pos.avg_price, 6)),
        "market_value": cents_str(market_cents),
        "cost_basis": cents_str(pos.cost_cents),
        "unrealized_pl": cents_str(unrealized),
        "unrealized_plpc": num_str(round(plpc, 10)),
        "unrealized_intraday_pl": cents_str(intraday),
        "unrealized_intraday_plpc": num_str(round(intraday / ref_cents, 10) if ref_cents else 0.0),
        "current_price": num_str(last_price),
        "lastday_price": num_str(ref),
        "change_today": num_str(round(last_price / ref - 1, 10) if ref else 0.0),
    }
    return {
        "asset_id": asset_id(pos.symbol),
        "symbol": pos.symbol,
        "exchange": exchange_of(pos.symbol),
        "asset_class": asset_class(pos.symbol),
        "asset_marginable": False,
        "qty": num_str(pos.qty),
        "qty_available": num_str(available),
        "side": "long" if pos.qty > 0 else "short",
        **money,
    }


def asset(symbol: str) -> Json:
    fractionable = asset_class(symbol) == "us_equity"
    return {
        "id": asset_id(symbol),
        "class": asset_class(symbol),
        "exchange": exchange_of(symbol),
        "symbol": symbol,
        "name": symbol,
        "status": "active",
        "tradable": True,
        "marginable": False,
        "shortable": True,
        "easy_to_borrow": True,
        "fractionable": fractionable,
        "maintenance_margin_requirement": 100,
        "min_order_size": None,
        "min_trade_increment": None,
        "price_increment": None,
        "attributes": ["fractional_eh_enabled"] if fractionable else [],
    }


def clock(now_ns: int, *, is_open: bool, next_open_ns: int, next_close_ns: int) -> Json:
    return {
        "timestamp": eastern(now_ns),
        "is_open": is_open,
        "next_open": eastern(next_open_ns),
        "next_close": eastern(next_close_ns),
    }


def calendar_day(s: Session) -> Json:
    """One calendar entry; ``open``/``close`` are ``HH:MM`` (alpaca-py rejects seconds)."""
    opens = to_datetime(s.open_ns).astimezone(NEW_YORK)
    closes = to_datetime(s.close_ns).astimezone(NEW_YORK)
    return {
        "date": s.date.isoformat(),
        "open": opens.strftime("%H:%M"),
        "close": closes.strftime("%H:%M"),
        "session_open": "0400",
        "session_close": "2000",
        "settlement_date": _next_session_date(s.date).isoformat(),  # T+1
    }


def bar(
    t: Any,
    *,
    o: float,
    h: float,
    low: float,
    c: float,
    volume: float,
    trades: int | None,
    vwap: float | None,
) -> Json:
    """A Bar (REST and stream); ``n`` and ``vw`` are always present (alpaca-py needs
    the keys), ``null`` when the data has no trade count or VWAP."""
    return {
        "t": t,
        "o": o,
        "h": h,
        "l": low,
        "c": c,
        "v": int(volume) if volume.is_integer() else volume,
        "n": trades,
        "vw": vwap,
    }


def _next_session_date(day: dt.date) -> dt.date:
    later = calendar.sessions(day + dt.timedelta(days=1), day + dt.timedelta(days=10))
    return later[0].date if later else day + dt.timedelta(days=1)


def error(code: int, message: str, **extra: Any) -> Json:
    return {"code": code, "message": message, **extra}
