"""Tick-to-order latency: frame read by the live feed -> order handed to the broker.

Measured on the process's monotonic clock, live only (trader/latency.py).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.builders import replay_config
from tests.test_live_e2e import SYMBOLS, Daemon, _config
from tests.test_metrics import idle_graph
from trader.config import HttpConfig, decode_config
from trader.data.synth import synth_bars, write_csv
from trader.graph import Graph
from trader.http import Ops
from trader.latency import TickToOrder
from trader.messages import BarClosed
from trader.metrics import Metrics
from trader.notify import Notifier
from trader.runner import run_live, run_replay
from trader.sandbox import Sandbox

MS = 1_000_000


def _bar(symbol: str, ts_ns: int) -> BarClosed:
    return BarClosed(ts_ns=ts_ns, symbol=symbol, open=10, high=11, low=9, close=10.5,
                     volume=100)


class FakeMonotonic:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def test_the_latency_runs_from_the_bars_frame_to_its_orders_submission() -> None:
    """An order stamped with a bar's close time measures from that bar's frame; every
    order of that bar does."""
    clock = FakeMonotonic()
    seen: list[float] = []
    t = TickToOrder(now_ns=clock)
    t.observe = seen.append
    clock.ns = 1_000 * MS
    t.arrived([_bar("AAPL", 60), _bar("MSFT", 60)], clock())
    clock.ns += 5 * MS
    t.arrived([_bar("AAPL", 120)], clock())
    clock.ns += 2 * MS
    assert t.submitting("AAPL", 60) == pytest.approx(0.007)
    assert t.submitting("AAPL", 120) == pytest.approx(0.002)
    clock.ns += 1 * MS
    assert t.submitting("MSFT", 60) == pytest.approx(0.008)
    assert seen == pytest.approx([0.007, 0.002, 0.008])


def test_orders_no_streamed_bar_caused_are_not_measured() -> None:
    """An operator's flatten, a backfilled bar, a replay: no arrival, no observation."""
    seen: list[float] = []
    t = TickToOrder(now_ns=FakeMonotonic())
    t.observe = seen.append
    t.arrived([_bar("AAPL", 60)], 0)
    assert t.submitting("AAPL", 61) is None
    assert t.submitting("IBM", 60) is None
    assert seen == []


def test_memory_is_bounded_per_symbol() -> None:
    """Only the last few arrivals of a symbol are remembered, however long it runs."""
    t = TickToOrder(now_ns=FakeMonotonic(), keep_per_symbol=3)
    for ts in range(100):
        t.arrived([_bar("AAPL", ts)], ts)
    assert t.submitting("AAPL", 96) is None
    assert t.submitting("AAPL", 97) is not None


@pytest.mark.asyncio
async def test_the_metrics_histogram_observes_the_graphs_latencies(tmp_path: Path) -> None:
    """Attaching the metrics to a graph routes its latencies to trader_tick_to_order_seconds."""
    graph = idle_graph(tmp_path)
    reg = CollectorRegistry()
    Metrics(reg).attach(graph)
    t = graph.tick_to_order
    t.arrived([_bar("AAPL", 60)], t.now_ns())
    assert t.submitting("AAPL", 60) is not None
    assert reg.get_sample_value("trader_tick_to_order_seconds_count") == 1


@pytest.mark.asyncio
async def test_every_order_of_a_live_session_is_measured_from_its_bars_frame(
    tmp_path: Path,
) -> None:
    """Against the sandbox: one latency per order submitted, each positive and shorter
    than the session."""
    tables = synth_bars(SYMBOLS, days=30, freq="1d", seed=5)
    db = tmp_path / "live.db"
    config = _config(db)
    seen: list[float] = []
    started = anyio.current_time()
    async with Sandbox(tables, speed="max") as sb:
        daemon = Daemon(sb, config, db)

        def on_graph(g: Graph) -> None:
            daemon.graph = g
            g.tick_to_order.observe = seen.append

        async with anyio.create_task_group() as tg:
            async def run() -> None:
                await run_live(config, sandbox=sb, on_graph=on_graph)

            tg.start_soon(run)
            with anyio.fail_after(20):
                while not (daemon.graph and daemon.graph.ready  # noqa: ASYNC110
                           and daemon.feed() is not None):
                    await anyio.sleep(0.01)
            for _ in range(30):
                await sb.market.advance(bars=1)
                await daemon.settle()
            assert daemon.graph is not None
            daemon.graph.request_stop()
    elapsed = anyio.current_time() - started
    with sqlite3.connect(db) as conn:
        (orders,) = conn.execute("SELECT COUNT(*) FROM journal WHERE type = 'SubmitOrder'"
                                 ).fetchone()
    assert orders >= 4, "the session must trade"
    assert len(seen) == orders
    assert all(0 < s < elapsed for s in seen), seen


@pytest.mark.asyncio
async def test_a_replay_observes_no_tick_to_order_latency(tmp_path: Path) -> None:
    """A backtest has no frames to time: the histogram stays empty while orders flow."""
    data = tmp_path / "data"
    write_csv(synth_bars(3, days=4, seed=11), data)
    db = tmp_path / "run.db"
    config = decode_config(replay_config(data_dir=data, db=db, strategy="sma_cross",
                                         params={"fast": 2, "slow": 5}))
    reg = CollectorRegistry()
    ops = Ops(HttpConfig(listen="127.0.0.1:0", enabled=False), registry=reg,
              notifier=Notifier(None))
    with anyio.fail_after(60):
        await run_replay(config, ops=ops)
    with sqlite3.connect(db) as conn:
        (orders,) = conn.execute("SELECT COUNT(*) FROM journal WHERE type = 'SubmitOrder'"
                                 ).fetchone()
    assert orders > 0, "the scenario must trade"
    assert reg.get_sample_value("trader_tick_to_order_seconds_count") == 0
