"""The sandbox's bar data: every symbol's bars, one merged timeline, the bar period.

Our timestamps are bar *close* times (a bar is known only then); Alpaca stamps
a bar with its *start*. The conversion happens here, once: ``start = close -
period`` for intraday bars, and midnight New York of the session date for daily
bars (Alpaca's ``T05:00:00Z``/``T04:00:00Z``). The period is inferred from the
data: the most common gap between consecutive bars of one session; data with
at most one bar per session is daily.

What it is not: a loader (that is :mod:`trader.data.bars`) or a clock (that is
:mod:`trader.sandbox.market`). A tape never changes after construction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from trader import calendar
from trader.data.bars import BarTable, load_dir
from trader.messages import BarClosed
from trader.sandbox.wire import from_datetime

I64 = npt.NDArray[np.int64]

_MINUTE_NS = 60 * 1_000_000_000
# Sessions last at most 6.5 h and nights at least 17.5 h, so a gap under 12 h
# is always within one session.
_INTRADAY_MAX_NS = 12 * 3600 * 1_000_000_000


class Tape:
    """Immutable bar data for the sandbox.

    Args:
        tables: bars per symbol (``ts_ns`` = close times, strictly increasing).

    Attributes:
        symbols: the symbols, sorted (Alpaca's multi-symbol order).
        period_ns: the intraday bar period, or None for daily bars.
        timeframe: the Alpaca timeframe string of the data (``1Min``, ``1Day``...).
        times: the distinct close times over all symbols, ascending.
    """

    def __init__(self, tables: Mapping[str, BarTable]) -> None:
        self.tables: dict[str, BarTable] = {s: tables[s] for s in sorted(tables)}
        self.symbols: tuple[str, ...] = tuple(self.tables)
        self.period_ns = _infer_period(self.tables.values())
        self.timeframe = _timeframe_name(self.period_ns)
        self.starts: dict[str, I64] = {
            s: self._starts_of(t.ts_ns) for s, t in self.tables.items()
        }
        # The merged timeline: (close time, symbol index, row) sorted by time,
        # then symbol, so each step publishes bars in Alpaca's symbol order.
        ts = [t.ts_ns for t in self.tables.values()]
        all_ts = np.concatenate(ts) if ts else np.empty(0, dtype=np.int64)
        sym = np.concatenate(
            [np.full(len(t), k, dtype=np.int64) for k, t in enumerate(ts)]
        ) if ts else np.empty(0, dtype=np.int64)
        row = np.concatenate(
            [np.arange(len(t), dtype=np.int64) for t in ts]
        ) if ts else np.empty(0, dtype=np.int64)
        order = np.lexsort((sym, all_ts))
        self._ts: I64 = all_ts[order]
        self._sym: I64 = sym[order]
        self._row: I64 = row[order]
        self.times: I64 = np.unique(self._ts)

    @classmethod
    def from_dir(cls, path: Path | str, symbols: Sequence[str] | None = None) -> Tape:
        """Load every CSV under ``path`` (see :mod:`trader.data.bars`).

        Raises:
            trader.errors.DataError: unreadable or invalid data.
        """
        tables, _ = load_dir(path, symbols=symbols)
        return cls(tables)

    @classmethod
    def from_bars(cls, bars: Iterable[BarClosed]) -> Tape:
        """Build a tape from messages (tests and embedding); bars may come in any order."""
        per: dict[str, list[BarClosed]] = {}
        for b in bars:
            per.setdefault(b.symbol, []).append(b)
        tables: dict[str, BarTable] = {}
        for symbol, rows in per.items():
            rows.sort(key=lambda b: b.ts_ns)
            tables[symbol] = BarTable(
                symbol=symbol,
                ts_ns=np.array([b.ts_ns for b in rows], dtype=np.int64),
                open=np.array([b.open for b in rows], dtype=np.float64),
                high=np.array([b.high for b in rows], dtype=np.float64),
                low=np.array([b.low for b in rows], dtype=np.float64),
                close=np.array([b.close for b in rows], dtype=np.float64),
                volume=np.array([b.volume for b in rows], dtype=np.float64),
                vwap=np.array(
                    [np.nan if b.vwap is None else b.vwap for b in rows], dtype=np.float64
                ),
                trades=np.array(
                    [-1 if b.trades is None else b.trades for b in rows], dtype=np.int64
                ),
            )
        return cls(tables)

    # --- queries -------------------------------------------------------------------

    def bar(self, symbol: str, i: int) -> BarClosed:
        t = self.tables[symbol]
        vwap = float(t.vwap[i])
        trades = int(t.trades[i])
        return BarClosed(
            ts_ns=int(t.ts_ns[i]),
            symbol=symbol,
            open=float(t.open[i]),
            high=float(t.high[i]),
            low=float(t.low[i]),
            close=float(t.close[i]),
            volume=float(t.volume[i]),
            vwap=None if np.isnan(vwap) else vwap,
            trades=None if trades < 0 else trades,
        )

    def start_ns(self, symbol: str, i: int) -> int:
        """Alpaca's ``t`` for row ``i`` of ``symbol``."""
        return int(self.starts[symbol][i])

    def cursor_after(self, ts_ns: int) -> int:
        """Index in the merged timeline of the first bar closing after ``ts_ns``."""
        return int(np.searchsorted(self._ts, ts_ns, side="right"))

    def merged_len(self) -> int:
        return len(self._ts)

    def merged_ts(self, k: int) -> int:
        return int(self._ts[k])

    def merged_bar(self, k: int) -> BarClosed:
        return self.bar(self.symbols[int(self._sym[k])], int(self._row[k]))

    def merged_start(self, k: int) -> int:
        return self.start_ns(self.symbols[int(self._sym[k])], int(self._row[k]))

    def last_row_at_or_before(self, symbol: str, ts_ns: int) -> int:
        """Row of ``symbol``'s last bar closing at or before ``ts_ns``, or -1."""
        return int(np.searchsorted(self.tables[symbol].ts_ns, ts_ns, side="right")) - 1

    def rows_between(
        self, symbol: str, start_ns: int, end_ns: int, closed_by_ns: int
    ) -> tuple[int, int]:
        """Rows ``[lo, hi)`` of bars starting in ``[start_ns, end_ns]`` that closed by
        ``closed_by_ns`` (no future data leaves the sandbox)."""
        starts = self.starts[symbol]
        lo = int(np.searchsorted(starts, start_ns, side="left"))
        hi = int(np.searchsorted(starts, end_ns, side="right"))
        closed = int(np.searchsorted(self.tables[symbol].ts_ns, closed_by_ns, side="right"))
        return lo, max(lo, min(hi, closed))

    def first_start_ns(self) -> int | None:
        """Start of the earliest bar: the default sandbox start."""
        firsts = [int(s[0]) for s in self.starts.values() if len(s)]
        return min(firsts) if firsts else None

    # --- internals ----------------------------------------------------------------

    def _starts_of(self, closes: I64) -> I64:
        if self.period_ns is not None:
            return closes - self.period_ns
        return np.array([_daily_start(int(c)) for c in closes], dtype=np.int64)


def _infer_period(tables: Iterable[BarTable]) -> int | None:
    gaps = [np.diff(t.ts_ns) for t in tables if len(t) > 1]
    if not gaps:
        return None
    all_gaps = np.concatenate(gaps)
    intraday = all_gaps[(all_gaps > 0) & (all_gaps < _INTRADAY_MAX_NS)]
    if not len(intraday):
        return None
    values, counts = np.unique(intraday, return_counts=True)
    return int(values[int(np.argmax(counts))])


def _timeframe_name(period_ns: int | None) -> str:
    if period_ns is None:
        return "1Day"
    minutes, rest = divmod(period_ns, _MINUTE_NS)
    if rest or minutes < 1:
        return f"{period_ns}ns"  # sub-minute data: no Alpaca timeframe matches
    if minutes % 60 == 0:
        return f"{minutes // 60}Hour"
    return f"{minutes}Min"


def _daily_start(close_ns: int) -> int:
    """Midnight New York of the session date of a daily bar closing at ``close_ns``."""
    utc = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=close_ns // 1000)
    day = utc.astimezone(calendar.NEW_YORK).date()
    return from_datetime(dt.datetime.combine(day, dt.time(), tzinfo=calendar.NEW_YORK))


def timeframe_minutes(text: str) -> int | None:
    """An Alpaca timeframe as minutes, or None for ``1Day``.

    Raises:
        ValueError: not a timeframe the sandbox can serve (weeks, months, junk).
    """
    t = text.strip()
    for suffix, mult in (("Min", 1), ("T", 1), ("Hour", 60), ("H", 60)):
        if t.endswith(suffix) and t[: -len(suffix)].isdigit():
            n = int(t[: -len(suffix)])
            if n < 1:
                break
            return n * mult
    if t in ("1Day", "1D", "Day"):
        return None
    raise ValueError(f"invalid timeframe {text!r}")
