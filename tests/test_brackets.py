"""Native exits: entries go to the broker as bracket orders whose legs close them.

The replays below are worked by hand, as in ``tests/test_exits.py``: the
strategy (:class:`~tests.test_exits.EnterOnce`) signals at the first bar's
close of 100.00; half of the $100,000 account is 500 whole shares at that
price, bought at the next bar's open. With ``exits = "native"`` the order
carries a stop loss and a take profit computed from the signal's price, the
simulated exchange places them as one-cancels-other legs once the entry has
filled, and they trade from the bar after the fill under the ordinary stop
and limit fill rules: a stop fills at the stop, or at the open of a bar that
gaps through it; a take profit at its limit, or at a better open. Unlike an
emulated exit, nothing waits for the next bar's open.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from tests.builders import bar
from tests.sandbox.sandbox_support import alpaca
from tests.test_exits import DAYS, _of, _replay
from tests.test_live_e2e import Daemon, _journal_orders, _until
from tests.test_risk import Risk, bars, filled, only, signal
from trader.brokers.simulated import Exchange
from trader.config import BrokerConfig, decode_config
from trader.errors import BrokerRejected, ConfigError
from trader.messages import (
    BarClosed,
    CancelOrder,
    ClientOrderId,
    ExitTriggered,
    FlattenAll,
    OrderAccepted,
    OrderCanceled,
    OrderFilled,
    OrderType,
    SubmitOrder,
    decode,
)
from trader.runner import run_live
from trader.sandbox import Sandbox

ENTRY = f"t:X:{DAYS[0]}:buy"
NATIVE: dict[str, Any] = {"exits": "native", "stop_loss_pct": 5.0, "take_profit_pct": 10.0}


def _events(journal: list[Any], coid: str) -> list[str]:
    """The order events of ``coid`` in the journal, by type name."""
    return [type(m).__name__ for m in journal
            if isinstance(m, OrderAccepted | OrderFilled | OrderCanceled)
            and m.client_order_id == coid]


# --- replays worked by hand ------------------------------------------------------------


def test_the_entry_carries_its_bracket_and_the_stop_leg_fills_at_the_stop(
    tmp_path: Path,
) -> None:
    """Stop 5% under the signal's 100.00 = 95.00, take profit 10% over = 110.00. The bar
    after the fill trades down to 94.50: the stop leg sells 500 at 95.00 inside that bar
    (not at the next open), 500 x (95.00 - 100.00) = -$2,500.00, and the take-profit leg
    is canceled (one cancels the other)."""
    outcome, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),  # the signal
        (100.0, 102.0, 98.0, 101.0),  # bought 500 at 100.00; the legs start working
        (101.0, 101.5, 94.5, 96.0),  # low 94.50 <= 95.00: the stop leg fills at 95.00
        (93.0, 94.0, 92.0, 93.5),  # flat: nothing more happens
    ], **NATIVE)

    entry = only([m for m in _of(journal, SubmitOrder) if m.client_order_id == ENTRY])
    assert (entry.qty, entry.notional_cents, entry.time_in_force) == (500.0, None, "gtc")
    assert (entry.take_profit_price, entry.stop_loss_price) == (110.0, 95.0)
    assert fills == [
        (ENTRY, DAYS[1], "buy", 500.0, 100.0),
        (f"{ENTRY}-sl", DAYS[2], "sell", 500.0, 95.0),
    ]
    assert _events(journal, f"{ENTRY}-sl") == ["OrderAccepted", "OrderFilled"]
    assert _events(journal, f"{ENTRY}-tp") == ["OrderAccepted", "OrderCanceled"]
    legs = {m.client_order_id: m for m in _of(journal, OrderAccepted) if m.parent_client_order_id}
    assert {c: (m.parent_client_order_id, m.side, m.qty, m.order_type, m.limit_price,
                m.stop_price, m.time_in_force) for c, m in legs.items()} == {
        f"{ENTRY}-sl": (ENTRY, "sell", 500.0, "stop", None, 95.0, "gtc"),
        f"{ENTRY}-tp": (ENTRY, "sell", 500.0, "limit", 110.0, None, "gtc"),
    }
    assert all(m.ts_ns == DAYS[1] for m in legs.values())  # placed when the entry filled
    tp_canceled = only([m for m in _of(journal, OrderCanceled)
                        if m.client_order_id == f"{ENTRY}-tp"])
    assert tp_canceled.ts_ns == DAYS[2]
    assert not _of(journal, ExitTriggered)  # the broker closed it; risk sent nothing
    ledger = outcome.exchange.ledger
    assert ledger.qty("X") == 0
    assert ledger.positions["X"].realized_cents == -250_000
    assert ledger.cash_cents == 9_750_000
    assert not outcome.exchange.open_orders()


def test_a_bar_that_gaps_under_the_stop_fills_the_stop_leg_at_its_open(tmp_path: Path) -> None:
    """The bar after the fill opens at 93.00, under the 95.00 stop: the stop order fills at
    that open, 500 x (93.00 - 100.00) = -$3,500.00 (a stop guarantees no price)."""
    outcome, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 102.0, 98.0, 101.0),
        (93.0, 94.0, 92.0, 93.5),  # gaps through the stop
    ], **NATIVE)

    assert fills[1] == (f"{ENTRY}-sl", DAYS[2], "sell", 500.0, 93.0)
    assert _events(journal, f"{ENTRY}-tp") == ["OrderAccepted", "OrderCanceled"]
    assert outcome.exchange.ledger.positions["X"].realized_cents == -350_000


def test_the_take_profit_leg_sells_at_its_limit_and_cancels_the_stop(tmp_path: Path) -> None:
    """A high of exactly 110.00 reaches the limit: 500 sold at 110.00 in that bar,
    +$5,000.00, and the stop leg is canceled."""
    outcome, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 105.0, 99.5, 104.0),
        (104.0, 110.0, 103.0, 109.0),  # high 110.00 = the limit
        (109.5, 111.0, 108.0, 110.5),
    ], **NATIVE)

    assert fills[1] == (f"{ENTRY}-tp", DAYS[2], "sell", 500.0, 110.0)
    assert _events(journal, f"{ENTRY}-sl") == ["OrderAccepted", "OrderCanceled"]
    ledger = outcome.exchange.ledger
    assert ledger.positions["X"].realized_cents == 500_000
    assert ledger.cash_cents == 10_500_000


def test_the_levels_come_from_the_signal_price_not_the_fill(tmp_path: Path) -> None:
    """The entry fills at a gap-up open of 102.00 but the legs stay at 95.00 / 110.00 (the
    order left before its fill price was known): a low of 96.00 (under 5% off the fill,
    96.90) stops nothing; a low of 94.00 later stops 500 at 95.00, -$3,500.00."""
    outcome, _, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (102.0, 103.0, 101.0, 102.5),  # bought 500 at 102.00
        (102.0, 103.0, 96.0, 97.0),  # above 95.00: the stop leg rests
        (97.0, 98.0, 94.0, 95.0),  # through 95.00
    ], **NATIVE)

    assert fills == [
        (ENTRY, DAYS[1], "buy", 500.0, 102.0),
        (f"{ENTRY}-sl", DAYS[3], "sell", 500.0, 95.0),
    ]
    assert outcome.exchange.ledger.positions["X"].realized_cents == -350_000


def test_a_bar_that_reaches_both_legs_is_read_as_the_stop(tmp_path: Path) -> None:
    """High 111 and low 94 in one bar: the order of its prices is unknown, so the stop
    fills (the pessimistic reading, as for emulated exits) and the take profit is canceled."""
    _, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 102.0, 98.0, 101.0),
        (100.0, 111.0, 94.0, 100.0),
    ], **NATIVE)

    assert fills[1] == (f"{ENTRY}-sl", DAYS[2], "sell", 500.0, 95.0)
    assert _events(journal, f"{ENTRY}-tp") == ["OrderAccepted", "OrderCanceled"]


def test_a_short_entrys_bracket_is_mirrored(tmp_path: Path) -> None:
    """Short 500 at 100.00: the stop is a buy stop at 105.00, the take profit a buy limit
    at 90.00; a high of 105.50 covers at 105.00, -$2,500.00."""
    outcome, _, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 102.0, 98.0, 101.0),  # sold short 500 at 100.00
        (101.0, 105.5, 100.0, 104.0),  # high 105.50 >= 105.00
    ], weight=-0.5, allow_short=True, **NATIVE)

    assert fills == [
        (f"t:X:{DAYS[0]}:sell", DAYS[1], "sell", 500.0, 100.0),
        (f"t:X:{DAYS[0]}:sell-sl", DAYS[2], "buy", 500.0, 105.0),
    ]
    assert outcome.exchange.ledger.positions["X"].realized_cents == -250_000


def test_the_trailing_stop_stays_emulated_and_cancels_the_legs_before_it_sells(
    tmp_path: Path,
) -> None:
    """A bracket has no trailing leg: risk trails the high (100 -> 120: 108.00) and, at the
    breach, cancels both legs and only then sends its market sell, which fills at the next
    open of 108.50: +$4,250.00. The stop (95.00) and take profit (125.00) never trade."""
    _, journal, fills = _replay(tmp_path, [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 104.0, 99.0, 103.0),
        (103.0, 112.0, 102.0, 111.0),
        (111.0, 120.0, 110.0, 118.0),  # trail -> 108.00
        (118.0, 119.0, 108.0, 109.0),  # low 108.00 <= 108.00
        (108.5, 110.0, 107.0, 109.0),
    ], exits="native", stop_loss_pct=5.0, take_profit_pct=25.0, trailing_stop_pct=10.0)

    trail = f"t:X:{DAYS[4]}:trailing_stop"
    assert fills[1] == (trail, DAYS[5], "sell", 500.0, 108.5)
    assert only(_of(journal, ExitTriggered)).reason == "trailing_stop"
    # (The journal's key orders one timestamp by source, not by cause; the order of
    # cause is checked message by message below.)
    assert sorted((m.ts_ns, type(m).__name__, m.client_order_id) for m in journal
                  if isinstance(m, CancelOrder | OrderCanceled | SubmitOrder)
                  and m.client_order_id != ENTRY) == [
        (DAYS[4], "CancelOrder", f"{ENTRY}-sl"), (DAYS[4], "CancelOrder", f"{ENTRY}-tp"),
        (DAYS[4], "OrderCanceled", f"{ENTRY}-sl"), (DAYS[4], "OrderCanceled", f"{ENTRY}-tp"),
        (DAYS[4], "SubmitOrder", trail),
    ]


def test_two_replays_with_native_exits_write_identical_journals(tmp_path: Path) -> None:
    """Leg ids derive from the entry's, so the same data writes the same rows."""
    ohlc = [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 102.0, 98.0, 101.0),
        (101.0, 101.5, 94.5, 96.0),
        (93.0, 94.0, 92.0, 93.5),
    ]
    rows = []
    for name in ("a", "b"):
        path = tmp_path / name
        _replay(path, ohlc, **NATIVE)
        with sqlite3.connect(path / "exits.db") as conn:
            rows.append(conn.execute(
                "SELECT ts_ns, source, seq, body FROM journal ORDER BY ts_ns, source, seq"
            ).fetchall())
    assert rows[0] == rows[1]
    assert len(rows[0]) > 10


# --- the risk actor, message by message -------------------------------------------------


def _bracketed(r: Risk) -> SubmitOrder:
    """Buy 500 X with a bracket at 100.00 (signal DAYS[0], filled DAYS[1]); the legs work."""
    r.send(bars(DAYS[0], X=100.0))
    entry = only(r.get(SubmitOrder, signal(DAYS[0], "X", 0.5, 100.0)))
    r.send(filled(entry, 500.0, 100.0, DAYS[1]))
    legs: tuple[tuple[str, OrderType], ...] = (("sl", "stop"), ("tp", "limit"))
    for suffix, kind in legs:
        r.send(OrderAccepted(ts_ns=DAYS[1], client_order_id=ClientOrderId(f"{ENTRY}-{suffix}"),
                             symbol="X", side="sell", qty=500.0, order_type=kind,
                             time_in_force="gtc", parent_client_order_id=ENTRY))
    return entry


def test_a_flatten_cancels_the_legs_first_and_sells_once_they_are_canceled() -> None:
    """The broker holds a bracketed position's shares for its legs: the flatten's sell goes
    out only after both cancels are confirmed, for the whole position."""
    r = Risk(**NATIVE)
    _bracketed(r)
    sent = r.send(FlattenAll(ts_ns=DAYS[2]))
    assert [(type(m).__name__, getattr(m, "client_order_id", "")) for m in sent
            if isinstance(m, CancelOrder | SubmitOrder)] == [
        ("CancelOrder", f"{ENTRY}-sl"), ("CancelOrder", f"{ENTRY}-tp")]
    assert r.get(SubmitOrder, OrderCanceled(ts_ns=DAYS[2], symbol="X",
                                            client_order_id=ClientOrderId(f"{ENTRY}-sl"))) == []
    flatten = only(r.get(SubmitOrder, OrderCanceled(
        ts_ns=DAYS[2], symbol="X", client_order_id=ClientOrderId(f"{ENTRY}-tp"))))
    assert (flatten.client_order_id, flatten.side, flatten.qty) == (
        f"t:X:{DAYS[2]}:flatten", "sell", 500.0)


def test_a_closing_order_waiting_for_the_legs_is_dropped_if_a_leg_closed_the_position(
) -> None:
    """The stop leg fills before its cancel lands: the position is flat, so the flatten
    waiting for the legs sends nothing (it would open a short)."""
    r = Risk(**NATIVE)
    _bracketed(r)
    r.send(FlattenAll(ts_ns=DAYS[2]))
    stop = SubmitOrder(ts_ns=DAYS[1], client_order_id=ClientOrderId(f"{ENTRY}-sl"),
                       strategy="t", symbol="X", side="sell", qty=500.0)
    assert r.get(SubmitOrder, filled(stop, 500.0, 95.0, DAYS[2]), OrderCanceled(
        ts_ns=DAYS[2], symbol="X", client_order_id=ClientOrderId(f"{ENTRY}-tp"))) == []


def test_legs_are_not_pending_orders_and_risk_emulates_no_stop_while_they_work() -> None:
    """With the legs working, a bar through the stop sends nothing (the broker's stop leg
    is on it) and a new signal for the symbol is not denied as an order pending."""
    r = Risk(**NATIVE)
    _bracketed(r)
    assert r.get(SubmitOrder, bars(DAYS[2], X=80.0)) == []
    assert not r.of(ExitTriggered)
    more = only(r.get(SubmitOrder, signal(DAYS[2], "X", 0.9, 80.0)))
    assert (more.side, more.stop_loss_price, more.take_profit_price) == ("buy", 76.0, 88.0)


def test_without_working_legs_the_stop_is_emulated_again() -> None:
    """Legs canceled by hand at the broker: risk's own stop takes over for the position."""
    r = Risk(**NATIVE)
    _bracketed(r)
    for suffix in ("sl", "tp"):
        r.send(OrderCanceled(ts_ns=DAYS[2], symbol="X",
                             client_order_id=ClientOrderId(f"{ENTRY}-{suffix}")))
    trigger = only(r.get(ExitTriggered, bars(DAYS[3], X=90.0)))
    assert (trigger.reason, trigger.level) == ("stop_loss", 95.0)


# --- the simulated exchange ---------------------------------------------------------------


def _exchange() -> Exchange:
    ex = Exchange(BrokerConfig(), session_close_after=lambda ns: ns + 10**15)
    ex.on_bar(BarClosed(ts_ns=1, symbol="X", open=100.0, high=100.0, low=100.0, close=100.0,
                        volume=1e6))
    return ex


def _bar(ts: int, o: float, h: float, lo: float, c: float) -> BarClosed:
    return BarClosed(ts_ns=ts, symbol="X", open=o, high=h, low=lo, close=c, volume=1e6)


def _submit(ex: Exchange, coid: str, side: str, qty: float, ts: int, **kw: Any) -> None:
    ex.submit(client_order_id=coid, symbol="X", side="buy" if side == "buy" else "sell",
              qty=qty, notional_cents=None, order_type="market", limit_price=None,
              stop_price=None, time_in_force="gtc", now_ns=ts, **kw)


def test_the_exchange_refuses_to_sell_shares_its_bracket_legs_hold() -> None:
    """Alpaca's 403 "insufficient qty available": while the legs work, a sell of the
    position fails; after they are canceled it is accepted."""
    ex = _exchange()
    _submit(ex, "e", "buy", 10.0, 2, take_profit_price=110.0, stop_loss_price=95.0)
    reports = ex.on_bar(_bar(3, 100.0, 101.0, 99.0, 100.0))
    assert [(r.event, r.order.client_order_id) for r in reports] == [
        ("fill", "e"), ("new", "e-sl"), ("new", "e-tp")]
    with pytest.raises(BrokerRejected) as refused:
        _submit(ex, "flat", "sell", 10.0, 4)
    assert (refused.value.status, refused.value.code) == (403, "40310000")
    for leg in ("e-sl", "e-tp"):
        order = ex.order_by_client_id(leg)
        assert order is not None
        ex.cancel(order.id, 4)
    _submit(ex, "flat", "sell", 10.0, 4)


def test_a_partial_fill_of_one_leg_shrinks_the_other() -> None:
    """With a 10% participation cap, the stop leg sells 6 of 10 shares in a 60-share bar;
    the take profit is cut to the 4 shares still held, and canceled when those go too."""
    ex = Exchange(BrokerConfig(max_participation=0.1),
                  session_close_after=lambda ns: ns + 10**15)
    _submit(ex, "e", "buy", 10.0, 1, take_profit_price=110.0, stop_loss_price=95.0)
    ex.on_bar(_bar(2, 100.0, 101.0, 99.0, 100.0))
    partial = ex.on_bar(msgspec.structs.replace(_bar(3, 96.0, 97.0, 94.0, 95.0), volume=60.0))
    assert [(r.event, r.qty) for r in partial] == [("partial_fill", 6.0)]
    tp = ex.order_by_client_id("e-tp")
    assert tp is not None
    assert (tp.qty, tp.status) == (4.0, "new")
    rest = ex.on_bar(_bar(4, 94.0, 95.0, 93.0, 94.0))
    assert [(r.event, r.order.client_order_id) for r in rest] == [
        ("fill", "e-sl"), ("canceled", "e-tp")]


def test_a_bracket_with_levels_on_the_wrong_side_of_the_price_is_refused() -> None:
    """A buy's stop must be under the last price and its take profit over it (422)."""
    ex = _exchange()
    with pytest.raises(BrokerRejected) as refused:
        _submit(ex, "e", "buy", 10.0, 2, take_profit_price=110.0, stop_loss_price=101.0)
    assert refused.value.status == 422
    with pytest.raises(BrokerRejected, match="whole-share"):
        ex.submit(client_order_id="n", symbol="X", side="buy", qty=None,
                  notional_cents=100_000, order_type="market", limit_price=None,
                  stop_price=None, time_in_force="day", now_ns=2, stop_loss_price=95.0)


# --- config ---------------------------------------------------------------------------


def test_native_exits_need_a_stop_loss_or_a_take_profit() -> None:
    """A bracket carries those two; with neither, ``native`` is a config error naming it."""
    with pytest.raises(ConfigError, match=r"\$\.risk\.exits: .*stop_loss_pct or take_profit_pct"):
        decode_config({"risk": {"exits": "native", "trailing_stop_pct": 5.0}})
    assert decode_config({"risk": {"exits": "native", "stop_loss_pct": 5.0}}).risk.exits == (
        "native")


# --- live: the daemon, alpaca-py and the sandbox ----------------------------------------


def _visible(sb: Sandbox) -> dict[str, tuple[str, float]]:
    """The sandbox's orders as the daemon can know them: legs that never left ``held``
    were never on the stream."""
    return {o.client_order_id: (o.status, round(o.filled_qty, 9))
            for o in sb.market.exchange.orders.values()
            if o.status != "held" and o.reason != "the entry ended unfilled"}


@pytest.mark.asyncio
async def test_live_the_bracket_reaches_the_sandbox_and_a_leg_fill_reaches_the_journal(
    tmp_path: Path,
) -> None:
    """Through alpaca-py and the sandbox: the entry arrives as a bracket with its two legs,
    the stop leg's fill (95.00, inside the bar that trades through it) comes back on the
    trade stream into the daemon's journal, the take profit is canceled, and the daemon's
    positions, cash and orders equal the sandbox's."""
    ohlc = [
        (100.0, 101.0, 99.0, 100.0),
        (100.0, 102.0, 98.0, 101.0),
        (101.0, 101.5, 94.5, 96.0),
        (96.0, 97.0, 95.0, 96.5),
    ]
    db = tmp_path / "live.db"
    config = decode_config({
        "run": {"db": str(db), "shutdown_deadline_s": 10.0},
        "feed": {"kind": "alpaca", "symbols": ["X"], "timeframe_s": 86400,
                 "stale_after_s": 3600.0},
        "alpaca": {"update_timeout_s": 2.0, "request_timeout_s": 5.0},
        "strategy": {"name": "tests.test_exits:EnterOnce", "instance": "t"},
        "risk": NATIVE,
    })
    async with Sandbox([bar("X", ts, *b) for ts, b in zip(DAYS, ohlc, strict=False)],
                       speed="max") as sb:
        daemon = Daemon(sb, config, db)

        def settled() -> bool:
            f = daemon.feed()
            return (f is not None and f.last_emitted.get("X", 0) >= sb.market.watermark_ns
                    and daemon.graph is not None and daemon.graph.inflight.count == 0
                    and _journal_orders(db) == _visible(sb))

        async with anyio.create_task_group() as tg:
            async def run() -> None:
                await run_live(config, sandbox=sb,
                               on_graph=lambda g: setattr(daemon, "graph", g))

            tg.start_soon(run)
            await _until(lambda: daemon.graph is not None and daemon.feed() is not None
                         and daemon.graph.ready, "daemon ready")
            for step in range(len(ohlc)):
                await sb.market.advance(bars=1)
                await _until(settled, f"the daemon settles after bar {step}")
                if step == 0:
                    # What alpaca-py reads back from the sandbox's REST.
                    client = alpaca()["trading_client"].TradingClient(
                        sb.credentials.key_id, sb.credentials.secret,
                        url_override=sb.base_url)
                    entry = await anyio.to_thread.run_sync(
                        client.get_order_by_client_id, ENTRY)
                    assert entry.order_class == "bracket"
                    assert {(leg.client_order_id, leg.type, leg.status,
                             leg.limit_price and float(leg.limit_price),
                             leg.stop_price and float(leg.stop_price)) for leg in entry.legs} == {
                        (f"{ENTRY}-sl", "stop", "held", None, 95.0),
                        (f"{ENTRY}-tp", "limit", "held", 110.0, None),
                    }
            assert daemon.graph is not None
            daemon.graph.request_stop()
        exchange = sb.market.exchange
        sandbox_cash = exchange.ledger.cash_cents
        sandbox_qty = exchange.ledger.qty("X")
    with sqlite3.connect(db) as conn:
        fills = conn.execute("SELECT client_order_id, side, qty, price FROM fills "
                             "ORDER BY ts_ns").fetchall()
        events = conn.execute("SELECT client_order_id, event FROM order_events "
                              "WHERE client_order_id LIKE '%-tp' ORDER BY ts_ns, seq").fetchall()
        (cash,) = conn.execute("SELECT cash_cents FROM accounts "
                               "ORDER BY ts_ns DESC, seq DESC LIMIT 1").fetchone()
        (qty,) = conn.execute("SELECT qty FROM positions WHERE symbol = 'X' "
                              "ORDER BY ts_ns DESC, seq DESC LIMIT 1").fetchone()
        journal = [decode(body) for (body,) in conn.execute("SELECT body FROM journal")]
    # The adapter linked each leg to its entry (Alpaca names legs on the entry only).
    assert sorted((m.client_order_id, m.parent_client_order_id)
                  for m in _of(journal, OrderAccepted) if m.client_order_id != ENTRY) == [
        (f"{ENTRY}-sl", ENTRY), (f"{ENTRY}-tp", ENTRY)]
    assert fills == [(ENTRY, "buy", 500.0, 100.0), (f"{ENTRY}-sl", "sell", 500.0, 95.0)]
    assert events == [(f"{ENTRY}-tp", "accepted"), (f"{ENTRY}-tp", "canceled")]
    assert (qty, cash) == (sandbox_qty, sandbox_cash) == (0.0, 9_750_000)


def test_the_alpaca_adapter_sends_a_bracket_or_an_oto_with_ticked_levels() -> None:
    """Both levels: ``order_class = bracket``; one: ``oto``; prices rounded to the tick."""
    from trader.brokers.alpaca_wire import order_request

    entry = SubmitOrder(ts_ns=0, client_order_id=ClientOrderId(ENTRY), strategy="t",
                        symbol="X", side="buy", qty=500.0, time_in_force="gtc",
                        take_profit_price=110.004, stop_loss_price=94.996)
    body = order_request(entry).to_request_fields()
    assert (body["order_class"], body["take_profit"], body["stop_loss"], body["qty"]) == (
        "bracket", {"limit_price": 110.0}, {"stop_price": 95.0}, 500.0)
    one = order_request(msgspec.structs.replace(entry, take_profit_price=None))
    body = one.to_request_fields()
    assert (body["order_class"], "take_profit" in body) == ("oto", False)
