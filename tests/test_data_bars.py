"""Tests for the bar CSV loader and its binary cache in trader.data.bars."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trader.data import bars
from trader.data.bars import BadRowError, DataError, load_csv, load_dir
from trader.errors import DataError as BaseDataError

HEADER = "symbol,ts,open,high,low,close,volume\n"


def _ns(text: str) -> int:
    """Convert an ISO 8601 timestamp with offset to UTC nanoseconds."""
    return int(dt.datetime.fromisoformat(text).timestamp()) * 1_000_000_000


def _write(path: Path, text: str | bytes) -> Path:
    """Write a file and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def test_multi_symbol_file_splits_into_tables_per_symbol(tmp_path: Path) -> None:
    """Rows of several symbols, interleaved, land in one time-ordered table each."""
    path = _write(
        tmp_path / "m.csv",
        HEADER
        + "BBB,2024-01-02T14:31:00Z,10,11,9,10.5,100\n"
        + "AAA,2024-01-02T14:31:00Z,20,21,19,20.5,200\n"
        + "BBB,2024-01-02T14:32:00Z,10.5,12,10,11,300\n",
    )
    tables, report = load_csv(path)
    assert list(tables) == ["AAA", "BBB"]
    b = tables["BBB"]
    assert len(b) == 2
    assert b.symbol == "BBB"
    assert b.ts_ns.tolist() == [_ns("2024-01-02T14:31:00+00:00"), _ns("2024-01-02T14:32:00+00:00")]
    assert b.close.tolist() == [10.5, 11.0]
    assert b.volume.tolist() == [100.0, 300.0]
    assert np.isnan(b.vwap).all()
    assert b.trades.tolist() == [-1, -1]
    assert report.rows_loaded == 3
    assert report.rows_skipped == 0
    assert report.sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def test_columns_are_found_by_name_in_any_order(tmp_path: Path) -> None:
    """Reordered, differently cased and extra columns are read by name."""
    path = _write(
        tmp_path / "o.csv",
        " Close ,extra,TS,symbol,volume,low,high,open,trades,vwap\n"
        "10.5,x,2024-01-02T14:31:00Z,AAA,100,9,11,10,7,10.2\n"
        "10.6,y,2024-01-02T14:32:00Z,AAA,100,9,11,10,,\n",
    )
    t = load_csv(path)[0]["AAA"]
    assert t.open.tolist() == [10.0, 10.0]
    assert t.close.tolist() == [10.5, 10.6]
    assert t.vwap[0] == 10.2
    assert np.isnan(t.vwap[1])
    assert t.trades.tolist() == [7, -1]


def test_bom_crlf_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    """A UTF-8 BOM, CRLF line ends and blank lines do not disturb parsing or line numbers."""
    path = _write(
        tmp_path / "bom.csv",
        b"\xef\xbb\xbf"
        + HEADER.replace("\n", "\r\n").encode()
        + b"AAA,2024-01-02T14:31:00Z,10,11,9,10.5,100\r\n\r\n"
        + b"AAA,2024-01-02T14:32:00Z,10,11,9,-1,100\r\n",
    )
    assert len(load_csv(path, on_bad_row="skip")[0]["AAA"]) == 1
    with pytest.raises(BadRowError) as info:
        load_csv(path)
    assert info.value.line == 4


def test_date_only_timestamps_close_at_the_session_close(tmp_path: Path) -> None:
    """A YYYY-MM-DD ts is the 16:00 New York close, or 13:00 on an early-close day."""
    path = _write(
        tmp_path / "d.csv",
        HEADER
        + "AAA,2024-07-02,10,11,9,10.5,100\n"
        + "AAA,2024-07-03,10,11,9,10.5,100\n"
        + "AAA,2024-11-29,10,11,9,10.5,100\n",
    )
    assert load_csv(path)[0]["AAA"].ts_ns.tolist() == [
        _ns("2024-07-02T20:00:00+00:00"),
        _ns("2024-07-03T17:00:00+00:00"),
        _ns("2024-11-29T18:00:00+00:00"),
    ]


def test_offsets_and_fractional_seconds_are_converted_to_utc(tmp_path: Path) -> None:
    """RFC 3339 with a non-zero offset and nanosecond fraction converts exactly."""
    path = _write(
        tmp_path / "f.csv",
        HEADER
        + "AAA,2024-01-02T09:31:00.000000001-05:00,10,11,9,10.5,100\n"
        + "AAA,2024-01-02T14:32:00+00:00,10,11,9,10.5,100\n",
    )
    assert load_csv(path)[0]["AAA"].ts_ns.tolist() == [
        _ns("2024-01-02T14:31:00+00:00") + 1,
        _ns("2024-01-02T14:32:00+00:00"),
    ]


GOOD_BEFORE = "AAA,2024-01-02T14:31:00Z,10,11,9,10.5,100\n"
GOOD_AFTER = "AAA,2024-01-02T14:40:00Z,10,11,9,10.5,100\n"

BAD_ROWS = [
    ("AAA,2024-01-02T14:32:00Z,,11,9,10.5,100", "bad_number", "open is empty"),
    ("AAA,2024-01-02T14:32:00Z,nan,11,9,10.5,100", "bad_number", "open 'nan' is not finite"),
    ("AAA,2024-01-02T14:32:00Z,10,1x,9,10.5,100", "bad_number", "high '1x' is not a number"),
    ("AAA,2024-01-02T14:32:00Z,10,11,9,10.5,", "bad_number", "volume is empty"),
    ("AAA,2024-01-02T14:32:00Z,0,11,9,10.5,100", "non_positive_price", "open 0 <= 0"),
    ("AAA,2024-01-02T14:32:00Z,10,11,-9,10.5,100", "non_positive_price", "low -9 <= 0"),
    ("AAA,2024-01-02T14:32:00Z,10,9,11,10.5,100", "crossed_prices", "high 9 < low 11"),
    ("AAA,2024-01-02T14:32:00Z,12,11,9,10.5,100", "crossed_prices", "open 12 outside"),
    ("AAA,2024-01-02T14:32:00Z,10,11,9,8.5,100", "crossed_prices", "close 8.5 outside"),
    ("AAA,2024-01-02T14:32:00Z,10,11,9,10.5,-1", "negative_volume", "volume -1 < 0"),
    ("AAA,2024-13-02T14:32:00Z,10,11,9,10.5,100", "bad_timestamp", "2024-13-02"),
    ("AAA,2024-01-02T14:32:00,10,11,9,10.5,100", "bad_timestamp", "has no UTC offset"),
    ("AAA,yesterday,10,11,9,10.5,100", "bad_timestamp", "not RFC 3339"),
    ("AAA,2024-01-06,10,11,9,10.5,100", "non_session_date", "not a trading session"),
    ("AAA,2024-01-02T14:32:00Z,10,11,9,10.5", "field_count", "6 fields"),
    (",2024-01-02T14:32:00Z,10,11,9,10.5,100", "bad_symbol", "empty"),
    ("AAA,2024-01-02T14:32:00Z,1" + "0" * 70 + ",11,9,10.5,100", "field_too_long", "64 bytes"),
    ("AAA,2024-01-02T14:31:00Z,10,11,9,10.5,100", "duplicate_ts", "already loaded"),
    ("AAA,2024-01-02T14:30:00Z,10,11,9,10.5,100", "out_of_order_ts", "is before"),
]


@pytest.mark.parametrize(("row", "code", "detail"), BAD_ROWS)
def test_bad_row_stops_the_load_naming_file_line_and_reason(
    tmp_path: Path, row: str, code: str, detail: str
) -> None:
    """In error mode the first bad row raises with path:line: code and a useful detail."""
    path = _write(tmp_path / "bad.csv", HEADER + GOOD_BEFORE + row + "\n" + GOOD_AFTER)
    with pytest.raises(BadRowError) as info:
        load_csv(path)
    err = info.value
    assert (err.path, err.line, err.code) == (path, 3, code)
    assert str(err).startswith(f"{path}:3: {code}: ")
    assert detail in err.reason
    assert isinstance(err, BaseDataError)


@pytest.mark.parametrize(("row", "code", "detail"), BAD_ROWS)
def test_bad_row_is_skipped_and_counted_in_skip_mode(
    tmp_path: Path, row: str, code: str, detail: str
) -> None:
    """In skip mode the bad row is dropped, counted under its code, and the rest load."""
    path = _write(tmp_path / "bad.csv", HEADER + GOOD_BEFORE + row + "\n" + GOOD_AFTER)
    tables, report = load_csv(path, on_bad_row="skip")
    assert len(tables["AAA"]) == 2
    assert (report.rows_loaded, report.rows_skipped) == (2, 1)
    assert report.skipped_by_reason == {code: 1}


def test_first_bad_row_by_line_is_reported_across_kinds(tmp_path: Path) -> None:
    """With several bad rows of different kinds, the error names the earliest line."""
    path = _write(
        tmp_path / "two.csv",
        HEADER
        + GOOD_BEFORE
        + "AAA,2024-01-02T14:30:00Z,10,11,9,10.5,100\n"  # line 3: out of order
        + "AAA,2024-01-02T14:35:00Z,10,11,9,10.5,-5\n"  # line 4: negative volume
        + "AAA,2024-01-02T14:36:00Z,10,11\n",  # line 5: field count
    )
    with pytest.raises(BadRowError) as info:
        load_csv(path)
    assert (info.value.line, info.value.code) == (3, "out_of_order_ts")
    report = load_csv(path, on_bad_row="skip")[1]
    assert report.skipped_by_reason == {
        "field_count": 1,
        "negative_volume": 1,
        "out_of_order_ts": 1,
    }


def test_a_stray_early_row_does_not_condemn_the_rows_after_it(tmp_path: Path) -> None:
    """Order is checked against the latest accepted bar, so only the stray row is skipped."""
    path = _write(
        tmp_path / "stray.csv",
        HEADER
        + "AAA,2024-01-02T14:31:00Z,10,11,9,10.5,100\n"
        + "AAA,2024-01-02T14:35:00Z,10,11,9,10.5,100\n"
        + "AAA,2024-01-02T14:32:00Z,10,11,9,10.5,100\n"
        + "AAA,2024-01-02T14:36:00Z,10,11,9,10.5,100\n",
    )
    tables, report = load_csv(path, on_bad_row="skip")
    assert report.skipped_by_reason == {"out_of_order_ts": 1}
    assert tables["AAA"].ts_ns.tolist() == [
        _ns(f"2024-01-02T14:{m}:00+00:00") for m in (31, 35, 36)
    ]


def test_same_timestamp_in_different_symbols_is_fine(tmp_path: Path) -> None:
    """Duplicate detection is per symbol."""
    path = _write(
        tmp_path / "same.csv",
        HEADER
        + "AAA,2024-01-02T14:31:00Z,10,11,9,10.5,100\n"
        + "BBB,2024-01-02T14:31:00Z,10,11,9,10.5,100\n",
    )
    assert load_csv(path)[1].rows_loaded == 2


def test_rounding_within_relative_tolerance_is_not_crossed(tmp_path: Path) -> None:
    """A close above the high by less than 1e-9 relative is accepted."""
    path = _write(
        tmp_path / "tol.csv", HEADER + "AAA,2024-01-02T14:31:00Z,10,11,9,11.000000000001,100\n"
    )
    assert load_csv(path)[1].rows_loaded == 1


def test_quoted_fields_are_read_with_the_csv_module(tmp_path: Path) -> None:
    """Quoted headers and values parse the same, and line numbers stay right."""
    path = _write(
        tmp_path / "q.csv",
        '"symbol","ts","open","high","low","close","volume"\n'
        '"AAA","2024-01-02T14:31:00Z","10","11","9","10.5","100"\n'
        '"AAA","2024-01-02T14:32:00Z","10","11","9","12","100"\n',
    )
    assert load_csv(path, on_bad_row="skip")[1].rows_loaded == 1
    with pytest.raises(BadRowError) as info:
        load_csv(path)
    assert (info.value.line, info.value.code) == (3, "crossed_prices")


def test_missing_required_column_is_a_header_error_on_line_one(tmp_path: Path) -> None:
    """A header without volume raises on line 1 whatever the bad-row mode."""
    path = _write(tmp_path / "h.csv", "symbol,ts,open,high,low,close\nAAA,2024-01-02,1,1,1,1\n")
    with pytest.raises(BadRowError) as info:
        load_csv(path, on_bad_row="skip")
    assert info.value.line == 1
    assert "volume" in info.value.reason


def test_empty_file_is_a_header_error(tmp_path: Path) -> None:
    """An empty file cannot be loaded."""
    with pytest.raises(BadRowError, match="empty"):
        load_csv(_write(tmp_path / "e.csv", ""))


def test_header_only_file_loads_no_tables(tmp_path: Path) -> None:
    """A file with only a header is valid and empty."""
    tables, report = load_csv(_write(tmp_path / "h.csv", HEADER))
    assert tables == {}
    assert report.rows_loaded == 0


def test_tables_are_read_only(tmp_path: Path) -> None:
    """Loaded arrays cannot be modified in place."""
    t = load_csv(_write(tmp_path / "r.csv", HEADER + GOOD_BEFORE))[0]["AAA"]
    with pytest.raises(ValueError, match="read-only"):
        t.close[0] = 1.0


def test_second_load_of_same_content_reads_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache hit returns equal tables without calling the CSV parser."""
    path = _write(tmp_path / "c.csv", HEADER + GOOD_BEFORE + GOOD_AFTER)
    first, report1 = load_csv(path)
    assert not report1.from_cache
    assert list((tmp_path / ".cache").glob("c.csv.*.bars"))

    def no_parse(*args: object) -> None:
        raise AssertionError("parsed although cached")

    monkeypatch.setattr(bars, "_parse", no_parse)
    second, report2 = load_csv(path)
    assert report2.from_cache
    assert report2.sha256 == report1.sha256
    for name in ("ts_ns", "open", "high", "low", "close", "volume", "vwap", "trades"):
        np.testing.assert_array_equal(getattr(second["AAA"], name), getattr(first["AAA"], name))


def test_changed_content_misses_the_cache(tmp_path: Path) -> None:
    """Editing the file makes the next load parse again."""
    path = _write(tmp_path / "c.csv", HEADER + GOOD_BEFORE)
    load_csv(path)
    _write(path, HEADER + GOOD_BEFORE + GOOD_AFTER)
    tables, report = load_csv(path)
    assert not report.from_cache
    assert len(tables["AAA"]) == 2


def test_skip_mode_cache_keeps_the_skip_counts(tmp_path: Path) -> None:
    """A cached skip-mode load reports the same skipped rows as the parse did."""
    path = _write(
        tmp_path / "s.csv", HEADER + GOOD_BEFORE + "AAA,2024-01-02T14:35:00Z,1,1,1,1,-1\n"
    )
    first = load_csv(path, on_bad_row="skip")[1]
    second = load_csv(path, on_bad_row="skip")[1]
    assert second.from_cache
    assert second.skipped_by_reason == first.skipped_by_reason == {"negative_volume": 1}
    with pytest.raises(BadRowError):
        load_csv(path)  # the error-mode result is keyed separately


def _flip_last_byte(b: bytes) -> bytes:
    return b[:-1] + bytes([b[-1] ^ 0x01])


@pytest.mark.parametrize("damage", [
    lambda b: b"",
    lambda b: b"not a cache file",
    lambda b: b[:-3],  # truncated in the middle of the last column
    lambda b: b[: len(b) // 2],  # truncated in the header or first columns
    _flip_last_byte,  # one bit of a price: the checksum catches it
], ids=["empty", "foreign", "truncated-end", "truncated-half", "bit-flip"])
def test_corrupt_cache_is_ignored_and_rebuilt(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    """An unreadable cache entry is parsed around and then rewritten."""
    path = _write(tmp_path / "c.csv", HEADER + GOOD_BEFORE)
    cache_dir = tmp_path / "cache"
    load_csv(path, cache_dir=cache_dir)
    (entry,) = cache_dir.glob("*.bars")
    entry.write_bytes(damage(entry.read_bytes()))
    tables, report = load_csv(path, cache_dir=cache_dir)
    assert not report.from_cache
    assert tables["AAA"].close.tolist() == [10.5]
    assert load_csv(path, cache_dir=cache_dir)[1].from_cache


def test_load_dir_merges_files_recursively_and_skips_cache_folders(tmp_path: Path) -> None:
    """Every CSV under the folder is loaded once; .cache contents are never read as data."""
    _write(tmp_path / "a" / "AAA.csv", HEADER + GOOD_BEFORE)
    _write(tmp_path / "b" / "deep" / "BC.csv", HEADER + GOOD_BEFORE.replace("AAA", "BBB")
           + GOOD_BEFORE.replace("AAA", "CCC"))  # fmt: skip
    _write(tmp_path / ".cache" / "junk.csv", "not,a,bar,file\n")
    tables, reports = load_dir(tmp_path)
    assert list(tables) == ["AAA", "BBB", "CCC"]
    assert [Path(r.path).name for r in reports] == ["AAA.csv", "BC.csv"]


def test_load_dir_keeps_only_requested_symbols(tmp_path: Path) -> None:
    """The symbols filter drops other symbols and rejects unknown ones."""
    _write(tmp_path / "x.csv", HEADER + GOOD_BEFORE + GOOD_BEFORE.replace("AAA", "BBB"))
    assert list(load_dir(tmp_path, symbols=["BBB"])[0]) == ["BBB"]
    with pytest.raises(DataError, match="ZZZ"):
        load_dir(tmp_path, symbols=["BBB", "ZZZ"])


def test_load_dir_rejects_a_symbol_in_two_files(tmp_path: Path) -> None:
    """The same symbol in two files is an error naming both files."""
    one = _write(tmp_path / "one.csv", HEADER + GOOD_BEFORE)
    two = _write(tmp_path / "two.csv", HEADER + GOOD_AFTER)
    with pytest.raises(DataError) as info:
        load_dir(tmp_path)
    assert str(one) in str(info.value)
    assert str(two) in str(info.value)


def test_unknown_bad_row_mode_is_rejected(tmp_path: Path) -> None:
    """Only "error" and "skip" are accepted."""
    with pytest.raises(ValueError, match="on_bad_row"):
        load_csv(_write(tmp_path / "m.csv", HEADER), on_bad_row="drop")  # type: ignore[arg-type]
