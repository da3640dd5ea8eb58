"""The live data-quality checks, bar by bar: planted defects are found where they were put,
clean synthetic streams give nothing, and nothing is logged twice a session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import anyio
import numpy as np
import pytest
from structlog.testing import capture_logs

from tests.builders import minute_closes, session
from tests.test_live_feed import KEY, SECRET, START, SYMBOLS, Harness, published, sandbox_feed
from trader.data.bars import BarTable
from trader.data.live_quality import LIVE_KINDS, LiveFinding, LiveQuality
from trader.data.synth import synth_bars
from trader.sandbox import Sandbox

DAY_S = 86_400
MINUTE_NS = 60_000_000_000


def _rows(tables: dict[str, BarTable]) -> Iterator[tuple[int, str, float, float, float]]:
    """Every bar as (ts, symbol, open, close, volume) in (ts, symbol) order, as a feed
    passes them on."""
    rows = [
        (int(t.ts_ns[i]), s, float(t.open[i]), float(t.close[i]), float(t.volume[i]))
        for s, t in tables.items() for i in range(len(t))
    ]
    return iter(sorted(rows))


def _run(q: LiveQuality, rows: Iterator[tuple[int, str, float, float, float]]
         ) -> list[LiveFinding]:
    found: list[LiveFinding] = []
    for ts, symbol, o, c, v in rows:
        found += q.observe(symbol, ts, o, c, v)
    return found


def _planted_daily() -> tuple[list[tuple[int, str, float, float, float]], dict[str, int]]:
    """90 daily bars with a missing session, a zero-volume run, one bad bar and a 2:1 split."""
    t = synth_bars(["DDD"], days=90, freq="1d", seed=4)["DDD"]
    ts = t.ts_ns.tolist()
    o, c, v = t.open.copy(), t.close.copy(), t.volume.copy()
    o[70:] *= 0.5  # an unadjusted 2:1 split from bar 70 on
    c[70:] *= 0.5
    o[60] *= 1.6  # one bad bar: the move in and the move out are both outliers
    c[60] *= 1.6
    v[50:53] = 0.0
    keep = [i for i in range(len(ts)) if i != 10]  # session 10 has no bar
    rows = [(ts[i], "DDD", float(o[i]), float(c[i]), float(v[i])) for i in keep]
    where = {"missing_session": ts[10], "zero_volume_run": ts[50], "suspected_split": ts[70],
             "outlier_return": ts[60]}
    return rows, where


def test_each_planted_daily_defect_is_found_once_where_it_was_put() -> None:
    """A missing session, a zero-volume run, a bad bar (in and out) and a 2:1 split: each is
    found at its bar, and nothing else is."""
    rows, where = _planted_daily()
    q = LiveQuality(DAY_S)
    found = _run(q, iter(rows))
    assert q.counts == {"missing_session": 1, "intraday_gap": 0, "zero_volume_run": 1,
                        "outlier_return": 2, "suspected_split": 1}
    by_kind: dict[str, LiveFinding] = {f.kind: f for f in reversed(found)}  # the first each
    for kind, ts in where.items():
        assert by_kind[kind].ts_ns == ts, kind
        assert by_kind[kind].symbol == "DDD"
    outliers = [f.ts_ns for f in found if f.kind == "outlier_return"]
    assert outliers == [where["outlier_return"], rows[60][0]]  # bar 60, then bar 61 (row 60)
    assert "2:1 split" in by_kind["suspected_split"].detail


def test_a_split_is_reported_once_the_reversal_window_has_passed() -> None:
    """The split is confirmed by the bars after the jump, so it is reported at the fifth
    bar after it (the jump bar's own close counts as the first), not before."""
    rows, where = _planted_daily()
    q = LiveQuality(DAY_S)
    reported_at = None
    for ts, symbol, o, c, v in rows:
        if any(f.kind == "suspected_split" for f in q.observe(symbol, ts, o, c, v)):
            reported_at = ts
    jump = [r[0] for r in rows].index(where["suspected_split"])
    assert reported_at == rows[jump + 4][0]


def test_a_split_sized_bad_print_that_is_taken_back_is_an_outlier_not_a_split() -> None:
    """A single bar at half the price, back the next bar: two outliers, no split."""
    t = synth_bars(["BAD"], days=80, freq="1d", seed=9)["BAD"]
    c, o = t.close.copy(), t.open.copy()
    c[50] *= 0.5
    o[50] *= 0.5
    q = LiveQuality(DAY_S)
    found = _run(q, iter([(int(t.ts_ns[i]), "BAD", float(o[i]), float(c[i]), 1e6)
                          for i in range(len(t))]))
    assert q.counts["suspected_split"] == 0
    assert [f.ts_ns for f in found if f.kind == "outlier_return"] == [int(t.ts_ns[50]),
                                                                      int(t.ts_ns[51])]


def test_a_half_hour_hole_inside_a_session_is_an_intraday_gap() -> None:
    """30 missing minutes inside a session are one gap at the first missing close; the
    session's tail and the next session's head are checked too."""
    t = synth_bars(["MMM"], days=3, freq="1min", seed=4, start=dt.date(2024, 3, 6))["MMM"]
    rows = list(_rows({"MMM": t}))
    day2 = [i for i, r in enumerate(rows) if session("2024-03-07").open_ns < r[0]
            <= session("2024-03-07").close_ns]
    hole = day2[100:130]
    first_missing = rows[hole[0]][0]
    del rows[hole[0] : hole[-1] + 1]
    # The last 20 minutes of the last day, and the first 16 of the second, are gone too.
    rows = [r for r in rows if not (session("2024-03-08").close_ns - 20 * MINUTE_NS < r[0]
                                    <= session("2024-03-08").close_ns)]
    head = session("2024-03-07").open_ns
    rows = [r for r in rows if not head < r[0] <= head + 16 * MINUTE_NS]
    q = LiveQuality(60)
    found = _run(q, iter(rows))
    gaps = [f for f in found if f.kind == "intraday_gap"]
    assert [g.ts_ns for g in gaps] == [head + MINUTE_NS, first_missing]
    assert gaps[1].detail.startswith("30 bar(s) missing")
    assert q.counts["intraday_gap"] == 2  # the tail of the last session has no next bar yet
    assert sum(q.counts.values()) == 2


def test_a_short_hole_or_a_late_first_bar_is_no_gap() -> None:
    """Fourteen missing minutes (under gap_minutes, where nothing traded) and a symbol whose
    first bar ever comes mid-session (a late start) are not defects."""
    closes = minute_closes("2024-03-05", 200)
    q = LiveQuality(60)
    kept = closes[100:120] + closes[134:200]  # first bar at 11:11; 14 minutes missing
    found = [f for i, ts in enumerate(kept)
             for f in q.observe("LATE", ts, 10.0 + 0.01 * (i % 3), 10.0 + 0.01 * (i % 2), 500.0)]
    assert found == []


@pytest.mark.parametrize(("freq", "days", "timeframe_s"),
                         [("1min", 5, 60), ("5min", 20, 300), ("1h", 60, 3600),
                          ("1d", 400, DAY_S)])
@pytest.mark.parametrize("seed", [1, 7])
def test_a_clean_synthetic_stream_gives_no_finding(
    freq: str, days: int, timeframe_s: int, seed: int
) -> None:
    """Synthetic bars (jumps, news gaps, thin minutes and all) pass the live checks."""
    q = LiveQuality(timeframe_s)
    found = _run(q, _rows(synth_bars(4, days, freq=freq, seed=seed)))
    assert found == []
    assert q.counts == dict.fromkeys(LIVE_KINDS, 0)


def test_findings_are_counted_every_time_but_flagged_for_the_log_once_a_session() -> None:
    """Three zero-volume runs in one session count three times; only the first is marked
    for the log, and the next session's first is marked again."""
    closes = minute_closes("2024-03-05", 390 + 10)
    q = LiveQuality(60)
    flags = []
    for i, ts in enumerate(closes):
        volume = 0.0 if i in (10, 20, 30, 395) else 100.0
        for f in q.observe("ZZZ", ts, 10.0, 10.0, volume):
            flags.append((f.kind, f.first_today))
    assert flags == [("zero_volume_run", True), ("zero_volume_run", False),
                     ("zero_volume_run", False), ("zero_volume_run", True)]
    assert q.counts["zero_volume_run"] == 4


def test_returns_are_paired_within_a_session_only() -> None:
    """An overnight gap of 30% is no intraday outlier (the batch check pairs within sessions)."""
    closes = minute_closes("2024-03-05", 390 + 60)
    rng = np.random.default_rng(3)
    price = 50.0
    q = LiveQuality(60)
    found: list[LiveFinding] = []
    for i, ts in enumerate(closes):
        prev = price
        price = price * (1.3 if i == 390 else float(np.exp(rng.normal(0, 0.001))))
        found += q.observe("GAP", ts, prev if i != 390 else price, price, 100.0)
    assert found == []


def _with_defects(table: BarTable) -> BarTable:
    """``table`` with volume 0 on bar 25 and bar 40 printed 40% high (open to close)."""
    v = table.volume.copy()
    v[25] = 0.0
    cols = {c: getattr(table, c).copy() for c in ("open", "high", "low", "close", "vwap")}
    for col in cols.values():
        col[40] *= 1.4
    return BarTable(table.symbol, table.ts_ns, cols["open"], cols["high"], cols["low"],
                    cols["close"], v, cols["vwap"], table.trades)


@pytest.mark.asyncio
async def test_the_live_feed_counts_and_logs_findings_and_still_passes_every_bar_on() -> None:
    """Over the sandbox, a zero-volume bar and a bad print are counted (the print twice: in
    and out) and logged once per kind, and every bar still reaches the strategy."""
    tables = synth_bars(list(SYMBOLS), days=1, freq="1min", seed=11)
    tables["AAPL"] = _with_defects(tables["AAPL"])
    h = Harness()
    with capture_logs() as logs:
        async with Sandbox(tables, key_id=KEY, secret=SECRET, start=START) as sb, \
                anyio.create_task_group() as tg:
            feed = sandbox_feed(sb, h)
            await tg.start(feed.run)
            await sb.market.advance(bars=60)
            await h.bars_until(len(published(sb)))
            tg.cancel_scope.cancel()
    assert h.bars == published(sb)  # reported, not dropped
    assert feed.quality_findings == {"missing_session": 0, "intraday_gap": 0,
                                     "zero_volume_run": 1, "outlier_return": 2,
                                     "suspected_split": 0}
    lines = [e for e in logs if e["event"] == "data quality finding"]
    assert [(e["symbol"], e["kind"]) for e in lines] == [("AAPL", "zero_volume_run"),
                                                         ("AAPL", "outlier_return")]
    assert all(e["log_level"] == "warning" for e in lines)
