"""No look-ahead, end to end: on random bars, no order ever fills on or before the bar whose
close produced its signal, and replay batching does not change a single fill.

Each example writes a random bar series (one or two symbols, daily bars at real
session closes or minute bars inside real sessions) as CSV, runs the full
replay (:func:`trader.runner.run_replay`: the feed, the same actor graph as
live, the simulated exchange and the SQLite journal) and reads the outcome back
from the journal. An order's ``ts_ns`` is its signal bar's close, because risk
stamps the order with the signal's time.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import random
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import anyio
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import Meta

from tests.builders import (
    bar,
    daily_closes,
    minute_closes,
    replay_config,
    write_bars_csv,
)
from trader import calendar
from trader.config import decode_config
from trader.messages import BarClosed
from trader.runner import run_replay

BATCH_SIZES = (1, 7, 4096)


class FlipFlopParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Attributes:
    weight: the long target on even bars (default 0.5, so two symbols fit in the cash).
    """

    weight: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.5


class FlipFlop:
    """A test strategy that signals on every bar: ``weight``, 0, ``weight``, 0, ... per symbol."""

    Params = FlipFlopParams

    def __init__(self, params: FlipFlopParams) -> None:
        self.params = params
        self._seen: dict[str, int] = defaultdict(int)

    def on_bar(self, bar: BarClosed) -> float | None:
        n = self._seen[bar.symbol]
        self._seen[bar.symbol] = n + 1
        return self.params.weight if n % 2 == 0 else 0.0

    def on_position(self, symbol: str, qty: float) -> None:
        return None


# The module's import name depends on how pytest imported it; resolve it from the class.
FLIP_FLOP = f"{FlipFlop.__module__}:{FlipFlop.__qualname__}"

STRATEGIES: list[tuple[str, dict[str, Any]]] = [
    (FLIP_FLOP, {}),
    ("sma_cross", {"fast": 2, "slow": 3}),
]


@st.composite
def bar_series(draw: st.DrawFn) -> list[BarClosed]:
    """Random-walk bars for one or two symbols on consecutive daily closes or minute closes.

    The second symbol skips about one bar in eight, so "the next bar of that
    symbol" is not always the next timestamp, and may stop early (a delisting,
    trader.universe, when the first symbol trades on a later day). The walk comes from a drawn seed:
    a few hundred bars drawn value by value would exceed hypothesis's buffer.
    """
    minutes = draw(st.booleans())
    count = draw(st.integers(24, 150))
    symbols = draw(st.sampled_from([("AAA",), ("AAA", "BBB")]))
    day = draw(st.dates(dt.date(2015, 1, 1), dt.date(2024, 6, 30)))
    first = calendar.sessions(day, day + dt.timedelta(days=10))[0].date.isoformat()
    times = minute_closes(first, count) if minutes else daily_closes(first, count)
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    volatility_bps = draw(st.sampled_from([10, 100, 400]))
    stop = round(count * draw(st.sampled_from([1.0, 1.0, 0.5, 0.8])))
    out: list[BarClosed] = []
    for symbol in symbols:
        close = rng.randint(500, 50_000)  # cents
        for i, ts in enumerate(times):
            if symbol != symbols[0] and ((rng.random() < 0.125 and i) or i >= stop):
                continue
            o = max(1, round(close * (1 + rng.gauss(0, volatility_bps / 4) / 10_000)))
            c = max(1, round(o * (1 + rng.gauss(0, volatility_bps) / 10_000)))
            h = max(o, c) + round(abs(rng.gauss(0, volatility_bps / 2)) * o / 10_000)
            lo = max(1, min(o, c) - round(abs(rng.gauss(0, volatility_bps / 2)) * o / 10_000))
            volume = float(rng.randint(1, 1_000_000))
            out.append(bar(symbol, ts, o / 100, h / 100, lo / 100, c / 100, volume))
            close = c
    return sorted(out, key=lambda b: (b.ts_ns, b.symbol))


class Journal(msgspec.Struct, frozen=True, kw_only=True):
    """What one replay left in its journal (every row without its run id)."""

    fills: list[tuple[Any, ...]]
    orders: list[tuple[Any, ...]]
    # (fill ts, order ts, symbol, order type, client order id) per fill
    timing: list[tuple[int, int | None, str, str | None, str]]
    # (client order id, order ts, symbol, order type, time in force, status, reason) per order
    outcomes: list[tuple[str, int, str, str, str, str, str | None]]


def _replay(bars_dir: Path, db: Path, strategy: tuple[str, dict[str, Any]], batch: int) -> Journal:
    name, params = strategy
    config = decode_config(replay_config(
        data_dir=bars_dir, db=db, strategy=name, params=params, batch_bars=batch,
        broker={"slippage_bps": 5.0, "commission": {"model": "bps", "bps": 1.0}},
    ))
    outcome = anyio.run(functools.partial(run_replay, config, db_path=str(db)))
    assert outcome.completed
    with sqlite3.connect(db) as conn:
        run = (outcome.run_id,)
        fills = conn.execute(
            "SELECT execution_id, ts_ns, client_order_id, symbol, side, qty, price,"
            " commission_cents, cum_qty, avg_price FROM fills WHERE run_id = ?"
            " ORDER BY ts_ns, execution_id", run,
        ).fetchall()
        orders = conn.execute(
            "SELECT client_order_id, ts_ns, strategy, symbol, side, qty, notional_cents,"
            " order_type, limit_price, stop_price, time_in_force, status, broker_order_id,"
            " filled_qty, avg_price, reason, updated_ns FROM orders WHERE run_id = ?"
            " ORDER BY ts_ns, client_order_id", run,
        ).fetchall()
        timing = conn.execute(
            "SELECT f.ts_ns, o.ts_ns, f.symbol, o.order_type, f.client_order_id FROM fills f"
            " LEFT JOIN orders o ON o.run_id = f.run_id AND o.client_order_id = f.client_order_id"
            " WHERE f.run_id = ? ORDER BY f.ts_ns, f.execution_id", run,
        ).fetchall()
        outcomes = conn.execute(
            "SELECT client_order_id, ts_ns, symbol, order_type, time_in_force, status, reason"
            " FROM orders WHERE run_id = ? ORDER BY ts_ns, client_order_id", run,
        ).fetchall()
    return Journal(fills=fills, orders=orders, timing=timing, outcomes=outcomes)


def _assert_no_lookahead(journal: Journal, bars: list[BarClosed]) -> None:
    closes: dict[str, list[int]] = defaultdict(list)
    for b in bars:
        closes[b.symbol].append(b.ts_ns)
    first_fill: dict[str, int] = {}
    for fill_ts, order_ts, symbol, order_type, coid in journal.timing:
        if order_ts is None and coid.startswith("delist:"):
            # A position closed because its symbol's data ended (trader.universe):
            # only on a later day than its last bar, when that is a known fact.
            last = closes[symbol][-1]
            assert calendar.ny_date(fill_ts - 1) > calendar.ny_date(last - 1), coid
            continue
        assert order_ts is not None, f"fill for an order never journaled: {coid}"
        assert order_ts in closes[symbol], f"{coid}: order time is not a bar close of {symbol}"
        assert fill_ts > order_ts, f"{coid} filled at {fill_ts}, not after its signal {order_ts}"
        first_fill.setdefault(coid, fill_ts)
        if order_type == "market":
            times = closes[symbol]
            next_bar = times[bisect.bisect_right(times, order_ts)]
            assert first_fill[coid] == next_bar, f"{coid}: market order skipped the next bar"
    # And none is skipped: a market order whose symbol trades again before its
    # day ends fills there, unless the broker canceled it (no affordable share).
    for coid, order_ts, symbol, order_type, tif, status, reason in journal.outcomes:
        times = closes[symbol]
        i = bisect.bisect_right(times, order_ts)
        if order_type != "market" or i == len(times):
            continue
        if tif == "gtc" or times[i] <= calendar.next_close_ns(order_ts):
            assert coid in first_fill or status == "canceled", f"{coid}: {status} {reason}"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(bars=bar_series(), strategy=st.sampled_from(STRATEGIES))
def test_no_order_ever_fills_on_or_before_the_bar_whose_close_produced_its_signal(
    bars: list[BarClosed], strategy: tuple[str, dict[str, Any]]
) -> None:
    """Every fill is after its signal bar's close; a market order first fills on the next bar of
    its symbol; and the journal's fills and orders are identical for batch_bars 1, 7 and 4096."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_bars_csv(root / "bars" / "bars.csv", bars)
        journals = []
        for batch in BATCH_SIZES:
            journal = _replay(root / "bars", root / f"batch{batch}.db", strategy, batch)
            _assert_no_lookahead(journal, bars)
            journals.append(journal)

    if strategy[0] == FLIP_FLOP:
        assert journals[0].fills, "a signal on every bar must trade"
    first = journals[0]
    for batch, other in zip(BATCH_SIZES[1:], journals[1:], strict=True):
        assert other.fills == first.fills, f"fills differ with batch_bars={batch}"
        assert other.orders == first.orders, f"orders differ with batch_bars={batch}"
