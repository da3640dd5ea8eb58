"""A finished run, read back from the journal: the summary, JSON, the HTML report.

Everything here reads the SQLite file (read-only), so ``trader report DB``
regenerates exactly what ``trader replay`` printed, from the journal alone.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from trader.actors.recorder import connect_readonly
from trader.errors import TraderError
from trader.report import FillRow, Summary, format_table, round_trips, summarize


class RunNotFound(TraderError):
    """The journal has no such run."""


class RunResults(msgspec.Struct, kw_only=True):
    """Series and fills of one run, as stored."""

    run_id: str
    initial_cash_cents: int
    bars: int
    ts_ns: Any
    equity_cents: Any
    exposure_cents: Any
    fills: list[FillRow]
    commissions_cents: int


def latest_run_id(db: sqlite3.Connection) -> str:
    row = db.execute(
        "SELECT run_id FROM runs ORDER BY started_wall_ns DESC, rowid DESC LIMIT 1"
    ).fetchone()
    if row is None:
        raise RunNotFound("the journal holds no run")
    return str(row[0])


def load_results(db_path: str | Path, run_id: str | None = None, *, bars: int = 0,
                 count_bars: bool = True) -> RunResults:
    """Read one run (the latest if ``run_id`` is None).

    ``bars`` is the number of bars replayed when the caller knows it; otherwise
    they are counted from the journal, unless ``count_bars`` is False (the
    caller will, with :func:`scan_bars`, in the pass it makes anyway).

    Raises:
        RunNotFound: no such run in the file.
    """
    if not Path(db_path).exists():
        raise RunNotFound(f"{db_path}: no such journal")
    with connect_readonly(db_path) as db:
        rid = run_id or latest_run_id(db)
        row = db.execute("SELECT config FROM runs WHERE run_id = ?", (rid,)).fetchone()
        if row is None:
            raise RunNotFound(f"{db_path}: no run {rid!r}")
        config = json.loads(row[0])
        cash = round(float(config["broker"]["cash_usd"]) * 100)
        eq = _equity_rows(db, rid)
        fills = [
            FillRow(ts_ns=t, symbol=s, side=side, qty=q, price=p, commission_cents=c)
            for t, s, side, q, p, c in db.execute(
                "SELECT ts_ns, symbol, side, qty, price, commission_cents FROM fills "
                "WHERE run_id = ? ORDER BY ts_ns, execution_id",
                (rid,),
            )
        ]
        if not bars and count_bars:
            bars = scan_bars(db_path, rid).count
    return RunResults(
        run_id=rid,
        initial_cash_cents=cash,
        bars=bars,
        ts_ns=eq[:, 0],
        equity_cents=eq[:, 1],
        exposure_cents=eq[:, 2],
        fills=fills,
        commissions_cents=sum(f.commission_cents for f in fills),
    )


def _equity_rows(db: sqlite3.Connection, run_id: str) -> np.ndarray[Any, np.dtype[np.int64]]:
    """``(ts_ns, equity_cents, exposure_cents)`` rows, read in chunks straight into
    one array: a row per bar, and a million Python tuples would cost more memory
    than the whole replay."""
    (n,) = db.execute("SELECT COUNT(*) FROM equity WHERE run_id = ?", (run_id,)).fetchone()
    out = np.empty((n, 3), dtype=np.int64)
    cur = db.execute(
        "SELECT ts_ns, equity_cents, exposure_cents FROM equity WHERE run_id = ? ORDER BY ts_ns",
        (run_id,),
    )
    i = 0
    while rows := cur.fetchmany(16384):
        out[i : i + len(rows)] = rows
        i += len(rows)
    return out[:i]


def summary_of(results: RunResults) -> Summary:
    if len(results.ts_ns) == 0:
        raise RunNotFound(f"run {results.run_id} recorded no equity (no bars replayed?)")
    return summarize(
        ts_ns=results.ts_ns,
        equity_cents=results.equity_cents,
        exposure_cents=results.exposure_cents,
        trades=round_trips(results.fills),
        commissions_cents=results.commissions_cents,
        bars=results.bars,
        initial_equity_cents=results.initial_cash_cents,
    )


def summary_json(summary: Summary, run_id: str) -> str:
    """One JSON object: every figure of the table, plus ``run_id``."""
    doc = msgspec.to_builtins(summary)
    doc["run_id"] = run_id
    return json.dumps(doc, sort_keys=True)


def summary_text(summary: Summary) -> str:
    return format_table(summary)


def write_html(
    results: RunResults, summary: Summary, path: Path, *, symbol: str | None,
    price_ts: Any = None, price_close: Any = None,
) -> None:
    from trader.report import render_html

    render_html(
        path,
        title=f"trader replay {results.run_id[:8]}",
        summary=summary,
        ts_ns=results.ts_ns,
        equity_cents=results.equity_cents,
        price_symbol=symbol,
        price_ts_ns=price_ts,
        price_close=price_close,
        fills=[f for f in results.fills if symbol is None or f.symbol == symbol],
    )


class BarScan(msgspec.Struct, frozen=True, kw_only=True):
    """One pass over a run's journaled bars: how many, and one symbol's closes."""

    count: int
    ts_ns: Any
    close: Any


def scan_bars(db_path: str | Path, run_id: str, symbol: str | None = None) -> BarScan:
    """Count the bars the strategy saw and collect ``symbol``'s closes (for the
    report's price chart), decoding the journal once."""
    from trader.messages import BarsClosed, decode

    count = 0
    ts: list[int] = []
    close: list[float] = []
    with connect_readonly(db_path) as db:
        for (body,) in db.execute(
            "SELECT body FROM journal WHERE run_id = ? AND type = 'BarsClosed' ORDER BY ts_ns",
            (run_id,),
        ):
            msg = decode(body)
            if isinstance(msg, BarsClosed):
                count += len(msg.bars)
                if symbol is not None:
                    for bar in msg.bars:
                        if bar.symbol == symbol:
                            ts.append(bar.ts_ns)
                            close.append(bar.close)
    return BarScan(count=count, ts_ns=np.array(ts, dtype=np.int64),
                   close=np.array(close, dtype=np.float64))
