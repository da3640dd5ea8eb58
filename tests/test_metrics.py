"""Metrics: what the journal says moves the counters; snapshots come from the graph.

Every test reads a fresh ``CollectorRegistry``, never the global one.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tests.builders import replay_config
from trader.actors.base import JournalRecord
from trader.actors.feed import LiveFeed
from trader.actors.recorder import RunInfo
from trader.brokers.simulated import Exchange, SimulatedBroker
from trader.channels import Channel, InFlight
from trader.clock import ReplayClock
from trader.config import HttpConfig, LiveFeedConfig, decode_config
from trader.data.synth import synth_bars, write_csv
from trader.graph import Adapters, Graph, build_graph
from trader.http import Ops
from trader.messages import (
    AccountUpdated,
    BarClosed,
    BarsClosed,
    ClientOrderId,
    EquitySampled,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    OrderRejected,
    PositionChanged,
    RiskStateChanged,
    SignalEmitted,
    SignalScored,
    SubmitOrder,
)
from trader.metrics import Metrics
from trader.notify import Notifier
from trader.runner import run_replay
from trader.secrets import Credentials

COID = ClientOrderId("sma:AAPL:1700000000000000000:buy")


def idle_graph(tmp_path: Path) -> Graph:
    """A replay graph, wired but not started (call from async code: it makes events)."""
    config = decode_config({"run": {"db": str(tmp_path / "idle.db")}})
    inflight = InFlight()
    clock = ReplayClock()
    broker = SimulatedBroker(Exchange(config.broker), Channel("broker", 8, inflight), clock)

    def no_feed(graph: Graph) -> LiveFeed:  # never started in these tests
        raise AssertionError("the idle graph does not run")

    run = RunInfo(run_id=uuid.uuid4().hex, mode="replay", started_wall_ns=0, config="{}",
                  data_hash="", code_version="test")
    return build_graph(config, Adapters(clock=clock, broker=broker, feed=no_feed, mode="replay"),
                       run, inflight=inflight)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _order_flow() -> list[JournalRecord]:
    bar = BarClosed(ts_ns=1, symbol="AAPL", open=10, high=11, low=9, close=10.5, volume=100)
    signal = SignalEmitted(ts_ns=1, strategy="sma", symbol="AAPL", target_weight=1.0)
    flow: list[tuple[str, Message]] = [
        ("strategy", BarsClosed(ts_ns=1, bars=(bar, bar))),
        ("strategy", signal),
        ("scorer", SignalScored(ts_ns=1, signal=signal)),
        ("scorer", SignalScored(ts_ns=1, signal=signal, probability=0.7, passed=True)),
        ("scorer", SignalScored(ts_ns=1, signal=signal, probability=0.2, passed=False)),
        ("risk", SubmitOrder(ts_ns=1, client_order_id=COID, strategy="sma", symbol="AAPL",
                             side="buy", notional_cents=100_000)),
        ("execution", OrderAccepted(ts_ns=2, client_order_id=COID, symbol="AAPL")),
        ("execution", OrderFilled(ts_ns=3, client_order_id=COID, symbol="AAPL",
                                  execution_id="e1", side="buy", qty=5, price=10.0,
                                  commission_cents=0, cum_qty=5, avg_price=10.0,
                                  status="partially_filled")),
        ("execution", OrderFilled(ts_ns=4, client_order_id=COID, symbol="AAPL",
                                  execution_id="e2", side="buy", qty=5, price=10.0,
                                  commission_cents=0, cum_qty=10, avg_price=10.0,
                                  status="filled")),
        ("risk", PositionChanged(ts_ns=4, symbol="AAPL", qty=10, avg_price=10.0,
                                 realized_pnl_cents=0)),
        ("risk", OrderDenied(ts_ns=5, client_order_id=ClientOrderId("x:MSFT:5:buy"),
                             symbol="MSFT", reason_code="max_position", reason="limit")),
        ("risk", SubmitOrder(ts_ns=6, client_order_id=ClientOrderId("x:IBM:6:buy"),
                             strategy="x", symbol="IBM", side="buy", qty=1)),
        ("execution", OrderRejected(ts_ns=6, client_order_id=ClientOrderId("x:IBM:6:buy"),
                                    symbol="IBM", reason="no", code="40310000")),
        ("risk", SubmitOrder(ts_ns=7, client_order_id=ClientOrderId("x:IBM:7:sell"),
                             strategy="x", symbol="IBM", side="sell", qty=1)),
    ]
    return flow


def test_journaled_orders_fills_and_denials_move_their_counters() -> None:
    """Each journaled fact is counted once, by its low-cardinality label."""
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.on_commit(_order_flow(), 0.003)
    assert sample(reg, "trader_journal_records_total") == 14
    assert sample(reg, "trader_journal_write_seconds_count") == 1
    assert sample(reg, "trader_bars_total") == 2
    assert sample(reg, "trader_signals_total") == 1
    assert sample(reg, "trader_signals_scored_total", outcome="unscored") == 1
    assert sample(reg, "trader_signals_scored_total", outcome="passed") == 1
    assert sample(reg, "trader_signals_scored_total", outcome="blocked") == 1
    assert sample(reg, "trader_scorer_probability_count") == 2
    assert sample(reg, "trader_orders_submitted_total", side="buy") == 2
    assert sample(reg, "trader_orders_submitted_total", side="sell") == 1
    assert sample(reg, "trader_fills_total", side="buy") == 2
    assert sample(reg, "trader_orders_closed_total", status="filled") == 1
    assert sample(reg, "trader_orders_closed_total", status="rejected") == 1
    assert sample(reg, "trader_order_rejections_total", code="40310000") == 1
    assert sample(reg, "trader_risk_denials_total", reason="max_position") == 1
    assert sample(reg, "trader_risk_denials_total", reason="order_pending") == 0
    assert sample(reg, "trader_open_orders") == 1  # the IBM sell
    assert sample(reg, "trader_positions_open") == 1
    m.observe("execution", OrderCanceled(ts_ns=8, client_order_id=ClientOrderId("x:IBM:7:sell"),
                                         symbol="IBM"))
    assert sample(reg, "trader_open_orders") == 0
    assert sample(reg, "trader_orders_closed_total", status="canceled") == 1


def test_no_series_carries_an_order_id_or_a_symbol() -> None:
    """Labels stay low-cardinality: order ids and symbols never reach the exposition."""
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.on_commit(_order_flow(), 0.001)
    text = m.exposition().decode()
    for needle in ("AAPL", "MSFT", "IBM", "sma:", "x:IBM"):
        assert needle not in text
    allowed = {"side", "status", "code", "reason", "outcome", "actor", "state", "condition",
               "version", "python", "le"}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            assert set(s.labels) <= allowed, (s.name, s.labels)


def test_equity_drawdown_and_pnl_follow_the_account_and_equity_samples() -> None:
    """Equity comes from the latest sample; drawdown is measured from the peak seen."""
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.observe("execution", AccountUpdated(
        ts_ns=1, cash_cents=10_000_000, equity_cents=10_000_000, buying_power_cents=0,
        gross_exposure_cents=0, realized_pnl_cents=0, unrealized_pnl_cents=0))
    assert sample(reg, "trader_equity_dollars") == 100_000.0
    assert sample(reg, "trader_cash_dollars") == 100_000.0
    m.observe("risk", EquitySampled(ts_ns=3, ts=(2, 3), equity_cents=(12_000_000, 10_800_000),
                                    exposure_cents=(5_000_000, 4_000_000)))
    assert sample(reg, "trader_equity_dollars") == 108_000.0
    assert sample(reg, "trader_equity_peak_dollars") == 120_000.0
    assert sample(reg, "trader_drawdown_ratio") == pytest.approx(0.1)
    assert sample(reg, "trader_gross_exposure_dollars") == 40_000.0
    m.observe("risk", AccountUpdated(
        ts_ns=4, cash_cents=6_000_000, equity_cents=12_600_000, buying_power_cents=0,
        gross_exposure_cents=6_600_000, realized_pnl_cents=150_000, unrealized_pnl_cents=-2_512))
    assert sample(reg, "trader_realized_pnl_dollars") == 1_500.0
    assert sample(reg, "trader_unrealized_pnl_dollars") == -25.12
    assert sample(reg, "trader_drawdown_ratio") == 0.0
    status = m.status()
    assert status["equity"] == 126_000.0
    assert status["cash"] == 60_000.0


@pytest.mark.asyncio
async def test_snapshots_come_from_the_graph_and_feed_counters_survive_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Inbox depth and restarts are read at scrape time; a new feed incarnation adds on."""
    graph = idle_graph(tmp_path)
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.attach(graph)
    graph.inboxes["risk"].send_nowait(RiskStateChanged(ts_ns=0, state="ACTIVE",
                                                       previous="ACTIVE", reason=""))
    graph.supervisor.restart_counts["strategy"] = 2

    def feed() -> LiveFeed:
        return LiveFeed(graph.outbox("feed"), config=LiveFeedConfig(),
                        stream_url="ws://127.0.0.1:1/v2/iex", data_url="http://127.0.0.1:1",
                        credentials=Credentials(key_id="k", secret_key="s"),
                        clock=graph.clock, symbols=["AAPL"])

    first, second = feed(), feed()
    first.received, first.emitted, first.reconnects = 10, 9, 1
    first.dropped_invalid["crossed"] = 1
    first.quality_findings["outlier_return"] = 1
    monkeypatch.setattr(graph.supervisor, "actors", lambda: [first])
    m.exposition()
    first.received, first.emitted = 12, 11  # the rest of its life, before it died
    monkeypatch.setattr(graph.supervisor, "actors", lambda: [second])
    second.received, second.emitted = 3, 3
    second.dropped_invalid["crossed"] = 2
    second.quality_findings["outlier_return"] = 2
    m.exposition()
    assert sample(reg, "trader_inbox_depth", actor="risk") == 1
    # A replay graph: the journal's backlog is [replay] journal_backlog, not [channels].
    assert sample(reg, "trader_inbox_capacity", actor="recorder") == 2048
    assert sample(reg, "trader_actor_restarts_total", actor="strategy") == 2
    assert sample(reg, "trader_feed_bars_received_total") == 15
    assert sample(reg, "trader_feed_bars_emitted_total") == 14
    assert sample(reg, "trader_feed_reconnects_total") == 1
    assert sample(reg, "trader_feed_bars_invalid_total", reason="crossed") == 3
    assert sample(reg, "trader_feed_bars_invalid_total", reason="non_finite") == 0
    assert sample(reg, "trader_feed_data_quality_findings_total", kind="outlier_return") == 3
    assert sample(reg, "trader_feed_data_quality_findings_total", kind="suspected_split") == 0
    assert sample(reg, "trader_ready") == 0  # not started


@pytest.mark.asyncio
async def test_the_risk_state_is_the_last_one_journaled(tmp_path: Path) -> None:
    """HALTED fails readiness with its reason; REDUCING still trades; ACTIVE again is ready."""
    graph = idle_graph(tmp_path)
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.attach(graph)

    def risk_ok() -> bool:
        return next(c for c in m.readiness() if c.name == "risk").ok

    m.observe("risk", RiskStateChanged(ts_ns=1, state="HALTED", previous="ACTIVE",
                                       reason="operator"))
    m.exposition()
    assert sample(reg, "trader_risk_state", state="HALTED") == 1
    assert sample(reg, "trader_risk_state", state="ACTIVE") == 0
    assert not risk_ok()
    assert "operator" in next(c for c in m.readiness() if c.name == "risk").detail
    m.observe("risk", RiskStateChanged(ts_ns=2, state="REDUCING", previous="HALTED",
                                       reason="stale_feed"))
    assert risk_ok()
    m.observe("risk", RiskStateChanged(ts_ns=3, state="ACTIVE", previous="REDUCING",
                                       reason="resume"))
    m.exposition()
    assert risk_ok()
    assert sample(reg, "trader_risk_state", state="ACTIVE") == 1
    assert m.status()["risk_state"] == "ACTIVE"


@pytest.mark.asyncio
async def test_the_loop_monitor_sees_a_blocked_loop() -> None:
    """A loop blocked longer than the threshold makes the process unhealthy until it recovers."""
    m = Metrics(CollectorRegistry(), max_loop_lag_s=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: m.watch_loop(interval=0.02))
        with anyio.fail_after(5):
            while m.last_tick is None:  # noqa: ASYNC110 (the monitor signals nothing)
                await anyio.sleep(0.01)
        assert m.healthy().ok
        time.sleep(0.3)  # noqa: ASYNC251 (the blocked loop under test)
        with anyio.fail_after(5):
            while m.last_lag_s < 0.1:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert not m.healthy().ok
        with anyio.fail_after(5):
            while m.last_lag_s >= 0.1:  # noqa: ASYNC110
                await anyio.sleep(0.005)
        assert m.healthy().ok
        tg.cancel_scope.cancel()
    assert (m.registry.get_sample_value("trader_event_loop_lag_seconds_bucket", {"le": "+Inf"})
            or 0) >= 3


def test_every_metric_follows_the_naming_rules() -> None:
    """trader_ prefix, _total on counters only, base units in the names."""
    m = Metrics(CollectorRegistry())
    families = [*m.registry.collect()]
    names = {f.name for f in families}
    assert all(n.startswith("trader_") for n in names)
    for f in families:
        if f.type == "counter":
            assert not f.name.endswith("_total")  # the client adds it to the sample
        assert not re.search(r"_(ms|milliseconds|cents|minutes)$", f.name), f.name
    assert {"trader_fills_total", "trader_inbox_depth", "trader_actor_restarts_total",
            "trader_event_loop_lag_seconds_bucket", "trader_journal_write_seconds_sum",
            "trader_feed_bars_invalid_total", "trader_build_info"} <= m.series_names()


@pytest.mark.asyncio
async def test_a_replay_run_counts_what_its_journal_holds(tmp_path: Path) -> None:
    """Every journal row is counted once; bars, fills and equity match the journal."""
    data = tmp_path / "data"
    write_csv(synth_bars(3, days=4, seed=11), data)
    db = tmp_path / "run.db"
    config = decode_config(replay_config(data_dir=data, db=db, strategy="sma_cross",
                                         params={"fast": 2, "slow": 5}))
    reg = CollectorRegistry()
    ops = Ops(HttpConfig(listen="127.0.0.1:0"), registry=reg, notifier=Notifier(None))
    with anyio.fail_after(60):
        outcome = await run_replay(config, ops=ops)
    with sqlite3.connect(db) as conn:
        (rows,) = conn.execute("SELECT COUNT(*) FROM journal").fetchone()
        (fills,) = conn.execute("SELECT COUNT(*) FROM fills").fetchone()
        (equity,) = conn.execute(
            "SELECT equity_cents FROM equity ORDER BY ts_ns DESC LIMIT 1").fetchone()
    assert fills > 0, "the scenario must trade"
    assert sample(reg, "trader_journal_records_total") == rows
    assert (sample(reg, "trader_fills_total", side="buy") or 0) + (
        sample(reg, "trader_fills_total", side="sell") or 0) == fills
    assert sample(reg, "trader_bars_total") == outcome.bars
    assert sample(reg, "trader_equity_dollars") == equity / 100
    assert (sample(reg, "trader_journal_write_seconds_count") or 0) > 0
    if shutil.which("promtool"):
        proc = await anyio.run_process(["promtool", "check", "metrics"],
                                       input=ops.metrics.exposition(), check=False)
        assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()
