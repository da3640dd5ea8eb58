"""Universe changes in replay: a symbol that stops early is delisted and its position closed
at its last close; a symbol that starts late has no signal before its first bar."""

from __future__ import annotations

import functools
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import anyio
import msgspec
import numpy as np
import pytest

from tests.builders import bar, broker_config, daily_closes, replay_config, submit, write_bars_csv
from trader.brokers.simulated import Exchange
from trader.config import decode_config
from trader.errors import BrokerRejected
from trader.messages import (
    BarClosed,
    OrderCanceled,
    PositionChanged,
    SignalEmitted,
    SubmitOrder,
    SymbolDelisted,
    decode,
)
from trader.money import value_cents
from trader.runner import ReplayOutcome, run_replay
from trader.strategies.sma_cross import SmaCross, SmaCrossParams
from trader.universe import Delistings

DAYS = daily_closes("2024-03-04", 8)  # Mon 4 March .. Wed 13 March 2024


class ScriptParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """No parameters: the script is fixed."""


class Script:
    """A test strategy with a fixed target weight at given bars: (symbol, nth bar) -> weight."""

    Params = ScriptParams
    WEIGHTS: ClassVar[dict[tuple[str, int], float]] = {
        ("AAA", 0): 0.4, ("XXX", 0): 0.4, ("XXX", 2): 0.0}

    def __init__(self, params: ScriptParams) -> None:
        self._seen: dict[str, int] = defaultdict(int)

    def on_bar(self, bar: BarClosed) -> float | None:
        n = self._seen[bar.symbol]
        self._seen[bar.symbol] = n + 1
        return self.WEIGHTS.get((bar.symbol, n))

    def on_position(self, symbol: str, qty: float) -> None:
        return None


SCRIPT = f"{Script.__module__}:{Script.__qualname__}"


def _bars() -> list[BarClosed]:
    """AAA trades every day at 50; XXX trades the first three days and then never again."""
    out = [bar("AAA", ts, 50.0, 50.5, 49.5, 50.0) for ts in DAYS]
    out += [bar("XXX", DAYS[0], 24.0, 24.5, 23.5, 24.0),
            bar("XXX", DAYS[1], 25.0, 25.5, 24.5, 25.5),
            bar("XXX", DAYS[2], 25.5, 26.5, 25.0, 26.0)]
    return sorted(out, key=lambda b: (b.ts_ns, b.symbol))


def _replay(tmp: Path, bars: list[BarClosed], strategy: str, params: dict[str, Any],
            batch: int, name: str) -> tuple[ReplayOutcome, Path]:
    write_bars_csv(tmp / name / "data" / "bars.csv", bars)
    db = tmp / name / "journal.db"
    config = decode_config(replay_config(
        data_dir=tmp / name / "data", db=db, strategy=strategy, params=params,
        batch_bars=batch,
        broker={"commission": {"model": "per_share", "per_share_usd": 0.01}},
    ))
    outcome = anyio.run(functools.partial(run_replay, config, db_path=str(db)))
    assert outcome.completed
    return outcome, db


def _journal(db: Path) -> list[tuple[str, Any]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT source, body FROM journal ORDER BY ts_ns, source, seq")
        return [(source, decode(body)) for source, body in rows]


def test_a_held_symbol_whose_data_ends_is_closed_at_its_last_close_to_the_cent(
    tmp_path: Path,
) -> None:
    """XXX, held and with a sell order open, stops trading after its third day: at the first
    bar of the next day its order is canceled and its 1599 shares are sold at its last close
    (26.00) without commission; cash, P&L and the journal agree to the cent."""
    outcome, db = _replay(tmp_path, _bars(), SCRIPT, {}, 4096, "held")
    journal = _journal(db)
    delisted = [(s, m) for s, m in journal if isinstance(m, SymbolDelisted)]
    # Worked by hand: 40% of $100,000 at XXX's open of 25.00 with $0.01 a share is
    # floor(40,000 / 25.01) = 1599 shares (39,975.00 + 15.99); AAA: floor(40,000 / 50.01)
    # = 799 shares at 50.00 (39,950.00 + 7.99). Closed at 26.00: 41,574.00, of which
    # 1,599.00 is profit.
    assert delisted == [("execution", SymbolDelisted(
        ts_ns=DAYS[3], symbol="XXX", qty=1599.0, price=26.0, realized_pnl_cents=159_900,
        last_bar_ns=DAYS[2]))]
    ledger = outcome.exchange.ledger
    assert ledger.cash_cents == 10_000_000 - 3_997_500 - 1_599 - 3_995_000 - 799 + 4_157_400
    assert ledger.positions["XXX"].qty == 0
    assert ledger.positions["XXX"].realized_cents == 159_900
    assert ledger.commissions_cents == 1_599 + 799  # nothing for the delisting

    with sqlite3.connect(db) as conn:
        orders = conn.execute("SELECT client_order_id, side, status, reason FROM orders"
                              " WHERE symbol = 'XXX' ORDER BY ts_ns").fetchall()
        fills = conn.execute("SELECT execution_id, ts_ns, symbol, side, qty, price,"
                             " commission_cents FROM fills ORDER BY ts_ns, symbol").fetchall()
        (final_equity,) = conn.execute(
            "SELECT equity_cents FROM equity ORDER BY ts_ns DESC LIMIT 1").fetchone()
        xxx_positions = conn.execute("SELECT ts_ns, qty, realized_pnl_cents FROM positions"
                                     " WHERE symbol = 'XXX' ORDER BY ts_ns, seq").fetchall()
    # The exit signalled on XXX's last bar never met a bar to fill on; the delisting canceled it.
    assert [(side, status, reason) for _, side, status, reason in orders] == [
        ("buy", "filled", None), ("sell", "canceled", "delisted")]
    delist_id = f"delist:XXX:{DAYS[3]}"
    assert (delist_id, DAYS[3], "XXX", "sell", 1599.0, 26.0, 0) in fills
    # The fills reconcile every position, the delisting included.
    net: dict[str, float] = defaultdict(float)
    for _, _, symbol, side, qty, _, _ in fills:
        net[symbol] += qty if side == "buy" else -qty
    assert dict(net) == {"AAA": 799.0, "XXX": 0.0}
    assert xxx_positions[-1] == (DAYS[3], 0.0, 159_900)
    assert final_equity == ledger.cash_cents + value_cents(799.0, 50.0)
    # Nothing about XXX after its delisting but the delisting's own consequences.
    later = [m for _, m in journal if getattr(m, "symbol", None) == "XXX" and m.ts_ns > DAYS[2]]
    assert {type(m) for m in later} == {SymbolDelisted, PositionChanged, OrderCanceled}
    assert not any(isinstance(m, SubmitOrder | SignalEmitted) for m in later)


def test_the_delisting_is_the_same_whatever_the_batch_size(tmp_path: Path) -> None:
    """batch_bars 1 and 4096 write the same fills, orders and delisting."""
    results = []
    for batch in (1, 4096):
        _, db = _replay(tmp_path, _bars(), SCRIPT, {}, batch, f"b{batch}")
        with sqlite3.connect(db) as conn:
            results.append((
                conn.execute("SELECT execution_id, ts_ns, symbol, side, qty, price,"
                             " commission_cents FROM fills ORDER BY ts_ns, execution_id"
                             ).fetchall(),
                conn.execute("SELECT client_order_id, status, filled_qty, reason FROM orders"
                             " ORDER BY client_order_id").fetchall(),
                conn.execute("SELECT ts_ns, equity_cents FROM equity ORDER BY ts_ns").fetchall(),
            ))
    assert results[0] == results[1]
    assert any(row[0].startswith("delist:") for row in results[0][0])


def test_a_symbol_that_ends_on_the_replays_last_day_is_not_delisted(tmp_path: Path) -> None:
    """Data that simply ends with the replay is no delisting: the position stays open."""
    bars = [b for b in _bars() if b.ts_ns <= DAYS[2]]
    outcome, db = _replay(tmp_path, bars, SCRIPT, {}, 4096, "end")
    assert not any(isinstance(m, SymbolDelisted) for _, m in _journal(db))
    assert outcome.exchange.ledger.positions["XXX"].qty == 1599.0


def test_delistings_fall_on_the_first_bar_of_a_later_day_only() -> None:
    """A symbol is delisted at the first timestamp on a New York day after its last bar's;
    not at a later bar of the same day, and not at all if nothing trades after that day."""
    minute = 60_000_000_000
    ts = [DAYS[0] - 2 * minute, DAYS[0] - minute, DAYS[0], DAYS[1] - minute, DAYS[1]]
    # A trades every bar; B stops two minutes before the first close; C at the first close.
    rows = sorted([(t, 0) for t in ts] + [(ts[0], 1), (ts[2], 2)])
    d = Delistings(np.array([r[0] for r in rows], dtype=np.int64),
                   np.array([r[1] for r in rows], dtype=np.int32), ["A", "B", "C"])
    first_next_day = [t for t, _ in rows].index(ts[3])
    assert len(d) == 1
    assert dict(d.at(first_next_day)) == {"B": ts[0], "C": ts[2]}
    assert dict(d.at(first_next_day - 1)) == {}
    assert d.next_after(0, 99) == first_next_day
    assert d.next_after(first_next_day, 99) == 99


def test_the_exchange_refuses_orders_for_a_delisted_symbol_and_delists_once() -> None:
    """After a delisting, a new order for the symbol is rejected (422), and delisting it
    again does nothing (a restarted replay feed must not close a position twice)."""
    ex = Exchange(broker_config())
    ex.on_bar(bar("XXX", DAYS[0], 10.0, 10.0, 10.0, 10.0))
    submit(ex, "buy-1", "XXX", "buy", now_ns=DAYS[0], qty=10)
    ex.on_bar(bar("XXX", DAYS[1], 10.0, 11.0, 10.0, 11.0))
    done = ex.delist("XXX", DAYS[2])
    assert done is not None
    assert (done.qty, done.price, done.realized_cents) == (10.0, 11.0, 1_000)
    assert ex.delist("XXX", DAYS[3]) is None
    with pytest.raises(BrokerRejected, match="not active"):
        submit(ex, "buy-2", "XXX", "buy", now_ns=DAYS[3], qty=1)


def _late_bars() -> list[BarClosed]:
    """AAA flat at 50 from the first day; LLL lists on the fourth day: 10, 9, 8, 12, 12.5."""
    out = [bar("AAA", ts, 50.0, 50.0, 50.0, 50.0) for ts in DAYS]
    for ts, c in zip(DAYS[3:], (10.0, 9.0, 8.0, 12.0, 12.5), strict=True):
        out.append(bar("LLL", ts, c, c, c, c))
    return sorted(out, key=lambda b: (b.ts_ns, b.symbol))


def test_a_late_starter_has_no_signal_before_its_first_bar_and_warms_up_from_it(
    tmp_path: Path,
) -> None:
    """LLL lists on day 4: nothing about it before then; sma_cross 2/3 first crosses up on
    its fourth bar (fast 10.0 > slow 9.67 after 8.5 < 9.0), exactly as on LLL's bars alone."""
    bars = _late_bars()
    _, db = _replay(tmp_path, bars, "sma_cross", {"fast": 2, "slow": 3}, 4096, "late")
    journal = [m for _, m in _journal(db)]
    first_bar = DAYS[3]
    about_lll = [m for m in journal
                 if getattr(getattr(m, "signal", m), "symbol", None) == "LLL"]
    assert about_lll
    assert min(m.ts_ns for m in about_lll) >= first_bar
    signals = [m for m in journal if isinstance(m, SignalEmitted) and m.symbol == "LLL"]
    assert [(s.ts_ns, s.target_weight) for s in signals] == [(DAYS[6], 1.0)]
    orders = [m for m in journal if isinstance(m, SubmitOrder) and m.symbol == "LLL"]
    assert [o.ts_ns for o in orders] == [DAYS[6]]
    # The same strategy on LLL's bars alone: the same signal at the same bar.
    alone = SmaCross(SmaCrossParams(fast=2, slow=3))
    weights = [(b.ts_ns, alone.on_bar(b)) for b in bars if b.symbol == "LLL"]
    assert [(t, w) for t, w in weights if w is not None] == [(DAYS[6], 1.0)]
    assert not any(isinstance(m, SymbolDelisted) for m in journal)  # it trades to the end
