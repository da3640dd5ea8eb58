"""Hand-worked fills: the simulated :class:`Exchange` trading orders against bars.

Each scenario submits orders at a bar's close and feeds the following bars.
The docstrings show the arithmetic of the expected fills; the assertions check
prices, quantities, commissions and cash to the cent.

Daily bars close at the closing bell of the first week of March 2024
(``D[0]`` = Monday 2024-03-04 ... ``D[4]`` = Friday 2024-03-08).
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import (
    at,
    bar,
    broker_config,
    close_of,
    daily_closes,
    fills,
    minute_closes,
    submit,
)
from trader.brokers.simulated import _NS, Exchange, report_to_message, uuid5_str
from trader.errors import BrokerRejected
from trader.messages import OrderFilled

D = daily_closes("2024-03-04", 5)


# --- market orders -------------------------------------------------------------------


def test_a_market_order_fills_at_the_next_bars_open() -> None:
    """Bought at D0's close, 10 shares fill at D1's open: 10 x 102.00 = 1,020.00; cash 98,980.00."""
    ex = Exchange(broker_config())
    ex.on_bar(bar("AAPL", D[0], 100.00, 102.00, 99.00, 101.00))
    submit(ex, "o1", "AAPL", "buy", qty=10, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 102.00, 104.00, 101.50, 103.00))

    assert fills(reports) == [(10, 102.00)]
    assert reports[0].event == "fill"
    assert reports[0].ts_ns == D[1]
    assert ex.ledger.cash_cents == 9_898_000
    assert ex.ledger.qty("AAPL") == 10


def test_a_market_order_never_fills_on_the_bar_current_at_submission() -> None:
    """A bar closing at (or before) the submission time is the signal's own bar: no fill from it."""
    ex = Exchange(broker_config())
    submit(ex, "o1", "AAPL", "buy", qty=10, now_ns=D[1])

    assert ex.on_bar(bar("AAPL", D[0], 99.00, 100.00, 98.00, 99.50)) == []
    assert ex.on_bar(bar("AAPL", D[1], 100.00, 102.00, 99.00, 101.00)) == []

    order = ex.order_by_client_id("o1")
    assert order is not None
    assert order.status == "new"
    assert ex.ledger.cash_cents == 10_000_000


# --- limit orders --------------------------------------------------------------------


def test_a_limit_buy_through_a_gap_down_fills_at_the_open() -> None:
    """Limit 100.00, D1 opens at 98.00: 10 x 98.00 = 980.00 (better than the limit);
    cash 99,020.00."""
    ex = Exchange(broker_config())
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="limit", limit_price=100.00, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 98.00, 99.00, 97.00, 98.50))

    assert fills(reports) == [(10, 98.00)]
    assert ex.ledger.cash_cents == 9_902_000


def test_a_limit_buy_touched_inside_the_bar_fills_at_the_limit() -> None:
    """Limit 100.00, D1 opens 101.00 and trades down to 99.50: 10 x 100.00 = 1,000.00;
    cash 99,000.00."""
    ex = Exchange(broker_config())
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="limit", limit_price=100.00, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 101.00, 102.00, 99.50, 100.00))

    assert fills(reports) == [(10, 100.00)]
    assert ex.ledger.cash_cents == 9_900_000


def test_a_limit_sell_through_a_gap_up_fills_at_the_open() -> None:
    """Bought 10 at D1's open 100.00 (cash 99,000.00); limit sell 105.00, D2 opens 106.00:
    +10 x 106.00 = 1,060.00; cash 100,060.00."""
    ex = Exchange(broker_config())
    submit(ex, "b", "AAPL", "buy", qty=10, now_ns=D[0])
    ex.on_bar(bar("AAPL", D[1], 100.00, 101.00, 99.00, 100.50))
    submit(ex, "s", "AAPL", "sell", qty=10, order_type="limit", limit_price=105.00, now_ns=D[1])

    reports = ex.on_bar(bar("AAPL", D[2], 106.00, 107.00, 105.50, 106.50))

    assert fills(reports) == [(10, 106.00)]
    assert ex.ledger.cash_cents == 10_006_000
    assert ex.ledger.qty("AAPL") == 0


def test_a_limit_sell_touched_inside_the_bar_fills_at_the_limit() -> None:
    """Bought 10 at 100.00 (cash 99,000.00); limit sell 105.00, D2 opens 103.00 and trades up to
    105.50: +10 x 105.00 = 1,050.00; cash 100,050.00."""
    ex = Exchange(broker_config())
    submit(ex, "b", "AAPL", "buy", qty=10, now_ns=D[0])
    ex.on_bar(bar("AAPL", D[1], 100.00, 101.00, 99.00, 100.50))
    submit(ex, "s", "AAPL", "sell", qty=10, order_type="limit", limit_price=105.00, now_ns=D[1])

    reports = ex.on_bar(bar("AAPL", D[2], 103.00, 105.50, 102.00, 104.00))

    assert fills(reports) == [(10, 105.00)]
    assert ex.ledger.cash_cents == 10_005_000


def test_a_limit_order_whose_price_is_not_reached_stays_open() -> None:
    """Limit buy 95.00 while D1 and D2 trade no lower than 96.00: no fill, the gtc order waits."""
    ex = Exchange(broker_config())
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="limit", limit_price=95.00,
           time_in_force="gtc", now_ns=D[0])

    assert ex.on_bar(bar("AAPL", D[1], 98.00, 99.00, 96.00, 97.00)) == []
    assert ex.on_bar(bar("AAPL", D[2], 97.00, 98.00, 96.50, 97.50)) == []

    order = ex.order_by_client_id("o1")
    assert order is not None
    assert (order.status, order.filled_qty) == ("new", 0)
    assert [o.client_order_id for o in ex.open_orders()] == ["o1"]
    assert ex.ledger.cash_cents == 10_000_000


# --- stop and stop-limit orders --------------------------------------------------------


def test_a_stop_buy_triggered_inside_the_bar_fills_at_the_stop_plus_slippage() -> None:
    """Stop 100.00, D1 opens 98.00 and trades up to 101.00; 10 bps slippage:
    100.00 x 1.001 = 100.10; 10 x 100.10 = 1,001.00; cash 98,999.00."""
    ex = Exchange(broker_config(slippage_bps=10))
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="stop", stop_price=100.00, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 98.00, 101.00, 97.50, 100.50))

    assert fills(reports) == [(10, 100.10)]
    assert ex.ledger.cash_cents == 9_899_900


def test_a_stop_buy_gapped_through_fills_at_the_open_plus_slippage() -> None:
    """Stop 100.00, D1 opens 107.00; 10 bps slippage: 107.00 x 1.001 = 107.107 -> 107.11;
    10 x 107.11 = 1,071.10; cash 98,928.90."""
    ex = Exchange(broker_config(slippage_bps=10))
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="stop", stop_price=100.00, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 107.00, 108.00, 106.00, 107.50))

    assert fills(reports) == [(10, 107.11)]
    assert ex.ledger.cash_cents == 9_892_890


def test_a_stop_limit_triggered_at_the_open_fills_at_the_open_within_its_limit() -> None:
    """Buy stop 100.00 limit 101.00, D1 opens 100.50 (triggered there, inside the limit):
    10 x 100.50 = 1,005.00, no slippage on a limit; cash 98,995.00."""
    ex = Exchange(broker_config(slippage_bps=10))
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="stop_limit", stop_price=100.00,
           limit_price=101.00, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 100.50, 102.00, 100.00, 101.50))

    assert fills(reports) == [(10, 100.50)]
    assert ex.ledger.cash_cents == 9_899_500


def test_a_stop_limit_triggered_inside_the_bar_below_its_stop_rests_as_a_limit() -> None:
    """Buy stop 100.00 limit 99.00: D1 (98.00 up to 100.50, low 97.50) triggers it but cannot fill,
    since the order of prices inside a bar is unknown; D2 opens 99.80 and trades down to 98.70, so
    it fills as a limit: 10 x 99.00 = 990.00; cash 99,010.00."""
    ex = Exchange(broker_config())
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="stop_limit", stop_price=100.00,
           limit_price=99.00, time_in_force="gtc", now_ns=D[0])

    assert ex.on_bar(bar("AAPL", D[1], 98.00, 100.50, 97.50, 100.20)) == []
    order = ex.order_by_client_id("o1")
    assert order is not None
    assert (order.triggered, order.status) == (True, "new")

    reports = ex.on_bar(bar("AAPL", D[2], 99.80, 100.00, 98.70, 99.20))

    assert fills(reports) == [(10, 99.00)]
    assert ex.ledger.cash_cents == 9_901_000


# --- notional orders ---------------------------------------------------------------------


def test_a_notional_buy_takes_whole_shares_so_value_plus_commission_fits() -> None:
    """1,000.00 at D1's open 33.33 with 0.005/share, minimum 1.00: 30 shares cost
    999.90 + 1.00 = 1,000.90 > 1,000.00, so 29 shares: 966.57 + 1.00 = 967.57; cash 99,032.43."""
    ex = Exchange(broker_config(per_share_usd=0.005, minimum_usd=1.00))
    submit(ex, "o1", "AAPL", "buy", notional_usd=1_000.00, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 33.33, 34.00, 33.00, 33.50))

    assert fills(reports) == [(29.0, 33.33)]
    assert reports[0].commission_cents == 100
    assert reports[0].order.qty == 29.0
    assert ex.ledger.cash_cents == 9_903_243


def test_a_fractional_notional_buy_takes_shares_to_a_billionth() -> None:
    """1,000.00 / 33.33 = 30.0030003000... shares, rounded down to 30.003000300 (1e-9);
    30.0030003 x 33.33 = 999.999999999 -> 1,000.00; cash 99,000.00."""
    ex = Exchange(broker_config(fractional=True))
    submit(ex, "o1", "AAPL", "buy", notional_usd=1_000.00, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 33.33, 34.00, 33.00, 33.50))

    assert fills(reports) == [(30.0030003, 33.33)]
    assert ex.ledger.cash_cents == 9_900_000


def test_a_fractional_notional_buy_leaves_room_for_a_minimum_commission() -> None:
    """100.00 at 4.00 with a 1.00 minimum commission: 99.00 / 4.00 = 24.75 shares, and the most
    (to 1e-9) whose value still rounds to 99.00 is 24.75125 (99.005 -> 99.00, half to even);
    99.00 + 1.00 = 100.00; cash 99,900.00."""
    ex = Exchange(broker_config(fractional=True, per_share_usd=0.005, minimum_usd=1.00))
    submit(ex, "o1", "AAPL", "buy", notional_usd=100.00, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 4.00, 4.10, 3.90, 4.05))

    assert fills(reports) == [(24.75125, 4.00)]
    assert reports[0].commission_cents == 100
    assert ex.ledger.cash_cents == 9_990_000


# --- commissions and slippage ------------------------------------------------------------


def test_bps_commission_is_a_fraction_of_traded_value() -> None:
    """100 x 50.00 = 5,000.00 at 5 bps: commission 2.50; cash 100,000.00 - 5,002.50 = 94,997.50."""
    ex = Exchange(broker_config(bps=5))
    submit(ex, "o1", "AAPL", "buy", qty=100, now_ns=D[0])

    reports = ex.on_bar(bar("AAPL", D[1], 50.00, 51.00, 49.00, 50.50))

    assert fills(reports) == [(100, 50.00)]
    assert reports[0].commission_cents == 250
    assert ex.ledger.commissions_cents == 250
    assert ex.ledger.cash_cents == 9_499_750


def test_per_share_commission_has_a_minimum_per_execution() -> None:
    """0.005/share, minimum 1.00, both at 20.00: 100 shares pay 0.50 -> 1.00 (the minimum);
    1,000 shares pay 5.00. Cash 100,000.00 - 2,001.00 - 20,005.00 = 77,994.00."""
    ex = Exchange(broker_config(per_share_usd=0.005, minimum_usd=1.00))
    submit(ex, "small", "AAPL", "buy", qty=100, now_ns=D[0])
    submit(ex, "large", "MSFT", "buy", qty=1_000, now_ns=D[0])

    small = ex.on_bar(bar("AAPL", D[1], 20.00, 21.00, 19.00, 20.50))
    large = ex.on_bar(bar("MSFT", D[1], 20.00, 21.00, 19.00, 20.50))

    assert [r.commission_cents for r in small + large] == [100, 500]
    assert ex.ledger.cash_cents == 7_799_400


def test_per_share_commission_rounds_an_exact_half_cent_to_even() -> None:
    """0.005/share, no minimum, at 10.00: 41 shares pay 0.205 -> 0.20 and 43 pay 0.215 -> 0.22;
    cash 100,000.00 - 410.20 - 430.22 = 99,159.58."""
    ex = Exchange(broker_config(per_share_usd=0.005))
    submit(ex, "a", "AAA", "buy", qty=41, now_ns=D[0])
    submit(ex, "b", "BBB", "buy", qty=43, now_ns=D[0])

    reports = ex.on_bar(bar("AAA", D[1], 10.00, 10.00, 10.00, 10.00))
    reports += ex.on_bar(bar("BBB", D[1], 10.00, 10.00, 10.00, 10.00))

    assert [r.commission_cents for r in reports] == [20, 22]
    assert ex.ledger.cash_cents == 9_915_958


def test_slippage_moves_market_fills_against_the_order_and_rounds_to_the_tick() -> None:
    """25 bps: buys at 20.00 x 1.0025 = 20.05 and 0.5123 x 1.0025 = 0.51358075 -> 0.5136 (sub-dollar
    tick 0.0001); sells at 20.00 x 0.9975 = 19.95 and 0.5123 x 0.9975 = 0.51101925 -> 0.5110.
    Cash 100,000.00 - 100 x 20.05 - 1,000 x 0.5136 + 100 x 19.95 + 1,000 x 0.5110
    = 100,000.00 - 2,005.00 - 513.60 + 1,995.00 + 511.00 = 99,987.40."""
    ex = Exchange(broker_config(slippage_bps=25))
    submit(ex, "b1", "BIG", "buy", qty=100, now_ns=D[0])
    submit(ex, "b2", "PENNY", "buy", qty=1_000, now_ns=D[0])
    buys = ex.on_bar(bar("BIG", D[1], 20.00, 20.50, 19.50, 20.00))
    buys += ex.on_bar(bar("PENNY", D[1], 0.5123, 0.52, 0.51, 0.5123))
    submit(ex, "s1", "BIG", "sell", qty=100, now_ns=D[1])
    submit(ex, "s2", "PENNY", "sell", qty=1_000, now_ns=D[1])
    sells = ex.on_bar(bar("BIG", D[2], 20.00, 20.50, 19.50, 20.00))
    sells += ex.on_bar(bar("PENNY", D[2], 0.5123, 0.52, 0.51, 0.5123))

    assert fills(buys) == [(100, 20.05), (1_000, 0.5136)]
    assert fills(sells) == [(100, 19.95), (1_000, 0.5110)]
    assert ex.ledger.cash_cents == 9_998_740


# --- partial fills ---------------------------------------------------------------------


def test_max_participation_fills_a_large_order_over_several_bars() -> None:
    """250 shares with max_participation 0.1 of 1,000-share minute bars: 100 @ 10.00 (cum 100,
    avg 10.00), 100 @ 11.00 (cum 200, avg 10.50), 50 @ 12.00 (cum 250, avg 2,700.00 / 250 = 10.80);
    cash 100,000.00 - 2,700.00 = 97,300.00."""
    ex = Exchange(broker_config(max_participation=0.1))
    t = minute_closes("2024-03-05", 4)
    submit(ex, "o1", "AAPL", "buy", qty=250, now_ns=t[0])

    reports = []
    for ts, price in zip(t[1:], (10.00, 11.00, 12.00), strict=True):
        reports += ex.on_bar(bar("AAPL", ts, price, price, price, price, 1_000))

    filled = [report_to_message(r) for r in reports]
    assert all(isinstance(m, OrderFilled) for m in filled)
    assert [(m.qty, m.price, m.cum_qty, m.avg_price, m.status) for m in filled
            if isinstance(m, OrderFilled)] == [
        (100, 10.00, 100, 10.00, "partially_filled"),
        (100, 11.00, 200, 10.50, "partially_filled"),
        (50, 12.00, 250, 10.80, "filled"),
    ]
    assert ex.ledger.cash_cents == 9_730_000
    assert not ex.has_open_orders()


# --- buying power ------------------------------------------------------------------------


def test_a_buy_beyond_buying_power_is_rejected_at_submission_and_books_nothing() -> None:
    """Cash 10,000.00, AAPL last 150.00: 60 shares reserve 9,000.00, leaving 1,000.00 of buying
    power, so 10 more (1,500.00) are refused (403, 40310000), as is a 10,000.01 notional buy."""
    ex = Exchange(broker_config(cash_usd=10_000))
    ex.on_bar(bar("AAPL", D[0], 149.00, 151.00, 148.00, 150.00))
    submit(ex, "ok", "AAPL", "buy", qty=60, now_ns=D[0])
    assert ex.buying_power_cents() == 100_000

    with pytest.raises(BrokerRejected) as too_many:
        submit(ex, "too_many", "AAPL", "buy", qty=10, now_ns=D[0])
    with pytest.raises(BrokerRejected) as too_much:
        submit(ex, "too_much", "MSFT", "buy", notional_usd=10_000.01, now_ns=D[0])

    for exc in (too_many.value, too_much.value):
        assert (exc.status, exc.code) == (403, "40310000")
    assert [o.client_order_id for o in ex.orders.values()] == ["ok"]
    assert ex.order_by_client_id("too_many") is None
    assert ex.ledger.cash_cents == 1_000_000
    assert ex.ledger.positions == {}


def test_a_gap_up_after_submission_shrinks_the_fill_so_cash_never_goes_negative() -> None:
    """Cash 10,000.00 buys 100 at the 100.00 close; the next minute opens at 130.00, where cash
    pays for 76 shares: 76 x 130.00 = 9,880.00, cash 120.00. The next bar cancels the remainder."""
    ex = Exchange(broker_config(cash_usd=10_000))
    t = minute_closes("2024-03-05", 3)
    ex.on_bar(bar("AAPL", t[0], 99.00, 100.50, 98.50, 100.00))
    submit(ex, "o1", "AAPL", "buy", qty=100, now_ns=t[0])

    gap = ex.on_bar(bar("AAPL", t[1], 130.00, 131.00, 129.00, 130.50))
    later = ex.on_bar(bar("AAPL", t[2], 130.50, 131.00, 130.00, 130.00))

    assert fills(gap) == [(76, 130.00)]
    assert gap[0].event == "partial_fill"
    assert ex.ledger.cash_cents == 12_000
    assert [(r.event, r.order.reason) for r in later] == [
        ("canceled", "insufficient buying power")
    ]
    assert ex.ledger.cash_cents == 12_000
    assert ex.ledger.qty("AAPL") == 76


# --- identity and lifetime ----------------------------------------------------------------


def test_a_reused_client_order_id_is_rejected_with_422() -> None:
    """A second order with a client order id already used (even a filled one) is refused: 422."""
    ex = Exchange(broker_config())
    submit(ex, "o1", "AAPL", "buy", qty=1, now_ns=D[0])
    ex.on_bar(bar("AAPL", D[1], 100.00, 101.00, 99.00, 100.00))

    with pytest.raises(BrokerRejected) as info:
        submit(ex, "o1", "AAPL", "buy", qty=1, now_ns=D[1])

    assert (info.value.status, info.value.code) == (422, "40010001")
    assert len(ex.orders) == 1
    assert ex.ledger.qty("AAPL") == 1


def test_a_day_order_expires_at_the_session_close_without_filling() -> None:
    """A day limit buy at 90.00 placed at 10:00 on 2024-03-05 is not reached that day; the next
    session's first bar (low 89.00) expires it as of 16:00 on 03-05 instead of filling it."""
    ex = Exchange(broker_config())
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="limit", limit_price=90.00,
           now_ns=at("2024-03-05", "10:00"))

    same_day = ex.on_bar(bar("AAPL", at("2024-03-05", "10:01"), 95.00, 96.00, 95.00, 95.50))
    next_day = ex.on_bar(bar("AAPL", at("2024-03-06", "09:31"), 91.00, 91.50, 89.00, 89.50))

    assert same_day == []
    assert [(r.event, r.ts_ns) for r in next_day] == [("expired", close_of("2024-03-05"))]
    assert not ex.has_open_orders()
    assert ex.ledger.cash_cents == 10_000_000


def test_a_gtc_order_persists_into_the_next_session() -> None:
    """The same limit buy at 90.00 as gtc survives the close and fills the next morning:
    10 x 90.00 = 900.00 (open 91.00, low 89.00); cash 99,100.00."""
    ex = Exchange(broker_config())
    submit(ex, "o1", "AAPL", "buy", qty=10, order_type="limit", limit_price=90.00,
           time_in_force="gtc", now_ns=at("2024-03-05", "10:00"))

    same_day = ex.on_bar(bar("AAPL", at("2024-03-05", "10:01"), 95.00, 96.00, 95.00, 95.50))
    next_day = ex.on_bar(bar("AAPL", at("2024-03-06", "09:31"), 91.00, 91.50, 89.00, 89.50))

    assert same_day == []
    assert fills(next_day) == [(10, 90.00)]
    assert ex.ledger.cash_cents == 9_910_000


def test_equity_is_cash_plus_the_position_at_the_last_close_to_the_cent() -> None:
    """37 bought at 101.37 with 10 bps: 3,750.69 + 3.75 commission, cash 96,245.56; the data ends
    at a 104.59 close: equity = 96,245.56 + 37 x 104.59 (3,869.83) = 100,115.39."""
    ex = Exchange(broker_config(bps=10))
    submit(ex, "o1", "AAPL", "buy", qty=37, now_ns=D[0])
    ex.on_bar(bar("AAPL", D[1], 101.37, 102.00, 100.80, 101.90))
    ex.on_bar(bar("AAPL", D[2], 102.00, 103.50, 101.60, 103.11))
    ex.on_bar(bar("AAPL", D[3], 103.20, 104.80, 103.00, 104.59))

    led = ex.ledger
    assert led.cash_cents == 9_624_556
    assert led.market_value_cents() == 386_983
    assert led.equity_cents() == 10_011_539
    assert led.equity_cents() == (
        led.initial_cash_cents + led.realized_cents() + led.unrealized_cents()
        - led.commissions_cents
    )


@given(st.text(max_size=64))
def test_simulated_ids_are_rfc_4122_uuid5s(name: str) -> None:
    """Order and execution ids parse as version-5 UUIDs (alpaca-py requires UUIDs) and
    are exactly ``uuid5`` of their name, so ids stay what earlier journals hold."""
    text = uuid5_str(name)
    assert text == str(uuid.uuid5(_NS, name))
    assert uuid.UUID(text).version == 5
