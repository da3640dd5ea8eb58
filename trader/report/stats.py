"""Performance statistics of a run: round trips, the summary record and a text table.

Conventions
-----------
* Time is UTC nanoseconds since the epoch (``int`` / ``int64``).
* Money inside the engine is integer cents. :class:`Summary` is a presentation
  record, so it reports dollars as ``float`` (``cents / 100``, nothing else), and
  :class:`Trade` keeps P&L and commissions in integer cents.
* Prices and quantities are ``float``. Where they enter money arithmetic they are
  read as the shortest decimal that round-trips the float
  (``Decimal(repr(x))``, so ``0.1`` means one tenth, as the broker sent it), the
  arithmetic is exact and the result is rounded to cents half to even, the same
  rule as :mod:`trader.money`.

Daily returns
-------------
Each equity point's timestamp is converted to its America/New_York calendar date
(DST aware). The last equity point of a date is that date's close, and a date's
return is ``close / previous close - 1``, the first date being measured against
the initial equity. Only dates that have equity points produce a return, so
weekends and holidays without data are skipped rather than counted as flat days.
A return whose base (previous close) is not positive is undefined.

Annualisation
-------------
* ``annual_volatility = std(r, ddof=1) * sqrt(252)``.
* ``sharpe = mean(r - rf_d) / std(r - rf_d, ddof=1) * sqrt(252)`` with
  ``rf_d = risk_free_rate / 252`` (the risk-free rate is annual).
* ``sortino = mean(r - rf_d) / dd * sqrt(252)``, with the downside deviation
  ``dd = sqrt(mean(min(r - rf_d, 0) ** 2))`` taken over *all* days; the target
  return is therefore the risk-free rate (which is 0 by default).
* ``cagr = (final / initial) ** (365.25 / period_days) - 1`` where
  ``period_days`` is the calendar time from the first to the last equity point.

The factor 252 assumes one return per exchange session; a 24/7 market (crypto)
has about 365 dated returns a year and is annualised with 252 all the same.

Degenerate cases
----------------
A figure that is mathematically undefined is ``None``, never ``inf`` or ``NaN``,
so the record always encodes to valid JSON:

* ``annual_volatility`` is ``None`` with fewer than two daily returns.
* ``sharpe`` and ``sortino`` are ``0.0`` with fewer than two daily returns, and
  ``0.0`` when their denominator is zero (all daily returns identical for
  Sharpe; no day below the risk-free rate for Sortino): a ratio over no
  variation carries no information, and ``0.0`` keeps dashboards numeric.
* ``annual_volatility``, ``sharpe`` and ``sortino`` are ``None`` when some daily
  return is undefined because equity fell to zero or below.
* ``cagr`` is ``0.0`` when ``period_days == 0``, ``-1.0`` when final equity is
  zero, and ``None`` when final equity is negative or the compounding overflows
  (a large gain over a few minutes).
* ``profit_factor`` is ``None`` without losing trades; ``win_rate`` and
  ``average_trade`` are ``0.0`` without trades.

Drawdown
--------
Drawdown is measured at every equity point, not only at daily closes, against
the running peak, which starts at the initial equity. The drawdown duration
runs from the last time equity stood at a peak until the first point at or
above that peak, or until the last point if equity never got back.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = [
    "DAYS_PER_YEAR",
    "NS_PER_DAY",
    "TRADING_DAYS_PER_YEAR",
    "FillRow",
    "OpenLot",
    "Summary",
    "Trade",
    "daily_returns",
    "drawdown",
    "format_table",
    "match_fills",
    "round_trips",
    "summarize",
    "summary_rows",
]

TRADING_DAYS_PER_YEAR: Final = 252
"""Daily returns per year used to annualise volatility, Sharpe and Sortino."""

DAYS_PER_YEAR: Final = 365.25
"""Calendar days per year used for CAGR."""

NS_PER_DAY: Final = 86_400_000_000_000
"""Nanoseconds in a calendar day (24 hours)."""

_NS_PER_HOUR: Final = 3_600_000_000_000
_NS_PER_SECOND: Final = 1_000_000_000
_NEW_YORK: Final = ZoneInfo("America/New_York")
_EPOCH_DATE: Final = dt.date(1970, 1, 1)
_SQRT_YEAR: Final = math.sqrt(TRADING_DAYS_PER_YEAR)


class Trade(msgspec.Struct, frozen=True):
    """One closed round trip: an opening lot (or part of one) and the fill that closed it.

    Attributes:
        symbol: The instrument.
        entry_ts_ns: Time of the opening fill.
        exit_ts_ns: Time of the closing fill.
        qty: Quantity closed; positive for a long trade, negative for a short one.
        entry_price: Price of the opening fill.
        exit_price: Price of the closing fill.
        pnl_cents: ``round((exit - entry) * qty * 100)`` minus :attr:`commission_cents`.
        commission_cents: This trade's share of both legs' commissions.
    """

    symbol: str
    entry_ts_ns: int
    exit_ts_ns: int
    qty: float
    entry_price: float
    exit_price: float
    pnl_cents: int
    commission_cents: int


class FillRow(msgspec.Struct, frozen=True):
    """One execution, as the report needs it.

    Attributes:
        ts_ns: Execution time.
        symbol: The instrument.
        side: ``"buy"`` or ``"sell"``.
        qty: Executed quantity, always positive.
        price: Execution price.
        commission_cents: Commission charged for the whole fill.
    """

    ts_ns: int
    symbol: str
    side: Literal["buy", "sell"]
    qty: float
    price: float
    commission_cents: int


class OpenLot(msgspec.Struct, frozen=True):
    """A position lot still open after matching, with the commission it has not yet passed on.

    Attributes:
        symbol: The instrument.
        entry_ts_ns: Time of the opening fill.
        qty: Open quantity; positive long, negative short.
        entry_price: Price of the opening fill.
        commission_cents: The part of the opening commission not yet allocated to a trade.
    """

    symbol: str
    entry_ts_ns: int
    qty: float
    entry_price: float
    commission_cents: int


class Summary(msgspec.Struct, frozen=True):
    """Headline figures of a run; see the module docstring for definitions.

    Attributes:
        start_ts_ns: First equity point.
        end_ts_ns: Last equity point.
        period_days: Calendar days from the first to the last equity point.
        bars: Bars processed.
        trades: Closed round trips.
        initial_equity: Dollars.
        final_equity: Dollars, exactly ``cents / 100`` of the last equity point.
        total_return: ``final / initial - 1``.
        cagr: Compound annual growth rate, or ``None`` when undefined.
        annual_volatility: Annualised standard deviation of daily returns, or ``None``.
        sharpe: Annualised Sharpe ratio, or ``None``.
        sortino: Annualised Sortino ratio, or ``None``.
        max_drawdown: Largest fall from a peak, as a positive fraction of the peak.
        max_drawdown_duration_days: Longest calendar time spent below a peak.
        win_rate: Fraction of trades with positive net P&L.
        profit_factor: Gross profit over gross loss, ``None`` without losing trades.
        average_trade: Mean net P&L per trade, dollars.
        exposure: Fraction of equity points with non-zero gross exposure.
        commissions: Total commissions, dollars.
    """

    start_ts_ns: int
    end_ts_ns: int
    period_days: float
    bars: int
    trades: int
    initial_equity: float
    final_equity: float
    total_return: float
    cagr: float | None
    annual_volatility: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_duration_days: float
    win_rate: float
    profit_factor: float | None
    average_trade: float
    exposure: float
    commissions: float


# --------------------------------------------------------------------------- series


def _validated_series(
    ts_ns: npt.NDArray[np.int64], equity_cents: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Check an equity series and return it as 1-D int64 arrays.

    Raises:
        TypeError: If either array is not of an integer dtype.
        ValueError: If the arrays differ in shape, are not 1-D, or time goes backwards.
    """
    ts = np.asarray(ts_ns)
    eq = np.asarray(equity_cents)
    # Silently truncating float "cents" would hide a unit bug upstream.
    if not np.issubdtype(ts.dtype, np.integer) or not np.issubdtype(eq.dtype, np.integer):
        raise TypeError(
            f"ts_ns and equity_cents must be integer arrays, got {ts.dtype} and {eq.dtype}"
        )
    if ts.ndim != 1 or ts.shape != eq.shape:
        raise ValueError(f"ts_ns {ts.shape} and equity_cents {eq.shape} must be equal 1-D arrays")
    ts = ts.astype(np.int64, copy=False)
    if ts.size > 1 and bool(np.any(ts[1:] < ts[:-1])):
        raise ValueError("ts_ns must be non-decreasing")
    return ts, eq.astype(np.int64, copy=False)


def _ny_day_numbers(ts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """New York calendar date of each timestamp, as days since 1970-01-01.

    Converting a million timestamps one by one through zoneinfo takes seconds, so
    the UTC offset is looked up once per distinct UTC hour and broadcast: New
    York's offset only changes on a whole UTC hour (02:00 local), so every
    instant of one UTC hour shares an offset.
    """
    hours = ts // _NS_PER_HOUR
    distinct, inverse = np.unique(hours, return_inverse=True)
    offsets = np.fromiter(
        (_ny_offset_ns(int(hour)) for hour in distinct), dtype=np.int64, count=distinct.size
    )
    local: npt.NDArray[np.int64] = ts + offsets[inverse.reshape(ts.shape)]
    return local // NS_PER_DAY


def _ny_offset_ns(utc_hour: int) -> int:
    """New York's UTC offset, in nanoseconds, during the given hour since the epoch."""
    offset = dt.datetime.fromtimestamp(utc_hour * 3600, tz=_NEW_YORK).utcoffset()
    assert offset is not None  # a ZoneInfo-aware datetime always has one
    return (offset // dt.timedelta(seconds=1)) * _NS_PER_SECOND


def daily_returns(
    ts_ns: npt.NDArray[np.int64],
    equity_cents: npt.NDArray[np.int64],
    initial_equity_cents: int,
) -> tuple[list[dt.date], npt.NDArray[np.float64]]:
    """Close-to-close returns per New York calendar date.

    Args:
        ts_ns: Equity timestamps, non-decreasing.
        equity_cents: Equity at each timestamp.
        initial_equity_cents: Equity before the first point; the base of the first return.

    Returns:
        The dates that have equity points and each date's return. A return whose
        base is zero or negative is ``NaN``.

    Raises:
        TypeError: If the arrays are not integer arrays.
        ValueError: If the arrays are inconsistent or time goes backwards.
    """
    ts, eq = _validated_series(ts_ns, equity_cents)
    if ts.size == 0:
        return [], np.empty(0, dtype=np.float64)
    days = _ny_day_numbers(ts)
    last_of_day = np.append(np.flatnonzero(days[1:] != days[:-1]), ts.size - 1)
    closes = eq[last_of_day].astype(np.float64)
    bases = np.concatenate(([float(initial_equity_cents)], closes[:-1]))
    ratios = np.full(closes.shape, np.nan)
    # `where` keeps numpy from warning (an error under our pytest config) on bad bases.
    np.divide(closes, bases, out=ratios, where=bases > 0)
    dates = [_EPOCH_DATE + dt.timedelta(days=int(day)) for day in days[last_of_day]]
    return dates, ratios - 1.0


def drawdown(
    equity_cents: npt.NDArray[np.int64], initial_equity_cents: int
) -> npt.NDArray[np.float64]:
    """Drawdown at every point, as a non-negative fraction of the running peak.

    Args:
        equity_cents: Equity series.
        initial_equity_cents: The first peak; must be positive.

    Returns:
        ``(peak - equity) / peak`` where ``peak`` is the running maximum of the
        initial equity and the series so far.

    Raises:
        ValueError: If the initial equity is not positive.
    """
    if initial_equity_cents <= 0:
        raise ValueError(f"initial equity must be positive, got {initial_equity_cents} cents")
    eq = np.asarray(equity_cents, dtype=np.int64)
    peak = _running_peak(eq, initial_equity_cents)
    return (peak - eq).astype(np.float64) / peak.astype(np.float64)


def _running_peak(eq: npt.NDArray[np.int64], initial_equity_cents: int) -> npt.NDArray[np.int64]:
    """Running maximum of the initial equity and the series (integers, so ties are exact)."""
    if eq.size == 0:
        return eq.copy()
    return np.maximum(np.maximum.accumulate(eq), initial_equity_cents)


def _longest_underwater_ns(
    ts: npt.NDArray[np.int64], eq: npt.NDArray[np.int64], initial_equity_cents: int
) -> int:
    """Longest time from a peak until equity is back at it (or until the end)."""
    under = eq < _running_peak(eq, initial_equity_cents)
    if not bool(under.any()):
        return 0
    edges = np.diff(np.concatenate(([0], under.astype(np.int8), [0])))
    first_under = np.flatnonzero(edges == 1)
    first_back = np.flatnonzero(edges == -1)  # may equal ts.size: never recovered
    # The peak is the point just before the fall; a fall at the very first point
    # is from the initial equity, which has no timestamp of its own.
    peak_ts = ts[np.maximum(first_under - 1, 0)]
    back_ts = ts[np.minimum(first_back, ts.size - 1)]
    return int((back_ts - peak_ts).max())


# --------------------------------------------------------------------------- summary


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _cagr(ratio: float, period_days: float) -> float | None:
    """Compound annual growth for an equity ratio over a calendar period."""
    if period_days == 0:
        return 0.0
    if ratio < 0:
        return None  # a negative base has no real fractional power
    if ratio == 0:
        return -1.0
    try:
        return _finite_or_none(ratio ** (DAYS_PER_YEAR / period_days) - 1.0)
    except OverflowError:
        return None


def _return_ratios(
    returns: npt.NDArray[np.float64], risk_free_rate: float
) -> tuple[float | None, float | None, float | None]:
    """Annual volatility, Sharpe and Sortino of daily returns (see the module docstring)."""
    if not bool(np.all(np.isfinite(returns))):
        return None, None, None
    if returns.size < 2:
        return None, 0.0, 0.0
    excess = returns - risk_free_rate / TRADING_DAYS_PER_YEAR
    mean = float(excess.mean())
    # Identical returns have zero spread in exact arithmetic, but np.std can give
    # 1e-18 from rounding, and dividing by that would report an absurd Sharpe.
    flat = bool(np.ptp(excess) == 0)
    volatility = 0.0 if flat else float(np.std(returns, ddof=1)) * _SQRT_YEAR
    sharpe = 0.0 if flat else mean / float(np.std(excess, ddof=1)) * _SQRT_YEAR
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    sortino = 0.0 if downside == 0 else mean / downside * _SQRT_YEAR
    return (
        _finite_or_none(volatility),
        _finite_or_none(sharpe),
        _finite_or_none(sortino),
    )


def summarize(
    *,
    ts_ns: npt.NDArray[np.int64],
    equity_cents: npt.NDArray[np.int64],
    exposure_cents: npt.NDArray[np.int64],
    trades: Sequence[Trade],
    commissions_cents: int,
    bars: int,
    initial_equity_cents: int,
    risk_free_rate: float = 0.0,
) -> Summary:
    """Compute the headline figures of a run.

    Args:
        ts_ns: Equity timestamps, non-decreasing, at least one.
        equity_cents: Equity at each timestamp.
        exposure_cents: Gross exposure at each timestamp (only ``!= 0`` matters).
        trades: Closed round trips, e.g. from :func:`round_trips`.
        commissions_cents: Total commissions paid, including on open lots.
        bars: Bars processed, reported as given.
        initial_equity_cents: Equity before the first point; must be positive.
        risk_free_rate: Annual risk-free rate as a fraction (``0.04`` for 4 %).

    Returns:
        The summary; undefined figures are ``None`` (see the module docstring).

    Raises:
        TypeError: If the time or equity arrays are not integer arrays.
        ValueError: If the series is empty or inconsistent, the initial equity is
            not positive, or the risk-free rate is not finite.
    """
    ts, eq = _validated_series(ts_ns, equity_cents)
    exposure = np.asarray(exposure_cents)
    if exposure.shape != eq.shape:
        raise ValueError(f"exposure_cents {exposure.shape} must match equity_cents {eq.shape}")
    if ts.size == 0:
        raise ValueError("summarize needs at least one equity point")
    if initial_equity_cents <= 0:
        raise ValueError(f"initial equity must be positive, got {initial_equity_cents} cents")
    if not math.isfinite(risk_free_rate):
        raise ValueError(f"risk_free_rate must be finite, got {risk_free_rate!r}")

    start_ts_ns, end_ts_ns = int(ts[0]), int(ts[-1])
    period_days = (end_ts_ns - start_ts_ns) / NS_PER_DAY
    final_cents = int(eq[-1])
    ratio = final_cents / initial_equity_cents
    _, returns = daily_returns(ts, eq, initial_equity_cents)
    volatility, sharpe, sortino = _return_ratios(returns, risk_free_rate)

    pnls = [trade.pnl_cents for trade in trades]
    gross_profit = sum(pnl for pnl in pnls if pnl > 0)
    gross_loss = -sum(pnl for pnl in pnls if pnl < 0)
    wins = sum(1 for pnl in pnls if pnl > 0)

    return Summary(
        start_ts_ns=start_ts_ns,
        end_ts_ns=end_ts_ns,
        period_days=period_days,
        bars=bars,
        trades=len(pnls),
        initial_equity=initial_equity_cents / 100,
        final_equity=final_cents / 100,
        total_return=ratio - 1.0,
        cagr=_cagr(ratio, period_days),
        annual_volatility=volatility,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=float(drawdown(eq, initial_equity_cents).max()),
        max_drawdown_duration_days=_longest_underwater_ns(ts, eq, initial_equity_cents)
        / NS_PER_DAY,
        win_rate=wins / len(pnls) if pnls else 0.0,
        profit_factor=gross_profit / gross_loss if gross_loss > 0 else None,
        average_trade=sum(pnls) / len(pnls) / 100 if pnls else 0.0,
        exposure=int(np.count_nonzero(exposure)) / exposure.size,
        commissions=commissions_cents / 100,
    )


# --------------------------------------------------------------------------- round trips


# An exact number: an int where the value is whole (share counts almost always
# are, and int arithmetic is ~20x cheaper than Fraction's), else a Fraction.
Exact = Fraction | int


def _exact(value: float) -> Exact:
    """The decimal the float was written as (shortest repr), exactly."""
    # float() first: repr of a numpy scalar is "np.float64(...)" under numpy 2.
    value = float(value)
    if value.is_integer():
        return int(value)
    return Fraction(Decimal(repr(value)))


def _size(x: Exact) -> Exact:
    """``abs(x)``, typed: typeshed's abs() of the union is only ``Real``."""
    return -x if x < 0 else x


@dataclass(slots=True)
class _Lot:
    """A mutable open lot while matching; ``qty`` is signed and exact."""

    ts_ns: int
    qty: Exact
    price: float
    exact_price: Exact
    commission_cents: int

    def take_commission(self, closed: Exact) -> int:
        """Hand over the share of the remaining entry commission for ``closed`` units.

        Splitting what is *left* in proportion to what is left means the shares
        of all partial closes add up to the lot's commission exactly.
        """
        if closed >= _size(self.qty):
            share = self.commission_cents
        else:
            # Fraction first: with whole shares closed / qty would be a float division.
            share = round(Fraction(self.commission_cents) * closed / _size(self.qty))
        self.commission_cents -= share
        return share


def _allocate(total_cents: int, quantities: Sequence[Exact]) -> list[int]:
    """Split cents over legs in proportion to quantity, summing to ``total_cents`` exactly.

    Each leg gets the difference of rounded cumulative shares, so rounding never
    accumulates and the last cumulative share is the total itself.
    """
    if len(quantities) == 1:
        return [total_cents]  # the common case, and exact arithmetic is not free
    whole = sum(quantities, Fraction(0))
    shares: list[int] = []
    cumulative: Exact = Fraction(0)
    allocated = 0
    for qty in quantities:
        cumulative += qty
        upto = round(total_cents * cumulative / whole)
        shares.append(upto - allocated)
        allocated = upto
    return shares


def _check_fill(fill: FillRow) -> None:
    if fill.side not in ("buy", "sell"):
        raise ValueError(f"fill side must be 'buy' or 'sell', got {fill.side!r}")
    if not (math.isfinite(fill.qty) and fill.qty > 0):
        raise ValueError(f"fill qty must be positive and finite, got {fill.qty!r}")
    if not math.isfinite(fill.price):
        raise ValueError(f"fill price must be finite, got {fill.price!r}")


def match_fills(fills: Sequence[FillRow]) -> tuple[list[Trade], list[OpenLot]]:
    """Match fills into round trips, FIFO per symbol, and report what stays open.

    Fills are processed in time order (stable for equal timestamps). A fill
    against the open position closes lots oldest first, partially if need be;
    whatever is left of it opens a new lot in its own direction, so a sell larger
    than a long position closes the long and opens a short (a flip).

    Each fill's commission is split over its legs in proportion to quantity, and
    a lot's entry commission over its partial closes likewise, rounding so that
    the trades' and open lots' commissions add up to the fills' exactly.
    Quantities and prices are read as their shortest decimal repr and matched in
    exact arithmetic, so ``0.1 + 0.2`` shares close a ``0.3`` position.

    Args:
        fills: Executions, in any order.

    Returns:
        Closed trades in the order they closed, and the open lots per symbol
        (symbols in order of first fill, lots oldest first).

    Raises:
        ValueError: If a fill has an unknown side, a non-positive or non-finite
            quantity, or a non-finite price.
    """
    books: dict[str, deque[_Lot]] = {}
    trades: list[Trade] = []
    for fill in sorted(fills, key=lambda f: int(f.ts_ns)):
        _check_fill(fill)
        ts_ns = int(fill.ts_ns)
        price = _exact(fill.price)
        remaining = _exact(fill.qty) if fill.side == "buy" else -_exact(fill.qty)
        book = books.setdefault(fill.symbol, deque())

        # Plan the legs before touching the book: the commission split needs them all.
        # All lots of a book share one sign, so the fill either closes from the
        # front or adds a lot.
        closing: list[tuple[_Lot, Exact]] = []
        for lot in book:
            if remaining == 0 or (lot.qty > 0) == (remaining > 0):
                break
            closed = min(_size(lot.qty), _size(remaining))
            closing.append((lot, closed))
            remaining += closed if remaining < 0 else -closed
        legs = [closed for _, closed in closing]
        if remaining != 0:
            legs.append(_size(remaining))
        commissions = _allocate(int(fill.commission_cents), legs)

        for (lot, closed), exit_commission in zip(closing, commissions, strict=False):
            qty = closed if lot.qty > 0 else -closed
            commission = lot.take_commission(closed) + exit_commission
            gross = round((price - lot.exact_price) * qty * 100)
            trades.append(
                Trade(
                    symbol=fill.symbol,
                    entry_ts_ns=lot.ts_ns,
                    exit_ts_ns=ts_ns,
                    qty=float(qty),
                    entry_price=lot.price,
                    exit_price=float(fill.price),
                    pnl_cents=gross - commission,
                    commission_cents=commission,
                )
            )
            lot.qty -= qty
            if lot.qty == 0:
                book.popleft()  # legs close lots front to back, so this is `lot`
        if remaining != 0:
            book.append(
                _Lot(
                    ts_ns=ts_ns,
                    qty=remaining,
                    price=float(fill.price),
                    exact_price=price,
                    commission_cents=commissions[-1],
                )
            )

    open_lots = [
        OpenLot(
            symbol=symbol,
            entry_ts_ns=lot.ts_ns,
            qty=float(lot.qty),
            entry_price=lot.price,
            commission_cents=lot.commission_cents,
        )
        for symbol, book in books.items()
        for lot in book
    ]
    return trades, open_lots


def round_trips(fills: Sequence[FillRow]) -> list[Trade]:
    """Closed round trips from fills, FIFO per symbol; see :func:`match_fills`.

    Args:
        fills: Executions, in any order.

    Returns:
        Closed trades in the order they closed. Open lots are left out.
    """
    trades, _ = match_fills(fills)
    return trades


# --------------------------------------------------------------------------- table


def _utc_date(ts_ns: int) -> str:
    return (_EPOCH_DATE + dt.timedelta(days=ts_ns // NS_PER_DAY)).isoformat()


# `+ 0.0` turns -0.0 into 0.0 so a flat figure never prints as "-0.00".
def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100 + 0.0:,.2f}%"


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value + 0.0:,.2f}"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value + 0.0:,.2f}"


def summary_rows(summary: Summary) -> list[tuple[str, str]]:
    """The summary as ``(label, formatted value)`` rows, shared by the text and HTML tables.

    Percentages have two decimals and ``%``, money has thousands separators and
    two decimals, dates are ``YYYY-MM-DD`` in UTC, and ``None`` is ``n/a``.
    """
    s = summary
    return [
        ("Start (UTC)", _utc_date(s.start_ts_ns)),
        ("End (UTC)", _utc_date(s.end_ts_ns)),
        ("Period (days)", _number(s.period_days)),
        ("Bars", f"{s.bars:,}"),
        ("Trades", f"{s.trades:,}"),
        ("Initial equity", _money(s.initial_equity)),
        ("Final equity", _money(s.final_equity)),
        ("Total return", _percent(s.total_return)),
        ("CAGR", _percent(s.cagr)),
        ("Annual volatility", _percent(s.annual_volatility)),
        ("Sharpe ratio", _number(s.sharpe)),
        ("Sortino ratio", _number(s.sortino)),
        ("Max drawdown", _percent(s.max_drawdown)),
        ("Max drawdown duration (days)", _number(s.max_drawdown_duration_days)),
        ("Win rate", _percent(s.win_rate)),
        ("Profit factor", _number(s.profit_factor)),
        ("Average trade", _money(s.average_trade)),
        ("Exposure", _percent(s.exposure)),
        ("Commissions", _money(s.commissions)),
    ]


def format_table(summary: Summary) -> str:
    """The summary as a fixed-width two-column table for a terminal.

    Labels are left-aligned and values right-aligned, so every line has the same
    width. There is no trailing newline.
    """
    rows = summary_rows(summary)
    label_width = max(len(label) for label, _ in rows)
    value_width = max(len(value) for _, value in rows)
    return "\n".join(f"{label:<{label_width}}  {value:>{value_width}}" for label, value in rows)
