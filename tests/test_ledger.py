"""The ledger's accounting in integer cents: worked round trips, and exact identities on
random fill streams."""

from __future__ import annotations

from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from trader.brokers.ledger import Ledger
from trader.messages import BarClosed
from trader.money import value_cents

OpKind = Literal["trade", "close", "flip", "mark", "adopt"]
# (kind, symbol, side, qty, price, commission cents)
Op = tuple[OpKind, str, Literal["buy", "sell"], float, float, int]

INITIAL_CENTS = 10_000_000


def book_by_hand(led: Ledger) -> tuple[int, int, int, int]:
    """Market value, gross exposure, realized and unrealized P&L summed position by position:
    what the ledger's running totals must always equal."""
    values = [
        (value_cents(p.qty, led.last_price[s]), p.cost_cents)
        for s, p in led.positions.items() if p.qty
    ]
    return (
        sum(v for v, _ in values),
        sum(abs(v) for v, _ in values),
        sum(p.realized_cents for p in led.positions.values()),
        sum(v - c for v, c in values),
    )


def assert_identities(led: Ledger, signed_fill_values: int, commissions: int) -> None:
    """The accounting identities every ledger state satisfies."""
    assert (
        led.market_value_cents(), led.gross_exposure_cents(), led.realized_cents(),
        led.unrealized_cents(),
    ) == book_by_hand(led)
    assert led.equity_cents() == (
        led.initial_cash_cents + led.realized_cents() + led.unrealized_cents()
        - led.commissions_cents
    )
    for pos in led.positions.values():
        if pos.qty == 0:
            assert pos.cost_cents == 0, f"closed {pos.symbol} keeps cost {pos.cost_cents}"
    assert led.commissions_cents == commissions
    assert led.cash_cents == led.initial_cash_cents - signed_fill_values - commissions


def test_a_long_round_trip_realizes_proceeds_less_the_released_cost() -> None:
    """Buy 10 @ 10.00 and 5 @ 11.00 (cost 155.00); sell 12 @ 12.00 releases 12/15 x 155.00 = 124.00
    against proceeds of 144.00: realized 20.00; 3 left at cost 31.00; cash 100,000 - 155 + 144
    = 99,989.00."""
    led = Ledger(INITIAL_CENTS)
    led.apply_fill("AAPL", "buy", 10, 10.00, 0)
    led.apply_fill("AAPL", "buy", 5, 11.00, 0)
    pos = led.apply_fill("AAPL", "sell", 12, 12.00, 0)

    assert (pos.qty, pos.cost_cents, pos.realized_cents) == (3, 3_100, 2_000)
    assert led.cash_cents == 9_998_900


def test_a_sell_past_zero_closes_the_long_and_opens_a_short_at_the_fill_price() -> None:
    """Long 3 bought @ 10.00 (cost 30.00); sell 10 @ 9.00 with a 1.00 commission: the 3 closed
    bring 27.00 against 30.00 (realized -3.00), the other 7 open a short with cost -63.00;
    cash 100,000 - 30 + 90 - 1 = 100,059.00; marked at 8.50, equity = 100,059.00 - 59.50
    = 99,999.50 and unrealized = 63.00 - 59.50 = 3.50."""
    led = Ledger(INITIAL_CENTS)
    led.apply_fill("AAPL", "buy", 3, 10.00, 0)
    pos = led.apply_fill("AAPL", "sell", 10, 9.00, 100)
    led.mark("AAPL", 8.50)

    assert (pos.qty, pos.cost_cents, pos.realized_cents) == (-7, -6_300, -300)
    assert pos.avg_price == 9.00
    assert led.cash_cents == 10_005_900
    assert led.equity_cents() == 9_999_950
    assert led.unrealized_cents() == 350


def test_covering_a_short_realizes_the_entry_credit_less_the_buyback() -> None:
    """Short 7 @ 9.00 (cost -63.00), buy 7 @ 8.00 back: realized 63.00 - 56.00 = 7.00, cost 0."""
    led = Ledger(INITIAL_CENTS)
    led.apply_fill("AAPL", "sell", 7, 9.00, 0)
    pos = led.apply_fill("AAPL", "buy", 7, 8.00, 0)

    assert (pos.qty, pos.cost_cents, pos.realized_cents) == (0, 0, 700)
    assert led.cash_cents == INITIAL_CENTS + 700


SYMBOLS = ("AAA", "BBB", "CCC")
prices = st.integers(1, 200_000).map(lambda cents: cents / 100)  # 0.01 .. 2,000.00
quantities = st.one_of(
    st.integers(1, 2_000).map(float),  # whole shares
    st.integers(1, 50_000_000).map(lambda n: n / 10_000),  # fractional, 4 decimals
    st.integers(1, 5_000_000_000).map(lambda n: n / 1e9),  # fractional, Alpaca's 1e-9 increment
)
ops = st.tuples(
    st.sampled_from(["trade", "trade", "close", "flip", "mark", "adopt"]),
    st.sampled_from(SYMBOLS),
    st.sampled_from(["buy", "sell"]),
    quantities,
    prices,
    st.integers(0, 500),  # commission cents
)


@settings(max_examples=300, deadline=None)
@given(stream=st.lists(ops, min_size=1, max_size=60))
def test_random_fill_streams_keep_equity_cash_and_cost_exact_to_the_cent(stream: list[Op]) -> None:
    """After every fill of any stream (buys, sells, closes, flips through zero, shorts; whole and
    fractional shares): equity = initial + realized + unrealized - commissions, a closed position
    has cost 0, and cash = initial - sum(signed fill values) - commissions, all in exact cents."""
    led = Ledger(INITIAL_CENTS)
    signed_fill_values = 0
    commissions = 0
    for kind, symbol, side, qty, price, commission in stream:
        held = led.qty(symbol)
        if kind == "mark":
            led.mark(symbol, price)
            assert_identities(led, signed_fill_values, commissions)
            continue
        if kind == "adopt":
            # The broker states a position (a restart's reconciliation): cash is not touched,
            # so only the totals are checked against the positions.
            adopted = qty if side == "buy" else -qty
            led.set_position(symbol, adopted, value_cents(adopted, price), price)
            assert (led.market_value_cents(), led.gross_exposure_cents(), led.realized_cents(),
                    led.unrealized_cents()) == book_by_hand(led)
            led = Ledger(INITIAL_CENTS)  # start over: the cash identity no longer applies
            signed_fill_values = commissions = 0
            continue
        if kind in ("close", "flip"):
            if held == 0:
                continue
            side = "sell" if held > 0 else "buy"
            qty = abs(held) + (qty if kind == "flip" else 0.0)
        led.apply_fill(symbol, side, qty, price, commission)
        signed_fill_values += value_cents(qty, price) if side == "buy" else -value_cents(qty, price)
        commissions += commission
        if kind == "close":
            assert led.qty(symbol) == 0
        elif kind == "flip":
            assert (led.qty(symbol) > 0) == (held < 0)
        assert_identities(led, signed_fill_values, commissions)


bars_at = st.lists(
    st.tuples(st.integers(0, 5), st.sampled_from(SYMBOLS), prices), min_size=1, max_size=30
).map(lambda rows: [BarClosed(ts_ns=t, symbol=s, open=p, high=p, low=p, close=p, volume=1.0)
                    for t, s, p in sorted(rows, key=lambda r: r[0])])


@settings(max_examples=200, deadline=None)
@given(fills=st.lists(st.tuples(st.sampled_from(SYMBOLS), st.sampled_from(["buy", "sell"]),
                                quantities, prices), max_size=6),
       bars=bars_at, more=bars_at)
def test_the_equity_curve_of_a_batch_is_the_book_valued_after_each_timestamp(
    fills: list[tuple[str, Literal["buy", "sell"], float, float]],
    bars: list[BarClosed], more: list[BarClosed],
) -> None:
    """mark_curve gives, after each timestamp's last bar, exactly the equity and gross exposure
    the book has when its positions are valued one by one at the last prices; mark_bars marks
    the same way, and the totals asked for later agree."""
    led = Ledger(INITIAL_CENTS)
    for symbol, side, qty, price in fills:
        led.apply_fill(symbol, side, qty, price, 0)

    ts, equity, gross = led.mark_curve(bars)

    expected: list[tuple[int, int, int]] = []
    by_hand = Ledger(INITIAL_CENTS)
    for symbol, side, qty, price in fills:
        by_hand.apply_fill(symbol, side, qty, price, 0)
    for i, bar in enumerate(bars):
        by_hand.mark(bar.symbol, bar.close)
        if i + 1 == len(bars) or bars[i + 1].ts_ns != bar.ts_ns:
            value, exposure, _, _ = book_by_hand(by_hand)
            expected.append((bar.ts_ns, by_hand.cash_cents + value, exposure))
    assert list(zip(ts, equity, gross, strict=True)) == expected
    assert (led.market_value_cents(), led.gross_exposure_cents()) == book_by_hand(led)[:2]

    led.mark_bars(more)
    for bar in more:
        by_hand.mark(bar.symbol, bar.close)
    assert book_by_hand(led) == book_by_hand(by_hand)
    assert (led.market_value_cents(), led.gross_exposure_cents(), led.realized_cents(),
            led.unrealized_cents()) == book_by_hand(led)
