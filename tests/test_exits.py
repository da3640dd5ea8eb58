"""Per-position exits: stop loss, take profit and trailing stop, emulated by risk.

The replays below are worked by hand. A strategy that enters once
(:class:`EnterOnce`) signals at the first bar's close of 100.00; half of the
$100,000 account buys 500 shares at the next bar's open of 100.00. An exit is
a market order sent at the close of the bar that breached a level, so it
fills at the following bar's open, whatever that open is.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from prometheus_client import CollectorRegistry

from tests.builders import bar, daily_closes, write_bars_csv
from tests.messages_sample import SAMPLE
from tests.test_risk import Risk, bars, filled, holding, only, signal
from trader.config import decode_config
from trader.errors import ConfigError
from trader.exits import Exits
from trader.messages import (
    BarClosed,
    BarsClosed,
    ExitTriggered,
    FlattenAll,
    OrderCanceled,
    SubmitOrder,
    decode,
)
from trader.metrics import Metrics
from trader.runner import ReplayOutcome, run_replay

DAYS = daily_closes("2024-03-04", 8)

# --- a strategy that enters once and never exits by itself ---------------------------


class EnterOnce:
    """Target ``weight`` at the first bar of each symbol, then hold whatever happens."""

    class Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        weight: float = 0.5

    def __init__(self, params: EnterOnce.Params) -> None:
        self._weight = params.weight
        self._seen: set[str] = set()

    def on_bar(self, bar: BarClosed) -> float | None:
        if bar.symbol in self._seen:
            return None
        self._seen.add(bar.symbol)
        return self._weight

    def on_position(self, symbol: str, qty: float) -> None:
        return None


Ohlc = tuple[float, float, float, float]


def _replay(tmp_path: Path, ohlc: list[Ohlc], *, weight: float = 0.5,
            **risk: Any) -> tuple[ReplayOutcome, list[Any], list[tuple[Any, ...]]]:
    """Replay daily bars of X (one per session from DAYS[0]); return the outcome, the
    journal in key order and the fills (client order id, ts, side, qty, price)."""
    data = tmp_path / "bars"
    write_bars_csv(data / "X.csv", [bar("X", ts, *b) for ts, b in zip(DAYS, ohlc, strict=False)])
    db = tmp_path / "exits.db"
    config = decode_config({
        "run": {"db": str(db)},
        "data": {"dir": str(data)},
        "strategy": {"name": "tests.test_exits:EnterOnce", "instance": "t",
                     "params": {"weight": weight}},
        "risk": risk,
    })

    async def main() -> ReplayOutcome:
        return await run_replay(config)

    outcome = anyio.run(main)
    with sqlite3.connect(db) as conn:
        journal = [decode(body) for (body,) in conn.execute(
            "SELECT body FROM journal ORDER BY ts_ns, source, seq")]
        fills = conn.execute("SELECT client_order_id, ts_ns, side, qty, price FROM fills "
                             "ORDER BY ts_ns").fetchall()
    return outcome, journal, fills


def _of(journal: list[Any], kind: type[Any]) -> list[Any]:
    return [m for m in journal if isinstance(m, kind)]


# --- replays worked by hand -------------------------------------------------------------


def test_a_long_position_is_stopped_out_at_the_open_after_the_breaching_bar(
    tmp_path: Path,
) -> None:
    """Stop 5% under 100.00 = 95.00; the bar of DAYS[2] trades down to 94.50, so the position
    is sold at the next open, which gaps to 93.00: 500 x (93.00 - 100.00) = -$3,500.00."""
    outcome, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),  # the signal
        (100.0, 102.0, 98.0, 101.0),  # bought 500 at 100.00; low 98 is above the stop
        (101.0, 101.5, 94.5, 96.0),  # low 94.50 <= 95.00: the stop is breached
        (93.0, 94.0, 92.0, 93.5),  # sold at this open, a gap under the stop
        (93.5, 94.0, 90.0, 91.0),  # flat: nothing more happens
    ], stop_loss_pct=5.0)

    assert fills == [
        (f"t:X:{DAYS[0]}:buy", DAYS[1], "buy", 500.0, 100.0),
        (f"t:X:{DAYS[2]}:stop_loss", DAYS[3], "sell", 500.0, 93.0),
    ]
    trigger = only(_of(journal, ExitTriggered))
    assert (trigger.ts_ns, trigger.reason, trigger.qty) == (DAYS[2], "stop_loss", 500.0)
    assert (trigger.entry_price, trigger.level, trigger.price) == (100.0, 95.0, 94.5)
    ledger = outcome.exchange.ledger
    assert ledger.qty("X") == 0
    assert ledger.positions["X"].realized_cents == -350_000
    assert ledger.cash_cents == 9_650_000  # $100,000 - $3,500.00


def test_take_profit_sells_after_the_bar_that_reaches_it_exactly(tmp_path: Path) -> None:
    """Take profit 10% over 100.00 = 110.00; a high of exactly 110.00 reaches it, and the
    sale at the next open of 109.50 makes 500 x 9.50 = $4,750.00."""
    outcome, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 105.0, 99.5, 104.0),
        (104.0, 110.0, 103.0, 109.0),  # high 110.00 = the level
        (109.5, 111.0, 108.0, 110.5),
    ], take_profit_pct=10.0, stop_loss_pct=5.0)

    assert fills[1] == (f"t:X:{DAYS[2]}:take_profit", DAYS[3], "sell", 500.0, 109.5)
    trigger = only(_of(journal, ExitTriggered))
    assert (trigger.reason, trigger.level, trigger.price) == ("take_profit", 110.0, 110.0)
    assert outcome.exchange.ledger.positions["X"].realized_cents == 475_000


def test_a_trailing_stop_follows_the_rise_and_sells_on_the_fall(tmp_path: Path) -> None:
    """Trail 10% under the high-water mark: 104 -> 112 -> 120 lift it to 108.00, a
    fall to a low of 108.00 breaches it, and the next open of 108.50 makes $4,250.00.
    The dip to 99.00 right after entry is above the trail of 90.00 then in force."""
    outcome, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 104.0, 99.0, 103.0),  # entry 100; trail 90.00 -> 93.60 after this bar
        (103.0, 112.0, 102.0, 111.0),  # trail -> 100.80
        (111.0, 120.0, 110.0, 118.0),  # trail -> 108.00
        (118.0, 119.0, 108.0, 109.0),  # low 108.00 <= 108.00
        (108.5, 110.0, 107.0, 109.0),
    ], trailing_stop_pct=10.0)

    assert fills[1] == (f"t:X:{DAYS[4]}:trailing_stop", DAYS[5], "sell", 500.0, 108.5)
    trigger = only(_of(journal, ExitTriggered))
    assert (trigger.reason, trigger.level, trigger.price) == ("trailing_stop", 108.0, 108.0)
    assert outcome.exchange.ledger.positions["X"].realized_cents == 425_000


def test_a_short_position_is_stopped_out_above_its_entry(tmp_path: Path) -> None:
    """Mirrored: short 500 at 100.00, stop 5% above = 105.00; a high of 105.50 breaches it
    and the buy at the next open of 106.00 loses 500 x 6.00 = $3,000.00."""
    outcome, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 102.0, 98.0, 101.0),  # sold short 500 at 100.00
        (101.0, 105.5, 100.0, 104.0),  # high 105.50 >= 105.00
        (106.0, 107.0, 105.0, 106.5),
    ], weight=-0.5, allow_short=True, stop_loss_pct=5.0, take_profit_pct=20.0)

    assert fills == [
        (f"t:X:{DAYS[0]}:sell", DAYS[1], "sell", 500.0, 100.0),
        (f"t:X:{DAYS[2]}:stop_loss", DAYS[3], "buy", 500.0, 106.0),
    ]
    trigger = only(_of(journal, ExitTriggered))
    assert (trigger.reason, trigger.level, trigger.price) == ("stop_loss", 105.0, 105.5)
    ledger = outcome.exchange.ledger
    assert ledger.qty("X") == 0
    assert ledger.positions["X"].realized_cents == -300_000
    assert ledger.cash_cents == 9_700_000


def test_exits_are_off_by_default_and_the_position_rides_the_fall(tmp_path: Path) -> None:
    """Without [risk] exit levels the same crash sends no exit: only the entry fills."""
    outcome, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 102.0, 98.0, 101.0),
        (101.0, 101.5, 94.5, 96.0),
        (93.0, 94.0, 92.0, 93.5),
        (93.5, 94.0, 50.0, 51.0),
    ])

    assert [f[0] for f in fills] == [f"t:X:{DAYS[0]}:buy"]
    assert not _of(journal, ExitTriggered)
    assert outcome.exchange.ledger.qty("X") == 500.0


# --- the risk actor, message by message -------------------------------------------------


def _long_x(r: Risk, *, price: float = 100.0) -> SubmitOrder:
    """Buy 500 X at ``price`` (signal at DAYS[0], fill at DAYS[1])."""
    r.send(bars(DAYS[0], X=price))
    buy = only(r.get(SubmitOrder, signal(DAYS[0], "X", 0.5, price)))
    r.send(filled(buy, 500.0, price, DAYS[1]))
    return buy


def _bar(ts: int, o: float, h: float, lo: float, c: float) -> BarsClosed:
    return BarsClosed(ts_ns=ts, bars=(bar("X", ts, o, h, lo, c),))


def test_no_second_exit_order_while_the_first_is_open_and_another_after_it_is_canceled(
) -> None:
    """Bars that keep breaching while the stop's order is open send nothing more; if that
    order is canceled, the next breach sends a new one, under that bar's own id."""
    r = Risk(stop_loss_pct=5.0)
    _long_x(r)
    first = only(r.get(SubmitOrder, _bar(DAYS[1], 100.0, 101.0, 94.0, 95.0)))
    assert (first.client_order_id, first.side, first.qty) == (
        f"t:X:{DAYS[1]}:stop_loss", "sell", 500.0)
    assert r.get(SubmitOrder, _bar(DAYS[2], 95.0, 96.0, 90.0, 91.0)) == []

    r.send(OrderCanceled(ts_ns=DAYS[3], client_order_id=first.client_order_id, symbol="X"))
    again = only(r.get(SubmitOrder, _bar(DAYS[3], 91.0, 92.0, 89.0, 90.0)))
    assert again.client_order_id == f"t:X:{DAYS[3]}:stop_loss"
    assert len(r.of(ExitTriggered)) == 2


def test_an_exit_closes_only_what_a_pending_flatten_does_not() -> None:
    """A flatten already selling the whole position leaves the stop nothing to send."""
    r = Risk(stop_loss_pct=5.0)
    _long_x(r)
    flatten = only(r.get(SubmitOrder, FlattenAll(ts_ns=DAYS[1])))
    assert flatten.qty == 500.0
    assert r.get(SubmitOrder, _bar(DAYS[1], 100.0, 101.0, 90.0, 91.0)) == []
    assert not r.of(ExitTriggered)


def test_a_partly_sold_position_is_stopped_out_for_what_is_left() -> None:
    """Levels come from the entry price; the stop's order is for the shares still held."""
    r = Risk(stop_loss_pct=5.0)
    buy = _long_x(r)
    sell = msgspec.structs.replace(buy, client_order_id="t:X:1:sell", side="sell")
    r.send(filled(sell, 200.0, 102.0, DAYS[2]))
    stop = only(r.get(SubmitOrder, _bar(DAYS[3], 100.0, 100.0, 95.0, 96.0)))
    assert (stop.side, stop.qty) == ("sell", 300.0)


def test_after_a_restart_the_levels_come_back_from_the_average_price() -> None:
    """A fresh risk actor told of a 500-share position at 100.00 stops it out at 95.00; its
    trailing mark starts again at the average price, not at the pre-restart high."""
    r = Risk(stop_loss_pct=5.0, trailing_stop_pct=8.0)
    r.send(holding("X", 500.0, 100.0))
    # 8% under a mark of 100.00 is 92.00, below the stop: a low of 95.00 is the stop.
    trigger = only(r.get(ExitTriggered, _bar(DAYS[0], 99.0, 99.5, 95.0, 96.0)))
    assert (trigger.reason, trigger.level, trigger.entry_price) == ("stop_loss", 95.0, 100.0)


def test_the_bar_that_sets_a_high_does_not_breach_its_own_trail() -> None:
    """A bar's high and low come in unknown order: its high raises the trail for later
    bars only. A bar from 130 to 115 is no breach of 10% under 100; the next bar's 117 is
    (10% under 130)."""
    r = Risk(trailing_stop_pct=10.0)
    _long_x(r)
    assert r.get(SubmitOrder, _bar(DAYS[1], 125.0, 130.0, 115.0, 120.0)) == []
    trigger = only(r.get(ExitTriggered, _bar(DAYS[2], 120.0, 121.0, 117.0, 118.0)))
    assert (trigger.reason, trigger.level) == ("trailing_stop", 117.0)


# --- the state machine --------------------------------------------------------------


def test_levels_are_rounded_to_the_tick_and_the_nearer_stop_is_the_reason() -> None:
    """Entry 33.33: stop 3% = 32.33 (32.3301 rounded), trail 2% = 32.66 from the mark; a bar
    down to 32.00 meets the trail first, so that is the reason."""
    ex = Exits(stop_loss_pct=3.0, trailing_stop_pct=2.0)
    ex.on_position("X", 10.0, 33.33)
    t = ex.on_bar(bar("X", DAYS[0], 33.0, 33.3, 32.0, 32.1))
    assert t is not None
    assert (t.reason, t.level) == ("trailing_stop", 32.66)
    ex.on_position("X", 0.0, 0.0)
    assert ex.on_bar(bar("X", DAYS[1], 33.0, 33.3, 1.0, 32.1)) is None


def test_a_position_that_flips_side_starts_over_from_its_new_entry() -> None:
    """Long at 100 then short at 90: the short's stop is 5% above 90 = 94.50."""
    ex = Exits(stop_loss_pct=5.0)
    ex.on_position("X", 10.0, 100.0)
    ex.on_position("X", -10.0, 90.0)
    assert ex.on_bar(bar("X", DAYS[0], 90.0, 94.4, 89.0, 90.0)) is None
    t = ex.on_bar(bar("X", DAYS[1], 90.0, 94.5, 89.0, 90.0))
    assert t is not None
    assert (t.reason, t.level, t.price) == ("stop_loss", 94.5, 94.5)


# --- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value", "detail"), [
    ("stop_loss_pct", -1.0, ">= 0.0"),
    ("take_profit_pct", 100.0, "< 100.0"),
    ("trailing_stop_pct", float("nan"), ">= 0.0"),
    ("stop_loss_pct", float("inf"), "< 100.0"),
    ("trailing_stop_pct", "5%", "Expected `float`"),
])
def test_an_exit_level_outside_0_to_100_percent_is_a_config_error_naming_it(
    field: str, value: object, detail: str
) -> None:
    """Each percentage must be finite, at least 0 and under 100."""
    with pytest.raises(ConfigError) as exc:
        decode_config({"risk": {field: value}})
    assert f"$.risk.{field}:" in str(exc.value)
    assert detail in str(exc.value)


def test_each_exit_is_counted_by_reason_in_the_metrics() -> None:
    """``trader_exits_triggered_total{reason}`` counts the journaled ExitTriggered."""
    m = Metrics(CollectorRegistry())
    assert m.registry.get_sample_value("trader_exits_triggered_total",
                                       {"reason": "trailing_stop"}) == 0
    m.observe("risk", only([s for s in SAMPLE if isinstance(s, ExitTriggered)]))
    assert m.registry.get_sample_value("trader_exits_triggered_total",
                                       {"reason": "stop_loss"}) == 1
