"""Tests for the synthetic bar generator, its CSV writer and the data CLI."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from trader import calendar
from trader.data.bars import BarTable, load_csv, load_dir
from trader.data.commands import add_data_commands
from trader.data.synth import synth_bars, write_csv

COLUMNS = ("ts_ns", "open", "high", "low", "close", "volume", "vwap", "trades")
MINUTE = 60_000_000_000
TS_2024_01_02_1431 = int(dt.datetime(2024, 1, 2, 14, 31, tzinfo=dt.UTC).timestamp()) * 10**9


def _assert_same(a: BarTable, b: BarTable) -> None:
    """Assert two tables hold identical arrays."""
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_same_seed_gives_identical_bars() -> None:
    """Generating twice with one seed gives bit-identical tables."""
    a = synth_bars(3, 2, seed=7)
    b = synth_bars(3, 2, seed=7)
    assert list(a) == ["S000", "S001", "S002"]
    for name in a:
        _assert_same(a[name], b[name])


def test_different_seed_gives_different_bars() -> None:
    """Another seed changes the prices."""
    a = synth_bars(1, 2, seed=1)["S000"]
    b = synth_bars(1, 2, seed=2)["S000"]
    assert not np.array_equal(a.close, b.close)


def test_a_symbol_does_not_depend_on_how_many_others_there_are() -> None:
    """The first symbol's bars are the same in a universe of 1 or of 5."""
    _assert_same(synth_bars(1, 2, seed=3)["S000"], synth_bars(5, 2, seed=3)["S000"])


def test_bars_fall_only_on_session_minutes() -> None:
    """Every minute bar closes inside a session, skipping weekends and holidays."""
    # 2024-01-12 is a Friday; the next session after the MLK weekend is 2024-01-16.
    t = synth_bars(["AAA"], 3, seed=0, start=dt.date(2024, 1, 12))["AAA"]
    days = calendar.sessions(dt.date(2024, 1, 12), dt.date(2024, 1, 17))
    assert [s.date for s in days] == [dt.date(2024, 1, d) for d in (12, 16, 17)]
    allowed = np.concatenate([np.arange(s.open_ns + MINUTE, s.close_ns + 1, MINUTE) for s in days])
    assert np.isin(t.ts_ns, allowed).all()
    assert len(t) > 0.99 * len(allowed)  # only rare minutes are missing
    assert (np.diff(t.ts_ns) > 0).all()


def test_early_close_session_ends_at_one_pm() -> None:
    """On the day after Thanksgiving the last bar closes at 13:00 New York."""
    t = synth_bars(["AAA"], 1, seed=0, start=dt.date(2024, 11, 29))["AAA"]
    session = calendar.session_for(dt.date(2024, 11, 29))
    assert session is not None
    assert t.ts_ns.max() <= session.close_ns
    assert len(t) <= 210


@pytest.mark.parametrize(
    ("freq", "per_day"), [("1min", 390), ("5min", 78), ("1h", 7), ("60min", 7), ("1d", 1)]
)
def test_each_frequency_has_the_expected_bars_per_session(freq: str, per_day: int) -> None:
    """A liquid full session has 390 minute, 78 five-minute, 7 hourly or 1 daily bars."""
    t = synth_bars(["AAA"], 2, freq=freq, seed=0)["AAA"]
    assert len(t) in range(2 * per_day - 4, 2 * per_day + 1)
    closes = {s.close_ns for s in calendar.sessions(dt.date(2024, 1, 2), dt.date(2024, 1, 3))}
    assert closes <= set(t.ts_ns.tolist())


def test_hourly_bars_end_on_clock_hours() -> None:
    """Hourly bars close at 10:00, 11:00, ... 16:00 New York."""
    t = synth_bars(["AAA"], 1, freq="1h", seed=0)["AAA"]
    hours = [
        dt.datetime.fromtimestamp(ts / 1e9, calendar.NEW_YORK).strftime("%H:%M")
        for ts in t.ts_ns.tolist()
    ]
    assert hours == ["10:00", "11:00", "12:00", "13:00", "14:00", "15:00", "16:00"]


@pytest.mark.parametrize("freq", ["1min", "5min", "1h", "1d"])
def test_bars_are_consistent_ohlc_with_positive_prices(freq: str) -> None:
    """Low <= open, close, vwap <= high; prices positive; volume and trades positive."""
    for t in synth_bars(20, 3, freq=freq, seed=11).values():
        assert (t.low > 0).all()
        assert (t.low <= np.minimum(t.open, t.close)).all()
        assert (t.high >= np.maximum(t.open, t.close)).all()
        assert ((t.vwap >= t.low) & (t.vwap <= t.high)).all()
        assert (t.volume >= 1).all()
        assert (t.trades >= 1).all()


def test_volume_is_higher_at_open_and_close_than_midday() -> None:
    """The intraday volume smile: the first and last half hours outtrade midday."""
    t = synth_bars(30, 5, seed=5)
    minute = np.concatenate([(x.ts_ns // MINUTE) % (24 * 60) for x in t.values()])
    volume = np.concatenate([x.volume for x in t.values()])
    # 2024-01 is EST: 09:30-10:00 is 14:30-15:00Z, 12:30-13:00 is 17:30-18:00Z.
    opening = volume[(minute > 14 * 60 + 30) & (minute <= 15 * 60)].mean()
    midday = volume[(minute > 17 * 60 + 30) & (minute <= 18 * 60)].mean()
    closing = volume[(minute > 20 * 60 + 30) & (minute <= 21 * 60)].mean()
    assert opening > 1.5 * midday
    assert closing > 1.5 * midday


def test_symbols_move_together() -> None:
    """The market factor makes daily returns of different symbols positively correlated."""
    t = synth_bars(10, 60, freq="1d", seed=2)
    returns = np.array([np.diff(np.log(x.close)) for x in t.values()])
    corr = np.corrcoef(returns)
    assert corr[np.triu_indices(10, 1)].mean() > 0.1


def test_bad_arguments_are_rejected() -> None:
    """Unknown frequencies, zero days and duplicate names raise ValueError."""
    with pytest.raises(ValueError, match="freq"):
        synth_bars(1, 1, freq="2min")
    with pytest.raises(ValueError, match="days"):
        synth_bars(1, 0)
    with pytest.raises(ValueError, match="unique"):
        synth_bars(["A", "A"], 1)


def test_written_csv_round_trips_through_the_loader(tmp_path: Path) -> None:
    """write_csv output loads with no bad rows and equals the generated tables."""
    tables = synth_bars(["AAA", "BBB"], 2, seed=4)
    paths = write_csv(tables, tmp_path)
    assert [p.name for p in paths] == ["AAA.csv", "BBB.csv"]
    assert paths[0].read_text().startswith("symbol,ts,open,high,low,close,volume,vwap,trades\n")
    for path in paths:
        loaded, report = load_csv(path, on_bad_row="skip")
        assert report.rows_skipped == 0
        (symbol,) = loaded
        _assert_same(loaded[symbol], tables[symbol])


def test_unknown_vwap_and_trades_round_trip_as_empty_fields(tmp_path: Path) -> None:
    """NaN vwap and -1 trades are written empty and read back as NaN and -1."""
    table = BarTable(
        symbol="AAA",
        ts_ns=np.array([TS_2024_01_02_1431], dtype=np.int64),
        open=np.array([10.0]),
        high=np.array([11.0]),
        low=np.array([9.0]),
        close=np.array([10.5]),
        volume=np.array([100.0]),
        vwap=np.array([np.nan]),
        trades=np.array([-1], dtype=np.int64),
    )
    (path,) = write_csv({"AAA": table}, tmp_path)
    assert path.read_text().splitlines()[1] == "AAA,2024-01-02T14:31:00Z,10.0,11.0,9.0,10.5,100.0,,"
    _assert_same(load_csv(path)[0]["AAA"], table)


def test_daily_csv_round_trips_with_close_timestamps(tmp_path: Path) -> None:
    """Daily bars are written at the session close and load back unchanged."""
    tables = synth_bars(["AAA"], 5, freq="1d", seed=4, start=dt.date(2024, 11, 25))
    write_csv(tables, tmp_path)
    loaded = load_dir(tmp_path)[0]
    _assert_same(loaded["AAA"], tables["AAA"])


def test_cli_synth_writes_files_and_returns_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trader data synth` writes one CSV per symbol and prints a one-line summary."""
    parser = argparse.ArgumentParser(prog="trader")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["data", "synth", "--symbols", "AAA,BBB", "--days", "2", "--freq", "5min",
         "--seed", "3", "--out", str(tmp_path), "--start", "2024-03-01"]
    )  # fmt: skip
    assert args.handler(args) == 0
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["AAA.csv", "BBB.csv"]
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert "wrote 2 files" in out


def test_cli_symbols_may_be_a_count(tmp_path: Path) -> None:
    """--symbols N makes S000..S(N-1)."""
    parser = argparse.ArgumentParser(prog="trader")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["data", "synth", "--symbols", "3", "--days", "1", "--freq", "1d", "--out", str(tmp_path)]
    )
    assert args.handler(args) == 0
    assert sorted(p.stem for p in tmp_path.glob("*.csv")) == ["S000", "S001", "S002"]
