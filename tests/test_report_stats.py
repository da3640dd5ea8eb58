"""Tests for trader.report.stats: summary figures, daily returns, round trips and the table."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.report import stats
from trader.report.stats import (
    FillRow,
    Summary,
    Trade,
    daily_returns,
    drawdown,
    format_table,
    match_fills,
    round_trips,
    summarize,
)

NEW_YORK = ZoneInfo("America/New_York")
DAY_NS = 86_400_000_000_000


def ny_ns(year: int, month: int, day: int, hour: int = 16, minute: int = 0) -> int:
    """UTC nanoseconds of a New York wall-clock time."""
    local = dt.datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)
    return int(local.timestamp()) * 1_000_000_000


def utc_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """UTC nanoseconds of a UTC wall-clock time."""
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC).timestamp()) * 10**9


def ints(values: list[int]) -> npt.NDArray[np.int64]:
    return np.array(values, dtype=np.int64)


def fill(
    ts_ns: int, side: str, qty: float, price: float, commission_cents: int = 0, symbol: str = "AAA"
) -> FillRow:
    assert side in ("buy", "sell")
    return FillRow(
        ts_ns=ts_ns,
        symbol=symbol,
        side="buy" if side == "buy" else "sell",
        qty=qty,
        price=price,
        commission_cents=commission_cents,
    )


def trade(pnl_cents: int) -> Trade:
    return Trade(
        symbol="AAA",
        entry_ts_ns=0,
        exit_ts_ns=1,
        qty=1.0,
        entry_price=1.0,
        exit_price=1.0,
        pnl_cents=pnl_cents,
        commission_cents=0,
    )


def summary_of(
    ts: list[int],
    equity: list[int],
    *,
    initial: int,
    trades: list[Trade] | None = None,
    exposure: list[int] | None = None,
    risk_free_rate: float = 0.0,
) -> Summary:
    return summarize(
        ts_ns=ints(ts),
        equity_cents=ints(equity),
        exposure_cents=ints(exposure if exposure is not None else [0] * len(ts)),
        trades=trades or [],
        commissions_cents=0,
        bars=len(ts),
        initial_equity_cents=initial,
        risk_free_rate=risk_free_rate,
    )


# The worked example: $100,000 → $110,000 → $99,000 → $121,000 at four New York closes.
EXAMPLE_TS = [ny_ns(2024, 1, day) for day in (2, 3, 4, 5)]
EXAMPLE_EQUITY = [10_000_000, 11_000_000, 9_900_000, 12_100_000]
EXAMPLE_INITIAL = 10_000_000


# --------------------------------------------------------------------------- summary


def test_worked_example_daily_returns_are_close_to_close_from_the_initial_equity() -> None:
    """Returns are 100k/100k-1 = 0, 110k/100k-1 = 0.1, 99k/110k-1 = -0.1, 121k/99k-1 = 2/9."""
    dates, returns = daily_returns(ints(EXAMPLE_TS), ints(EXAMPLE_EQUITY), EXAMPLE_INITIAL)

    assert dates == [dt.date(2024, 1, day) for day in (2, 3, 4, 5)]
    assert returns.tolist() == pytest.approx([0.0, 0.1, -0.1, 2 / 9], abs=1e-15)


def test_worked_example_summary_matches_the_hand_computation() -> None:
    """Hand-worked figures for returns r = [0, 1/10, -1/10, 2/9].

    total return = 121,000 / 100,000 - 1 = 0.21.
    max drawdown = (110,000 - 99,000) / 110,000 = 0.10, from the Jan 3 peak to the
    Jan 5 recovery: 2.0 days. Period Jan 2 16:00 → Jan 5 16:00 = 3.0 days.
    mean r = (2/9) / 4 = 1/18; sum of squared deviations = sum r² - 4·mean²
    = 1/50 + 4/81 - 1/81 = 77/1350, so var (ddof=1) = 77/4050.
    Sharpe = (1/18) / sqrt(77/4050) · sqrt(252); squared: 4050·252 / (324·77) = 450/11,
    so Sharpe = sqrt(450/11) ≈ 6.3960.
    annual volatility = sqrt(77/4050 · 252) = sqrt(19404/4050) ≈ 2.18886.
    downside deviation = sqrt((0.1²) / 4) = 0.05, so Sortino = (1/18) / 0.05 · sqrt(252)
    = (10/9) · 6·sqrt(7) = (20/3)·sqrt(7) ≈ 17.6383.
    """
    summary = summary_of(EXAMPLE_TS, EXAMPLE_EQUITY, initial=EXAMPLE_INITIAL)

    assert summary.start_ts_ns == EXAMPLE_TS[0]
    assert summary.end_ts_ns == EXAMPLE_TS[-1]
    assert summary.period_days == 3.0
    assert summary.initial_equity == 100_000.0
    assert summary.final_equity == 121_000.0
    assert summary.total_return == pytest.approx(0.21, abs=1e-15)
    assert summary.max_drawdown == pytest.approx(0.10, abs=1e-15)
    assert summary.max_drawdown_duration_days == 2.0
    assert summary.sharpe == pytest.approx(math.sqrt(450 / 11), rel=1e-12)
    assert summary.annual_volatility == pytest.approx(math.sqrt(19404 / 4050), rel=1e-12)
    assert summary.sortino == pytest.approx(20 / 3 * math.sqrt(7), rel=1e-12)


def test_daily_returns_group_by_new_york_date_across_daylight_saving() -> None:
    """Points 23:30 and 00:30 New York time fall on two dates in winter and in summer.

    Jan 2 23:30 EST is 04:30 UTC on Jan 3 and Jul 2 23:30 EDT is 03:30 UTC on Jul 3, so a
    fixed offset (or UTC dates) would group one of the pairs wrongly. Closes:
    Jan 2 100 → +0 %, Jan 3 110 → +10 %, Jul 2 99 → -10 %, Jul 3 99 → 0 %.
    """
    ts = [
        ny_ns(2024, 1, 2, 23, 30),
        ny_ns(2024, 1, 3, 0, 30),
        ny_ns(2024, 7, 2, 23, 30),
        ny_ns(2024, 7, 3, 0, 30),
    ]
    dates, returns = daily_returns(ints(ts), ints([100, 110, 99, 99]), 100)

    assert dates == [
        dt.date(2024, 1, 2),
        dt.date(2024, 1, 3),
        dt.date(2024, 7, 2),
        dt.date(2024, 7, 3),
    ]
    assert returns.tolist() == pytest.approx([0.0, 0.1, -0.1, 0.0], abs=1e-15)


def test_daily_returns_use_the_last_point_of_each_date_as_its_close() -> None:
    """Intraday points 100 → 120 → 105 close the day at 105: return 105/100 - 1 = 0.05."""
    ts = [ny_ns(2024, 3, 4, 10), ny_ns(2024, 3, 4, 12), ny_ns(2024, 3, 4, 16)]
    dates, returns = daily_returns(ints(ts), ints([100, 120, 105]), 100)

    assert dates == [dt.date(2024, 3, 4)]
    assert returns.tolist() == pytest.approx([0.05], abs=1e-15)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.integers(min_value=utc_ns(2000, 1, 1), max_value=utc_ns(2040, 1, 1)),
        min_size=1,
        max_size=200,
    )
)
def test_daily_return_dates_agree_with_zoneinfo_point_by_point(stamps: list[int]) -> None:
    """The vectorised New York date of every point equals zoneinfo's, one by one."""
    ts = sorted(stamps)
    dates, _ = daily_returns(ints(ts), ints([100] * len(ts)), 100)

    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    # Whole microseconds, floored, so no float rounding can push a point past midnight.
    expected = sorted(
        {(epoch + dt.timedelta(microseconds=t // 1000)).astimezone(NEW_YORK).date() for t in ts}
    )
    assert dates == expected


def test_max_drawdown_counts_intraday_points_not_only_closes() -> None:
    """100 → 80 → 100 within one day closes flat but drew down (100 - 80) / 100 = 20 %."""
    ts = [ny_ns(2024, 3, 4, 10), ny_ns(2024, 3, 4, 12), ny_ns(2024, 3, 4, 16)]
    summary = summary_of(ts, [10_000, 8_000, 10_000], initial=10_000)

    assert summary.max_drawdown == pytest.approx(0.20, abs=1e-15)
    assert summary.max_drawdown_duration_days == pytest.approx(6 / 24)


def test_drawdown_is_measured_from_the_initial_equity_as_first_peak() -> None:
    """Starting below the initial 100 at 90 is a 10 % drawdown; 120 then 60 is 50 %."""
    assert drawdown(ints([90, 120, 60]), 100).tolist() == pytest.approx([0.1, 0.0, 0.5])


def test_drawdown_duration_runs_to_the_end_when_equity_never_recovers() -> None:
    """Peak 110 on day 1, still below it on day 5: underwater 4.0 days."""
    ts = [ny_ns(2024, 3, day) for day in (4, 5, 6, 7, 8)]
    summary = summary_of(ts, [11_000, 10_500, 10_900, 10_000, 10_999], initial=10_000)

    assert summary.max_drawdown_duration_days == 4.0


def test_drawdown_duration_takes_the_longest_of_several_episodes() -> None:
    """Equity 100, 90, 105, 100, 101, 105 at six daily closes (initial 100).

    Underwater from the day-1 peak of 100 until day 3 (2 days), then from the day-3 peak of
    105 until day 6, when equity is exactly back at it (3 days): the longest is 3.0 days.
    """
    ts = [ny_ns(2024, 3, day) for day in (4, 5, 6, 7, 8, 9)]
    equity = [10_000, 9_000, 10_500, 10_000, 10_100, 10_500]
    summary = summary_of(ts, equity, initial=10_000)

    assert summary.max_drawdown_duration_days == 3.0


def test_cagr_compounds_over_calendar_days() -> None:
    """21 % over 730.5 days (two years of 365.25 days) is 1.21 ** (1/2) - 1 = 10 % a year."""
    start = utc_ns(2020, 1, 1)
    summary = summary_of([start, start + 7305 * DAY_NS // 10], [10_000, 12_100], initial=10_000)

    assert summary.period_days == 730.5
    assert summary.cagr == pytest.approx(0.10, rel=1e-12)


def test_single_point_gives_zero_period_cagr_and_no_volatility() -> None:
    """One point: period 0 days so CAGR 0.0; one daily return so no volatility and Sharpe 0.0."""
    summary = summary_of([ny_ns(2024, 3, 4)], [10_500], initial=10_000)

    assert summary.period_days == 0.0
    assert summary.cagr == 0.0
    assert summary.total_return == pytest.approx(0.05)
    assert summary.annual_volatility is None
    assert summary.sharpe == 0.0
    assert summary.sortino == 0.0


def test_identical_daily_returns_give_zero_sharpe_rather_than_a_huge_one() -> None:
    """Returns 10 %, 10 %, 10 % (100 → 110 → 121 → 133.1) have zero spread: Sharpe 0.0."""
    ts = [ny_ns(2024, 3, day) for day in (4, 5, 6)]
    summary = summary_of(ts, [11_000_000, 12_100_000, 13_310_000], initial=10_000_000)

    assert summary.sharpe == 0.0
    assert summary.annual_volatility == 0.0
    assert summary.sortino == 0.0  # no down day: zero downside deviation


def test_risk_free_rate_is_annual_and_divided_by_252() -> None:
    """Returns 3 %, 1 %, 2 % with rf 2.52 a year (1 % a day): excess 2 %, 0 %, 1 %.

    Excess mean 0.01 and std (ddof=1) 0.01, so Sharpe = 1 · sqrt(252) ≈ 15.875; no excess
    return is negative, so Sortino is 0.0. Equity: 100,000 → 103,000 → 104,030 → 106,110.60.
    """
    ts = [ny_ns(2024, 3, day) for day in (4, 5, 6)]
    summary = summary_of(
        ts, [10_300_000, 10_403_000, 10_611_060], initial=10_000_000, risk_free_rate=2.52
    )

    assert summary.sharpe == pytest.approx(math.sqrt(252), rel=1e-9)
    assert summary.sortino == 0.0


def test_equity_falling_to_zero_makes_return_ratios_none_not_nan() -> None:
    """A close of 0 is the base of an undefined return: volatility/Sharpe/Sortino are None.

    Final equity -50 is below zero, so CAGR is None too; the record still encodes as JSON.
    """
    ts = [ny_ns(2024, 3, day) for day in (4, 5, 6)]
    summary = summary_of(ts, [5_000, 0, -50], initial=10_000)

    assert summary.annual_volatility is None
    assert summary.sharpe is None
    assert summary.sortino is None
    assert summary.cagr is None
    assert summary.max_drawdown == pytest.approx(1.005)
    decoded = msgspec.json.decode(msgspec.json.encode(summary), type=Summary)
    assert decoded == summary


def test_cagr_is_none_when_compounding_overflows() -> None:
    """Doubling in one minute compounds to 2 ** 525,960 a year, beyond a float: None."""
    start = ny_ns(2024, 3, 4, 10)
    summary = summary_of([start, start + 60 * 10**9], [10_000, 20_000], initial=10_000)

    assert summary.cagr is None


def test_trade_statistics_from_net_pnl() -> None:
    """Trades +300, -100, 0, +100 cents: win rate 2/4, profit factor 400/100 = 4.0, mean $0.75."""
    summary = summary_of(
        [ny_ns(2024, 3, 4)],
        [10_000],
        initial=10_000,
        trades=[trade(300), trade(-100), trade(0), trade(100)],
    )

    assert summary.trades == 4
    assert summary.win_rate == 0.5
    assert summary.profit_factor == 4.0
    assert summary.average_trade == 0.75


def test_profit_factor_is_none_without_losing_trades() -> None:
    """Trades +300 and 0 have no gross loss, so the ratio is undefined: None, win rate 1/2."""
    summary = summary_of(
        [ny_ns(2024, 3, 4)], [10_000], initial=10_000, trades=[trade(300), trade(0)]
    )

    assert summary.profit_factor is None
    assert summary.win_rate == 0.5


def test_no_trades_gives_zero_win_rate_and_average() -> None:
    """Without trades, win rate and average trade are 0.0 and the profit factor None."""
    summary = summary_of([ny_ns(2024, 3, 4)], [10_000], initial=10_000)

    assert (summary.trades, summary.win_rate, summary.average_trade) == (0, 0.0, 0.0)
    assert summary.profit_factor is None


def test_exposure_and_commissions() -> None:
    """Exposure non-zero at 1 of 4 points is 25 %; 1,234 cents of commission is $12.34."""
    summary = summarize(
        ts_ns=ints(EXAMPLE_TS),
        equity_cents=ints(EXAMPLE_EQUITY),
        exposure_cents=ints([0, 0, -500, 0]),
        trades=[],
        commissions_cents=1_234,
        bars=390,
        initial_equity_cents=EXAMPLE_INITIAL,
    )

    assert summary.exposure == 0.25
    assert summary.commissions == 12.34
    assert summary.bars == 390


def test_summarize_rejects_empty_unsorted_and_float_series() -> None:
    """No points, time going backwards, float cents and a non-positive initial equity raise."""
    with pytest.raises(ValueError, match="at least one"):
        summary_of([], [], initial=10_000)
    with pytest.raises(ValueError, match="non-decreasing"):
        summary_of([2, 1], [10_000, 10_000], initial=10_000)
    with pytest.raises(ValueError, match="positive"):
        summary_of([1], [10_000], initial=0)
    with pytest.raises(TypeError, match="integer"):
        summarize(
            ts_ns=ints([1]),
            equity_cents=np.array([100.5]),
            exposure_cents=ints([0]),
            trades=[],
            commissions_cents=0,
            bars=1,
            initial_equity_cents=100,
        )


# --------------------------------------------------------------------------- round trips


def test_a_long_round_trip_nets_both_commissions() -> None:
    """Buy 10 @ 100 and sell 10 @ 110 with 100 cents each: gross 10·10·100 = 10,000 → 9,800."""
    trades = round_trips([fill(1, "buy", 10, 100.0, 100), fill(2, "sell", 10, 110.0, 100)])

    assert trades == [
        Trade(
            symbol="AAA",
            entry_ts_ns=1,
            exit_ts_ns=2,
            qty=10.0,
            entry_price=100.0,
            exit_price=110.0,
            pnl_cents=9_800,
            commission_cents=200,
        )
    ]


def test_a_short_round_trip_has_negative_qty_and_profits_from_a_fall() -> None:
    """Sell 5 @ 20, buy 5 @ 18: qty -5, gross (18 - 20)·(-5)·100 = +1,000 cents."""
    (only,) = round_trips([fill(1, "sell", 5, 20.0), fill(2, "buy", 5, 18.0)])

    assert only.qty == -5.0
    assert only.pnl_cents == 1_000


def test_partial_closes_match_fifo_and_split_commissions_pro_rata() -> None:
    """Buy 10 @ 100 (c 10), buy 10 @ 102 (c 10), sell 15 @ 105 (c 15), sell 5 @ 101 (c 4).

    The 15-lot sell closes lot 1 (10) and half of lot 2 (5); its 15 cents split 10 + 5.
    Trade 1: gross 5·10·100 = 5,000, commission 10 + 10 = 20 → 4,980.
    Trade 2: gross 3·5·100 = 1,500, commission 5 (half of lot 2's 10) + 5 = 10 → 1,490.
    Trade 3: gross -1·5·100 = -500, commission 5 (rest of lot 2) + 4 = 9 → -509.
    Commissions 20 + 10 + 9 = 39 = 10 + 10 + 15 + 4.
    """
    trades = round_trips(
        [
            fill(1, "buy", 10, 100.0, 10),
            fill(2, "buy", 10, 102.0, 10),
            fill(3, "sell", 15, 105.0, 15),
            fill(4, "sell", 5, 101.0, 4),
        ]
    )

    assert [(t.entry_ts_ns, t.exit_ts_ns, t.qty) for t in trades] == [
        (1, 3, 10.0),
        (2, 3, 5.0),
        (2, 4, 5.0),
    ]
    assert [t.commission_cents for t in trades] == [20, 10, 9]
    assert [t.pnl_cents for t in trades] == [4_980, 1_490, -509]


def test_a_flip_closes_the_long_and_opens_a_short_with_the_remainder() -> None:
    """Buy 10 @ 50 (c 7), sell 15 @ 55 (c 9), buy 5 @ 52 (c 3).

    The sell splits 10 closing + 5 opening; its 9 cents go round(9·10/15) = 6 and 3.
    Trade 1 (long 10): gross 5·10·100 = 5,000, commission 7 + 6 = 13 → 4,987.
    Trade 2 (short 5): gross (52 - 55)·(-5)·100 = 1,500, commission 3 + 3 = 6 → 1,494.
    """
    trades, open_lots = match_fills(
        [fill(1, "buy", 10, 50.0, 7), fill(2, "sell", 15, 55.0, 9), fill(3, "buy", 5, 52.0, 3)]
    )

    assert [(t.qty, t.entry_price, t.exit_price) for t in trades] == [
        (10.0, 50.0, 55.0),
        (-5.0, 55.0, 52.0),
    ]
    assert [(t.commission_cents, t.pnl_cents) for t in trades] == [(13, 4_987), (6, 1_494)]
    assert open_lots == []


def test_commission_of_thirds_rounds_half_even_and_sums_exactly() -> None:
    """Buy 3 with 10 cents, sell 1, 1, 1 free: 10/3 → 3, then 7/2 = 3.5 → 4 (even), then 3."""
    trades = round_trips(
        [fill(1, "buy", 3, 10.0, 10)] + [fill(t, "sell", 1, 10.0) for t in (2, 3, 4)]
    )

    assert [t.commission_cents for t in trades] == [3, 4, 3]


def test_one_fill_closing_three_lots_splits_by_cumulative_rounding() -> None:
    """A 3-unit sell with 10 cents over three 1-unit lots: round(10/3)=3, round(20/3)-3=4, 3."""
    trades = round_trips(
        [fill(t, "buy", 1, 10.0) for t in (1, 2, 3)] + [fill(4, "sell", 3, 10.0, 10)]
    )

    assert [t.commission_cents for t in trades] == [3, 4, 3]


def test_open_lots_keep_the_unallocated_commission_so_totals_are_exact() -> None:
    """Buy 7 (c 11), sell 3 (c 5): the trade takes round(11·3/7) = 5 + 5; 6 stays open on 4."""
    trades, open_lots = match_fills([fill(1, "buy", 7, 10.0, 11), fill(2, "sell", 3, 10.0, 5)])

    assert [t.commission_cents for t in trades] == [10]
    assert [(lot.qty, lot.commission_cents) for lot in open_lots] == [(4.0, 6)]


def test_pnl_rounds_half_even_on_the_decimal_prices() -> None:
    """100 → 100.005 is 0.5 cent a share: 1 share rounds to 0, 3 shares (1.5) round to 2.

    Binary floats would give (100.005 - 100)·3·100 = 1.4999… and round to 1.
    """
    one = round_trips([fill(1, "buy", 1, 100.0), fill(2, "sell", 1, 100.005)])
    three = round_trips([fill(1, "buy", 3, 100.0), fill(2, "sell", 3, 100.005)])

    assert one[0].pnl_cents == 0
    assert three[0].pnl_cents == 2


def test_fractional_quantities_close_exactly() -> None:
    """Buying 0.1 then 0.2 and selling 0.3 leaves nothing open (0.1 + 0.2 != 0.3 in binary)."""
    trades, open_lots = match_fills(
        [fill(1, "buy", 0.1, 10.0), fill(2, "buy", 0.2, 10.0), fill(3, "sell", 0.3, 11.0)]
    )

    assert [t.qty for t in trades] == [0.1, 0.2]
    assert [t.pnl_cents for t in trades] == [10, 20]
    assert open_lots == []


def test_symbols_are_matched_separately_and_fills_sorted_by_time() -> None:
    """A BBB sell does not close an AAA long; an out-of-order list is matched in time order."""
    trades, open_lots = match_fills(
        [
            fill(3, "sell", 1, 12.0, symbol="AAA"),
            fill(2, "sell", 1, 5.0, symbol="BBB"),
            fill(1, "buy", 1, 10.0, symbol="AAA"),
        ]
    )

    assert [(t.symbol, t.pnl_cents) for t in trades] == [("AAA", 200)]
    assert [(lot.symbol, lot.qty) for lot in open_lots] == [("BBB", -1.0)]


def test_invalid_fills_are_rejected() -> None:
    """A zero quantity or an unknown side raises ValueError."""
    with pytest.raises(ValueError, match="qty"):
        round_trips([fill(1, "buy", 0, 10.0)])
    bad_side = msgspec.structs.replace(fill(1, "buy", 1, 10.0), side="hold")
    with pytest.raises(ValueError, match="side"):
        round_trips([bad_side])


_fill_strategy = st.tuples(
    st.sampled_from(["AAA", "BBB"]),
    st.sampled_from(["buy", "sell"]),
    st.integers(min_value=1, max_value=50),  # whole shares
    st.integers(min_value=1, max_value=100_000),  # price in whole cents
    st.integers(min_value=0, max_value=500),  # commission cents
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_fill_strategy, max_size=40))
def test_trade_pnl_plus_commissions_equals_cash_flow_of_flat_positions(
    rows: list[tuple[str, str, int, int, int]],
) -> None:
    """After flattening every symbol, Σ(pnl + commission) over trades is the net cash flow.

    With whole shares at whole-cent prices nothing rounds, so the realised P&L computed
    independently as Σ sells·price − Σ buys·price (in cents) must match to the cent, and
    the trades must carry every cent of commission.
    """
    fills = [
        fill(i, side, qty, cents / 100, comm, sym)
        for i, (sym, side, qty, cents, comm) in enumerate(rows)
    ]
    position: dict[str, int] = {}
    for sym, side, qty, _, _ in rows:
        position[sym] = position.get(sym, 0) + (qty if side == "buy" else -qty)
    for sym, net in position.items():
        if net:
            fills.append(fill(len(fills), "sell" if net > 0 else "buy", abs(net), 7.77, 3, sym))

    cash_flow = sum(
        (-1 if f.side == "buy" else 1) * int(f.qty) * round(f.price * 100) for f in fills
    )
    trades, open_lots = match_fills(fills)

    assert open_lots == []
    assert sum(t.pnl_cents + t.commission_cents for t in trades) == cash_flow
    assert sum(t.commission_cents for t in trades) == sum(f.commission_cents for f in fills)


@settings(max_examples=100, deadline=None)
@given(st.lists(_fill_strategy, max_size=40))
def test_whole_share_fills_match_exactly_as_they_would_as_fractions(
    rows: list[tuple[str, str, int, int, int]],
) -> None:
    """Whole share counts are matched as ints (the fast way); the trades and open lots are
    exactly those of matching every quantity as a Fraction."""
    fills = [
        fill(i, side, qty, cents / 100, comm, sym)
        for i, (sym, side, qty, cents, comm) in enumerate(rows)
    ]
    fast = match_fills(fills)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stats, "_exact", lambda v: Fraction(Decimal(repr(float(v)))))
        assert match_fills(fills) == fast


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.floats(min_value=0.001, max_value=1_000, allow_nan=False),
            st.floats(min_value=0.01, max_value=10_000, allow_nan=False),
            st.integers(min_value=0, max_value=10_000),
        ),
        max_size=30,
    )
)
def test_commissions_over_trades_and_open_lots_equal_the_input_exactly(
    rows: list[tuple[str, float, float, int]],
) -> None:
    """With arbitrary float quantities, every commission cent ends in a trade or an open lot."""
    fills = [fill(i, side, qty, price, comm) for i, (side, qty, price, comm) in enumerate(rows)]
    trades, open_lots = match_fills(fills)

    allocated = sum(t.commission_cents for t in trades) + sum(
        lot.commission_cents for lot in open_lots
    )
    assert allocated == sum(comm for *_, comm in rows)
    assert all(t.commission_cents >= 0 for t in trades)
    assert len({lot.qty > 0 for lot in open_lots}) <= 1  # one direction per symbol


# --------------------------------------------------------------------------- table


def test_format_table_formats_percentages_money_dates_and_none() -> None:
    """The worked example prints 21.00 %, 121,000.00, 2024-01-02 and n/a for profit factor."""
    table = format_table(summary_of(EXAMPLE_TS, EXAMPLE_EQUITY, initial=EXAMPLE_INITIAL))
    lines = table.splitlines()
    rows = {line[:28].strip(): line[28:].strip() for line in lines}

    assert len({len(line) for line in lines}) == 1  # fixed width
    assert rows["Start (UTC)"] == "2024-01-02"
    assert rows["End (UTC)"] == "2024-01-05"
    assert rows["Initial equity"] == "100,000.00"
    assert rows["Final equity"] == "121,000.00"
    assert rows["Total return"] == "21.00%"
    assert rows["Max drawdown"] == "10.00%"
    assert rows["Sharpe ratio"] == "6.40"
    assert rows["Profit factor"] == "n/a"
    assert rows["Average trade"] == "0.00"
