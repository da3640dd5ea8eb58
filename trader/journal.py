"""Reading the journal back: what a restarting daemon knows from before.

The recorder is the only writer; these are read-only queries used at start-up
(reconciliation, feed de-duplication, strategy warm-up) and by reports. They
read across runs, because a daemon's restart is a new run in the same file.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import msgspec

from trader.actors.recorder import connect_readonly
from trader.messages import BarClosed, BarsClosed, RiskStateChanged, decode

OPEN_STATES = ("pending_new", "new", "partially_filled")


class KnownOrder(msgspec.Struct, frozen=True, kw_only=True):
    """An order the journal last saw open, with what it had filled."""

    client_order_id: str
    symbol: str
    side: str
    status: str
    filled_qty: float
    avg_price: float | None


_EVENT_STATUS = {
    "submitted": "pending_new",
    "accepted": "new",
    "partially_filled": "partially_filled",
    "filled": "filled",
    "canceled": "canceled",
    "expired": "expired",
    "rejected": "rejected",
}


def known_open_orders(db_path: str | Path) -> list[KnownOrder]:
    """Orders whose latest journaled event is not final, across every run in the file.

    A daemon's restart is a new run in the same file, so an order's story may
    be spread over several runs: its status is its last event in insertion
    order, and its filled quantity counts each execution id once.
    """
    if not Path(db_path).exists():
        return []
    with connect_readonly(db_path) as db:
        if not _has_table(db, "order_events"):
            return []
        status: dict[str, str] = {}
        for coid, event in db.execute(
            "SELECT client_order_id, event FROM order_events ORDER BY rowid"
        ):
            if event in _EVENT_STATUS:
                status[coid] = _EVENT_STATUS[event]
        open_ids = [c for c, st in status.items() if st in OPEN_STATES]
        if not open_ids:
            return []
        filled = {
            coid: (qty, value)
            for coid, qty, value in db.execute(
                "SELECT client_order_id, SUM(qty), SUM(qty * price) FROM "
                "(SELECT DISTINCT execution_id, client_order_id, qty, price FROM fills) "
                "GROUP BY client_order_id"
            )
        }
        info = {
            coid: (symbol, side)
            for coid, symbol, side in db.execute(
                "SELECT client_order_id, symbol, side FROM orders"
            )
        }
    out = []
    for coid in open_ids:
        symbol, side = info.get(coid, ("", "buy"))
        qty, value = filled.get(coid, (0.0, 0.0))
        out.append(KnownOrder(
            client_order_id=coid, symbol=symbol, side=side, status=status[coid],
            filled_qty=round(qty or 0.0, 9), avg_price=(value / qty) if qty else None,
        ))
    return out


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


def last_positions(db_path: str | Path) -> dict[str, float]:
    """The quantity the journal last recorded per symbol (0.0 for a closed position).

    Across runs in order of their start, and within a run in the order the
    changes were journaled (reconciliation's broker truth, then fills).
    """
    if not Path(db_path).exists():
        return {}
    with contextlib.closing(connect_readonly(db_path)) as db:
        if not (_has_table(db, "positions") and _has_table(db, "runs")):
            return {}
        rows = db.execute(
            "SELECT p.symbol, p.qty FROM positions p JOIN runs r ON r.run_id = p.run_id "
            "ORDER BY r.started_wall_ns, p.seq"
        ).fetchall()
    return dict(rows)


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


def last_risk_state(db_path: str | Path) -> str:
    """The trading state risk last journaled, across every run in the file.

    ``"ACTIVE"`` when the file, the journal or any ``RiskStateChanged`` is
    missing. Runs are ordered by their start, records within a run by time
    (risk stamps its state changes in time order) and sequence.
    """
    if not Path(db_path).exists():
        return "ACTIVE"
    with contextlib.closing(connect_readonly(db_path)) as db:
        if not (_has_table(db, "journal") and _has_table(db, "runs")):
            return "ACTIVE"
        row = db.execute(
            "SELECT j.body FROM journal j JOIN runs r ON r.run_id = j.run_id "
            "WHERE j.type = 'RiskStateChanged' "
            "ORDER BY r.started_wall_ns DESC, j.ts_ns DESC, j.seq DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return "ACTIVE"
    msg = decode(row[0])
    return msg.state if isinstance(msg, RiskStateChanged) else "ACTIVE"
