"""Message builders for tests: bars on real NYSE sessions, configs, orders and bar files.

Every timestamp comes from :mod:`trader.calendar`, so a test bar closes when a
real bar could have closed (a daily bar at the session's close, a minute bar
inside its session). This module holds builders only, no assertions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trader import calendar
from trader.brokers.simulated import Exchange, ExecReport
from trader.config import BrokerConfig, CommissionConfig
from trader.messages import BarClosed, OrderType, Side, TimeInForce
from trader.money import to_cents

_NS_PER_MINUTE = 60 * 1_000_000_000


def session(day: str) -> calendar.Session:
    """The NYSE session held on ISO date ``day`` (it must be a trading day)."""
    s = calendar.session_for(dt.date.fromisoformat(day))
    if s is None:
        raise ValueError(f"{day} is not an NYSE session")
    return s


def close_of(day: str) -> int:
    """The close of the session on ``day``: when that day's daily bar closes (UTC ns)."""
    return session(day).close_ns


def at(day: str, hhmm: str) -> int:
    """New York wall time ``hhmm`` on session ``day`` as UTC ns, e.g. ``at("2024-03-05", "10:01")``.

    The instant must lie inside the session (its close included: the last
    minute bar closes at the closing bell).
    """
    s = session(day)
    hours, minutes = (int(part) for part in hhmm.split(":"))
    local = dt.datetime.combine(s.date, dt.time(hours, minutes), tzinfo=calendar.NEW_YORK)
    ts = int(local.timestamp()) * 1_000_000_000
    if not s.open_ns < ts <= s.close_ns:
        raise ValueError(f"{day} {hhmm} is outside the session")
    return ts


def daily_closes(first: str, count: int) -> list[int]:
    """The closes of ``count`` consecutive sessions starting on ``first``."""
    start = dt.date.fromisoformat(first)
    days = calendar.sessions(start, start + dt.timedelta(days=2 * count + 10))
    if len(days) < count or days[0].date != start:
        raise ValueError(f"{first} is not a session or the range is too short")
    return [s.close_ns for s in days[:count]]


def minute_closes(first: str, count: int) -> list[int]:
    """The closes of ``count`` consecutive regular-hours minute bars from the session on ``first``.

    Minute bars close one minute after each minute of the session starts, the
    last one at the closing bell; they continue into later sessions as needed.
    """
    out: list[int] = []
    day = dt.date.fromisoformat(first)
    if calendar.session_for(day) is None:
        raise ValueError(f"{first} is not an NYSE session")
    while len(out) < count:
        s = calendar.session_for(day)
        day += dt.timedelta(days=1)
        if s is None:
            continue
        ts = s.open_ns + _NS_PER_MINUTE
        while ts <= s.close_ns and len(out) < count:
            out.append(ts)
            ts += _NS_PER_MINUTE
    return out


def bar(
    symbol: str,
    ts_ns: int,
    o: float,
    h: float,
    lo: float,
    c: float,
    v: float = 1_000_000.0,
) -> BarClosed:
    """A closed bar of ``symbol`` that became known at ``ts_ns``."""
    if not (lo <= min(o, c) and max(o, c) <= h and lo > 0):
        raise ValueError(f"crossed bar: o={o} h={h} l={lo} c={c}")
    return BarClosed(ts_ns=ts_ns, symbol=symbol, open=o, high=h, low=lo, close=c, volume=v)


def broker_config(
    *,
    cash_usd: float = 100_000.0,
    bps: float = 0.0,
    per_share_usd: float = 0.0,
    minimum_usd: float = 0.0,
    slippage_bps: float = 0.0,
    fractional: bool = False,
    max_participation: float = 1.0,
) -> BrokerConfig:
    """A simulated broker's rules; per-share commission when ``per_share_usd`` is set."""
    commission = (
        CommissionConfig(model="per_share", per_share_usd=per_share_usd, minimum_usd=minimum_usd)
        if per_share_usd or minimum_usd
        else CommissionConfig(model="bps", bps=bps)
    )
    return BrokerConfig(
        cash_usd=cash_usd,
        commission=commission,
        slippage_bps=slippage_bps,
        fractional=fractional,
        max_participation=max_participation,
    )


def submit(
    exchange: Exchange,
    client_order_id: str,
    symbol: str,
    side: Side,
    *,
    now_ns: int,
    qty: float | None = None,
    notional_usd: float | None = None,
    order_type: OrderType = "market",
    limit_price: float | None = None,
    stop_price: float | None = None,
    time_in_force: TimeInForce = "day",
) -> ExecReport:
    """Submit one order to ``exchange`` at ``now_ns`` (a signal bar's close)."""
    return exchange.submit(
        client_order_id=client_order_id,
        symbol=symbol,
        side=side,
        qty=qty,
        notional_cents=None if notional_usd is None else to_cents(notional_usd),
        order_type=order_type,
        limit_price=limit_price,
        stop_price=stop_price,
        time_in_force=time_in_force,
        now_ns=now_ns,
    )


def fills(reports: Iterable[ExecReport]) -> list[tuple[float | None, float | None]]:
    """``(qty, price)`` of each fill or partial fill among ``reports``."""
    return [(r.qty, r.price) for r in reports if r.event in ("fill", "partial_fill")]


def iso_ts(ts_ns: int) -> str:
    """UTC ns as the RFC 3339 ``ts`` a bar CSV carries, e.g. ``2024-03-05T15:01:00Z``."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    text = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ns:09d}Z" if ns else f"{text}Z"


def write_bars_csv(path: Path, bars: Iterable[BarClosed]) -> Path:
    """Write ``bars`` as a bar CSV (the replay data format) at ``path``; returns ``path``."""
    lines = ["symbol,ts,open,high,low,close,volume"]
    lines.extend(
        f"{b.symbol},{iso_ts(b.ts_ns)},{b.open!r},{b.high!r},{b.low!r},{b.close!r},{b.volume!r}"
        for b in bars
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def replay_config(
    *,
    data_dir: Path,
    db: Path,
    strategy: str,
    params: dict[str, Any] | None = None,
    batch_bars: int = 4096,
    broker: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A replay's config document (decode it with ``trader.config.decode_config``)."""
    return {
        "run": {"db": str(db)},
        "data": {"dir": str(data_dir)},
        "replay": {"batch_bars": batch_bars},
        "strategy": {"name": strategy, "params": params or {}},
        "broker": broker or {},
    }
