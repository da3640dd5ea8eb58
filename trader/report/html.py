"""A run report as one self-contained HTML file.

The page holds the summary table and a plotly figure with the equity curve, the
drawdown curve (in percent) and, when a symbol is given, its price with the
buy and sell fills marked. plotly.js is inlined, so the file opens offline and
can be archived or mailed as is.

Long series are downsampled for plotting only: each series is cut into buckets
and each bucket keeps its lowest and highest point, so the envelope of the curve
(and with it the first and last points) survives. Equity and drawdown are
thinned separately and plotted at the union of the kept points, because the
equity envelope alone can drop the deepest drawdown: in a bucket that rises to
a new peak and then falls part of the way back, the fall is neither the
bucket's lowest nor its highest equity. A million-point run thus adds at most
about a megabyte to plotly.js's ~4.8 MB. The summary figures always come from
the full series.

Times are plotted as UTC wall-clock strings: plotly.js would draw epoch numbers
in the viewer's time zone.

The output is a pure function of the input: plotly's random element id is
replaced by a fixed one, so two renders of the same run are byte-identical.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from trader.report.stats import FillRow, Summary, drawdown, summary_rows

__all__ = ["DEFAULT_MAX_POINTS", "envelope_indices", "render_html"]

DEFAULT_MAX_POINTS: Final = 20_000
"""Points per plotted series (and fill markers per side) above which data is downsampled."""

_DIV_ID: Final = "trader-report"
_TimeUnit = Literal["m", "s", "ms", "us"]
# Coarsest first: the shortest strings that lose nothing.
_TIME_UNITS: Final[tuple[tuple[_TimeUnit, int], ...]] = (
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
)
_BUY_COLOUR: Final = "#2ca02c"
_SELL_COLOUR: Final = "#d62728"
_TIME_HOVER: Final = "%{x|%Y-%m-%d %H:%M:%S} UTC"

_STYLE: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; margin: 0 0 1rem; }
table.summary { border-collapse: collapse; margin-bottom: 1.5rem; font-size: 0.9rem; }
table.summary th { text-align: left; font-weight: normal; color: #555;
                   padding: 0.15rem 1.5rem 0.15rem 0; }
table.summary td { text-align: right; font-variant-numeric: tabular-nums; padding: 0.15rem 0; }
p.note { color: #777; font-size: 0.8rem; }
""".strip()


def envelope_indices(values: npt.NDArray[np.float64], max_points: int) -> npt.NDArray[np.intp]:
    """Indices of a min/max envelope of ``values`` with about ``max_points`` points.

    Args:
        values: The series to thin.
        max_points: Target size; series this long or shorter are kept whole.

    Returns:
        Sorted unique indices: every index when the series is short enough,
        otherwise the first, the last, and the lowest and highest point of each
        of ``max_points // 2 - 1`` equal buckets (at most ``max_points + 2``).
        The global minimum and maximum are always among them.

    Raises:
        ValueError: If ``max_points`` is below 4.
    """
    if max_points < 4:
        raise ValueError(f"max_points must be at least 4, got {max_points}")
    n = int(values.size)
    if n <= max_points:
        return np.arange(n, dtype=np.intp)
    buckets = max_points // 2 - 1
    size = -(-n // buckets)  # ceiling division, so `buckets` buckets cover the series
    full = n // size
    body = values[: full * size].reshape(full, size)
    starts = np.arange(full, dtype=np.intp) * size
    parts = [
        np.array([0, n - 1], dtype=np.intp),
        starts + np.argmin(body, axis=1),
        starts + np.argmax(body, axis=1),
    ]
    tail_start = full * size
    if tail_start < n:
        tail = values[tail_start:]
        parts.append(np.array([tail_start + np.argmin(tail), tail_start + np.argmax(tail)]))
    return np.unique(np.concatenate(parts)).astype(np.intp)


def _to_iso(ts_ns: npt.NDArray[np.int64]) -> list[str]:
    """UTC wall-clock strings, which a plotly date axis shows exactly as written.

    Plain numbers would be smaller, but plotly.js reads epoch milliseconds as
    instants and draws them in the *viewer's* time zone, so the axis would
    disagree with the UTC dates of the summary. The strings are as short as the
    data's resolution allows.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    unit: _TimeUnit = "us"
    for candidate, step in _TIME_UNITS:
        if bool(np.all(ts % step == 0)):
            unit = candidate
            break
    # datetime64 has no zone and counts from the UTC epoch, so these are UTC wall clocks.
    instants: npt.NDArray[np.datetime64] = ts.astype("datetime64[ns]")
    stamps: list[str] = np.datetime_as_string(instants, unit=unit).tolist()
    return stamps


def _summary_table(summary: Summary) -> str:
    rows = "\n".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
        for label, value in summary_rows(summary)
    )
    return f'<table class="summary">\n{rows}\n</table>'


def _fill_trace(
    fills: Sequence[FillRow], *, side: str, max_points: int
) -> tuple[dict[str, Any], int]:
    """A marker trace for one side's fills (thinned evenly if too many) and the total count."""
    chosen = [fill for fill in fills if fill.side == side]
    total = len(chosen)
    name = f"{side}s"
    if total > max_points:
        keep = np.unique(np.linspace(0, total - 1, max_points).round().astype(np.intp))
        chosen = [chosen[int(i)] for i in keep]
        name = f"{side}s ({len(chosen):,} of {total:,} shown)"
    buy = side == "buy"
    trace: dict[str, Any] = {
        "type": "scatter",
        "mode": "markers",
        "name": name,
        "x": _to_iso(np.array([int(fill.ts_ns) for fill in chosen], dtype=np.int64)),
        "y": np.array([fill.price for fill in chosen], dtype=np.float64),
        "customdata": np.array([fill.qty for fill in chosen], dtype=np.float64),
        "marker": {
            "symbol": "triangle-up" if buy else "triangle-down",
            "size": 9,
            "color": _BUY_COLOUR if buy else _SELL_COLOUR,
            "line": {"width": 0.5, "color": "#333"},
        },
        "hovertemplate": f"{side} %{{customdata:,}} @ %{{y:,.4f}}<br>{_TIME_HOVER}<extra></extra>",
    }
    return trace, total


def render_html(
    path: Path,
    *,
    title: str,
    summary: Summary,
    ts_ns: npt.NDArray[np.int64],
    equity_cents: npt.NDArray[np.int64],
    price_symbol: str | None,
    price_ts_ns: npt.NDArray[np.int64] | None,
    price_close: npt.NDArray[np.float64] | None,
    fills: Sequence[FillRow],
    max_points: int = DEFAULT_MAX_POINTS,
) -> None:
    """Write the report page for one run.

    Args:
        path: Output file; parent directories are created. The file is written
            to a temporary name and renamed, so a reader never sees half a report.
        title: Page title and heading.
        summary: Figures for the table, e.g. from :func:`~trader.report.stats.summarize`.
        ts_ns: Equity timestamps.
        equity_cents: Equity at each timestamp.
        price_symbol: Symbol whose price panel to draw, or ``None`` for no panel.
        price_ts_ns: Price timestamps for ``price_symbol``, or ``None``.
        price_close: Closing prices at ``price_ts_ns``, or ``None``.
        fills: Fills; those of ``price_symbol`` are marked on its price.
        max_points: Downsampling threshold per series (see :func:`envelope_indices`).

    Raises:
        ValueError: If the equity or price arrays differ in length.
    """
    # plotly takes about a second to import; only pay for it when drawing.
    import plotly.graph_objects as go  # type: ignore[import-untyped, unused-ignore]
    from plotly.subplots import make_subplots  # type: ignore[import-untyped, unused-ignore]

    ts = np.asarray(ts_ns, dtype=np.int64)
    eq = np.asarray(equity_cents, dtype=np.int64)
    if ts.shape != eq.shape:
        raise ValueError(f"ts_ns {ts.shape} and equity_cents {eq.shape} must match")
    initial_cents = round(summary.initial_equity * 100)
    dollars = eq.astype(np.float64) / 100
    drawdown_pct = -100.0 * drawdown(eq, initial_cents)
    # Half the budget each: the equity envelope alone can miss the deepest
    # drawdown when a new peak and the trough fall in the same bucket.
    half = max(max_points // 2, 4)
    keep = np.union1d(envelope_indices(dollars, half), envelope_indices(drawdown_pct, half))
    x = _to_iso(ts[keep])
    notes: list[str] = []
    if keep.size < ts.size:
        notes.append(f"Equity and drawdown plotted from {keep.size:,} of {ts.size:,} points.")

    panels = ["Equity ($)", "Drawdown (%)"]
    if price_symbol is not None:
        panels.append(f"{price_symbol} price")
    heights = [0.45, 0.2, 0.35] if price_symbol is not None else [0.7, 0.3]
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        row_heights=heights,
        subplot_titles=panels,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=dollars[keep],
            mode="lines",
            name="equity",
            line={"width": 1.5, "color": "#1f77b4"},
            hovertemplate=f"%{{y:$,.2f}}<br>{_TIME_HOVER}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=drawdown_pct[keep],
            mode="lines",
            name="drawdown",
            fill="tozeroy",
            line={"width": 1, "color": _SELL_COLOUR},
            hovertemplate=f"%{{y:.2f}}%<br>{_TIME_HOVER}<extra></extra>",
        ),
        row=2,
        col=1,
    )

    if price_symbol is not None:
        if price_ts_ns is not None and price_close is not None:
            pts = np.asarray(price_ts_ns, dtype=np.int64)
            close = np.asarray(price_close, dtype=np.float64)
            if pts.shape != close.shape:
                raise ValueError(
                    f"price_ts_ns {pts.shape} and price_close {close.shape} must match"
                )
            price_keep = envelope_indices(close, max_points)
            if price_keep.size < close.size:
                notes.append(
                    f"{price_symbol} price plotted from {price_keep.size:,} of {close.size:,} "
                    "points."
                )
            fig.add_trace(
                go.Scatter(
                    x=_to_iso(pts[price_keep]),
                    y=close[price_keep],
                    mode="lines",
                    name=f"{price_symbol} close",
                    line={"width": 1, "color": "#555"},
                    hovertemplate=f"%{{y:,.4f}}<br>{_TIME_HOVER}<extra></extra>",
                ),
                row=3,
                col=1,
            )
        symbol_fills = [fill for fill in fills if fill.symbol == price_symbol]
        for side in ("buy", "sell"):
            trace, total = _fill_trace(symbol_fills, side=side, max_points=max_points)
            if total:
                fig.add_trace(go.Scatter(**trace), row=3, col=1)

    fig.update_xaxes(type="date")
    fig.update_layout(
        template="plotly_white",
        height=900 if price_symbol is not None else 650,
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        hovermode="x",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    figure_html = fig.to_html(
        full_html=False,
        include_plotlyjs=True,  # inline plotly.js: no CDN, opens offline
        div_id=_DIV_ID,  # plotly's default id is random; a fixed one keeps output stable
        config={"displaylogo": False, "responsive": True},
    )

    escaped_title = html.escape(title)
    note_html = "".join(f'<p class="note">{html.escape(note)}</p>\n' for note in notes)
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escaped_title}</title>\n"
        f"<style>\n{_STYLE}\n</style>\n"
        "</head>\n"
        "<body>\n"
        f"<h1>{escaped_title}</h1>\n"
        f"{_summary_table(summary)}\n"
        f"{note_html}"
        f"{figure_html}\n"
        "</body>\n"
        "</html>\n"
    )

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    partial.write_bytes(page.encode("utf-8"))
    os.replace(partial, path)
