"""Tests for trader.report.html: the self-contained HTML report and its downsampling."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from trader.report.html import envelope_indices, render_html
from trader.report.stats import FillRow, Summary, round_trips, summarize, summary_rows

START_NS = int(dt.datetime(2024, 1, 2, 21, tzinfo=dt.UTC).timestamp()) * 10**9
DAY_NS = 86_400_000_000_000
INITIAL_CENTS = 10_000_000


def fills_for(symbol: str) -> list[FillRow]:
    """A buy on day 1 and a sell on day 3 of ``symbol``, 10 shares each."""
    return [
        FillRow(
            ts_ns=START_NS, symbol=symbol, side="buy", qty=10, price=187.5, commission_cents=100
        ),
        FillRow(
            ts_ns=START_NS + 2 * DAY_NS,
            symbol=symbol,
            side="sell",
            qty=10,
            price=190.25,
            commission_cents=100,
        ),
    ]


def summary_for(
    ts: npt.NDArray[np.int64], equity: npt.NDArray[np.int64], fills: list[FillRow]
) -> Summary:
    return summarize(
        ts_ns=ts,
        equity_cents=equity,
        exposure_cents=np.zeros_like(equity),
        trades=round_trips(fills),
        commissions_cents=sum(f.commission_cents for f in fills),
        bars=int(ts.size),
        initial_equity_cents=INITIAL_CENTS,
    )


def render_example(path: Path, *, symbol: str | None = "AAPL", title: str = "Run 42") -> str:
    """Render the four-day worked example and return the page text."""
    ts = START_NS + np.arange(4, dtype=np.int64) * DAY_NS
    equity = np.array([10_000_000, 11_000_000, 9_900_000, 12_100_000], dtype=np.int64)
    fills = fills_for("AAPL") + fills_for("MSFT")
    render_html(
        path,
        title=title,
        summary=summary_for(ts, equity, fills),
        ts_ns=ts,
        equity_cents=equity,
        price_symbol=symbol,
        price_ts_ns=ts if symbol else None,
        price_close=np.array([187.5, 189.0, 190.25, 188.0]) if symbol else None,
        fills=fills,
    )
    return path.read_text(encoding="utf-8")


def plotted_traces(page: str) -> dict[str, dict[str, Any]]:
    """The figure's traces by name, parsed from the ``Plotly.newPlot(id, [traces], ...)`` call."""
    start = page.index("[", page.index("Plotly.newPlot("))
    traces, _ = json.JSONDecoder().raw_decode(page, start)
    return {trace["name"]: trace for trace in traces}


def values_of(array: Any) -> list[Any]:
    """A trace array as a list, decoding plotly's base64 typed-array form."""
    if isinstance(array, dict):
        decoded: list[Any] = np.frombuffer(
            base64.b64decode(array["bdata"]), dtype=array["dtype"]
        ).tolist()
        return decoded
    return list(array)


def test_report_is_a_single_file_with_plotly_inlined(tmp_path: Path) -> None:
    """The page loads no script, stylesheet or frame from elsewhere: plotly.js is inline."""
    page = render_example(tmp_path / "report.html")

    assert page.startswith("<!DOCTYPE html>")
    assert re.search(r"<script[^>]*\bsrc\s*=", page, flags=re.IGNORECASE) is None
    assert re.search(r"<(link|iframe|img)\b", page, flags=re.IGNORECASE) is None
    assert "Plotly.newPlot" in page
    assert len(page) > 1_000_000  # plotly.js itself is a few megabytes


def test_report_contains_the_title_symbol_and_every_summary_figure(tmp_path: Path) -> None:
    """Each (label, value) of the summary appears as a table row, e.g. Total return 21.00 %."""
    path = tmp_path / "report.html"
    page = render_example(path)
    ts = START_NS + np.arange(4, dtype=np.int64) * DAY_NS
    equity = np.array([10_000_000, 11_000_000, 9_900_000, 12_100_000], dtype=np.int64)
    summary = summary_for(ts, equity, fills_for("AAPL") + fills_for("MSFT"))

    assert "<title>Run 42</title>" in page
    assert "AAPL price" in page
    for label, value in summary_rows(summary):
        assert f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>" in page
    assert "<td>21.00%</td>" in page
    assert "<td>10.00%</td>" in page
    assert "<td>121,000.00</td>" in page


def test_fill_markers_are_drawn_only_for_the_price_symbol(tmp_path: Path) -> None:
    """AAPL's buy and sell become marker traces; MSFT's fills at other prices do not."""
    page = render_example(tmp_path / "report.html")

    assert '"name":"buys"' in page
    assert '"name":"sells"' in page
    assert page.count('"mode":"markers"') == 2


def test_time_axis_shows_utc_wall_clock_strings(tmp_path: Path) -> None:
    """Jan 2 2024 21:00 UTC is plotted as "2024-01-02T21:00", not as epoch milliseconds.

    plotly.js draws epoch numbers in the viewer's zone; UTC strings match the summary.
    """
    traces = plotted_traces(render_example(tmp_path / "report.html"))

    assert values_of(traces["equity"]["x"]) == [
        "2024-01-02T21:00",
        "2024-01-03T21:00",
        "2024-01-04T21:00",
        "2024-01-05T21:00",
    ]
    assert values_of(traces["equity"]["y"]) == [100_000.0, 110_000.0, 99_000.0, 121_000.0]
    assert values_of(traces["drawdown"]["y"]) == [0.0, 0.0, -10.0, 0.0]
    assert values_of(traces["buys"]["x"]) == ["2024-01-02T21:00"]


def test_downsampling_keeps_the_deepest_drawdown_the_equity_envelope_misses(
    tmp_path: Path,
) -> None:
    """Equity 100, 90, 1000, 600, 1000, 1000 (initial 100) with 4 points per envelope.

    The equity envelope keeps first, last, min 90 and max 1000 (indices 0, 5, 1, 2) and so
    misses 600, yet 600 is the deepest drawdown, (1000 - 600) / 1000 = 40 %. The drawdown
    envelope adds it: the plotted drawdown reaches -40 %.
    """
    ts = START_NS + np.arange(6, dtype=np.int64) * DAY_NS
    equity = np.array([100, 90, 1000, 600, 1000, 1000], dtype=np.int64) * 100
    path = tmp_path / "report.html"
    render_html(
        path,
        title="t",
        summary=summarize(
            ts_ns=ts,
            equity_cents=equity,
            exposure_cents=np.zeros_like(equity),
            trades=[],
            commissions_cents=0,
            bars=6,
            initial_equity_cents=10_000,
        ),
        ts_ns=ts,
        equity_cents=equity,
        price_symbol=None,
        price_ts_ns=None,
        price_close=None,
        fills=[],
        max_points=8,
    )
    traces = plotted_traces(path.read_text(encoding="utf-8"))

    assert values_of(traces["equity"]["y"]) == [100.0, 90.0, 1000.0, 600.0, 1000.0]
    assert min(values_of(traces["drawdown"]["y"])) == -40.0


def test_report_without_a_price_symbol_has_no_price_panel(tmp_path: Path) -> None:
    """With price_symbol None only the equity and drawdown panels are drawn."""
    page = render_example(tmp_path / "report.html", symbol=None)

    assert "Drawdown (%)" in page
    assert "AAPL price" not in page
    assert '"mode":"markers"' not in page


def test_two_renders_of_the_same_run_are_byte_identical(tmp_path: Path) -> None:
    """No random element ids or timestamps: rendering twice gives the same bytes."""
    render_example(tmp_path / "a.html")
    render_example(tmp_path / "b.html")

    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()


def test_title_is_escaped_and_missing_directories_are_created(tmp_path: Path) -> None:
    """A title "<b>&co</b>" is shown as text, and nested output folders are made."""
    path = tmp_path / "runs" / "r1" / "report.html"
    page = render_example(path, title="<b>&co</b>")

    assert "<h1>&lt;b&gt;&amp;co&lt;/b&gt;</h1>" in page
    assert "<b>&co</b>" not in page
    assert not path.with_name("report.html.partial").exists()


def test_a_million_point_run_adds_about_a_megabyte_at_most(tmp_path: Path) -> None:
    """1,000,000 minute points plot as at most ~20,000: the data adds < 1.3 MB to the page.

    Worst case 20,000 points × (2 time strings of 19 bytes + 2 base64 floats of 8 · 4/3
    bytes) ≈ 1.19 MB; this random walk's two envelopes overlap and keep about 10,000.
    Unsampled, the times alone would take 19 MB.
    """
    small = tmp_path / "small.html"
    render_example(small, symbol=None)
    n = 1_000_000
    rng = np.random.default_rng(7)
    ts = START_NS + np.arange(n, dtype=np.int64) * 60_000_000_000
    equity = INITIAL_CENTS + np.cumsum(rng.integers(-5_000, 5_001, size=n)).astype(np.int64)
    big = tmp_path / "big.html"
    render_html(
        big,
        title="Run 42",
        summary=summary_for(ts, equity, []),
        ts_ns=ts,
        equity_cents=equity,
        price_symbol=None,
        price_ts_ns=None,
        price_close=None,
        fills=[],
    )

    assert big.stat().st_size - small.stat().st_size < 1_300_000
    assert "of 1,000,000 points" in big.read_text(encoding="utf-8")


def test_many_fills_are_thinned_and_say_so(tmp_path: Path) -> None:
    """30 buys with max_points 10 keep 10 markers and the legend says "10 of 30 shown"."""
    ts = START_NS + np.arange(30, dtype=np.int64) * DAY_NS
    equity = np.full(30, INITIAL_CENTS, dtype=np.int64)
    fills = [
        FillRow(ts_ns=int(t), symbol="SPY", side="buy", qty=1, price=500.0, commission_cents=0)
        for t in ts
    ]
    path = tmp_path / "report.html"
    render_html(
        path,
        title="t",
        summary=summary_for(ts, equity, fills),
        ts_ns=ts,
        equity_cents=equity,
        price_symbol="SPY",
        price_ts_ns=ts,
        price_close=np.full(30, 500.0),
        fills=fills,
        max_points=10,
    )

    assert '"name":"buys (10 of 30 shown)"' in path.read_text(encoding="utf-8")


def test_envelope_keeps_short_series_whole() -> None:
    """A series no longer than max_points is returned index for index."""
    assert envelope_indices(np.arange(10, dtype=np.float64), 10).tolist() == list(range(10))


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.integers(min_value=1, max_value=3_000),
        elements=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    ),
    st.integers(min_value=4, max_value=200),
)
def test_envelope_keeps_ends_and_extremes_within_budget(
    values: npt.NDArray[np.float64], max_points: int
) -> None:
    """The indices are sorted, include first, last, argmin and argmax, and number ≤ max + 2."""
    kept = envelope_indices(values, max_points)

    assert kept.size <= min(max_points + 2, values.size)
    assert bool(np.all(np.diff(kept) > 0))
    assert {0, values.size - 1, int(np.argmin(values)), int(np.argmax(values))} <= set(
        kept.tolist()
    )
    assert values[kept].min() == values.min()
    assert values[kept].max() == values.max()
