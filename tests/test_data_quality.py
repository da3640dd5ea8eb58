"""``trader data check`` and ``trader data ls``: planted defects are found, clean data is clean."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from trader import calendar
from trader.data.commands import add_data_commands
from trader.data.quality import DEFECT_KINDS, Finding, Report, Thresholds, check
from trader.data.store import find_gaps, format_ts, ls
from trader.data.synth import synth_bars, write_csv

REPLAY = Path(__file__).resolve().parent.parent / "replay_data"


def _lines(path: Path) -> tuple[str, list[list[str]]]:
    header, *rows = path.read_text().splitlines()
    return header, [r.split(",") for r in rows]


def _write(path: Path, header: str, rows: list[list[str]]) -> None:
    path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")


def _scale(row: list[str], factor: float) -> list[str]:
    """The same bar with open/high/low/close/vwap times ``factor``."""
    out = list(row)
    for j in (2, 3, 4, 5, 7):
        out[j] = repr(round(float(row[j]) * factor, 4))
    return out


def _plant(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder with one planted defect of each kind; returns it and kind -> ts (or line)."""
    root = tmp_path / "data"
    daily = synth_bars(["DDD"], days=90, freq="1d", seed=4)
    minute = synth_bars(["MMM"], days=3, freq="1min", seed=4, start=dt.date(2024, 3, 6))
    write_csv(daily, root / "1Day")
    write_csv(minute, root / "1Min")
    where: dict[str, str] = {}

    header, rows = _lines(root / "1Day" / "DDD.csv")
    ts = [r[1] for r in rows]
    # Later rows first, so earlier indices stay put.
    for i in range(70, len(rows)):  # an unadjusted 2:1 split from row 70 on
        rows[i] = _scale(rows[i], 0.5)
        rows[i][6] = repr(float(rows[i][6]) * 2)
    where["suspected_split"] = ts[70]
    rows[60] = _scale(rows[60], 1.6)  # one bad bar: in and out are both outliers
    where["outlier_return"] = ts[60]
    for i in (50, 51, 52):
        rows[i][6] = "0.0"
    where["zero_volume_run"] = ts[50]
    rows[45][3] = repr(float(rows[45][4]) - 0.01)  # high below low
    where["crossed_bar"] = ts[45]
    rows[40][4] = "0.0"  # low of zero
    where["non_positive_price"] = ts[40]
    rows[30], rows[31] = rows[31], rows[30]
    where["out_of_order_ts"] = ts[30]
    rows.insert(21, list(rows[20]))
    where["duplicate_ts"] = ts[20]
    # A Friday above row 10, so that deleting row 10 below does not move it.
    friday = next(i for i in range(12, 20) if dt.date.fromisoformat(ts[i][:10]).weekday() == 4)
    saturday = (dt.date.fromisoformat(ts[friday][:10]) + dt.timedelta(days=1)).isoformat()
    rows.insert(friday + 1, [rows[friday][0], f"{saturday}T21:00:00Z", *rows[friday][2:]])
    where["off_calendar"] = f"{saturday}T21:00:00Z"
    where["missing_session"] = ts[10][:10]
    del rows[10]
    rows.insert(5, [rows[5][0], rows[5][1], "1.0", "1.0", "1.0", "n/a", "5", "", ""])
    where["malformed_row"] = "line 7"
    _write(root / "1Day" / "DDD.csv", header, rows)

    header, rows = _lines(root / "1Min" / "MMM.csv")
    day2 = [i for i, r in enumerate(rows) if r[1].startswith("2024-03-07")]
    hole = day2[100 : 100 + 30]
    where["intraday_gap"] = rows[hole[0]][1]
    del rows[hole[0] : hole[-1] + 1]
    _write(root / "1Min" / "MMM.csv", header, rows)
    return root, where


def _daily_ts(found_ts: str | None) -> str:
    return (found_ts or "")[:10]


def test_check_finds_every_planted_defect_and_nothing_else(tmp_path: Path) -> None:
    """One defect of each kind is planted; each is found where it was put, and only those."""
    root, where = _plant(tmp_path)
    report = check(root)
    assert not report.clean
    assert set(report.counts) == set(DEFECT_KINDS)
    expected_counts = dict.fromkeys(DEFECT_KINDS, 1) | {"outlier_return": 2}
    assert report.counts == expected_counts
    by_kind: dict[str, Finding] = {}
    for rep in report.symbols:
        for f in rep.findings:
            by_kind.setdefault(f.kind, f)  # the first, in time order
    for kind, at in where.items():
        f = by_kind[kind]
        if at.startswith("line "):
            assert f.line == int(at.split()[1]), kind
        elif kind in ("intraday_gap", "off_calendar"):
            assert f.ts == at, kind
        else:
            assert _daily_ts(f.ts) == at[:10], kind
    assert "2:1 split" in by_kind["suspected_split"].detail


def test_findings_name_lines_and_the_json_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Row-level findings carry the file line; the JSON output decodes to the same report."""
    root, _ = _plant(tmp_path)
    report = check(root)
    dup = next(f for rep in report.symbols for f in rep.findings if f.kind == "duplicate_ts")
    assert dup.line is not None
    assert dup.ts is not None
    lines = Path(dup.file).read_text().splitlines()
    assert lines[dup.line - 1].split(",")[1].startswith(dup.ts)
    parser = argparse.ArgumentParser(prog="trader")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "check", str(root), "--json"])
    assert args.handler(args) == 1
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["clean"] is False
    assert decoded["counts"] == report.counts


@pytest.mark.parametrize(("freq", "days"), [("1min", 5), ("5min", 10), ("1h", 20), ("1d", 250)])
@pytest.mark.parametrize("seed", [0, 1])
def test_clean_synthetic_data_has_no_defects(
    tmp_path: Path, freq: str, days: int, seed: int
) -> None:
    """Synthetic bars at every frequency pass the check with the default thresholds."""
    write_csv(synth_bars(4, days, freq=freq, seed=seed), tmp_path)
    report = check(tmp_path)
    assert report.clean, [f for rep in report.symbols for f in rep.findings][:5]
    assert len(report.symbols) == 4


def test_cli_check_exits_zero_when_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``trader data check`` prints a table and exits 0 on clean data."""
    write_csv(synth_bars(2, 3, freq="5min", seed=2), tmp_path)
    parser = argparse.ArgumentParser(prog="trader")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "check", str(tmp_path)])
    assert args.handler(args) == 0
    assert "clean: 2 symbol(s), no defects" in capsys.readouterr().out


def _findings(report: Report) -> set[tuple[str, str, str]]:
    return {(f.symbol, f.kind, f.ts or "") for rep in report.symbols for f in rep.findings}


def test_bundled_replay_data_has_only_its_documented_irregularities() -> None:
    """replay_data/ passes apart from the real events listed in replay_data/README.md."""
    report = check(REPLAY)
    assert not report.files
    assert _findings(report) == {
        ("AAPL", "outlier_return", "2000-09-29"),  # the real -52% day (profit warning)
        ("COMP", "zero_volume_run", "2015-05-12"),  # volume missing in the source
        ("COMP", "zero_volume_run", "2018-01-09"),
    }
    readme = (REPLAY / "README.md").read_text()
    for symbol, kind, day in _findings(report):
        assert f"| {symbol} | {day} | `{kind}` |" in readme, (symbol, kind, day)


def test_a_short_hole_is_counted_but_is_not_a_gap(tmp_path: Path) -> None:
    """Ten missing minutes (no trade) are ``missing_bars``; 15 make an ``intraday_gap``."""
    write_csv(synth_bars(["LIQ"], 2, freq="1min", seed=3, start=dt.date(2024, 3, 6)), tmp_path)
    header, rows = _lines(tmp_path / "LIQ.csv")
    del rows[200:210]
    _write(tmp_path / "LIQ.csv", header, rows)
    report = check(tmp_path)
    assert report.clean
    assert report.symbols[0].missing_bars == 10
    strict = check(tmp_path, Thresholds(gap_minutes=10))
    assert strict.counts == {"intraday_gap": 1}


def test_the_session_grid_follows_the_calendar() -> None:
    """Hourly bars close 10:00..16:00 New York; early closes end at 13:00; holidays are gaps."""
    day = calendar.session_for(dt.date(2024, 11, 29))  # day after Thanksgiving
    assert day is not None
    hourly = np.array([day.close_ns - k * 3_600_000_000_000 for k in range(3, -1, -1)])
    assert find_gaps(hourly, 60).missing_runs == []
    assert format_ts(int(hourly[-1])) == "2024-11-29T18:00:00Z"
    closes = [s.close_ns for s in calendar.sessions(dt.date(2024, 11, 26), dt.date(2024, 12, 3))]
    gaps = find_gaps(np.array(closes[:2] + closes[3:], dtype=np.int64), None)
    assert gaps.missing_sessions == [dt.date(2024, 11, 29)]  # Thanksgiving itself is no session
    assert gaps.off_grid.size == 0


def test_ls_lists_rows_ranges_and_gaps_per_symbol_and_timeframe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``trader data ls`` counts missing sessions (daily) and missing minutes (intraday)."""
    write_csv(synth_bars(["AAA"], 10, freq="1d", seed=1, start=dt.date(2024, 3, 4)),
              tmp_path / "1Day")
    write_csv(synth_bars(["AAA"], 2, freq="1min", seed=1, start=dt.date(2024, 3, 4)),
              tmp_path / "1Min")
    header, rows = _lines(tmp_path / "1Day" / "AAA.csv")
    del rows[3]
    _write(tmp_path / "1Day" / "AAA.csv", header, rows)
    header, rows = _lines(tmp_path / "1Min" / "AAA.csv")
    n_minutes = len(rows)
    del rows[100:120]
    _write(tmp_path / "1Min" / "AAA.csv", header, rows)
    listing = {x.timeframe: x for x in ls(tmp_path)}
    assert (listing["1Day"].rows, listing["1Day"].missing_sessions) == (9, 1)
    assert (listing["1Day"].first, listing["1Day"].last) == ("2024-03-04", "2024-03-15")
    assert listing["1Day"].adjustment == "?"
    assert listing["1Min"].rows == n_minutes - 20
    assert listing["1Min"].missing_bars == 780 - n_minutes + 20
    assert listing["1Min"].first == "2024-03-04T14:31:00Z"
    parser = argparse.ArgumentParser(prog="trader")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", "ls", str(tmp_path)])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "MISSING_SESSIONS" in out
    assert "1Min/AAA.csv" in out
