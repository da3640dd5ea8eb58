"""``trader data check``: find what is wrong with bar files, row by row.

The loader (:mod:`trader.data.bars`) refuses a bad row; this checker has to
see it, so it reads the CSV itself, leniently: any header order, quoted
fields, stray rows. Timestamps mean what they mean to the loader.

Defects, per symbol (one finding each, with the line and ``ts`` where known):

=====================  =======================================================
kind                   what
=====================  =======================================================
``malformed_row``      wrong field count, unparseable or non-finite number or
                       timestamp, bad header
``missing_session``    a session between the first and last bar with no bar
``intraday_gap``       a run of missing intraday bars inside a session lasting
                       at least ``gap_minutes`` (single missing minutes, where
                       nothing traded, are counted as ``missing_bars``, not
                       defects)
``off_calendar``       a bar closing off the session grid: weekend, holiday,
                       outside the session (unless the sidecar says the file
                       was fetched with extended hours) or misaligned
``duplicate_ts``       a timestamp seen before for the symbol
``out_of_order_ts``    a timestamp before an earlier row's
``non_positive_price`` open, high, low, close or vwap <= 0
``crossed_bar``        high < low, or open/close outside [low, high]
``zero_volume_run``    at least ``zero_volume_run`` consecutive zero volumes
``outlier_return``     a close-to-close log return more than N robust standard
                       deviations (1.4826 x MAD) from the median; intraday
                       returns are taken within sessions only
``suspected_split``    a one-bar jump within ``split_tolerance`` of a split
                       ratio (3:2, 2:1, 3:1 ... or 1:2, 1:3 ... reverse) that
                       is not reversed within ``reversal_bars`` bars
=====================  =======================================================

N defaults by timeframe (1Day 15, 1Hour 20, 5Min 30, 1Min 50): returns over
short horizons are far more fat-tailed than daily ones, so the MAD understates
their tails more. The values keep :mod:`trader.data.synth`'s modelled jumps
and real crash days quiet, while a misplaced decimal point or a fat-finger bar
(hundreds of sd) still stands out. A split-sized jump is reported as a split,
not also as an outlier.

What it is not: a fixer. It reports; :mod:`trader.data.normalize` and the
fetch adjustments fix.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt

from trader import calendar
from trader.data.bars import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, _parse_ts_scalar, _TimestampError
from trader.data.store import (
    csv_files,
    find_gaps,
    format_ts,
    read_meta,
    timeframe_minutes,
    timeframe_of,
)

__all__ = ["DEFECT_KINDS", "MEANAD_TO_SD", "Finding", "Report", "SymbolReport", "Thresholds",
           "check", "format_report", "split_ratio_near"]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

DEFECT_KINDS: Final = (
    "malformed_row",
    "missing_session",
    "intraday_gap",
    "off_calendar",
    "duplicate_ts",
    "out_of_order_ts",
    "non_positive_price",
    "crossed_bar",
    "zero_volume_run",
    "outlier_return",
    "suspected_split",
)

_SPLIT_RATIOS: Final = {
    "3:2": 1.5, "2:1": 2.0, "5:2": 2.5, "3:1": 3.0, "4:1": 4.0, "5:1": 5.0, "7:1": 7.0,
    "8:1": 8.0, "10:1": 10.0, "15:1": 15.0, "20:1": 20.0,
    "2:3": 2 / 3, "1:2": 0.5, "1:3": 1 / 3, "1:4": 0.25, "1:5": 0.2, "1:8": 0.125,
    "1:10": 0.1, "1:15": 1 / 15, "1:20": 0.05,
}
_SPLIT_LOGS: Final = tuple((name, math.log(r)) for name, r in _SPLIT_RATIOS.items())
SMALLEST_SPLIT_LOG: Final = min(abs(lk) for _, lk in _SPLIT_LOGS)
_MAD_TO_SD: Final = 1.4826
MEANAD_TO_SD: Final = 1.2533  # sqrt(pi/2): when over half the returns are equal
_CROSS_TOL: Final = 1e-9
_MINUTE_NS: Final = 60_000_000_000


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """What counts as a defect.

    Attributes:
        outlier_sigmas: Robust sd beyond which a return is an outlier; None
            for the timeframe's default (see the module docstring).
        gap_minutes: Shortest intraday hole reported as a gap (default 15).
        zero_volume_run: Shortest run of zero volumes reported (default 1).
        split_tolerance: Relative distance to a split ratio (default 3%).
        reversal_bars: Bars within which a jump back makes it no split (5).
    """

    outlier_sigmas: float | None = None
    gap_minutes: int = 15
    zero_volume_run: int = 1
    split_tolerance: float = 0.03
    reversal_bars: int = 5

    def sigmas(self, minutes: int | None) -> float:
        """The outlier limit for bars of ``minutes`` (None: daily)."""
        if self.outlier_sigmas is not None:
            return self.outlier_sigmas
        if minutes is None:
            return 15.0
        return 50.0 if minutes < 5 else 30.0 if minutes < 60 else 20.0


def split_ratio_near(ratio: float, tolerance: float) -> tuple[str, float] | None:
    """The split (its name and log ratio) within ``tolerance`` of a price ratio, if any.

    ``ratio`` is the price before over the price after (> 1 when the price
    fell, so a k:1 split gives k). The live checks (:mod:`trader.data.live_quality`)
    call it bar by bar; :func:`_check_returns` applies the same rule to whole arrays.
    """
    if not ratio > 0 or not math.isfinite(ratio):
        return None
    lr, tol = math.log(ratio), math.log1p(tolerance)
    if abs(lr) < SMALLEST_SPLIT_LOG - tol:
        return None  # an ordinary move (nearly every bar): nowhere near a split
    for name, lk in _SPLIT_LOGS:
        if abs(lr - lk) <= tol:
            return name, lk
    return None


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One defect.

    Attributes:
        kind: One of :data:`DEFECT_KINDS`.
        symbol: The ticker (empty for a file-level problem).
        file: The CSV file.
        line: 1-based line in the file, when one row is to blame.
        ts: When (RFC 3339, or a date for sessions and daily bars), when known.
        detail: What exactly.
    """

    kind: str
    symbol: str
    file: str
    line: int | None
    ts: str | None
    detail: str


class SymbolReport(msgspec.Struct, frozen=True, kw_only=True):
    """The check of one symbol in one file.

    Attributes:
        symbol, file, timeframe: What was checked.
        rows: Data rows of the symbol (bad ones included).
        first, last: First and last bar close, when any.
        missing_bars: Intraday bars missing in runs shorter than a gap (not defects).
        counts: Findings per kind.
        findings: Every finding, in time order where known.
    """

    symbol: str
    file: str
    timeframe: str
    rows: int
    first: str | None
    last: str | None
    missing_bars: int
    counts: dict[str, int]
    findings: list[Finding]


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """``trader data check``'s answer.

    Attributes:
        root: The directory checked.
        clean: True when there is no finding at all.
        counts: Findings per kind over everything.
        files: File-level findings (unreadable header).
        symbols: One report per symbol and file.
    """

    root: str
    clean: bool
    counts: dict[str, int]
    files: list[Finding]
    symbols: list[SymbolReport]


# --------------------------------------------------------------------------
# Lenient reading


@dataclass
class _Rows:
    """One symbol's rows that parsed, in file order."""

    lines: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    prices: list[tuple[float, float, float, float, float]] = field(default_factory=list)
    volume: list[float] = field(default_factory=list)
    total: int = 0


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read(path: Path) -> tuple[dict[str, _Rows], list[Finding]]:
    """Parse a CSV leniently into rows per symbol, and findings for rows that do not parse."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    file = str(path)
    findings: list[Finding] = []
    header = next(reader, None)
    names = [n.strip().lower() for n in header or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        what = "the file is empty" if header is None else f"missing column(s) {', '.join(missing)}"
        return {}, [Finding(kind="malformed_row", symbol="", file=file, line=1, ts=None,
                            detail=f"bad header: {what}")]
    col = {n: names.index(n) for n in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if n in names}
    out: dict[str, _Rows] = {}

    def bad(line: int, detail: str, symbol: str = "", kind: str = "malformed_row",
            ts: str | None = None) -> None:
        findings.append(Finding(kind=kind, symbol=symbol, file=file, line=line, ts=ts,
                                detail=detail))

    end_of_last = 1
    for record in reader:
        line_no, end_of_last = end_of_last + 1, reader.line_num
        if not record or not any(f.strip() for f in record):
            continue
        if len(record) != len(names):
            bad(line_no, f"{len(record)} fields, header has {len(names)}")
            continue
        symbol = record[col["symbol"]].strip()
        if not symbol or " " in symbol:
            bad(line_no, f"bad symbol {symbol!r}")
            continue
        rows = out.setdefault(symbol, _Rows())
        rows.total += 1
        raw_ts = record[col["ts"]].strip()
        try:
            ts = _parse_ts_scalar(raw_ts.encode())
        except _TimestampError as exc:
            if exc.code == "non_session_date":
                bad(line_no, f"{raw_ts} is not a trading session", symbol, "off_calendar", raw_ts)
            else:
                bad(line_no, str(exc).split(": ", 1)[1], symbol)
            continue
        values = {c: _number(record[col[c]]) for c in ("open", "high", "low", "close", "volume")}
        raw_vwap = record[col["vwap"]].strip() if "vwap" in col else ""
        vwap = _number(raw_vwap) if raw_vwap else math.nan
        broken = [c for c, v in values.items() if v is None] + (["vwap"] if vwap is None else [])
        if broken:
            bad(line_no, f"{', '.join(broken)}: not a finite number", symbol, ts=format_ts(ts))
            continue
        o, h, lo, c, v = (float(values[k] or 0.0) for k in ("open", "high", "low", "close",
                                                            "volume"))
        rows.lines.append(line_no)
        rows.ts.append(ts)
        rows.prices.append((o, h, lo, c, float(vwap if vwap is not None else math.nan)))
        rows.volume.append(v)
    return out, findings


# --------------------------------------------------------------------------
# Checks on one symbol


@dataclass
class _Series:
    """A symbol's parsed rows as arrays in file order, and the clean series in time order."""

    symbol: str
    file: str
    daily: bool
    lines: I64
    ts: I64
    o: F64
    h: F64
    lo: F64
    c: F64
    vwap: F64
    v: F64
    order: I64 = field(init=False)  # indices of the time-ordered, de-duplicated rows

    def __post_init__(self) -> None:
        _, first = np.unique(self.ts, return_index=True)  # first occurrence of each ts
        self.order = first.astype(np.int64)

    def at(self, kind: str, i: int, detail: str, *, exact: bool = False) -> Finding:
        """A finding about row ``i`` (file order); ``exact`` shows the time of a daily bar."""
        ts = format_ts(int(self.ts[i]), daily=self.daily and not exact)
        return Finding(kind=kind, symbol=self.symbol, file=self.file, line=int(self.lines[i]),
                       ts=ts, detail=detail)


def _check_order(s: _Series) -> Iterator[Finding]:
    seen: set[int] = set()
    latest: int | None = None
    for i, t in enumerate(s.ts.tolist()):
        if t in seen:
            yield s.at("duplicate_ts", i, "timestamp already seen for this symbol")
        elif latest is not None and t < latest:
            yield s.at("out_of_order_ts", i,
                       f"before the earlier row at {format_ts(latest, daily=s.daily)}")
        seen.add(t)
        latest = t if latest is None else max(latest, t)


def _check_prices(s: _Series) -> Iterator[Finding]:
    for i in np.flatnonzero((s.o <= 0) | (s.h <= 0) | (s.lo <= 0) | (s.c <= 0) | (s.vwap <= 0)):
        named = {"open": s.o[i], "high": s.h[i], "low": s.lo[i], "close": s.c[i],
                 "vwap": s.vwap[i]}
        yield s.at("non_positive_price", int(i),
                   ", ".join(f"{k} {v:g}" for k, v in named.items() if v <= 0) + " <= 0")
    tol = _CROSS_TOL * np.maximum(np.abs(s.h), np.abs(s.lo))
    h, lo = s.h + tol, s.lo - tol
    crossed = (s.h < lo) | (s.o > h) | (s.o < lo) | (s.c > h) | (s.c < lo)
    for i in np.flatnonzero(crossed):
        yield s.at("crossed_bar", int(i), f"open {s.o[i]:g} high {s.h[i]:g} low {s.lo[i]:g} "
                                          f"close {s.c[i]:g}")


def _check_calendar(s: _Series, minutes: int | None, t: Thresholds,
                    extended_hours: bool) -> tuple[list[Finding], int]:
    gaps = find_gaps(s.ts, minutes)
    found = [Finding(kind="missing_session", symbol=s.symbol, file=s.file, line=None,
                     ts=d.isoformat(), detail="no bar in this session") for d in
             gaps.missing_sessions]
    isolated = 0
    for first, n in gaps.missing_runs:
        assert minutes is not None
        if n * minutes >= t.gap_minutes:
            last = first + (n - 1) * minutes * _MINUTE_NS
            found.append(Finding(kind="intraday_gap", symbol=s.symbol, file=s.file, line=None,
                                 ts=format_ts(first), detail=f"{n} bars missing, closes "
                                 f"{format_ts(first)} to {format_ts(last)}"))
        else:
            isolated += n
    row_of = {t: i for i, t in zip(s.order.tolist(), s.ts[s.order].tolist(), strict=True)}
    for ts in gaps.off_grid.tolist():
        closed = calendar.session_for(_ny_day(ts)) is None
        if extended_hours and not closed:
            continue  # fetched with --extended-hours: bars around the session belong
        where = "a closed day" if closed else "the grid"
        found.append(s.at("off_calendar", row_of[ts], f"bar closes off {where}", exact=True))
    return found, isolated


def _ny_day(ts_ns: int) -> dt.date:
    """The New York date of a bar closing at ``ts_ns`` (a midnight close is the day before)."""
    return dt.datetime.fromtimestamp((ts_ns - _MINUTE_NS) // 10**9, calendar.NEW_YORK).date()


def _check_volume(s: _Series, t: Thresholds) -> Iterator[Finding]:
    zero = s.v[s.order] == 0
    if not zero.any():
        return
    edges = np.diff(np.r_[0, zero.astype(np.int8), 0])
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if b - a >= t.zero_volume_run:
            yield s.at("zero_volume_run", int(s.order[a]), f"{b - a} bar(s) with volume 0")


def _robust_z(r: F64) -> F64:
    """|r - median| in robust sd (MAD, or the mean absolute deviation if MAD is 0)."""
    dev = np.abs(r - np.median(r))
    scale = _MAD_TO_SD * float(np.median(dev))
    if scale == 0:
        scale = MEANAD_TO_SD * float(np.mean(dev))
    if scale == 0:
        return np.zeros_like(r)
    z: F64 = dev / scale
    return z


def _session_index(ts: I64) -> I64:
    """The session number of each bar close (bars of one session share it)."""
    if not len(ts):
        return np.empty(0, dtype=np.int64)
    sessions = calendar.sessions(_ny_day(int(ts[0])), _ny_day(int(ts[-1])))
    opens = np.array([x.open_ns for x in sessions], dtype=np.int64)
    closes = np.array([x.close_ns for x in sessions], dtype=np.int64)
    idx = np.searchsorted(opens, ts, side="left").astype(np.int64) - 1
    inside = (idx >= 0) & (ts <= closes[np.maximum(idx, 0)]) if len(opens) else idx < -1
    # A bar outside every session gets a number of its own: it pairs with nothing.
    own: I64 = np.where(inside, idx, -1 - np.arange(len(ts), dtype=np.int64))
    return own


def _check_returns(s: _Series, minutes: int | None, t: Thresholds) -> Iterator[Finding]:
    rows = s.order[(s.c[s.order] > 0) & (s.o[s.order] > 0)]
    if len(rows) < 3:
        return
    c, o = s.c[rows], s.o[rows]
    ratio_close = c[:-1] / c[1:]  # > 1 when the price fell: a k:1 split gives k
    ratio_open = c[:-1] / o[1:]
    tol = math.log1p(t.split_tolerance)
    candidates: dict[int, tuple[str, float]] = {}
    for name, ratio in _SPLIT_RATIOS.items():
        lk = math.log(ratio)
        near = (np.abs(np.log(ratio_open) - lk) <= tol) | (np.abs(np.log(ratio_close) - lk) <= tol)
        for k in np.flatnonzero(near).tolist():
            candidates.setdefault(k, (name, lk))
    splits: set[int] = set()
    for k, (name, lk) in sorted(candidates.items()):
        after = c[k + 1 : k + 1 + t.reversal_bars] / c[k]
        if (np.abs(np.log(after)) < abs(lk) / 2).any():
            continue  # back near the old level: a bad print, not a split
        splits.add(k + 1)
        yield s.at("suspected_split", int(rows[k + 1]),
                   f"close {c[k]:g} then open {o[k + 1]:g} close {c[k + 1]:g}: looks "
                   f"like an unadjusted {name} split")
    r = np.log(c[1:] / c[:-1])
    pair = np.ones(len(r), dtype=np.bool_)
    if minutes is not None:
        session = _session_index(s.ts[rows])
        pair = session[1:] == session[:-1]
    if pair.sum() < 3:
        return
    z = np.zeros(len(r))
    z[pair] = _robust_z(r[pair])
    limit = t.sigmas(minutes)
    for k in np.flatnonzero(z > limit).tolist():
        if k + 1 in splits:
            continue
        yield s.at("outlier_return", int(rows[k + 1]),
                   f"return {math.expm1(r[k]):+.1%} is {z[k]:.1f} robust sd (limit {limit:g})")


def _check_symbol(s: _Series, minutes: int | None, t: Thresholds,
                  extended_hours: bool) -> tuple[list[Finding], int]:
    found = [*_check_order(s), *_check_prices(s)]
    calendar_found, isolated = _check_calendar(s, minutes, t, extended_hours)
    found += calendar_found
    found += _check_volume(s, t)
    found += _check_returns(s, minutes, t)
    return found, isolated


# --------------------------------------------------------------------------
# The whole tree


def _sort_key(f: Finding) -> tuple[str, int, str]:
    return (f.ts or "", f.line or 0, f.kind)


def check(root: Path | str, thresholds: Thresholds | None = None) -> Report:
    """Check every CSV under ``root`` (a directory) or one CSV file.

    Args:
        root: A directory (``*.csv`` under it, ``.cache`` skipped) or a file.
        thresholds: What counts as a defect; the defaults when None.

    Returns:
        The report; ``clean`` when nothing was found.

    Raises:
        DataError: ``root`` is neither a CSV file nor a directory, or a bad sidecar.
        OSError: A file cannot be read.
    """
    t = thresholds or Thresholds()
    root = Path(root)
    files = [root] if root.is_file() else csv_files(root)
    file_findings: list[Finding] = []
    reports: list[SymbolReport] = []
    for path in files:
        per_symbol, parse_findings = _read(path)
        file_findings += [f for f in parse_findings if not f.symbol]
        meta = read_meta(path)
        for symbol, rows in sorted(per_symbol.items()):
            ts = np.array(rows.ts, dtype=np.int64)
            timeframe = timeframe_of(path, ts, meta)
            minutes = timeframe_minutes(timeframe)
            prices = np.array(rows.prices, dtype=np.float64).reshape(-1, 5)
            series = _Series(symbol, str(path), minutes is None,
                             np.array(rows.lines, dtype=np.int64), ts, prices[:, 0],
                             prices[:, 1], prices[:, 2], prices[:, 3], prices[:, 4],
                             np.array(rows.volume, dtype=np.float64))
            extended = meta is not None and meta.extended_hours
            found, isolated = _check_symbol(series, minutes, t, extended)
            found += [f for f in parse_findings if f.symbol == symbol]
            found.sort(key=_sort_key)
            counts: dict[str, int] = {}
            for f in found:
                counts[f.kind] = counts.get(f.kind, 0) + 1
            daily = minutes is None
            reports.append(SymbolReport(
                symbol=symbol, file=str(path), timeframe=timeframe, rows=rows.total,
                first=format_ts(int(ts.min()), daily=daily) if len(ts) else None,
                last=format_ts(int(ts.max()), daily=daily) if len(ts) else None,
                missing_bars=isolated, counts=dict(sorted(counts.items())), findings=found))
    totals: dict[str, int] = {}
    for f in file_findings:
        totals[f.kind] = totals.get(f.kind, 0) + 1
    for rep in reports:
        for kind, n in rep.counts.items():
            totals[kind] = totals.get(kind, 0) + n
    return Report(root=str(root), clean=not totals, counts=dict(sorted(totals.items())),
                  files=file_findings, symbols=reports)


def format_report(report: Report, *, limit: int = 20) -> str:
    """Render a report as a table of symbols, then the findings (``limit`` per symbol)."""
    root = Path(report.root)

    def rel(path: str) -> str:
        p = Path(path)
        return str(p.relative_to(root)) if root.is_dir() and p.is_relative_to(root) else path

    header = ("SYMBOL", "TIMEFRAME", "ROWS", "FIRST", "LAST", "DEFECTS", "KINDS", "FILE")
    table = [header]
    for rep in report.symbols:
        kinds = ", ".join(f"{k} {n}" for k, n in rep.counts.items()) or "-"
        table.append((rep.symbol, rep.timeframe, str(rep.rows), rep.first or "-",
                      rep.last or "-", str(sum(rep.counts.values())), kinds, rel(rep.file)))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
           for row in table]
    for f in report.files:
        out.append(f"{rel(f.file)}:{f.line}: {f.kind}: {f.detail}")
    for rep in report.symbols:
        if not rep.findings:
            continue
        out.append("")
        out.append(f"{rep.symbol} ({rel(rep.file)}, {rep.timeframe}):")
        for f in rep.findings[:limit]:
            where = f"line {f.line}" if f.line is not None else "-"
            out.append(f"  {f.kind:<19} {f.ts or '-':<20} {where:<10} {f.detail}")
        if len(rep.findings) > limit:
            out.append(f"  ... {len(rep.findings) - limit} more (--json lists all)")
    out.append("")
    if report.clean:
        out.append(f"clean: {len(report.symbols)} symbol(s), no defects")
    else:
        total = sum(report.counts.values())
        kinds = ", ".join(f"{k} {n}" for k, n in report.counts.items())
        out.append(f"{total} defect(s): {kinds}")
    return "\n".join(out)
