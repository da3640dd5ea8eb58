"""Loading OHLCV bar files fast, with row validation and a binary cache.

CSV schema
----------
The first line is a header naming the columns; columns are recognised by name
(case-insensitive, surrounding spaces ignored) and may come in any order.

========  ========  ==========================================================
column    required  meaning
========  ========  ==========================================================
symbol    yes       ticker, e.g. ``AAPL``; one file may hold several symbols
ts        yes       when the bar *closed* (became known), see below
open      yes       first trade price, > 0
high      yes       highest price, >= open, close, low
low       yes       lowest price, <= open, close, high, > 0
close     yes       last trade price, > 0
volume    yes       traded quantity, >= 0 (float: crypto and indexes)
vwap      no        volume-weighted average price, > 0; empty means unknown
trades    no        number of trades, integer >= 0; empty means unknown
========  ========  ==========================================================

Other columns are ignored.  A UTF-8 byte-order mark before the header is
tolerated, as are CRLF line ends and blank lines.  Fields may be quoted (the
file is then read with the slower :mod:`csv` module), but a record must fit on
one line.

``ts`` is either

* RFC 3339 with an explicit offset, e.g. ``2024-01-02T14:31:00Z`` or
  ``2024-01-02T14:31:00.5+00:00`` (up to nanosecond fractions; other offsets
  are converted to UTC): the instant the bar closed; or
* a plain date ``YYYY-MM-DD``: a daily bar, closing at that session's close in
  New York (16:00, or 13:00 on early-close days) per :mod:`trader.calendar`.
  A date that is not a trading session is a bad row.

Bad rows
--------
Each bad row gets one reason code (the first problem found):

``field_count``          wrong number of fields for the header
``field_too_long``       a field longer than 64 bytes
``bad_symbol``           empty symbol, or one containing spaces
``bad_number``           empty, NaN, infinite or unparseable number
``bad_timestamp``        unparseable ``ts``, or one without a UTC offset
``non_session_date``     a date-only ``ts`` on which the exchange was closed
``non_positive_price``   open, high, low, close or vwap <= 0
``crossed_prices``       high < low, or open/close outside [low, high]
                         (relative tolerance 1e-9)
``negative_volume``      volume < 0
``duplicate_ts``         same ``ts`` as the symbol's latest accepted bar
``out_of_order_ts``      ``ts`` before the symbol's latest accepted bar

With ``on_bad_row="error"`` the first bad row (by line) raises
:class:`BadRowError` naming ``file:line: reason``; with ``"skip"`` bad rows
are dropped and counted by code in the :class:`LoadReport`.

Cache
-----
After a successful parse the tables are saved as one ``.bars`` file in
``cache_dir`` (default ``.cache/`` next to the file), keyed by the file's
SHA-256, the bad-row mode, a format version and a fingerprint of the parsing
and calendar code.  A later load of identical content reads the cache instead
of parsing.  Unreadable cache files are ignored and rewritten; stale entries
may be deleted at any time.

The file is a magic line, a length-prefixed JSON header (symbols, offsets,
skip counts, a CRC-32 of the payload) and the columns end to end as
little-endian int64/float64, so a load is one read and views into it.
(An ``.npz`` costs a zip member and a header parse per array: ~3 ms a file,
1.5 s for a 500-symbol universe of one file per symbol.)
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import logging
import os
import re
import struct
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from trader import calendar
from trader.errors import DataError

__all__ = [
    "REQUIRED_COLUMNS",
    "BadRowError",
    "BarTable",
    "DataError",
    "LoadReport",
    "load_csv",
    "load_dir",
]

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Raw = npt.NDArray[np.bytes_]

OnBadRow = Literal["error", "skip"]

REQUIRED_COLUMNS: Final = ("symbol", "ts", "open", "high", "low", "close", "volume")
OPTIONAL_COLUMNS: Final = ("vwap", "trades")
_PRICE_COLUMNS: Final = ("open", "high", "low", "close")

_MAX_FIELD: Final = 64
_CROSS_TOL: Final = 1e-9
_CACHE_VERSION: Final = 2
_BOM: Final = b"\xef\xbb\xbf"
_NS: Final = 1_000_000_000
# Timestamps outside these years are rejected: int64 nanoseconds overflow
# shortly after 2262 and nothing older than 1900 is market data we trade on.
_MIN_YEAR: Final = 1900
_MAX_YEAR: Final = 2261
_EPOCH: Final = dt.datetime(1970, 1, 1)
_ONE_US: Final = dt.timedelta(microseconds=1)


class BadRowError(DataError):
    """A CSV row failed validation.

    Attributes:
        path: The file.
        line: 1-based line number in the file; the header is line 1.
        reason: ``"<code>: <details>"``, e.g. ``"crossed_prices: high 9 < low 10"``.
        code: The reason code alone.
    """

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason
        self.code = reason.split(":", 1)[0]


class LoadReport(msgspec.Struct, frozen=True):
    """What loading one file did.

    Attributes:
        path: The file loaded.
        sha256: Hex SHA-256 of the file's bytes.
        rows_loaded: Rows accepted into tables.
        rows_skipped: Bad rows dropped (always 0 with ``on_bad_row="error"``).
        skipped_by_reason: Dropped rows counted per reason code.
        from_cache: True when the tables came from the binary cache.
    """

    path: str
    sha256: str
    rows_loaded: int
    rows_skipped: int
    skipped_by_reason: dict[str, int]
    from_cache: bool = False


@dataclass(frozen=True, eq=False, slots=True)
class BarTable:
    """The bars of one symbol as parallel numpy arrays in time order.

    The arrays are made read-only on construction so that a table shared
    between actors cannot be changed under anyone's feet.

    Attributes:
        symbol: Ticker.
        ts_ns: Bar close times, UTC nanoseconds, strictly increasing.
        open: Open prices.
        high: High prices.
        low: Low prices.
        close: Close prices.
        volume: Volumes.
        vwap: Volume-weighted average prices; NaN when unknown.
        trades: Trade counts; -1 when unknown.
    """

    symbol: str
    ts_ns: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    vwap: F64
    trades: I64

    def __post_init__(self) -> None:
        """Check dtypes and lengths, and freeze the arrays."""
        n = len(self.ts_ns)
        for name in ("ts_ns", "open", "high", "low", "close", "volume", "vwap", "trades"):
            arr = getattr(self, name)
            want = np.int64 if name in ("ts_ns", "trades") else np.float64
            if not isinstance(arr, np.ndarray) or arr.dtype != want or arr.ndim != 1:
                raise TypeError(f"BarTable.{name} must be a 1-d {np.dtype(want)} array")
            if len(arr) != n:
                raise ValueError(f"BarTable.{name} has {len(arr)} rows, ts_ns has {n}")
            arr.setflags(write=False)

    def __len__(self) -> int:
        """Return the number of bars."""
        return len(self.ts_ns)


# --------------------------------------------------------------------------
# Tokenising: bytes -> one fixed-width bytes array per wanted column.


@dataclass(slots=True)
class _Tokens:
    """The tokenised body of a file.

    Attributes:
        lines: Line number of each well-formed row.
        fields: Column name -> raw field bytes of each well-formed row.
        bad_lines: Line numbers of malformed rows.
        bad_reasons: Reason text of each malformed row.
    """

    lines: I64
    fields: dict[str, Raw]
    bad_lines: list[int]
    bad_reasons: list[str]


def _gather(buf: npt.NDArray[np.uint8], starts: I64, lengths: I64) -> Raw:
    """Copy fields ``buf[start:start+length]`` into a fixed-width bytes array.

    ``buf`` must be padded with at least ``_MAX_FIELD`` zero bytes so that a
    window starting at any field fits.
    """
    width = max(1, int(lengths.max()) if len(lengths) else 1)
    # A window view gathers whole rows at once instead of an n-by-width index
    # matrix, which is several times faster for a million rows.
    out = sliding_window_view(buf, width)[starts]
    if len(lengths) and lengths.min() < width:
        out = np.where(np.arange(width) < lengths[:, None], out, np.uint8(0))
    return out.view(f"S{width}").ravel()


def _commas_if_regular(commas: I64, starts: I64, ends: I64, per_line: int) -> I64 | None:
    """Return the commas as one row per line if every line has ``per_line``.

    This is the common case and costs O(lines), unlike assigning every comma
    to its line.  With the right total, each line holding its own share of
    commas between its start and end implies each line has exactly that many.
    """
    if len(commas) != per_line * len(starts) or not len(starts):
        return None
    grid = commas.reshape(-1, per_line)
    if (grid[:, 0] >= starts).all() and (grid[:, -1] < ends).all():
        return grid
    return None


def _tokenise_fast(body: bytes, first_line: int, columns: dict[str, int], ncols: int) -> _Tokens:
    """Split an unquoted body on newlines and commas with vectorised numpy."""
    size = len(body)
    buf = np.frombuffer(body + b"\0" * (_MAX_FIELD + 1), dtype=np.uint8)
    data = buf[:size]
    newlines = np.flatnonzero(data == ord("\n"))
    if size and data[-1] != ord("\n"):
        newlines = np.append(newlines, size)
    ends = newlines.astype(np.int64)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    has_cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == ord("\r"))
    content_ends = ends - has_cr
    blank = content_ends == starts
    commas = np.flatnonzero(data == ord(",")).astype(np.int64, copy=False)
    per_comma = ncols - 1
    good_commas = _commas_if_regular(commas, starts, content_ends, per_comma)
    if good_commas is not None:
        good = np.ones(len(ends), dtype=np.bool_)
        per_line = np.full(len(ends), per_comma)
    else:
        line_of_comma = np.searchsorted(ends, commas)
        per_line = np.bincount(line_of_comma, minlength=len(ends))
        good = (per_line == per_comma) & ~blank
        good_commas = commas[good[line_of_comma]].reshape(-1, per_comma)
    field_starts = np.empty((int(good.sum()), ncols), dtype=np.int64)
    field_ends = np.empty_like(field_starts)
    field_starts[:, 0] = starts[good]
    field_starts[:, 1:] = good_commas + 1
    field_ends[:, :-1] = good_commas
    field_ends[:, -1] = content_ends[good]
    lengths = field_ends - field_starts
    wanted = list(columns.values())
    too_long = (lengths[:, wanted] > _MAX_FIELD).any(axis=1)
    line_numbers = np.flatnonzero(good).astype(np.int64) + first_line
    bad_lines = [int(x) for x in np.flatnonzero(~good & ~blank) + first_line]
    bad_reasons = [
        f"field_count: {int(per_line[i - first_line]) + 1} fields, header has {ncols}"
        for i in bad_lines
    ]
    if too_long.any():
        bad_lines += [int(x) for x in line_numbers[too_long]]
        bad_reasons += [f"field_too_long: a field exceeds {_MAX_FIELD} bytes"] * int(too_long.sum())
        keep = ~too_long
        line_numbers = line_numbers[keep]
        field_starts = field_starts[keep]
        lengths = lengths[keep]
    fields = {name: _gather(buf, field_starts[:, j], lengths[:, j]) for name, j in columns.items()}
    return _Tokens(line_numbers, fields, bad_lines, bad_reasons)


def _tokenise_quoted(body: bytes, first_line: int, columns: dict[str, int], ncols: int) -> _Tokens:
    """Split a body that uses CSV quoting, with the :mod:`csv` module."""
    text = body.decode("utf-8", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""))
    lines: list[int] = []
    values: dict[str, list[bytes]] = {name: [] for name in columns}
    bad_lines: list[int] = []
    bad_reasons: list[str] = []
    previous_end = 0
    for record in reader:
        line = previous_end + first_line
        previous_end = reader.line_num
        if not record:
            continue
        if len(record) != ncols:
            bad_lines.append(line)
            bad_reasons.append(f"field_count: {len(record)} fields, header has {ncols}")
            continue
        encoded = {name: record[j].encode() for name, j in columns.items()}
        if any(len(v) > _MAX_FIELD for v in encoded.values()):
            bad_lines.append(line)
            bad_reasons.append(f"field_too_long: a field exceeds {_MAX_FIELD} bytes")
            continue
        lines.append(line)
        for name, v in encoded.items():
            values[name].append(v)
    fields = {name: np.array(v, dtype=np.bytes_) for name, v in values.items()}
    return _Tokens(np.array(lines, dtype=np.int64), fields, bad_lines, bad_reasons)


def _parse_header(path: Path, data: bytes) -> tuple[dict[str, int], int, bytes]:
    """Read the header line.

    Returns:
        Wanted column name -> field index, the number of fields, and the body
        (everything after the header line).

    Raises:
        BadRowError: The file is empty or the header lacks required columns.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    head, newline, body = data.partition(b"\n")
    if not head.strip() and not newline:
        raise BadRowError(path, 1, "bad_header: the file is empty")
    names = next(csv.reader([head.decode("utf-8", errors="replace").rstrip("\r")]), [])
    names = [n.strip().lower() for n in names]
    columns: dict[str, int] = {}
    for j, name in enumerate(names):
        if name in REQUIRED_COLUMNS or name in OPTIONAL_COLUMNS:
            if name in columns:
                raise BadRowError(path, 1, f"bad_header: column {name!r} appears twice")
            columns[name] = j
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise BadRowError(path, 1, f"bad_header: missing column(s) {', '.join(missing)}")
    return columns, len(names), body


# --------------------------------------------------------------------------
# Field conversion.


def _decode(raw: bytes) -> str:
    """Show a raw field in a message."""
    return raw.decode("utf-8", errors="replace")


def _parse_floats(raw: Raw) -> tuple[F64, Bools]:
    """Convert raw fields to float64; empty fields become NaN.

    Returns:
        The values and the mask of non-empty fields that are not numbers.
    """
    values = np.full(len(raw), np.nan)
    bad = np.zeros(len(raw), dtype=np.bool_)
    filled = np.flatnonzero(raw != b"")
    try:
        if len(filled) == len(raw):
            return raw.astype(np.float64), bad  # the usual case: skip the copies
        values[filled] = raw[filled].astype(np.float64)
    except ValueError:
        # Some field is not a number: convert one by one to find which.
        for i, item in zip(filled.tolist(), raw[filled].tolist(), strict=True):
            try:
                values[i] = float(item)
            except ValueError:
                bad[i] = True
    return values, bad


def _parse_ints(raw: Raw) -> tuple[I64, Bools]:
    """Convert raw fields to int64; empty fields become -1.

    Returns:
        The values and the mask of non-empty fields that are not integers.
    """
    values = np.full(len(raw), -1, dtype=np.int64)
    bad = np.zeros(len(raw), dtype=np.bool_)
    filled = np.flatnonzero(raw != b"")
    try:
        if len(filled) == len(raw):
            return raw.astype(np.int64), bad
        values[filled] = raw[filled].astype(np.int64)
    except (ValueError, OverflowError):
        for i, item in zip(filled.tolist(), raw[filled].tolist(), strict=True):
            try:
                values[i] = int(item)
            except (ValueError, OverflowError):
                bad[i] = True
    return values, bad


class _TimestampError(ValueError):
    """A ``ts`` field that cannot be used; ``code`` is the bad-row code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


_RFC3339 = re.compile(
    rb"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    rb"(?:([Zz])|([+-])(\d{2}):(\d{2}))?"
)
_DATE = re.compile(rb"(\d{4})-(\d{2})-(\d{2})")


@lru_cache(maxsize=65536)
def _parse_ts_scalar(raw: bytes) -> int:
    """Parse one ``ts`` field to UTC nanoseconds.

    Raises:
        _TimestampError: With code ``bad_timestamp`` or ``non_session_date``.
    """
    text = _decode(raw)
    if m := _DATE.fullmatch(raw):
        try:
            day = dt.date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError as exc:
            raise _TimestampError("bad_timestamp", f"ts {text!r}: {exc}") from None
        session = calendar.session_for(day)
        if session is None:
            raise _TimestampError("non_session_date", f"ts {text!r} is not a trading session")
        return session.close_ns
    m = _RFC3339.fullmatch(raw)
    if m is None:
        raise _TimestampError("bad_timestamp", f"ts {text!r} is not RFC 3339 or YYYY-MM-DD")
    if m[8] is None and m[9] is None:
        raise _TimestampError("bad_timestamp", f"ts {text!r} has no UTC offset")
    try:
        wall = dt.datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6]))
    except ValueError as exc:
        raise _TimestampError("bad_timestamp", f"ts {text!r}: {exc}") from None
    if not _MIN_YEAR <= wall.year <= _MAX_YEAR:
        raise _TimestampError("bad_timestamp", f"ts {text!r} is outside {_MIN_YEAR}-{_MAX_YEAR}")
    ns = (wall - _EPOCH) // _ONE_US * 1000
    if m[7] is not None:
        ns += int(m[7].ljust(9, b"0"))
    if m[9] is not None:
        offset_s = int(m[10]) * 3600 + int(m[11]) * 60
        ns -= (offset_s if m[9] == b"+" else -offset_s) * _NS
    return ns


_DIGITS_19: Final = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]


def _fast_rfc3339_mask(raw: Raw) -> Bools:
    """Mark fields shaped exactly ``YYYY-MM-DDTHH:MM:SS`` + ``Z`` or ``+00:00``."""
    n, width = len(raw), raw.dtype.itemsize
    if width < 20:
        return np.zeros(n, dtype=np.bool_)
    u = raw.view(np.uint8).reshape(n, width)
    lengths = np.strings.str_len(raw)
    digits = u[:, _DIGITS_19]
    ok = ((digits >= ord("0")) & (digits <= ord("9"))).all(axis=1)
    ok &= (u[:, 4] == ord("-")) & (u[:, 7] == ord("-"))
    ok &= (u[:, 13] == ord(":")) & (u[:, 16] == ord(":"))
    ok &= np.isin(u[:, 10], np.frombuffer(b"Tt ", dtype=np.uint8))
    zulu = (lengths == 20) & np.isin(u[:, 19], np.frombuffer(b"Zz", dtype=np.uint8))
    if width >= 25:
        plus0 = np.frombuffer(b"+00:00", dtype=np.uint8)
        zulu |= (lengths == 25) & (u[:, 19:25] == plus0).all(axis=1)
    result: Bools = ok & zulu
    return result


def _parse_timestamps(raw: Raw) -> tuple[I64, npt.NDArray[np.int8]]:
    """Convert ``ts`` fields to UTC ns.

    Returns:
        The values and a status per row: 0 ok, 1 ``bad_timestamp``,
        2 ``non_session_date``.
    """
    n = len(raw)
    values = np.zeros(n, dtype=np.int64)
    status = np.zeros(n, dtype=np.int8)
    fast = _fast_rfc3339_mask(raw)
    if fast.any():
        u = raw.view(np.uint8).reshape(n, raw.dtype.itemsize)[fast, :19].copy()
        u[:, 10] = ord("T")
        try:
            seconds = u.view("S19").ravel().astype("datetime64[s]").astype(np.int64)
        except ValueError:
            fast[:] = False  # some date is out of range; let the scalar path say which
        else:
            lo = (dt.datetime(_MIN_YEAR, 1, 1) - _EPOCH) // dt.timedelta(seconds=1)
            hi = (dt.datetime(_MAX_YEAR + 1, 1, 1) - _EPOCH) // dt.timedelta(seconds=1)
            in_range = (seconds >= lo) & (seconds < hi)
            idx = np.flatnonzero(fast)
            values[idx] = seconds * _NS
            fast[idx[~in_range]] = False
    rest = np.flatnonzero(~fast)
    if len(rest):
        # Daily files repeat few distinct strings; parse each distinct one once.
        distinct, inverse = np.unique(raw[rest], return_inverse=True)
        parsed = np.zeros(len(distinct), dtype=np.int64)
        codes = np.zeros(len(distinct), dtype=np.int8)
        for k, item in enumerate(distinct.tolist()):
            try:
                parsed[k] = _parse_ts_scalar(item)
            except _TimestampError as exc:
                codes[k] = 2 if exc.code == "non_session_date" else 1
        values[rest] = parsed[inverse]
        status[rest] = codes[inverse]
    return values, status


# --------------------------------------------------------------------------
# Validation.


class _Checks:
    """First-failure bookkeeping for vectorised row checks.

    Each check has a reason code and a function that explains, for one row,
    what is wrong; only the first failing check of a row is kept.
    """

    def __init__(self, n: int) -> None:
        self.failed = np.zeros(n, dtype=np.int16)  # 0 ok, else check number
        self.codes: list[str] = [""]
        self.explain: list[Callable[[int], str]] = [lambda i: ""]

    def add(self, mask: Bools, code: str, explain: Callable[[int], str]) -> None:
        """Record check ``code`` failing on ``mask`` for rows still ok."""
        if not mask.any():
            return
        self.codes.append(code)
        self.explain.append(explain)
        self.failed[(self.failed == 0) & mask] = len(self.codes) - 1

    def ok(self) -> Bools:
        """Return the mask of rows that passed every check so far."""
        passed: Bools = self.failed == 0
        return passed

    def reason(self, i: int) -> str:
        """Explain why row ``i`` failed."""
        k = int(self.failed[i])
        return f"{self.codes[k]}: {self.explain[k](i)}"

    def counts(self) -> dict[str, int]:
        """Count failed rows per reason code."""
        out: dict[str, int] = {}
        for k, count in enumerate(np.bincount(self.failed, minlength=len(self.codes))):
            if k and count:
                out[self.codes[k]] = out.get(self.codes[k], 0) + int(count)
        return out


@dataclass(slots=True)
class _Parsed:
    """Converted columns of the well-formed rows, before dropping bad ones."""

    symbols: list[str]
    sym_code: I64
    ts_ns: I64
    prices: dict[str, F64]
    volume: F64
    vwap: F64
    trades: I64


def _check_symbols(raw: Raw, checks: _Checks) -> tuple[list[str], I64]:
    """Decode symbols once per distinct value and flag unusable ones."""
    distinct, inverse = np.unique(raw, return_inverse=True)
    names: list[str] = []
    bad_code = np.zeros(len(distinct), dtype=np.bool_)
    for k, item in enumerate(distinct.tolist()):
        name = item.decode("utf-8", errors="replace")
        names.append(name)
        bad_code[k] = not name or name != name.strip() or " " in name or "\ufffd" in name
    codes = inverse.astype(np.int64).ravel()
    checks.add(
        bad_code[codes],
        "bad_symbol",
        lambda i: f"symbol {names[codes[i]]!r} is empty or has spaces or bad UTF-8",
    )
    return names, codes


def _check_number(name: str, raw: Raw, checks: _Checks, *, optional: bool) -> tuple[F64, Bools]:
    """Parse a float column and flag empty, unparseable and non-finite fields.

    Returns:
        The values (NaN where missing) and the mask of missing optional fields.
    """
    values, unparseable = _parse_floats(raw)
    empty = raw == b""
    not_finite = ~empty & ~unparseable & ~np.isfinite(values)
    bad = unparseable | not_finite if optional else unparseable | not_finite | empty

    def explain(i: int) -> str:
        if raw[i] == b"":
            return f"{name} is empty"
        if unparseable[i]:
            return f"{name} {_decode(raw[i])!r} is not a number"
        return f"{name} {_decode(raw[i])!r} is not finite"

    checks.add(bad, "bad_number", explain)
    return values, empty


def _convert(tokens: _Tokens, checks: _Checks) -> _Parsed:
    """Convert and validate every well-formed row, recording failures."""
    f = tokens.fields
    symbols, sym_code = _check_symbols(f["symbol"], checks)
    prices = {c: _check_number(c, f[c], checks, optional=False)[0] for c in _PRICE_COLUMNS}
    volume = _check_number("volume", f["volume"], checks, optional=False)[0]
    n = len(tokens.lines)
    vwap = np.full(n, np.nan)
    vwap_missing = np.ones(n, dtype=np.bool_)
    if "vwap" in f:
        vwap, vwap_missing = _check_number("vwap", f["vwap"], checks, optional=True)
    trades = np.full(n, -1, dtype=np.int64)
    if "trades" in f:
        raw_trades = f["trades"]
        trades, unparseable = _parse_ints(raw_trades)
        checks.add(
            unparseable | ((raw_trades != b"") & (trades < 0)),
            "bad_number",
            lambda i: f"trades {_decode(raw_trades[i])!r} is not a count",
        )
    raw_ts = f["ts"]
    ts_ns, ts_status = _parse_timestamps(raw_ts)

    def explain_ts(i: int) -> str:
        try:
            _parse_ts_scalar(raw_ts[i])
        except _TimestampError as exc:
            return str(exc).split(": ", 1)[1]
        return f"ts {_decode(raw_ts[i])!r} is out of range"

    checks.add(ts_status == 1, "bad_timestamp", explain_ts)
    checks.add(ts_status == 2, "non_session_date", explain_ts)

    o, h, lo, c = (prices[k] for k in _PRICE_COLUMNS)
    non_positive = (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0) | (~vwap_missing & (vwap <= 0))

    def explain_non_positive(i: int) -> str:
        named = {**{k: prices[k][i] for k in _PRICE_COLUMNS}, "vwap": vwap[i]}
        return ", ".join(f"{k} {v:g}" for k, v in named.items() if v <= 0) + " <= 0"

    checks.add(non_positive, "non_positive_price", explain_non_positive)

    tol = _CROSS_TOL * np.maximum(np.abs(h), np.abs(lo))
    crossed = (h < lo - tol) | (o > h + tol) | (o < lo - tol) | (c > h + tol) | (c < lo - tol)

    def explain_crossed(i: int) -> str:
        if h[i] < lo[i] - tol[i]:
            return f"high {h[i]:g} < low {lo[i]:g}"
        side = "open" if not lo[i] - tol[i] <= o[i] <= h[i] + tol[i] else "close"
        value = o[i] if side == "open" else c[i]
        return f"{side} {value:g} outside [low {lo[i]:g}, high {h[i]:g}]"

    checks.add(crossed, "crossed_prices", explain_crossed)
    checks.add(volume < 0, "negative_volume", lambda i: f"volume {volume[i]:g} < 0")
    return _Parsed(symbols, sym_code, ts_ns, prices, volume, vwap, trades)


def _check_order(parsed: _Parsed, checks: _Checks) -> None:
    """Flag per-symbol duplicate and backwards timestamps among the good rows.

    A row is compared with the latest accepted bar of its symbol (the running
    maximum), so one stray row does not condemn all the rows after it.
    """
    rows = np.flatnonzero(checks.ok())
    if len(rows) < 2:
        return
    order = rows[np.argsort(parsed.sym_code[rows], kind="stable")]
    # Dense ranks keep symbol * (n + 1) + rank inside int64, so one running
    # maximum serves every symbol: a new symbol's keys exceed all earlier ones.
    _, rank = np.unique(parsed.ts_ns[order], return_inverse=True)
    key = parsed.sym_code[order] * (len(order) + 1) + rank.ravel()
    running = np.maximum.accumulate(key)
    previous = np.empty_like(running)
    previous[0] = -1
    previous[1:] = running[:-1]
    duplicate = np.zeros(len(parsed.ts_ns), dtype=np.bool_)
    backwards = np.zeros(len(parsed.ts_ns), dtype=np.bool_)
    duplicate[order[key == previous]] = True
    backwards[order[key < previous]] = True

    def iso(ns: int) -> str:
        whole, frac = divmod(ns, _NS)
        stamp = (_EPOCH + dt.timedelta(seconds=whole)).isoformat()
        return f"{stamp}.{frac:09d}Z" if frac else f"{stamp}Z"

    def explain_dup(i: int) -> str:
        return f"{parsed.symbols[parsed.sym_code[i]]} {iso(int(parsed.ts_ns[i]))} already loaded"

    def explain_back(i: int) -> str:
        sym = parsed.symbols[parsed.sym_code[i]]
        return f"{sym} {iso(int(parsed.ts_ns[i]))} is before an earlier bar of {sym}"

    checks.add(duplicate, "duplicate_ts", explain_dup)
    checks.add(backwards, "out_of_order_ts", explain_back)


def _build_tables(parsed: _Parsed, keep: Bools) -> dict[str, BarTable]:
    """Split the kept rows per symbol, preserving file order within a symbol."""
    rows = np.flatnonzero(keep)
    order = rows[np.argsort(parsed.sym_code[rows], kind="stable")]
    codes = parsed.sym_code[order]
    bounds = np.flatnonzero(np.diff(codes)) + 1
    tables: dict[str, BarTable] = {}
    for chunk in np.split(order, bounds) if len(order) else []:
        symbol = parsed.symbols[int(parsed.sym_code[chunk[0]])]
        tables[symbol] = BarTable(
            symbol=symbol,
            ts_ns=parsed.ts_ns[chunk],
            open=parsed.prices["open"][chunk],
            high=parsed.prices["high"][chunk],
            low=parsed.prices["low"][chunk],
            close=parsed.prices["close"][chunk],
            volume=parsed.volume[chunk],
            vwap=parsed.vwap[chunk],
            trades=parsed.trades[chunk],
        )
    return dict(sorted(tables.items()))


def _parse(
    path: Path, data: bytes, on_bad_row: OnBadRow
) -> tuple[dict[str, BarTable], int, dict[str, int]]:
    """Parse and validate a whole file.

    Returns:
        The tables, the number of skipped rows and their counts by code.

    Raises:
        BadRowError: On the header, or on the first bad row in error mode.
    """
    columns, ncols, body = _parse_header(path, data)
    tokenise = _tokenise_quoted if b'"' in body else _tokenise_fast
    tokens = tokenise(body, 2, columns, ncols)
    checks = _Checks(len(tokens.lines))
    parsed = _convert(tokens, checks)
    _check_order(parsed, checks)
    keep = checks.ok()
    if on_bad_row == "error":
        first_bad = np.flatnonzero(~keep)
        candidates: list[tuple[int, str]] = list(
            zip(tokens.bad_lines, tokens.bad_reasons, strict=True)
        )
        if len(first_bad):
            i = int(first_bad[0])  # rows are in line order
            candidates.append((int(tokens.lines[i]), checks.reason(i)))
        if candidates:
            line, reason = min(candidates)
            raise BadRowError(path, line, reason)
    counts = checks.counts()
    for reason in tokens.bad_reasons:
        code = reason.split(":", 1)[0]
        counts[code] = counts.get(code, 0) + 1
    skipped = len(tokens.bad_lines) + int((~keep).sum())
    return _build_tables(parsed, keep), skipped, dict(sorted(counts.items()))


# --------------------------------------------------------------------------
# Binary cache.

# What a damaged or foreign cache file can raise while being read.
_CACHE_ERRORS: Final = (
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    EOFError,
    msgspec.DecodeError,
)
_MAGIC: Final = b"trader-bars\n"
_HEADER_LEN: Final = struct.Struct("<Q")
_ARRAYS: Final = ("ts_ns", "open", "high", "low", "close", "volume", "vwap", "trades")
_DTYPES: Final = {name: np.dtype("<i8" if name in ("ts_ns", "trades") else "<f8")
                  for name in _ARRAYS}


@lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    """Hash this module and the calendar so code changes invalidate caches."""
    h = hashlib.sha256()
    for source in (__file__, calendar.__file__):
        h.update(Path(source).read_bytes())
    return h.hexdigest()[:12]


def _cache_path(cache_dir: Path, path: Path, sha256: str, on_bad_row: OnBadRow) -> Path:
    """Name the cache entry of one file's content."""
    key = f"{sha256}.{on_bad_row}.v{_CACHE_VERSION}.{_code_fingerprint()}"
    return cache_dir / f"{path.name}.{key}.bars"


def _write_cache(
    target: Path, tables: dict[str, BarTable], skipped: int, counts: dict[str, int]
) -> None:
    """Save tables atomically (temp file + rename); failures only log."""
    parts = list(tables.values())
    offsets = np.cumsum([0, *(len(t) for t in parts)]).astype(np.int64)
    payload = [
        np.ascontiguousarray(
            np.concatenate([getattr(t, name) for t in parts]) if parts else np.empty(0),
            dtype=_DTYPES[name],
        )
        for name in _ARRAYS
    ]
    crc = 0
    for a in payload:
        crc = zlib.crc32(a.data, crc)
    header = msgspec.json.encode({
        "skipped": skipped, "counts": counts, "symbols": list(tables),
        "offsets": offsets.tolist(), "crc32": crc,
    })
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".bars")
    except OSError as exc:
        log.warning("cannot write bar cache %s: %s", target, exc)
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_MAGIC + _HEADER_LEN.pack(len(header)) + header)
            for a in payload:
                fh.write(a.data)
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; caches are shareable
        os.replace(tmp, target)
    except OSError as exc:
        log.warning("cannot write bar cache %s: %s", target, exc)
        Path(tmp).unlink(missing_ok=True)


def _read_cache(target: Path) -> tuple[dict[str, BarTable], int, dict[str, int]] | None:
    """Load a cache entry, or return None when absent or unusable."""
    if not target.is_file():
        return None
    try:
        data = target.read_bytes()
        start = len(_MAGIC) + _HEADER_LEN.size
        if data[: len(_MAGIC)] != _MAGIC:
            raise ValueError("not a bar cache file")
        (header_len,) = _HEADER_LEN.unpack_from(data, len(_MAGIC))
        meta = msgspec.json.decode(data[start : start + header_len])
        symbols: list[str] = [str(s) for s in meta["symbols"]]
        offsets = [int(o) for o in meta["offsets"]]
        skipped = int(meta["skipped"])
        counts = {str(k): int(v) for k, v in dict(meta["counts"]).items()}
        total = offsets[-1]
        at = start + header_len
        if len(offsets) != len(symbols) + 1 or len(data) != at + 8 * total * len(_ARRAYS):
            raise ValueError("array lengths disagree")
        payload = memoryview(data)[at:]
        if zlib.crc32(payload) != int(meta["crc32"]):
            raise ValueError("checksum mismatch")
        arrays = {
            name: np.frombuffer(data, dtype=_DTYPES[name], count=total, offset=at + 8 * total * k)
            for k, name in enumerate(_ARRAYS)
        }
        tables = {
            sym: BarTable(
                sym,
                *(arrays[name][offsets[k] : offsets[k + 1]] for name in _ARRAYS),
            )
            for k, sym in enumerate(symbols)
        }
    except _CACHE_ERRORS as exc:
        log.warning("ignoring unreadable bar cache %s: %s", target, exc)
        return None
    return tables, skipped, counts


# --------------------------------------------------------------------------
# Public loaders.


def load_csv(
    path: Path | str,
    *,
    on_bad_row: OnBadRow = "error",
    cache_dir: Path | None = None,
) -> tuple[dict[str, BarTable], LoadReport]:
    """Load one bar CSV file, using the binary cache when its content is known.

    Args:
        path: The CSV file (schema in the module docstring).
        on_bad_row: ``"error"`` raises on the first bad row; ``"skip"`` drops
            bad rows and counts them.
        cache_dir: Where cache entries live; default ``.cache`` next to the file.

    Returns:
        Tables per symbol (sorted by symbol) and a report.

    Raises:
        BadRowError: A bad header, or a bad row in ``"error"`` mode.
        OSError: The file cannot be read.
        ValueError: ``on_bad_row`` is not a known mode.
    """
    if on_bad_row not in ("error", "skip"):
        raise ValueError(f"on_bad_row must be 'error' or 'skip', not {on_bad_row!r}")
    path = Path(path)
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    target = _cache_path(cache_dir or path.parent / ".cache", path, sha256, on_bad_row)
    cached = _read_cache(target)
    from_cache = cached is not None
    if cached is None:
        cached = _parse(path, data, on_bad_row)
        _write_cache(target, *cached)
    tables, skipped, counts = cached
    report = LoadReport(
        path=str(path),
        sha256=sha256,
        rows_loaded=sum(len(t) for t in tables.values()),
        rows_skipped=skipped,
        skipped_by_reason=counts,
        from_cache=from_cache,
    )
    return tables, report


def load_dir(
    path: Path | str,
    *,
    on_bad_row: OnBadRow = "error",
    symbols: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> tuple[dict[str, BarTable], list[LoadReport]]:
    """Load every ``*.csv`` under a directory, recursively.

    ``.cache`` folders are skipped.  Each symbol must come from one file only.

    Args:
        path: The directory.
        on_bad_row: Passed to :func:`load_csv`.
        symbols: Keep only these symbols; all must be found.
        cache_dir: Passed to :func:`load_csv`; default ``.cache`` next to each file.

    Returns:
        Tables per symbol (sorted by symbol) and one report per file, in path order.

    Raises:
        DataError: A symbol appears in two files, a requested symbol is
            missing, or ``path`` is not a directory.
        BadRowError: As :func:`load_csv`.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    wanted = None if symbols is None else set(symbols)
    files = sorted(p for p in root.rglob("*.csv") if ".cache" not in p.relative_to(root).parts)
    tables: dict[str, BarTable] = {}
    origin: dict[str, Path] = {}
    reports: list[LoadReport] = []
    for file in files:
        loaded, report = load_csv(file, on_bad_row=on_bad_row, cache_dir=cache_dir)
        reports.append(report)
        for symbol, table in loaded.items():
            if wanted is not None and symbol not in wanted:
                continue
            if symbol in origin:
                raise DataError(f"symbol {symbol} is in both {origin[symbol]} and {file}")
            origin[symbol] = file
            tables[symbol] = table
    if wanted is not None and (missing := sorted(wanted - set(tables))):
        raise DataError(f"{root}: no bars for symbol(s) {', '.join(missing)}")
    return dict(sorted(tables.items())), reports
