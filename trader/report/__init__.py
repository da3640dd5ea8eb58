"""Run reports: summary statistics, round trips, a text table and a self-contained HTML page.

Importing this package does not import plotly; :func:`render_html` loads it on
first use, so the live daemon can use the statistics without paying for it.
"""

from __future__ import annotations

from trader.report.html import render_html
from trader.report.stats import (
    FillRow,
    OpenLot,
    Summary,
    Trade,
    daily_returns,
    drawdown,
    format_table,
    match_fills,
    round_trips,
    summarize,
    summary_rows,
)

__all__ = [
    "FillRow",
    "OpenLot",
    "Summary",
    "Trade",
    "daily_returns",
    "drawdown",
    "format_table",
    "match_fills",
    "render_html",
    "round_trips",
    "summarize",
    "summary_rows",
]
