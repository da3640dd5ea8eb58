"""Synthetic but realistic US equity bars, for tests, demos and benchmarks.

There is no real intraday data in the project, so minute-bar work runs on
this generator.  What it models:

* Regular sessions only (09:30-16:00 New York, 13:00 on early closes) on
  :mod:`trader.calendar` sessions: no weekend or holiday bars.
* Correlated log-price random walks: a market factor times a per-symbol beta
  plus idiosyncratic noise; per-symbol volatility, beta, price level, volume
  level and liquidity are drawn from the seed.
* An intraday "smile": volatility and volume are highest at the open and the
  close and lowest around midday.
* Overnight gaps at every session open (market and idiosyncratic), with a
  rare large news gap, and rare intraday jumps.
* Rare missing minutes (no trade) in thinly traded symbols.
* Prices on a one-cent grid with ``low <= open, close <= high`` and
  ``low <= vwap <= high``; integer volumes and trade counts.

The seed is split with ``numpy.random.SeedSequence.spawn`` into one PCG64
stream for the market factor and one per symbol, each used in a fixed draw
order and vectorised over all of a symbol's minutes.  So a seed always gives
the same bars, a symbol's bars do not depend on how many symbols come after
it, and the minute path underneath is the same for every ``freq``.

Bars are stamped with their close time and aligned to the clock: ``"5min"``
bars close at 09:35, 09:40, ...; ``"1h"`` bars at 10:00 (covering
09:30-10:00), 11:00, ..., and the session close; ``"1d"`` is one bar per
session, stamped at the session close.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from trader import calendar
from trader.data.bars import BarTable

__all__ = ["FREQS", "synth_bars", "write_csv"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_MINUTE_NS: Final = 60_000_000_000
_MINUTES_PER_YEAR: Final = 252 * 390
_SIGMA_MARKET: Final = 0.16  # annualised volatility of the market factor
_NIGHT: Final = 0.35 * np.sqrt(1.0 / 252.0)  # overnight move, in annualised-vol units

# freq -> bar length in minutes; None means one bar per session.
FREQS: Final[dict[str, int | None]] = {"1min": 1, "5min": 5, "1h": 60, "60min": 60, "1d": None}


def _symbol_names(symbols: int | Sequence[str]) -> list[str]:
    """Turn the ``symbols`` argument into a list of unique names."""
    if isinstance(symbols, int):
        if symbols < 1:
            raise ValueError(f"need at least one symbol, got {symbols}")
        return [f"S{i:03d}" for i in range(symbols)]
    names = [str(s) for s in symbols]
    if not names or len(set(names)) != len(names) or not all(names):
        raise ValueError(f"symbol names must be unique and non-empty: {names!r}")
    return names


def _first_sessions(start: dt.date, days: int) -> list[calendar.Session]:
    """Return the first ``days`` sessions on or after ``start``."""
    found: list[calendar.Session] = []
    begin = start
    while len(found) < days:
        end = begin + dt.timedelta(days=(days - len(found)) * 2 + 10)
        found.extend(calendar.sessions(begin, end))
        begin = end + dt.timedelta(days=1)
    return found[:days]


def _smile(x: F64) -> F64:
    """Intraday activity shape over session fraction ``x``, mean about 1."""
    shape = (
        0.55
        + 2.2 * (2.0 * x - 1.0) ** 2
        + 1.5 * np.exp(-x / 0.01)
        + 0.8 * np.exp(-(1.0 - x) / 0.01)
    )
    return shape / 1.35


@dataclass(frozen=True, slots=True)
class _Grid:
    """The minute grid shared by every symbol, and how minutes form bars."""

    days: int
    first: I64  # index of each session's first minute
    close_ts: I64  # close time of every minute bar
    smile: F64  # activity shape of every minute
    key: I64  # output bar number of every minute, non-decreasing
    bar_close: I64  # close time of every output bar
    one_minute: bool  # output bars are the minute bars themselves


def _grid(sessions: Sequence[calendar.Session], freq: str) -> _Grid:
    """Lay out the minutes of ``sessions`` and their grouping into ``freq`` bars."""
    days = len(sessions)
    opens = np.array([s.open_ns for s in sessions], dtype=np.int64)
    lengths = np.array([(s.close_ns - s.open_ns) // _MINUTE_NS for s in sessions], dtype=np.int64)
    first = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    total = int(lengths.sum())
    session_of = np.repeat(np.arange(days), lengths)
    minute = np.arange(total) - first[session_of]  # minute index inside its session
    close_ts = opens[session_of] + (minute + 1) * _MINUTE_NS
    smile = _smile((minute + 0.5) / lengths[session_of])
    size = FREQS[freq]
    if size is None:
        key = session_of.astype(np.int64)
        bar_close = np.array([s.close_ns for s in sessions], dtype=np.int64)
    else:
        # Minutes the open lies past a bar boundary on the New York clock
        # (30 for hourly bars from 09:30), so bars end on round times.
        offset = np.array([_clock_minute(s.open_ns) % size for s in sessions], dtype=np.int64)
        per_session = (lengths - 1 + offset) // size + 1
        bar_first = np.concatenate(([0], np.cumsum(per_session)[:-1]))
        key = bar_first[session_of] + (minute + offset[session_of]) // size
        b_session = np.repeat(np.arange(days), per_session)
        b_index = np.arange(int(per_session.sum())) - bar_first[b_session]
        end_minute = np.minimum((b_index + 1) * size - offset[b_session], lengths[b_session])
        bar_close = opens[b_session] + end_minute * _MINUTE_NS
    return _Grid(days, first, close_ts, smile, key, bar_close, size == 1)


def _clock_minute(ts_ns: int) -> int:
    """Return the New York minute of the day of UTC instant ``ts_ns``."""
    local = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, calendar.NEW_YORK)
    return local.hour * 60 + local.minute


def _one_symbol(
    name: str, rng: np.random.Generator, grid: _Grid, market: F64, gap_market: F64
) -> BarTable:
    """Generate one symbol's bars from its own random stream."""
    total, days = len(grid.close_ts), grid.days
    vol_shape = np.sqrt(grid.smile)
    per_minute = 1.0 / np.sqrt(_MINUTES_PER_YEAR)

    # The symbol's character.
    sigma = float(np.clip(rng.lognormal(np.log(0.28), 0.4), 0.08, 1.2))  # annualised
    beta = float(np.clip(rng.normal(1.0, 0.3), 0.2, 2.0))
    price0 = float(np.exp(rng.uniform(np.log(8.0), np.log(400.0))))
    daily_volume = float(rng.lognormal(np.log(2e6), 1.0))
    trade_size = float(rng.uniform(40.0, 250.0))
    # Only thinly traded names have minutes without a trade.
    missing_rate = float(rng.uniform(0.0, 0.004)) if daily_volume < 1e6 else 0.0
    sigma_idio = np.sqrt(max(sigma**2 - (beta * _SIGMA_MARKET) ** 2, (0.3 * sigma) ** 2))
    minute_sigma = sigma * per_minute

    # Minute log returns: market factor plus idiosyncratic noise, rare jumps.
    ret = beta * market + rng.standard_normal(total) * (sigma_idio * per_minute) * vol_shape
    jumps = np.flatnonzero(rng.random(total) < 2e-4)
    ret[jumps] += rng.normal(0.0, 15.0 * minute_sigma, len(jumps))

    # Overnight gaps at each session's first minute (none before the first),
    # with a rare large news gap.
    gap = beta * gap_market + rng.normal(0.0, sigma * _NIGHT, days)
    news = rng.random(days) < 0.01
    gap[news] += rng.normal(0.0, 0.05, int(news.sum()))
    gap[0] = 0.0
    step = ret.copy()
    step[grid.first] += gap

    log_close = np.log(price0) + np.cumsum(step)
    close = np.exp(log_close)
    open_ = np.exp(log_close - ret)
    wick = minute_sigma * vol_shape
    high = np.maximum(open_, close) * np.exp(np.abs(rng.standard_normal(total)) * wick)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.standard_normal(total)) * wick)
    weight = rng.uniform(0.2, 0.8, total)
    vwap = weight * (high + low) / 2 + (1 - weight) * (open_ + close) / 2

    # Volume follows the smile, the symbol's level and how much the bar moved.
    volume = np.round(
        daily_volume
        / 390.0
        * grid.smile
        * (0.6 + 0.4 * np.abs(ret) / minute_sigma)
        * rng.lognormal(0.0, 0.5, total)
    )
    np.maximum(volume, 1.0, out=volume)
    trades = np.maximum(1, np.round(volume / trade_size * rng.lognormal(0.0, 0.3, total)))
    rows = np.flatnonzero(rng.random(total) >= missing_rate)

    # One-cent grid; keep the OHLC ordering that rounding could break.
    o = np.maximum(np.round(open_[rows], 2), 0.01)
    c = np.maximum(np.round(close[rows], 2), 0.01)
    h = np.maximum(np.round(high[rows], 2), np.maximum(o, c))
    lo = np.minimum(np.maximum(np.round(low[rows], 2), 0.01), np.minimum(o, c))
    vw = np.clip(np.round(vwap[rows], 4), lo, h)
    v = volume[rows]
    n = trades[rows].astype(np.int64)
    if grid.one_minute:
        return BarTable(name, grid.close_ts[rows], o, h, lo, c, v, vw, n)

    k = grid.key[rows]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    ends = np.r_[starts[1:], len(rows)] - 1
    bar_volume = np.add.reduceat(v, starts)
    bar_high = np.maximum.reduceat(h, starts)
    bar_low = np.minimum.reduceat(lo, starts)
    bar_vwap = np.clip(np.round(np.add.reduceat(v * vw, starts) / bar_volume, 4), bar_low, bar_high)
    return BarTable(
        symbol=name,
        ts_ns=grid.bar_close[k[starts]],
        open=o[starts],
        high=bar_high,
        low=bar_low,
        close=c[ends],
        volume=bar_volume,
        vwap=bar_vwap,
        trades=np.add.reduceat(n, starts),
    )


def synth_bars(
    symbols: int | Sequence[str],
    days: int,
    freq: str = "1min",
    seed: int = 0,
    start: dt.date = dt.date(2024, 1, 2),
) -> dict[str, BarTable]:
    """Generate bars for several symbols over consecutive sessions.

    The market factor has its own random stream and each symbol its own,
    spawned from ``seed``, so a symbol's bars depend on the seed, its position
    in ``symbols`` and the sessions, not on how many other symbols there are.

    Args:
        symbols: A count (names ``S000``, ``S001``, ...) or the names.
        days: Number of sessions, starting at the first session on or after
            ``start``.
        freq: One of ``"1min"``, ``"5min"``, ``"1h"`` (= ``"60min"``), ``"1d"``.
        seed: Seed of the PCG64 generators; equal seeds give equal bars.
        start: First calendar date to consider.

    Returns:
        One table per symbol, in the order given.

    Raises:
        ValueError: Unknown ``freq``, ``days < 1`` or bad symbol names.
    """
    if freq not in FREQS:
        raise ValueError(f"unknown freq {freq!r}; use one of {', '.join(FREQS)}")
    if days < 1:
        raise ValueError(f"need at least one session, got days={days}")
    names = _symbol_names(symbols)
    grid = _grid(_first_sessions(start, days), freq)
    market_seed, *symbol_seeds = np.random.SeedSequence(seed).spawn(1 + len(names))
    market_rng = np.random.Generator(np.random.PCG64(market_seed))
    per_minute = 1.0 / np.sqrt(_MINUTES_PER_YEAR)
    market = market_rng.standard_normal(len(grid.close_ts)) * (
        _SIGMA_MARKET * per_minute * np.sqrt(grid.smile)
    )
    gap_market = market_rng.normal(0.0, _SIGMA_MARKET * _NIGHT, days)
    return {
        name: _one_symbol(name, np.random.Generator(np.random.PCG64(ss)), grid, market, gap_market)
        for name, ss in zip(names, symbol_seeds, strict=True)
    }


def _format_ts(ts_ns: I64) -> list[str]:
    """Format UTC nanoseconds as RFC 3339 with ``Z``, seconds unless finer is needed."""
    stamps: npt.NDArray[np.datetime64] = ts_ns.astype("datetime64[ns]")
    whole_seconds = not (ts_ns % 1_000_000_000).any()
    text = np.datetime_as_string(stamps, unit="s" if whole_seconds else "ns")
    return [f"{t}Z" for t in text.tolist()]


def write_csv(tables: Mapping[str, BarTable], out_dir: Path) -> list[Path]:
    """Write one CSV per symbol in the project's bar schema.

    Floats are written with ``repr`` so they read back bit-for-bit; unknown
    vwap (NaN) and trades (-1) are written as empty fields.

    Args:
        tables: Symbol -> bars.
        out_dir: Directory to write ``<SYMBOL>.csv`` files into (created).

    Returns:
        The files written, in the order of ``tables``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for symbol, t in tables.items():
        vwap = ["" if v != v else repr(v) for v in t.vwap.tolist()]  # v != v: NaN
        trades = ["" if n < 0 else str(n) for n in t.trades.tolist()]
        lines = [
            f"{symbol},{ts},{o!r},{h!r},{lo!r},{c!r},{v!r},{vw},{n}\n"
            for ts, o, h, lo, c, v, vw, n in zip(
                _format_ts(t.ts_ns),
                t.open.tolist(),
                t.high.tolist(),
                t.low.tolist(),
                t.close.tolist(),
                t.volume.tolist(),
                vwap,
                trades,
                strict=True,
            )
        ]
        path = out_dir / f"{symbol}.csv"
        with path.open("w", encoding="utf-8", newline="") as fh:
            fh.write("symbol,ts,open,high,low,close,volume,vwap,trades\n")
            fh.writelines(lines)
        paths.append(path)
    return paths
