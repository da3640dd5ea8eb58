"""Pre-trade checks and sizing: each check denies exactly the orders it should."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.config import RiskConfig
from trader.messages import Side
from trader.money import value_cents
from trader.risk_checks import (
    CHECKS,
    GATES,
    MINUTE_NS,
    Context,
    Intent,
    check_buying_power,
    check_duplicate_intent,
    check_gross_exposure,
    check_max_open_orders,
    check_max_order_notional,
    check_max_position_notional,
    check_max_position_shares,
    check_net_exposure,
    check_order_pending,
    check_order_rate,
    check_price_collar,
    check_regular_hours,
    check_short_selling,
    check_symbol_order_rate,
    check_trading_state,
    daily_loss_breached,
    drawdown_breached,
    exposure_after,
    first_denial,
    position_after,
    shrinks,
)
from trader.sizing import Atr, confidence, target_cents, volatility_shares

T = 1_699_974_000_000_000_000  # 2023-11-14 10:00 New York: inside a regular session
S = 1_000_000_000


def intent(side: Side = "buy", qty: float = 10.0, price: float = 100.0, *,
           ts: int = T, reduces: bool | None = None, position: float = 0.0) -> Intent:
    return Intent(
        ts_ns=ts, symbol="X", side=side, qty=qty, price=price,
        notional_cents=value_cents(qty, price),
        reduces=shrinks(position, side, qty) if reduces is None else reduces,
    )


def ctx(**kw: Any) -> Context:
    base: dict[str, Any] = {"equity_cents": 10_000_000, "buying_power_cents": 10_000_000,
                            "mark_price": 100.0}
    base.update(kw)
    return Context(**base)


def cfg(**kw: Any) -> RiskConfig:
    return RiskConfig(**kw)


def code(result: object) -> str | None:
    return getattr(result, "code", None)


# --- defaults ----------------------------------------------------------------------


def test_with_default_limits_every_check_passes_an_affordable_order() -> None:
    """No limit is on by default: only buying power and short selling bind."""
    assert first_denial(GATES + CHECKS, intent(), ctx(), cfg()) is None
    assert first_denial(CHECKS, intent("sell", position=10.0), ctx(position_qty=10.0),
                        cfg()) is None


# --- gates -------------------------------------------------------------------------


def test_order_pending_denies_only_symbols_with_an_open_order() -> None:
    """A symbol with an open order waits; the others do not."""
    assert code(check_order_pending(intent(), ctx(symbol_open_orders=1), cfg())) == "order_pending"
    assert check_order_pending(intent(), ctx(open_orders=3), cfg()) is None


@pytest.mark.parametrize(
    ("state", "reduces", "denied"),
    [("ACTIVE", False, False), ("ACTIVE", True, False), ("REDUCING", False, True),
     ("REDUCING", True, False), ("HALTED", False, True), ("HALTED", True, True)],
)
def test_trading_state_lets_through_what_each_state_allows(
    state: str, reduces: bool, denied: bool
) -> None:
    """ACTIVE: all; REDUCING: only orders that shrink a position; HALTED: nothing."""
    result = check_trading_state(intent(reduces=reduces), ctx(state=state), cfg())
    assert (code(result) == "trading_state") is denied


# --- checks ------------------------------------------------------------------------


def test_short_selling_denies_only_sells_that_go_below_zero() -> None:
    """Selling what you hold is fine; selling more is a short, allowed only by config."""
    c = ctx(position_qty=10.0)
    assert check_short_selling(intent("sell", 10.0), c, cfg()) is None
    assert code(check_short_selling(intent("sell", 11.0), c, cfg())) == "short_selling"
    assert check_short_selling(intent("sell", 11.0), c, cfg(allow_short=True)) is None
    assert check_short_selling(intent("buy", 50.0), c, cfg()) is None


def test_price_collar_denies_prices_further_than_the_collar_from_the_last_trade() -> None:
    """5% collar around a last trade of 100: 105 passes, 105.01 and 94.99 do not."""
    c, limits = ctx(mark_price=100.0), cfg(price_collar_pct=5.0)
    assert check_price_collar(intent(price=105.0), c, limits) is None
    assert check_price_collar(intent(price=95.0), c, limits) is None
    assert code(check_price_collar(intent(price=105.01), c, limits)) == "price_collar"
    assert code(check_price_collar(intent("sell", price=94.99), c, limits)) == "price_collar"
    assert check_price_collar(intent(price=500.0), c, cfg()) is None  # off by default
    assert check_price_collar(intent(price=500.0), ctx(mark_price=0.0), limits) is None


def test_duplicate_intent_denies_the_same_symbol_and_side_within_the_window() -> None:
    """Window 30 s: the same side 29 s later is a duplicate, 30 s later or the other side is not."""
    limits = cfg(duplicate_window_s=30.0)
    c = ctx(last_same_intent_ns=T)
    assert code(check_duplicate_intent(intent(ts=T + 29 * S), c, limits)) == "duplicate_intent"
    assert check_duplicate_intent(intent(ts=T + 30 * S), c, limits) is None
    assert check_duplicate_intent(intent(ts=T + 1), ctx(), limits) is None
    assert check_duplicate_intent(intent(ts=T + 1), c, cfg()) is None


def test_order_rates_count_orders_in_the_last_sixty_seconds_of_message_time() -> None:
    """Three per minute: a fourth inside the minute is denied; one past it is not."""
    times = [T, T + 10 * S, T + 20 * S]
    limits = cfg(max_orders_per_minute=3, max_orders_per_minute_per_symbol=3)
    assert code(check_order_rate(intent(ts=T + 59 * S), ctx(orders_ns=times), limits)) == (
        "order_rate")
    assert check_order_rate(intent(ts=T + MINUTE_NS), ctx(orders_ns=times), limits) is None
    assert code(check_symbol_order_rate(intent(ts=T + 59 * S), ctx(symbol_orders_ns=times),
                                        limits)) == "symbol_order_rate"
    assert check_symbol_order_rate(intent(ts=T + 59 * S), ctx(orders_ns=times), limits) is None
    assert check_order_rate(intent(ts=T + 59 * S), ctx(orders_ns=times), cfg()) is None


def test_max_open_orders_denies_at_the_limit() -> None:
    """With two allowed, a third order waits."""
    limits = cfg(max_open_orders=2)
    assert check_max_open_orders(intent(), ctx(open_orders=1), limits) is None
    assert code(check_max_open_orders(intent(), ctx(open_orders=2), limits)) == "max_open_orders"


def test_max_order_notional_denies_large_orders_that_do_not_shrink_a_position() -> None:
    """$1000 cap: 10 x 100 passes, 11 x 100 does not, unless it closes a position."""
    limits = cfg(max_order_notional_usd=1000.0)
    assert check_max_order_notional(intent(qty=10.0), ctx(), limits) is None
    assert code(check_max_order_notional(intent(qty=11.0), ctx(), limits)) == (
        "max_order_notional")
    closing = intent("sell", 50.0, position=50.0)
    assert check_max_order_notional(closing, ctx(position_qty=50.0), limits) is None


def test_max_position_limits_deny_growth_beyond_them_but_never_a_reduction() -> None:
    """100 shares / $10,000 per symbol: growing past is denied; shrinking, even above, is not."""
    shares, notional = cfg(max_position_shares=100), cfg(max_position_notional_usd=10_000.0)
    assert check_max_position_shares(intent(qty=100.0), ctx(), shares) is None
    assert code(check_max_position_shares(intent(qty=101.0), ctx(), shares)) == (
        "max_position_shares")
    assert code(check_max_position_shares(intent("sell", 101.0), ctx(), shares)) == (
        "max_position_shares")
    assert check_max_position_shares(intent("sell", 10.0), ctx(position_qty=150.0),
                                     shares) is None
    assert check_max_position_notional(intent(qty=100.0), ctx(), notional) is None
    assert code(check_max_position_notional(intent(qty=100.01), ctx(), notional)) == (
        "max_position_notional")
    assert check_max_position_notional(intent("sell", 1.0), ctx(position_qty=200.0),
                                       notional) is None


def test_gross_exposure_denies_growth_beyond_the_percent_of_equity() -> None:
    """Equity $100,000 with a 50% gross cap: $50,000 of positions is the most."""
    limits = cfg(max_gross_exposure_pct=50.0)
    c = ctx(gross_cents=4_000_000, net_cents=4_000_000)  # $40,000 elsewhere
    assert check_gross_exposure(intent(qty=100.0), c, limits) is None  # +$10,000
    assert code(check_gross_exposure(intent(qty=101.0), c, limits)) == "max_gross_exposure"
    # Already above the cap: a sell that shrinks a position passes.
    held = ctx(position_qty=600.0, gross_cents=6_000_000, net_cents=6_000_000)
    assert check_gross_exposure(intent("sell", 10.0), held, limits) is None


def test_net_exposure_denies_what_moves_net_exposure_further_past_the_limit() -> None:
    """A 20% net cap: a short that hedges a long passes, more of the long does not."""
    limits = cfg(max_net_exposure_pct=20.0, allow_short=True)
    c = ctx(gross_cents=3_000_000, net_cents=3_000_000)  # $30,000 long elsewhere
    assert code(check_net_exposure(intent(qty=1.0), c, limits)) == "max_net_exposure"
    assert check_net_exposure(intent("sell", 100.0), c, limits) is None
    assert check_gross_exposure(intent("sell", 100.0), c, cfg()) is None


def test_buying_power_denies_buys_that_cost_more_than_it_and_no_sell() -> None:
    """$1,000 of buying power: 10 x 100 passes, 10 x 100.01 does not; sells never need it."""
    c = ctx(buying_power_cents=100_000, position_qty=100.0)
    assert check_buying_power(intent(qty=10.0), c, cfg()) is None
    assert code(check_buying_power(intent(qty=10.0, price=100.01), c, cfg())) == (
        "insufficient_buying_power")
    assert check_buying_power(intent("sell", 100.0), c, cfg()) is None


def test_the_first_failing_check_names_the_denial() -> None:
    """Several limits broken at once: the earliest in CHECKS is reported."""
    limits = cfg(max_order_notional_usd=10.0, max_open_orders=1)
    denial = first_denial(CHECKS, intent(), ctx(open_orders=5), limits)
    assert code(denial) == "max_open_orders"


# --- breakers ----------------------------------------------------------------------


def test_drawdown_trips_at_the_limit_from_the_high_water_mark() -> None:
    """10%: 100,000 -> 90,001 holds, 90,000 trips."""
    assert not drawdown_breached(10_000_000, 9_000_100, 10.0)
    assert drawdown_breached(10_000_000, 9_000_000, 10.0)
    assert not drawdown_breached(10_000_000, 1, 0.0)


def test_daily_loss_trips_at_the_limit() -> None:
    """$500 a day: a $499.99 loss holds, $500 trips."""
    assert not daily_loss_breached(10_000_000, 9_950_001, 50_000)
    assert daily_loss_breached(10_000_000, 9_950_000, 50_000)


# --- properties --------------------------------------------------------------------

qtys = st.integers(min_value=-10_000, max_value=10_000).map(float)
order_qtys = st.integers(min_value=1, max_value=10_000).map(float)
prices = st.decimals(min_value="0.01", max_value="5000", places=2).map(float)
sides = st.sampled_from(["buy", "sell"])


@given(position=qtys, side=sides, qty=order_qtys, price=prices,
       others=st.lists(st.tuples(qtys, prices), max_size=5))
def test_exposure_after_is_the_sum_over_positions_after_the_fill(
    position: float, side: Side, qty: float, price: float, others: list[tuple[float, float]]
) -> None:
    """Gross and net after an order equal a recomputation over every position."""
    values = [value_cents(q, p) for q, p in others]
    c = ctx(position_qty=position, mark_price=price,
            gross_cents=sum(abs(v) for v in values) + abs(value_cents(position, price)),
            net_cents=sum(values) + value_cents(position, price))
    gross, net = exposure_after(c, intent(side, qty, price, position=position))
    after = value_cents(position_after(position, side, qty), price)
    assert gross == sum(abs(v) for v in values) + abs(after)
    assert net == sum(values) + after
    assert abs(net) <= gross
    if shrinks(position, side, qty):
        assert gross < c.gross_cents
        assert abs(after) < abs(value_cents(position, price))


@given(position=qtys, side=sides, qty=order_qtys, price=prices)
def test_an_order_that_shrinks_a_position_passes_every_size_and_exposure_limit(
    position: float, side: Side, qty: float, price: float
) -> None:
    """Whatever the limits, getting smaller is never refused by a size or exposure check."""
    limits = cfg(max_position_shares=1, max_position_notional_usd=1.0,
                 max_order_notional_usd=1.0, max_gross_exposure_pct=1.0,
                 max_net_exposure_pct=1.0, allow_short=True)
    v = value_cents(position, price)
    c = ctx(position_qty=position, mark_price=price, gross_cents=abs(v), net_cents=v,
            equity_cents=1_000)
    i = intent(side, qty, price, position=position)
    size_checks = (check_max_order_notional, check_max_position_shares,
                   check_max_position_notional, check_gross_exposure, check_net_exposure)
    if i.reduces:
        assert first_denial(size_checks, i, c, limits) is None


@given(budget=st.integers(min_value=0, max_value=10**9),
       atr=st.decimals(min_value="0.01", max_value="500", places=4).map(float),
       k=st.decimals(min_value="0.1", max_value="10", places=2).map(float))
def test_volatility_shares_are_the_most_whole_shares_the_budget_covers(
    budget: int, atr: float, k: float
) -> None:
    """floor(budget / (ATR x k)): it fits the budget, and one more share would not."""
    shares = volatility_shares(budget, atr, k)
    per_share = Fraction(repr(atr)) * Fraction(repr(k))
    assert isinstance(shares, int)
    assert shares >= 0
    assert shares * per_share <= Fraction(budget, 100)
    assert (shares + 1) * per_share > Fraction(budget, 100)


@given(weight=st.sampled_from([-1.0, -0.5, 0.25, 1.0]),
       p=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
       atr=st.floats(min_value=0.05, max_value=50.0),
       price=prices,
       sizing=st.sampled_from(["target_weight", "fixed_notional", "fixed_fraction",
                               "volatility_target"]))
def test_confidence_never_enlarges_a_target_and_volatility_targets_are_whole_shares(
    weight: float, p: float | None, atr: float, price: float, sizing: str
) -> None:
    """Scaling by p shrinks (or keeps) every target; a volatility target is n shares x price."""
    limits = RiskConfig(sizing=sizing, fixed_fraction=0.5)  # type: ignore[arg-type]
    full = target_cents(limits, weight, 10_000_000, price, atr=atr)
    scaled = target_cents(limits, weight, 10_000_000, price, atr=atr, probability=p)
    assert full is not None
    assert scaled is not None
    assert abs(scaled) <= abs(full)
    assert scaled * weight >= 0
    if p is None:
        assert scaled == full
    if sizing == "volatility_target":
        shares = abs(scaled) / 100 / price
        assert math.isclose(shares, round(shares), abs_tol=1e-6)


def test_confidence_is_the_probability_clipped_and_one_when_unscored() -> None:
    """The documented rule: p in [0, 1]; None (unscored) is 1; NaN is 0."""
    assert confidence(None) == 1.0
    assert confidence(0.8) == 0.8
    assert confidence(1.5) == 1.0
    assert confidence(float("nan")) == 0.0


def test_target_sizing_rules_by_hand() -> None:
    """Each rule on $100,000 at $50: weight, fixed notional, fraction, volatility."""
    eq = 10_000_000
    assert target_cents(cfg(), 0.5, eq, 50.0) == 5_000_000
    assert target_cents(cfg(sizing="fixed_notional"), -1.0, eq, 50.0) == -1_000_000
    assert target_cents(cfg(sizing="fixed_fraction", fixed_fraction=0.2), 1.0, eq, 50.0) == (
        2_000_000)
    vol = cfg(sizing="volatility_target", risk_per_position_usd=1000.0, atr_multiple=2.0)
    # $1000 / (2.5 x 2) = 200 shares x $50.
    assert target_cents(vol, 1.0, eq, 50.0, atr=2.5) == 1_000_000
    assert target_cents(vol, 1.0, eq, 50.0, atr=2.5, probability=0.5) == 500_000
    assert target_cents(vol, 1.0, eq, 50.0) is None
    assert target_cents(vol, 0.0, eq, 50.0) == 0


def test_atr_is_wilders_average_of_true_ranges() -> None:
    """Period 3: the first value averages three true ranges, then Wilder smoothing."""
    atr = Atr(3)
    assert atr.update(11.0, 9.0, 10.0) is None  # tr 2
    assert atr.update(12.0, 10.0, 11.0) is None  # tr max(2, 2, 0) = 2
    assert atr.update(15.0, 12.0, 14.0) == pytest.approx((2 + 2 + 4) / 3)  # tr 4 (15 - 11)
    assert atr.update(14.0, 13.0, 13.0) == pytest.approx(((8 / 3) * 2 + 1) / 3)


# --- the market calendar --------------------------------------------------------------

PRE_MARKET = 1_699_968_600_000_000_000  # 2023-11-14 08:30 New York
SATURDAY = 1_700_326_800_000_000_000  # 2023-11-18 12:00 New York
CLOSE_2023_11_14 = 1_699_995_600_000_000_000  # 16:00 New York


def test_entries_from_bars_outside_regular_hours_are_denied() -> None:
    """A pre-market or weekend bar cannot open a position; an exit from it can."""
    for ts in (PRE_MARKET, SATURDAY):
        denial = check_regular_hours(intent(ts=ts), ctx(), cfg())
        assert denial is not None
        assert denial.code == "outside_regular_hours"
        assert check_regular_hours(intent("sell", ts=ts, position=10.0), ctx(), cfg()) is None


def test_entries_outside_regular_hours_can_be_allowed() -> None:
    """entries_outside_regular_hours = true lets them through."""
    allowed = cfg(entries_outside_regular_hours=True)
    assert check_regular_hours(intent(ts=PRE_MARKET), ctx(), allowed) is None


def test_a_bar_closing_at_the_session_close_is_inside_the_session() -> None:
    """The 16:00 bar (and a daily bar) belongs to its session: entries allowed."""
    assert check_regular_hours(intent(ts=CLOSE_2023_11_14), ctx(), cfg()) is None


def test_no_entries_inside_the_flatten_before_close_window() -> None:
    """With flatten_before_close_min = 15, an entry at 15:50 is denied, one at 15:40 is not."""
    c = cfg(flatten_before_close_min=15.0)
    at_1550 = CLOSE_2023_11_14 - 10 * 60 * 10**9
    at_1540 = CLOSE_2023_11_14 - 20 * 60 * 10**9
    denial = check_regular_hours(intent(ts=at_1550), ctx(), c)
    assert denial is not None
    assert denial.code == "near_close"
    assert check_regular_hours(intent(ts=at_1540), ctx(), c) is None
