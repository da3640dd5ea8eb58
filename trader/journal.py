"""Reading the journal back: what a restarting daemon knows from before.

The recorder is the only writer; these are read-only queries used at start-up
(reconciliation, feed de-duplication, strategy warm-up) and by reports. They
read across runs, because a daemon's restart is a new run in the same file.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from trader.actors.recorder import connect_readonly
from trader.messages import BarClosed, BarsClosed, decode

OPEN_STATES = ("pending_new", "new", "partially_filled")


class KnownOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order the journal last saw open, with what it had filled."""

    client_order_id: str
    symbol: str
    side: str
    status: str
    filled_qty: float
    avg_price: float | None


def known_open_orders(db_path: str | Path) -> list[KnownOrder]:
    """Orders whose latest journal state is not terminal (across runs)."""
    if not Path(db_path).exists():
        return []
    with connect_readonly(db_path) as db:
        if not _has_table(db, "orders"):
            return []
        rows = db.execute(
            "SELECT client_order_id, symbol, side, status, filled_qty, avg_price FROM orders o "
            "WHERE updated_ns = (SELECT MAX(updated_ns) FROM orders i "
            "                    WHERE i.client_order_id = o.client_order_id) "
            "ORDER BY updated_ns, client_order_id"
        ).fetchall()
    seen: dict[str, KnownOrder] = {}
    for coid, symbol, side, status, filled, avg in rows:
        seen[coid] = KnownOrder(client_order_id=coid, symbol=symbol, side=side, status=status,
                                filled_qty=filled or 0.0, avg_price=avg)
    return [o for o in seen.values() if o.status in OPEN_STATES]


def recent_bars(db_path: str | Path, limit: int = 512) -> list[BarClosed]:
    """The last ``limit`` journaled bar batches' bars, oldest first (for warm-up)."""
    if not Path(db_path).exists():
        return []
    with connect_readonly(db_path) as db:
        if not _has_table(db, "journal"):
            return []
        bodies = db.execute(
            "SELECT body FROM journal WHERE type = 'BarsClosed' ORDER BY ts_ns DESC LIMIT ?",
            (limit,),
        ).fetchall()
    bars: dict[tuple[int, str], BarClosed] = {}
    for (body,) in reversed(bodies):
        msg = decode(body)
        if isinstance(msg, BarsClosed):
            for bar in msg.bars:
                bars[(bar.ts_ns, bar.symbol)] = bar
    return [bars[k] for k in sorted(bars)]


def last_seen(bars: list[BarClosed]) -> dict[str, int]:
    """The latest bar close per symbol."""
    out: dict[str, int] = {}
    for bar in bars:
        if bar.ts_ns > out.get(bar.symbol, 0):
            out[bar.symbol] = bar.ts_ns
    return out


def _has_table(db: object, name: str) -> bool:
    import sqlite3

    assert isinstance(db, sqlite3.Connection)
    return db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone() is not None
