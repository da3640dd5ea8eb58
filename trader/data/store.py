"""The on-disk layout of bar data: timeframes, sidecars, the session grid, ``trader data ls``.

A data directory holds one bar CSV per symbol (schema: :mod:`trader.data.bars`),
usually one folder per timeframe::

    replay_data/
      1Day/AAPL.csv                    bundled, no sidecar
      1Min/AAPL.csv                    written by ``trader data fetch``
      1Min/AAPL.meta.json              its sidecar: timeframe, adjustment, feed, range
      1Min/.fetch-AAPL.json            fetch progress (see :mod:`trader.data.fetch`)

The sidecar matters for one reason above all: prices adjusted for splits (or
dividends) and raw prices of one symbol must never meet in one replay, or a
split becomes a 50% crash. :func:`check_adjustments` refuses such a tree. A CSV
without a sidecar has an unknown adjustment and is not compared (the bundled
``replay_data/1Day`` is split-adjusted, per its README).

The session grid says which bar close times a timeframe has on the exchange
calendar: daily bars close at each session's close; intraday bars are aligned
to the New York clock (5-minute bars close at 09:35, 09:40 ...; hourly bars at
10:00, covering 09:30-10:00, then 11:00 ...) up to the session close.

What it is not: a loader (:mod:`trader.data.bars`) or a checker
(:mod:`trader.data.quality`, which uses the grid here).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from trader import calendar
from trader.data.bars import load_csv
from trader.errors import DataError

__all__ = [
    "TIMEFRAMES",
    "Gaps",
    "Listing",
    "Meta",
    "atomic_write",
    "check_adjustments",
    "csv_files",
    "find_gaps",
    "format_listing",
    "format_ts",
    "ls",
    "read_meta",
    "timeframe_minutes",
    "timeframe_of",
    "write_meta",
]

I64 = npt.NDArray[np.int64]

# Timeframe name -> bar length in minutes; None is one bar per session.
TIMEFRAMES: Final[dict[str, int | None]] = {"1Min": 1, "5Min": 5, "1Hour": 60, "1Day": None}
ADJUSTMENTS: Final = ("raw", "split", "dividend", "all")

_NS: Final = 1_000_000_000
_MINUTE_NS: Final = 60 * _NS
# Sessions last at most 6.5 h and nights at least 17.5 h: a smaller step
# between two bars is within one session.
_INTRADAY_MAX_NS: Final = 12 * 3600 * _NS
_META_SUFFIX: Final = ".meta.json"


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    """The sidecar ``<SYMBOL>.meta.json`` of a fetched CSV.

    Attributes:
        symbol: The ticker.
        timeframe: ``1Min``, ``5Min``, ``1Hour`` or ``1Day``.
        adjustment: Corporate-action adjustment asked for: ``raw``, ``split``,
            ``dividend`` or ``all``.
        feed: The data feed (``iex``, ``sip``); empty when unknown.
        source: Where the bars came from (``alpaca``).
        start: First date requested, ``YYYY-MM-DD``.
        end: Last date requested, ``YYYY-MM-DD``.
        extended_hours: True when bars outside regular sessions were kept.
    """

    symbol: str
    timeframe: str
    adjustment: str
    feed: str = ""
    source: str = "alpaca"
    start: str = ""
    end: str = ""
    extended_hours: bool = False


class Gaps(NamedTuple):
    """Where a symbol's bars leave the session grid.

    Attributes:
        missing_sessions: Sessions between the first and the last bar with no bar.
        missing_runs: Runs of missing intraday bars inside sessions that have
            bars: (close time of the first missing bar, bars missing). Empty
            for daily bars.
        off_grid: Close times that are not on the grid (weekend, holiday,
            outside the session, misaligned).
    """

    missing_sessions: list[dt.date]
    missing_runs: list[tuple[int, int]]
    off_grid: I64

    @property
    def missing_bars(self) -> int:
        """Intraday bars missing inside sessions that have bars."""
        return sum(n for _, n in self.missing_runs)


class Listing(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``trader data ls``: one symbol in one file.

    Attributes:
        path: The CSV file.
        symbol: The ticker.
        timeframe: From the sidecar, else the folder name, else the data.
        adjustment: From the sidecar; ``?`` when unknown.
        rows: Bars loaded.
        bad_rows: Rows the loader refused (``trader data check`` says why).
        first: First bar close (a date for daily bars); empty without bars.
        last: Last bar close.
        missing_sessions: Sessions with no bar between the first and the last.
        missing_bars: Intraday bars missing within sessions that have bars.
    """

    path: str
    symbol: str
    timeframe: str
    adjustment: str
    rows: int
    bad_rows: int
    first: str
    last: str
    missing_sessions: int
    missing_bars: int


# --------------------------------------------------------------------------
# Files and sidecars.


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once (temp file, fsync, rename).

    Readers, and a process killed half-way, see the old or the new content,
    never a mix.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; data files are shareable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def meta_path(csv: Path) -> Path:
    """The sidecar of ``<dir>/<SYMBOL>.csv``: ``<dir>/<SYMBOL>.meta.json``."""
    return csv.with_name(csv.stem + _META_SUFFIX)


def write_meta(csv: Path, meta: Meta) -> None:
    """Write the sidecar of ``csv`` atomically."""
    atomic_write(meta_path(csv), msgspec.json.format(msgspec.json.encode(meta)) + b"\n")


def read_meta(csv: Path) -> Meta | None:
    """Read the sidecar of ``csv``; None when there is none.

    Raises:
        DataError: The sidecar exists but is not valid.
    """
    path = meta_path(csv)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        meta = msgspec.json.decode(raw, type=Meta)
    except msgspec.DecodeError as exc:
        raise DataError(f"{path}: not a valid sidecar: {exc}") from None
    if meta.adjustment not in ADJUSTMENTS:
        raise DataError(f"{path}: unknown adjustment {meta.adjustment!r}")
    return meta


def csv_files(root: Path) -> list[Path]:
    """Every ``*.csv`` under ``root`` as :func:`trader.data.bars.load_dir` sees them.

    Raises:
        DataError: ``root`` is not a directory.
    """
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    return sorted(p for p in root.rglob("*.csv") if ".cache" not in p.relative_to(root).parts)


def check_adjustments(root: Path | str) -> None:
    """Refuse a tree in which one symbol has files with different adjustments.

    Call it before :func:`trader.data.bars.load_dir` wherever prices of a
    tree are used together (replay, the sandbox). Only files with a sidecar
    take part: an unknown adjustment cannot be compared.

    Raises:
        DataError: Naming the symbol and each file with its adjustment, or a
            bad sidecar, or ``root`` is not a directory.
    """
    seen: dict[str, dict[str, list[Path]]] = {}
    for csv in csv_files(Path(root)):
        meta = read_meta(csv)
        if meta is not None:
            seen.setdefault(meta.symbol, {}).setdefault(meta.adjustment, []).append(csv)
    for symbol, by_adjustment in sorted(seen.items()):
        if len(by_adjustment) > 1:
            files = "; ".join(
                f"{adj}: {', '.join(str(p) for p in paths)}"
                for adj, paths in sorted(by_adjustment.items())
            )
            raise DataError(
                f"{symbol} has files with different adjustments ({files}); adjusted and "
                f"unadjusted prices must not be mixed: refetch with one --adjustment"
            )


# --------------------------------------------------------------------------
# Timeframes and the session grid.


def timeframe_minutes(timeframe: str) -> int | None:
    """Bar length of a timeframe name in minutes (None for ``1Day``).

    Accepts the fetch names and any ``<n>Min`` / ``<n>Hour``.

    Raises:
        ValueError: An unknown name.
    """
    if timeframe in TIMEFRAMES:
        return TIMEFRAMES[timeframe]
    for suffix, mult in (("Min", 1), ("Hour", 60)):
        head = timeframe.removesuffix(suffix)
        if head != timeframe and head.isdigit() and int(head) > 0:
            return int(head) * mult
    raise ValueError(f"unknown timeframe {timeframe!r}")


def _timeframe_name(minutes: int | None) -> str:
    if minutes is None:
        return "1Day"
    return f"{minutes // 60}Hour" if minutes % 60 == 0 else f"{minutes}Min"


def _infer_minutes(ts_ns: I64) -> int | None:
    """The most common step between bars within a session, in minutes; None if daily."""
    steps = np.diff(np.unique(ts_ns))
    steps = steps[steps < _INTRADAY_MAX_NS]
    if not len(steps):
        return None
    values, counts = np.unique(steps, return_counts=True)
    return max(1, int(values[int(np.argmax(counts))]) // _MINUTE_NS)


def timeframe_of(csv: Path, ts_ns: I64, meta: Meta | None = None) -> str:
    """The timeframe of a file: its sidecar, else its folder's name, else the data's step."""
    if meta is not None:
        return meta.timeframe
    try:
        timeframe_minutes(csv.parent.name)
    except ValueError:
        return _timeframe_name(_infer_minutes(ts_ns))
    return csv.parent.name


def _session_closes(session: calendar.Session, minutes: int) -> I64:
    """Close times of the intraday bars of one session on the New York clock."""
    open_local = dt.datetime.fromtimestamp(session.open_ns // _NS, calendar.NEW_YORK)
    open_minute = open_local.hour * 60 + open_local.minute
    length = (session.close_ns - session.open_ns) // _MINUTE_NS
    first = (open_minute // minutes + 1) * minutes - open_minute
    last = -(-(open_minute + length) // minutes) * minutes - open_minute
    # Offsets from the open: no DST change happens inside a session.
    return session.open_ns + np.arange(first, last + 1, minutes, dtype=np.int64) * _MINUTE_NS


def _ny_date(ts_ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(ts_ns // _NS, calendar.NEW_YORK).date()


def find_gaps(ts_ns: I64, minutes: int | None) -> Gaps:
    """Compare bar close times with the session grid between the first and the last.

    Args:
        ts_ns: Close times, UTC ns (any order; duplicates are ignored).
        minutes: Bar length, or None for daily bars.

    Returns:
        The missing sessions, missing intraday runs and off-grid times.
    """
    ts = np.unique(ts_ns)
    if not len(ts):
        return Gaps([], [], ts)
    # A bar closing at midnight belongs to the day before; a minute back is safe.
    sessions = calendar.sessions(_ny_date(int(ts[0]) - _MINUTE_NS), _ny_date(int(ts[-1])))
    if minutes is None:
        closes = np.array([s.close_ns for s in sessions], dtype=np.int64)
        present = np.isin(closes, ts)
        missing = [s.date for s, ok in zip(sessions, present.tolist(), strict=True) if not ok]
        return Gaps(missing, [], ts[~np.isin(ts, closes)])
    grids = [_session_closes(s, minutes) for s in sessions]
    grid = np.concatenate(grids) if grids else np.empty(0, dtype=np.int64)
    which = np.repeat(np.arange(len(grids)), [len(g) for g in grids])
    present = np.isin(grid, ts)
    has_bars = np.bincount(which[present], minlength=len(grids)) > 0
    missing_sessions = [s.date for s, ok in zip(sessions, has_bars.tolist(), strict=True) if not ok]
    holes = np.flatnonzero(~present & has_bars[which])
    runs: list[tuple[int, int]] = []
    if len(holes):
        breaks = np.flatnonzero((np.diff(holes) != 1) | (np.diff(which[holes]) != 0)) + 1
        for chunk in np.split(holes, breaks):
            runs.append((int(grid[chunk[0]]), len(chunk)))
    # Bars before the first or after the last grid point of their range are
    # off the grid too, so the range check above is enough.
    return Gaps(missing_sessions, runs, ts[~np.isin(ts, grid)])


def format_ts(ts_ns: int, *, daily: bool = False) -> str:
    """RFC 3339 in UTC with ``Z`` (seconds, finer only when needed); a NY date if daily."""
    if daily:
        return _ny_date(ts_ns - _MINUTE_NS).isoformat()
    whole, frac = divmod(ts_ns, _NS)
    stamp = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=whole)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:09d}Z" if frac else f"{text}Z"


# --------------------------------------------------------------------------
# trader data ls


def _listings(root: Path) -> Iterator[Listing]:
    for csv in csv_files(root):
        meta = read_meta(csv)
        tables, report = load_csv(csv, on_bad_row="skip")
        for symbol, table in tables.items():
            timeframe = timeframe_of(csv, table.ts_ns, meta)
            minutes = timeframe_minutes(timeframe)
            gaps = find_gaps(table.ts_ns, minutes)
            daily = minutes is None
            n = len(table)
            yield Listing(
                path=str(csv),
                symbol=symbol,
                timeframe=timeframe,
                adjustment=meta.adjustment if meta is not None else "?",
                rows=n,
                bad_rows=report.rows_skipped,
                first=format_ts(int(table.ts_ns[0]), daily=daily) if n else "",
                last=format_ts(int(table.ts_ns[-1]), daily=daily) if n else "",
                missing_sessions=len(gaps.missing_sessions),
                missing_bars=gaps.missing_bars,
            )


def ls(root: Path | str) -> list[Listing]:
    """List every symbol of every CSV under ``root`` with its rows, range and gaps.

    Gaps are counted against :mod:`trader.calendar`: missing sessions for
    every timeframe, and missing bars within sessions for intraday ones.

    Raises:
        DataError: ``root`` is not a directory, a bad sidecar, or one symbol's
            files mix adjustments (:func:`check_adjustments`).
    """
    root = Path(root)
    check_adjustments(root)
    return sorted(_listings(root), key=lambda x: (x.symbol, x.timeframe, x.path))


def format_listing(rows: list[Listing], root: Path) -> str:
    """Render :func:`ls` as an aligned text table (paths relative to ``root``)."""
    header = ("SYMBOL", "TIMEFRAME", "ADJ", "ROWS", "BAD", "FIRST", "LAST",
              "MISSING_SESSIONS", "MISSING_BARS", "FILE")
    lines = [header]
    for r in rows:
        path = Path(r.path)
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        intraday = timeframe_minutes(r.timeframe) is not None
        lines.append((
            r.symbol, r.timeframe, r.adjustment, str(r.rows), str(r.bad_rows), r.first or "-",
            r.last or "-", str(r.missing_sessions), str(r.missing_bars) if intraday else "-",
            str(shown),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
