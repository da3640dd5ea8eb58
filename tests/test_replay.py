"""trader replay end to end: determinism, accounting, the report."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from trader.config import Config, decode_config
from trader.data.synth import synth_bars, write_csv
from trader.money import value_cents
from trader.runner import ReplayOutcome, run_replay

REPO = Path(__file__).resolve().parent.parent

# Columns that record a run's own identity or wall-clock time; everything else
# must be identical between two replays of the same data and config.
IDENTITY_COLUMNS = {"run_id", "started_wall_ns"}


def _config(data: Path, db: Path, **sections: dict[str, object]) -> Config:
    raw: dict[str, object] = {
        "run": {"db": str(db)},
        "data": {"dir": str(data)},
        "strategy": {"name": "sma_cross", "params": {"fast": 3, "slow": 8}},
        "broker": {"commission": {"model": "per_share", "per_share_usd": 0.005,
                                  "minimum_usd": 1.0}, "slippage_bps": 2.0},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.3},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}  # type: ignore[dict-item]
    return decode_config(raw)


@pytest.fixture
def minute_data(tmp_path: Path) -> Path:
    out = tmp_path / "bars"
    write_csv(synth_bars(4, days=3, seed=11), out)
    return out


def _table_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    out: dict[str, list[tuple[object, ...]]] = {}
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            keep = [c for c in cols if c not in IDENTITY_COLUMNS]
            rows = conn.execute(
                f"SELECT {', '.join(keep)} FROM {table} ORDER BY {', '.join(keep)}"
            ).fetchall()
            out[table] = rows
    return out


def test_two_replays_write_identical_rows_under_different_hash_seeds(
    tmp_path: Path, minute_data: Path
) -> None:
    """Same data and config: every table identical apart from the run's identity columns."""
    results = []
    db = tmp_path / "run.db"  # the same path both times: it is part of the recorded config
    for seed in ("1", "4242"):
        for leftover in tmp_path.glob("run.db*"):
            leftover.unlink()
        proc = subprocess.run(
            [sys.executable, "-m", "trader", "replay", "--config", "config/replay.toml",
             "--data", str(minute_data), "--db", str(db), "--no-report", "--json",
             "--set", "data.symbols=[]", "--set", 'data.start=""', "--set", 'data.end=""'],
            cwd=REPO, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        summary.pop("run_id")
        results.append((summary, _table_rows(db)))
    (s1, t1), (s2, t2) = results
    assert t1["fills"], "the scenario must trade, or the comparison proves little"
    assert s1 == s2
    assert t1.keys() == t2.keys()
    for table in t1:
        assert t1[table] == t2[table], table


def _replay(config: Config) -> ReplayOutcome:
    async def main() -> ReplayOutcome:
        return await run_replay(config)

    return anyio.run(main)


def test_final_equity_is_cash_plus_positions_at_last_close_to_the_cent(
    tmp_path: Path, minute_data: Path
) -> None:
    """The recorded equity curve ends at the broker's cash + sum(qty x last close)."""
    db = tmp_path / "acct.db"
    outcome = _replay(_config(minute_data, db))
    ledger = outcome.exchange.ledger
    expected = ledger.cash_cents + sum(
        value_cents(p.qty, ledger.last_price[s]) for s, p in ledger.positions.items() if p.qty
    )
    with sqlite3.connect(db) as conn:
        (final,) = conn.execute(
            "SELECT equity_cents FROM equity ORDER BY ts_ns DESC LIMIT 1").fetchone()
        fills = conn.execute("SELECT symbol, side, qty, price, commission_cents FROM fills"
                             ).fetchall()
        (initial,) = conn.execute("SELECT config FROM runs").fetchone()
    assert fills
    assert final == expected
    # Cash reconciles with the fills, to the cent.
    cash = round(json.loads(initial)["broker"]["cash_usd"] * 100)
    for _, side, qty, price, commission in fills:
        v = value_cents(qty, price)
        cash += -v - commission if side == "buy" else v - commission
    assert cash == ledger.cash_cents
    # And the fills reconcile every position.
    net: dict[str, float] = {}
    for symbol, side, qty, _, _ in fills:
        net[symbol] = net.get(symbol, 0.0) + (qty if side == "buy" else -qty)
    for symbol, pos in ledger.positions.items():
        assert net.get(symbol, 0.0) == pytest.approx(pos.qty, abs=1e-9)


def test_replay_on_the_bundled_data_runs_out_of_the_box(tmp_path: Path) -> None:
    """config/replay.toml runs on replay_data/ and prints a JSON summary on the last line."""
    db = tmp_path / "bundled.db"
    html = tmp_path / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "trader", "replay", "--config", "config/replay.toml",
         "--db", str(db), "--json", "--report", str(html)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("final_equity", "trades", "total_return", "cagr", "sharpe", "sortino",
                "max_drawdown", "max_drawdown_duration_days", "win_rate", "profit_factor",
                "average_trade", "exposure", "commissions", "bars", "annual_volatility"):
        assert key in summary
    assert summary["trades"] > 0
    assert html.stat().st_size > 0
    # trader report regenerates the same figures from the journal alone.
    again = subprocess.run(
        [sys.executable, "-m", "trader", "report", str(db), "--json",
         "--out", str(tmp_path / "again.html")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1]) == summary


def test_a_bad_row_stops_the_replay_with_file_and_line(tmp_path: Path) -> None:
    """A crossed bar in the data is exit code 4 with file:line and the reason."""
    data = tmp_path / "bad"
    data.mkdir()
    (data / "X.csv").write_text(
        "symbol,ts,open,high,low,close,volume\n"
        "X,2024-01-02,10,11,9,10.5,100\n"
        "X,2024-01-03,10,9,11,10.5,100\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "trader", "replay", "--config", "config/replay.toml",
         "--data", str(data), "--db", str(tmp_path / "b.db"), "--set", "data.symbols=[]",
         "--set", 'data.start=""', "--set", 'data.end=""'],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 4
    assert f"{data / 'X.csv'}:3" in proc.stderr


def test_report_regenerates_the_summary_and_page_from_the_journal_alone(
    tmp_path: Path, minute_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """trader replay prints a table; trader report DB prints the same figures and a page."""
    from trader.cli import main

    db = tmp_path / "r.db"
    code = main(["replay", "--config", "config/replay.toml", "--data", str(minute_data),
                 "--db", str(db), "--set", "data.symbols=[]", "--set", 'data.start=""',
                 "--set", 'data.end=""', "--report", str(tmp_path / "a.html"),
                 "--symbol", "S001"])
    table = capsys.readouterr().out
    assert code == 0
    assert "Final equity" in table
    assert "Sharpe" in table
    html = tmp_path / "b.html"
    assert main(["report", str(db), "--out", str(html), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = sum(len(p.read_text().splitlines()) - 1 for p in minute_data.glob("*.csv"))
    assert summary["bars"] == rows
    assert f"{summary['final_equity']:,.2f}" in table
    assert "<script src=" not in html.read_text()
    assert "S001" in (tmp_path / "a.html").read_text()  # the symbol asked for is charted


def test_report_on_a_missing_journal_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No such file: exit 2 and one line saying so."""
    from trader.cli import main

    assert main(["report", str(tmp_path / "none.db")]) == 2
    assert "no such journal" in capsys.readouterr().err


def test_an_embedded_sandbox_goes_on_after_the_journal_s_last_bar(tmp_path: Path) -> None:
    """`trader run --config config/sandbox.toml` run twice on one journal: the second
    sandbox market starts after the last bar the first run journaled, never before it
    (its feed would otherwise ask for bars between its last one and an earlier "now")."""
    from trader.runner import _sandbox_start
    from trader.sandbox import wire

    db = tmp_path / "sandbox.db"
    assert _sandbox_start("2004-01-02", str(db)) == "2004-01-02"  # no journal yet
    config = decode_config({
        "run": {"db": str(db)},
        "data": {"dir": str(REPO / "replay_data" / "1Day"), "symbols": ["AAPL", "MSFT"],
                 "start": "2004-01-02", "end": "2004-06-30"},
    })
    outcome = anyio.run(lambda: run_replay(config))
    from trader.journal import recent_bars

    last = max(b.ts_ns for b in recent_bars(outcome.db_path))
    assert _sandbox_start("2004-01-02", str(db)) == last
    # A configured start later than the journal wins.
    assert _sandbox_start("2005-01-03", str(db)) == "2005-01-03"
    assert wire.parse_time("2005-01-03") > last
