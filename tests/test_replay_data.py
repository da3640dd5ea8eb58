"""Tests that the committed replay_data/ loads cleanly and matches the calendar."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest

from trader import calendar
from trader.data.bars import load_dir
from trader.data.normalize import normalize_shared

REPLAY = Path(__file__).resolve().parent.parent / "replay_data"
SHARED = Path("/work/shared/data")
SYMBOLS = ["AAPL", "COMP", "FB", "GOOG", "IBM", "MSFT", "SPX"]


def _copy(tmp_path: Path) -> Path:
    """Copy the replay data into a temporary folder so caches land there."""
    target = tmp_path / "replay_data"
    shutil.copytree(REPLAY, target, ignore=shutil.ignore_patterns(".cache"))
    return target


def test_replay_data_loads_with_no_bad_rows(tmp_path: Path) -> None:
    """Every file loads in error mode and every expected symbol has bars."""
    tables, reports = load_dir(_copy(tmp_path), on_bad_row="error")
    assert list(tables) == SYMBOLS
    assert all(len(t) > 0 for t in tables.values())
    assert all(r.rows_skipped == 0 for r in reports)
    assert len(tables["SPX"]) == 5031
    assert len(tables["FB"]) == 196


def test_index_dates_are_exactly_the_calendar_sessions(tmp_path: Path) -> None:
    """SPX has a bar at the close of every session 1999-2018 and at no other time."""
    spx = load_dir(_copy(tmp_path), symbols=["SPX"])[0]["SPX"]
    expected = [s.close_ns for s in calendar.sessions(dt.date(1999, 1, 1), dt.date(2018, 12, 31))]
    assert spx.ts_ns.tolist() == expected


def test_split_adjusted_prices_have_no_fake_crashes(tmp_path: Path) -> None:
    """No stock halves from one close to the next after adjustment (2:1 splits would)."""
    tables = load_dir(_copy(tmp_path), symbols=["AAPL", "GOOG", "IBM", "MSFT"])[0]
    for symbol, t in tables.items():
        # AAPL's real 52% fall on 2000-09-29 (profit warning) is the deepest day.
        assert (t.close[1:] / t.close[:-1]).min() > 0.45, symbol


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared source data not available")
def test_normalisation_reproduces_the_committed_files(tmp_path: Path) -> None:
    """Re-running the script gives byte-identical files and the documented splits."""
    report = normalize_shared(SHARED, tmp_path)
    for path in report.files:
        assert path.read_bytes() == (REPLAY / "1Day" / path.name).read_bytes(), path.name
    assert [(s.symbol, s.date.isoformat(), s.ratio) for s in report.splits] == [
        ("AAPL", "2000-06-21", 2.0),
        ("AAPL", "2005-02-28", 2.0),
        ("MSFT", "2003-02-18", 2.0),
    ]
    assert len(report.fixes) == 3  # the three ex-date volumes, nothing clamped
    assert np.all([f.note.startswith("ex-date volume") for f in report.fixes])
