"""Normalise the bundled real daily data into ``replay_data/``.

Reproducible: ``python -m trader.data.normalize SRC OUT`` with ``SRC`` the
shared data folder (see its ``SOURCES.md``) writes ``OUT/1Day/<SYMBOL>.csv``
in the bar schema of :mod:`trader.data.bars` (``ts`` as ``YYYY-MM-DD``, a
daily bar closing at the session close).

Sources:

* ``bokeh_stocks.csv`` (AAPL, FB, GOOG, IBM, MSFT): unadjusted prices plus an
  ``Adj Close``.  Stock splits are detected from the data and removed by
  dividing earlier prices by the cumulative split factor and multiplying
  earlier volumes by it, so strategies do not see fake crashes.  Dividends
  are *not* adjusted for.
* ``arch_sp500.csv`` -> ``SPX`` and ``arch_nasdaq.csv`` -> ``COMP`` (dates as
  M/D/YYYY).  ``COMP`` is the NASDAQ *Composite* (^IXIC) series that the
  source ships, not the Nasdaq-100, hence not ``NDX``.

A split is a day whose close-to-close ratio sits within 1.5% of a common
split ratio (2:1, 3:2, 3:1, ...) *and* whose ``Adj Close`` ratio does not
jump: the unadjusted price halves while the adjusted series stays smooth.
A special dividend (MSFT 2004-11-15, factor 1.11) fails the ratio test.

Rows the loader would reject (crossed prices) are clamped into shape, and
every such fix is reported; the current sources need none.  The one source
defect corrected is the volume of each split's ex-date, which the source
gives in pre-split shares (see :func:`_apply_splits`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec

from trader.errors import DataError

__all__ = ["Fix", "NormalizeReport", "Split", "detect_splits", "main", "normalize_shared"]

# Ratios (old shares -> new shares) a split is recognised as; reverse splits
# are their reciprocals.
_SPLIT_RATIOS: Final = (3 / 2, 2.0, 5 / 2, 3.0, 4.0, 5.0, 7.0, 8.0, 10.0, 15.0, 20.0)
_SPLIT_TOLERANCE: Final = 0.015
# How far the Adj Close ratio may move on a split day before we distrust it.
_ADJ_JUMP: Final = 0.25

_STOCKS_FILE: Final = "bokeh_stocks.csv"
_INDEX_FILES: Final = {"SPX": "arch_sp500.csv", "COMP": "arch_nasdaq.csv"}


class Split(msgspec.Struct, frozen=True):
    """A stock split found in the data.

    Attributes:
        symbol: Ticker.
        date: First trading day at the post-split price (the ex-date).
        ratio: New shares per old share (2.0 for a 2:1 split).
        close_ratio: Previous close divided by this close.
        adj_ratio: The same for ``Adj Close``.
    """

    symbol: str
    date: dt.date
    ratio: float
    close_ratio: float
    adj_ratio: float


class Fix(msgspec.Struct, frozen=True):
    """A source row changed so the loader accepts it.

    Attributes:
        symbol: Ticker.
        date: The bar's date.
        note: What was changed and why.
    """

    symbol: str
    date: dt.date
    note: str


class NormalizeReport(msgspec.Struct, frozen=True):
    """What :func:`normalize_shared` wrote.

    Attributes:
        files: The CSV files written.
        rows: Rows per symbol.
        splits: The splits applied.
        fixes: Rows clamped into a valid bar.
    """

    files: list[Path]
    rows: dict[str, int]
    splits: list[Split]
    fixes: list[Fix]


class _Bar(msgspec.Struct):
    """One daily bar being normalised (mutable while adjusting)."""

    date: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: float
    adj_close: float


def _split_ratio(close_ratio: float, adj_ratio: float) -> float | None:
    """Return the split ratio a day's price change implies, or None."""
    if abs(adj_ratio - 1.0) > _ADJ_JUMP:
        return None  # the adjusted series jumps too: a real move, not a split
    factor = close_ratio / adj_ratio
    for ratio in _SPLIT_RATIOS:
        for candidate in (ratio, 1.0 / ratio):
            if abs(factor / candidate - 1.0) <= _SPLIT_TOLERANCE:
                return candidate
    return None


def detect_splits(symbol: str, bars: Sequence[_Bar]) -> list[Split]:
    """Find the splits in one symbol's date-ordered unadjusted bars.

    Args:
        symbol: Ticker, for the records.
        bars: Bars with ``close`` and ``adj_close``, in date order.

    Returns:
        The splits, in date order.
    """
    found: list[Split] = []
    for prev, cur in itertools.pairwise(bars):
        close_ratio = prev.close / cur.close
        adj_ratio = prev.adj_close / cur.adj_close
        ratio = _split_ratio(close_ratio, adj_ratio)
        if ratio is not None:
            found.append(Split(symbol, cur.date, ratio, close_ratio, adj_ratio))
    return found


def _apply_splits(bars: list[_Bar], splits: Sequence[Split]) -> list[Fix]:
    """Express every bar in today's shares: divide prices, multiply volume.

    The source reports the ex-date's volume in pre-split shares too (MSFT
    2003-02-18 shows 28,707,750 = 57,415,500 / 2, and ``pmdarima_msft.csv``
    has about 2.6 times it against 1.3 times on the days around), so the
    ex-date's volume is scaled along with the earlier ones and reported as a fix.

    Returns:
        One fix per ex-date volume corrected.
    """
    fixes: list[Fix] = []
    for split in splits:
        for bar in bars:
            if bar.date > split.date:
                break
            if bar.date == split.date:
                fixes.append(
                    Fix(
                        split.symbol,
                        bar.date,
                        f"ex-date volume {bar.volume:.0f} is in pre-split shares in the "
                        f"source; multiplied by {split.ratio:g}",
                    )
                )
                bar.volume *= split.ratio
                break
            bar.open /= split.ratio
            bar.high /= split.ratio
            bar.low /= split.ratio
            bar.close /= split.ratio
            bar.volume *= split.ratio
    return fixes


def _clamp(symbol: str, bars: list[_Bar]) -> list[Fix]:
    """Widen high/low to cover open and close, recording each change."""
    fixes: list[Fix] = []
    for bar in bars:
        top, bottom = max(bar.open, bar.close), min(bar.open, bar.close)
        if bar.high < bar.low or bar.high < top or bar.low > bottom:
            note = (
                f"open {bar.open} high {bar.high} low {bar.low} close {bar.close}: "
                "high/low widened to cover open and close"
            )
            bar.high = max(bar.high, bar.low, top)
            bar.low = min(bar.low, bar.high, bottom)
            fixes.append(Fix(symbol, bar.date, note))
    return fixes


def _number(text: str, where: str) -> float:
    """Parse a finite float or say where the bad value is."""
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {text!r} is not finite")
    return value


def _read_stocks(path: Path) -> dict[str, list[_Bar]]:
    """Read ``bokeh_stocks.csv`` into date-ordered bars per ticker."""
    out: dict[str, list[_Bar]] = defaultdict(list)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{path}:{line}"
            out[row["Ticker"]].append(
                _Bar(
                    date=dt.date.fromisoformat(row["Date"]),
                    open=_number(row["Open"], where),
                    high=_number(row["High"], where),
                    low=_number(row["Low"], where),
                    close=_number(row["Close"], where),
                    volume=_number(row["Volume"], where),
                    adj_close=_number(row["Adj Close"], where),
                )
            )
    return {symbol: sorted(bars, key=lambda b: b.date) for symbol, bars in sorted(out.items())}


def _read_index(path: Path) -> list[_Bar]:
    """Read an ``arch`` index file (M/D/YYYY dates) into date-ordered bars."""
    bars: list[_Bar] = []
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{path}:{line}"
            bars.append(
                _Bar(
                    date=dt.datetime.strptime(row["Date"], "%m/%d/%Y").date(),
                    open=_number(row["Open"], where),
                    high=_number(row["High"], where),
                    low=_number(row["Low"], where),
                    close=_number(row["Close"], where),
                    volume=_number(row["Volume"], where),
                    adj_close=_number(row["Adj Close"], where),
                )
            )
    return sorted(bars, key=lambda b: b.date)


def _fmt(value: float) -> str:
    """Format a price compactly: six decimals at most, no float noise."""
    text = f"{value:.6f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _write(path: Path, symbol: str, bars: Sequence[_Bar]) -> None:
    """Write one symbol's bars in the project schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("symbol,ts,open,high,low,close,volume\n")
        for b in bars:
            volume = f"{b.volume:.0f}" if b.volume.is_integer() else repr(b.volume)
            fh.write(
                f"{symbol},{b.date.isoformat()},{_fmt(b.open)},{_fmt(b.high)},"
                f"{_fmt(b.low)},{_fmt(b.close)},{volume}\n"
            )


def normalize_shared(src_dir: Path, out_dir: Path) -> NormalizeReport:
    """Normalise the shared daily data into ``out_dir/1Day/<SYMBOL>.csv``.

    Args:
        src_dir: Folder with ``bokeh_stocks.csv``, ``arch_sp500.csv`` and
            ``arch_nasdaq.csv``.
        out_dir: The ``replay_data`` folder.

    Returns:
        Files written, rows per symbol, splits applied and rows fixed.

    Raises:
        DataError: A source value is not a finite number.
        OSError: A source is missing or the output cannot be written.
    """
    day_dir = out_dir / "1Day"
    files: list[Path] = []
    rows: dict[str, int] = {}
    splits: list[Split] = []
    fixes: list[Fix] = []
    series: dict[str, list[_Bar]] = {}
    for symbol, bars in _read_stocks(src_dir / _STOCKS_FILE).items():
        found = detect_splits(symbol, bars)
        fixes.extend(_apply_splits(bars, found))
        splits.extend(found)
        series[symbol] = bars
    for symbol, name in _INDEX_FILES.items():
        series[symbol] = _read_index(src_dir / name)
    for symbol, bars in series.items():
        fixes.extend(_clamp(symbol, bars))
        path = day_dir / f"{symbol}.csv"
        _write(path, symbol, bars)
        files.append(path)
        rows[symbol] = len(bars)
    return NormalizeReport(files=files, rows=rows, splits=splits, fixes=fixes)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the normalisation from the command line.

    Args:
        argv: Arguments after the program name; default ``sys.argv[1:]``.

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(
        prog="python -m trader.data.normalize",
        description="Normalise the shared daily data into replay_data/1Day.",
    )
    parser.add_argument("src", type=Path, help="shared data folder (with SOURCES.md)")
    parser.add_argument("out", type=Path, help="output folder, e.g. replay_data")
    args = parser.parse_args(argv)
    try:
        report = normalize_shared(args.src, args.out)
    except (DataError, OSError) as exc:
        print(f"normalize: {exc}", file=sys.stderr)
        return 1
    for symbol, n in report.rows.items():
        print(f"{symbol}: {n} rows")
    for split in report.splits:
        print(
            f"split {split.symbol} {split.date} {split.ratio:g}:1 "
            f"(close ratio {split.close_ratio:.4f}, adj ratio {split.adj_ratio:.4f})"
        )
    for fix in report.fixes:
        print(f"fixed {fix.symbol} {fix.date}: {fix.note}")
    if not report.fixes:
        print("no rows needed fixing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
