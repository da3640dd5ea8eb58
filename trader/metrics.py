"""Every Prometheus metric of the daemon, declared once, in :class:`Metrics`.

Metric names are a public contract (house style): the ``trader_`` prefix, base
units (seconds, dollars, ratios), ``_total`` for counters. Labels stay
low-cardinality (actor, side, status, reason, state): never an order id,
never a symbol.

Four sources feed them, so the hot path pays (almost) nothing:

* **The journal.** The recorder hands every committed batch to
  :meth:`Metrics.on_commit`. Orders, fills, denials, equity, P&L, the risk
  state, the feed status and reconciliations are counted from the facts as
  they were journaled: a metric never claims something the journal lacks.
* **Snapshots on scrape.** Inbox depths and received counts
  (``Channel.statistics()``), restarts (``Supervisor.restart_counts``) and the
  live feed's counters are read when Prometheus scrapes (:class:`_GraphCollector`).
* **The loop monitor** (:meth:`Metrics.watch_loop`): a task that measures how
  late the event loop wakes it, every 0.5 s.
* **Tick-to-order** (:mod:`trader.latency`): the graph's matcher of bar
  arrivals (live feed) to orders (execution) observes the histogram.

The same observations answer ``/readyz`` (:meth:`Metrics.readiness`) and
``/status`` (:meth:`Metrics.status`). What this module is not: a server
(:mod:`trader.http`) or a history (the journal is).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, get_args

import anyio
import msgspec
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trader import __version__, calendar
from trader.actors.base import JournalRecord
from trader.actors.feed import LiveFeed
from trader.data.live_quality import LIVE_KINDS
from trader.feedcheck import Reason
from trader.messages import (
    AccountUpdated,
    BarsClosed,
    BrokerCheck,
    BrokerHealthChanged,
    DriftDetected,
    DriftMeasured,
    EquitySampled,
    ExitReason,
    ExitTriggered,
    FeedStatusChanged,
    Message,
    ModelSwapped,
    ModelSwapRefused,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    PositionChanged,
    ReconciliationDone,
    RiskStateChanged,
    SignalEmitted,
    SignalScored,
    SubmitOrder,
    TradingState,
)

if TYPE_CHECKING:
    from trader.graph import Graph

log = structlog.get_logger("trader.metrics")

NS_PER_S = 1_000_000_000
LOOP_INTERVAL_S = 0.5
"""How often the loop monitor wakes; a blocked loop shows as lag past this."""

_SIDES = ("buy", "sell")
_CLOSED = ("filled", "canceled", "rejected", "expired", "replaced")
_DENIALS = ("order_pending", "trading_state", "max_position", "insufficient_buying_power")
_STATES: tuple[TradingState, ...] = get_args(TradingState)
_FEED_COUNTERS = ("received", "emitted", "backfilled", "duplicates", "malformed_frames",
                  "reconnects")


class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """One readiness condition: its name, whether it holds, and why not."""

    name: str
    ok: bool
    detail: str


def _dollars(cents: int) -> float:
    return cents / 100.0


class Metrics:
    """The daemon's metrics over ``registry`` (the global one in production,
    a fresh one per test), and what they observed.

    Args:
        registry: where every metric is registered.
        max_loop_lag_s: loop lag beyond which the process counts as unhealthy.

    Call :meth:`attach` with the graph before scraping; give :meth:`on_commit`
    to the recorder (``build_graph(on_journal_commit=...)``); run
    :meth:`watch_loop` as a task.
    """

    def __init__(self, registry: CollectorRegistry, *, max_loop_lag_s: float = 2.0) -> None:
        self.registry = registry
        self.max_loop_lag_s = max_loop_lag_s
        self._graph: Graph | None = None
        r = registry

        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labelnames=labels, registry=r)

        def gauge(name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
            return Gauge(name, doc, labelnames=labels, registry=r)

        # --- from the journal ------------------------------------------------------
        self.journal_records = counter("trader_journal_records_total",
                                       "Journal records committed to SQLite.")
        self.journal_write = Histogram(
            "trader_journal_write_seconds", "Time to write and commit one journal batch.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0),
            registry=r,
        )
        self.bars = counter("trader_bars_total", "Bars the strategy consumed (as journaled).")
        self.signals = counter("trader_signals_total", "Signals the strategy emitted.")
        self.signals_scored = counter(
            "trader_signals_scored_total",
            "Scored signals by outcome: passed, blocked, or unscored (rule-only).", ["outcome"])
        self.score = Histogram(
            "trader_scorer_probability",
            "The model's probability per scored signal (its distribution drifting is the "
            "model drift signal).",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0), registry=r,
        )
        # Drift (trader.ml.drift): set from the scorer's journaled DriftMeasured /
        # DriftDetected, so they lag the window by at most a quarter of it.
        self.feature_psi = gauge(
            "trader_model_feature_psi",
            "Population stability index of each model feature over the scorer's window "
            "against the training window.", ["feature"])
        self.score_psi = gauge(
            "trader_model_score_psi",
            "Population stability index of the model's scores over the scorer's window "
            "against the training window.")
        self.drift_threshold = gauge(
            "trader_model_drift_psi_threshold",
            "The PSI above which the scorer calls drift ([scorer] drift_psi_threshold).")
        self.drift_breach = gauge("trader_model_drift_breach",
                                  "1 during a drift breach episode, else 0.")
        self.drift_events = counter("trader_model_drift_events_total",
                                    "Drift breach episodes the scorer journaled.")
        self.model_swaps = counter(
            "trader_model_swaps_total",
            "Champion changes the running scorer met: swapped in, or refused (integrity).",
            ["outcome"])
        self.orders_submitted = counter("trader_orders_submitted_total",
                                        "Orders risk sent to execution.", ["side"])
        self.orders_closed = counter("trader_orders_closed_total",
                                     "Orders that reached a final status, by status.", ["status"])
        self.fills = counter("trader_fills_total", "Executions (partial or full).", ["side"])
        self.rejections = counter("trader_order_rejections_total",
                                  "Orders the broker rejected, by broker error code.", ["code"])
        self.denials = counter("trader_risk_denials_total",
                               "Orders risk refused, by reason code.", ["reason"])
        self.reconciliations = counter("trader_reconciliations_total",
                                       "Start-up reconciliations completed (one per execution "
                                       "start).")
        self.open_orders = gauge("trader_open_orders", "Orders submitted and not final.")
        self.positions_open = gauge("trader_positions_open", "Symbols with a non-zero position.")
        self.equity = gauge("trader_equity_dollars", "Account equity, marked to the last bar.")
        self.cash = gauge("trader_cash_dollars", "Cash.")
        self.exposure = gauge("trader_gross_exposure_dollars", "Sum of |position value|.")
        self.realized = gauge("trader_realized_pnl_dollars",
                              "Realised P&L (as of the last fill).")
        self.unrealized = gauge("trader_unrealized_pnl_dollars",
                                "Unrealised P&L (as of the last fill).")
        self.equity_peak = gauge("trader_equity_peak_dollars",
                                 "Highest equity seen since the process started.")
        self.drawdown = gauge("trader_drawdown_ratio",
                              "Drawdown from the equity peak: (peak - equity) / peak.")
        self.broker_healthy = gauge(
            "trader_broker_healthy",
            "1 while the broker passes each health check (order_stream, error_rate, "
            "clock_skew), 0 while it fails it.", ["condition"])
        self.risk_state_changes = counter(
            "trader_risk_state_changes_total",
            "Trading state changes, by the condition behind each (a breaker, operator, "
            "restored).", ["condition"])
        self.exits = counter(
            "trader_exits_triggered_total",
            "Positions risk closed for an exit level a bar breached ([risk] stop_loss_pct, "
            "take_profit_pct, trailing_stop_pct), by reason.", ["reason"])
        for reason in get_args(ExitReason):
            self.exits.labels(reason)
        for check in get_args(BrokerCheck):
            self.broker_healthy.labels(check).set(1)
        # --- live latency ----------------------------------------------------------
        self.tick_to_order = Histogram(
            "trader_tick_to_order_seconds",
            "From the live feed reading a bar's frame to execution handing the order that "
            "bar caused to the broker (monotonic clock; live only, see trader/latency.py).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0),
            registry=r,
        )
        # --- the loop --------------------------------------------------------------
        self.loop_lag = Histogram(
            "trader_event_loop_lag_seconds",
            f"How late the event loop woke a {LOOP_INTERVAL_S:g} s timer.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=r,
        )
        self.loop_lag_last = gauge("trader_event_loop_lag_last_seconds",
                                   "The loop lag at the monitor's last wake-up.")
        build = gauge("trader_build_info", "The running version (value 1).",
                      ["version", "python"])
        build.labels(__version__, platform.python_version()).set(1)

        for side in _SIDES:
            self.orders_submitted.labels(side)
            self.fills.labels(side)
        for status in _CLOSED:
            self.orders_closed.labels(status)
        for reason in _DENIALS:
            self.denials.labels(reason)
        for outcome in ("passed", "blocked", "unscored"):
            self.signals_scored.labels(outcome)
        for outcome in ("swapped", "refused"):
            self.model_swaps.labels(outcome)

        # What the journal told us, for /status and /readyz.
        self.last_bar_ns = 0
        self.equity_cents: int | None = None
        self.cash_cents: int | None = None
        self.exposure_cents = 0
        self.realized_cents = 0
        self.unrealized_cents = 0
        self.peak_cents = 0
        self.positions: dict[str, tuple[float, float]] = {}
        self.open_order_ids: set[str] = set()
        self.risk_state: TradingState = "ACTIVE"
        self.risk_reason = ""
        self.feed_status: str | None = None
        self.reconciled = 0
        # The feed's restart count when its last status was seen: a restarted
        # feed has not connected yet, whatever its predecessor last said.
        self._feed_incarnation = 0
        self._reconciled_event: anyio.Event | None = None
        self.last_lag_s = 0.0
        self.last_tick: float | None = None
        self._handlers: dict[type[Message], Callable[[str, Any], None]] = {
            BarsClosed: self._on_bars,
            SignalEmitted: lambda s, m: self.signals.inc(),
            SignalScored: self._on_scored,
            DriftMeasured: self._on_drift,
            DriftDetected: self._on_drift,
            ModelSwapped: lambda s, m: self.model_swaps.labels("swapped").inc(),
            ModelSwapRefused: lambda s, m: self.model_swaps.labels("refused").inc(),
            SubmitOrder: self._on_submit,
            OrderDenied: lambda s, m: self.denials.labels(m.reason_code).inc(),
            OrderAccepted: lambda s, m: self._open(m.client_order_id),
            OrderFilled: self._on_fill,
            OrderCanceled: lambda s, m: self._close(m.client_order_id, "canceled"),
            OrderExpired: lambda s, m: self._close(m.client_order_id, "expired"),
            OrderReplaced: lambda s, m: self._close(m.client_order_id, "replaced"),
            OrderRejected: self._on_rejected,
            PositionChanged: self._on_position,
            AccountUpdated: self._on_account,
            EquitySampled: self._on_equity,
            RiskStateChanged: self._on_risk_state,
            ExitTriggered: lambda s, m: self.exits.labels(m.reason).inc(),
            ReconciliationDone: self._on_reconciled,
            FeedStatusChanged: self._on_feed_status,
            BrokerHealthChanged: lambda s, m: self.broker_healthy.labels(m.check).set(
                float(m.healthy)),
        }
        self._collector = _GraphCollector(self)
        r.register(self._collector)

    # --- wiring ----------------------------------------------------------------------

    def attach(self, graph: Graph) -> None:
        """Read snapshots (channels, restarts, the feed) from ``graph`` from now on,
        and observe its tick-to-order latencies."""
        self._graph = graph
        graph.tick_to_order.observe = self.tick_to_order.observe

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def series_names(self) -> set[str]:
        """Every series name this object can expose (``_total``, ``_bucket`` ... included)."""
        names: set[str] = set()
        families = [*self.registry.collect(), *self._collector.describe()]
        for fam in families:
            if not fam.name.startswith("trader_"):
                continue
            if fam.type == "counter":
                names |= {fam.name + "_total", fam.name + "_created"}
            elif fam.type == "histogram":
                names |= {fam.name + s for s in ("_bucket", "_sum", "_count", "_created")}
            else:
                names.add(fam.name)
        return names

    # --- the journal -------------------------------------------------------------------

    def on_commit(self, batch: Sequence[JournalRecord], seconds: float) -> None:
        """The recorder committed ``batch`` in ``seconds``: count what it held."""
        self.journal_write.observe(seconds)
        self.journal_records.inc(len(batch))
        handlers = self._handlers
        for source, msg in batch:
            handler = handlers.get(type(msg))
            if handler is not None:
                handler(source, msg)

    def observe(self, source: str, msg: Message) -> None:
        """Count one journaled message (what :meth:`on_commit` does per record)."""
        handler = self._handlers.get(type(msg))
        if handler is not None:
            handler(source, msg)

    def _on_bars(self, source: str, msg: BarsClosed) -> None:
        self.bars.inc(len(msg.bars))
        self.last_bar_ns = max(self.last_bar_ns, msg.ts_ns)

    def _on_scored(self, source: str, msg: SignalScored) -> None:
        if msg.probability is None:
            outcome = "unscored" if msg.passed else "blocked"
        else:
            self.score.observe(msg.probability)
            outcome = "passed" if msg.passed else "blocked"
        self.signals_scored.labels(outcome).inc()

    def _on_drift(self, source: str, msg: DriftMeasured | DriftDetected) -> None:
        for name, value in zip(msg.features, msg.feature_psi, strict=True):
            self.feature_psi.labels(name).set(value)
        self.score_psi.set(msg.score_psi)
        self.drift_threshold.set(msg.threshold)
        if isinstance(msg, DriftDetected):
            self.drift_events.inc()
            self.drift_breach.set(1)
        else:
            self.drift_breach.set(float(msg.in_breach))

    def _on_submit(self, source: str, msg: SubmitOrder) -> None:
        self.orders_submitted.labels(msg.side).inc()
        self._open(msg.client_order_id)

    def _open(self, coid: str) -> None:
        self.open_order_ids.add(coid)
        self.open_orders.set(len(self.open_order_ids))

    def _close(self, coid: str, status: str) -> None:
        self.orders_closed.labels(status).inc()
        self.open_order_ids.discard(coid)
        self.open_orders.set(len(self.open_order_ids))

    def _on_fill(self, source: str, msg: OrderFilled) -> None:
        self.fills.labels(msg.side).inc()
        if msg.status == "filled":
            self._close(msg.client_order_id, "filled")

    def _on_rejected(self, source: str, msg: OrderRejected) -> None:
        self.rejections.labels(msg.code or "none").inc()
        self._close(msg.client_order_id, "rejected")

    def _on_position(self, source: str, msg: PositionChanged) -> None:
        if msg.qty:
            self.positions[msg.symbol] = (msg.qty, msg.avg_price)
        else:
            self.positions.pop(msg.symbol, None)
        self.positions_open.set(len(self.positions))

    def _on_account(self, source: str, msg: AccountUpdated) -> None:
        self.cash_cents = msg.cash_cents
        self.cash.set(_dollars(msg.cash_cents))
        if source == "risk":
            # Execution's reconciliation reports the broker's cash and equity
            # only; exposure and P&L come from risk's ledger.
            self.exposure_cents = msg.gross_exposure_cents
            self.realized_cents = msg.realized_pnl_cents
            self.unrealized_cents = msg.unrealized_pnl_cents
            self.exposure.set(_dollars(msg.gross_exposure_cents))
            self.realized.set(_dollars(msg.realized_pnl_cents))
            self.unrealized.set(_dollars(msg.unrealized_pnl_cents))
        self._set_equity(msg.equity_cents, msg.equity_cents)

    def _on_equity(self, source: str, msg: EquitySampled) -> None:
        if msg.equity_cents:
            self.exposure_cents = msg.exposure_cents[-1]
            self.exposure.set(_dollars(self.exposure_cents))
            self._set_equity(msg.equity_cents[-1], max(msg.equity_cents))

    def _set_equity(self, cents: int, peak: int) -> None:
        self.equity_cents = cents
        self.peak_cents = max(self.peak_cents, peak)
        self.equity.set(_dollars(cents))
        self.equity_peak.set(_dollars(self.peak_cents))
        if self.peak_cents > 0:
            self.drawdown.set(max(self.peak_cents - cents, 0) / self.peak_cents)

    def _on_risk_state(self, source: str, msg: RiskStateChanged) -> None:
        # Journaled on every change (the state outlives a risk restart), so
        # the last one is the state now.
        self.risk_state = msg.state
        self.risk_reason = msg.reason
        self.risk_state_changes.labels(msg.breaker or "unknown").inc()

    def _on_feed_status(self, source: str, msg: FeedStatusChanged) -> None:
        self.feed_status = msg.status
        self._feed_incarnation = self._restarts("feed")

    def _on_reconciled(self, source: str, msg: ReconciliationDone) -> None:
        self.reconciliations.inc()
        self.reconciled += 1
        if self._reconciled_event is not None:
            self._reconciled_event.set()

    async def wait_reconciled(self) -> None:
        """Return once the first reconciliation has been journaled."""
        if self.reconciled:
            return
        if self._reconciled_event is None:
            self._reconciled_event = anyio.Event()
        await self._reconciled_event.wait()

    # --- the loop ----------------------------------------------------------------------

    async def watch_loop(self, *, interval: float = LOOP_INTERVAL_S) -> None:
        """Measure event-loop lag every ``interval`` seconds until cancelled."""
        while True:
            start = anyio.current_time()
            await anyio.sleep(interval)
            now = anyio.current_time()
            lag = max(now - start - interval, 0.0)
            self.loop_lag.observe(lag)
            self.loop_lag_last.set(lag)
            self.last_lag_s, self.last_tick = lag, now
            if lag > self.max_loop_lag_s:
                # Something ran on the loop without yielding: find it in the
                # logs around this line (the blocked call itself cannot log).
                log.warning("event loop blocked", lag_s=round(lag, 3),
                            threshold_s=self.max_loop_lag_s)

    def healthy(self) -> Condition:
        """Whether the loop is responsive: the monitor ran lately and was not late."""
        if self.last_tick is None:
            return Condition(name="event_loop", ok=True, detail="starting")
        age = anyio.current_time() - self.last_tick
        if age > LOOP_INTERVAL_S + self.max_loop_lag_s:
            return Condition(name="event_loop", ok=False,
                             detail=f"the loop monitor last ran {age:.2f}s ago")
        if self.last_lag_s > self.max_loop_lag_s:
            return Condition(name="event_loop", ok=False,
                             detail=f"loop lag {self.last_lag_s:.3f}s > {self.max_loop_lag_s}s")
        return Condition(name="event_loop", ok=True, detail=f"lag {self.last_lag_s:.3f}s")

    # --- snapshots ---------------------------------------------------------------------

    def _restarts(self, actor: str) -> int:
        g = self._graph
        return g.supervisor.restart_counts.get(actor, 0) if g is not None else 0

    def live_feed(self) -> LiveFeed | None:
        g = self._graph
        if g is None:
            return None
        for actor in g.supervisor.actors():
            if isinstance(actor, LiveFeed):
                return actor
        return None

    def _alive(self, name: str) -> bool:
        g = self._graph
        return g is not None and any(a.name == name for a in g.supervisor.actors())

    def readiness(self) -> list[Condition]:
        """Every condition ``/readyz`` requires, in start-up order."""
        g = self._graph
        out: list[Condition] = []
        if g is None or not g.ready:
            out.append(Condition(name="graph", ok=False, detail="the actors are starting"))
        elif g.stopping:
            out.append(Condition(name="graph", ok=False, detail="shutting down"))
        else:
            out.append(Condition(name="graph", ok=True, detail="every actor started"))
        expected = 1 + self._restarts("execution")
        reconciled = self.reconciled >= expected
        if not self._alive("execution"):
            out.append(Condition(name="trade_stream", ok=False,
                                 detail="the execution actor is not running"))
        else:
            # Execution listens to the broker's updates before it reconciles,
            # so a journaled reconciliation of this incarnation proves it listened.
            out.append(Condition(name="trade_stream", ok=reconciled,
                                 detail="listening" if reconciled else "connecting"))
        out.append(Condition(
            name="reconciliation", ok=reconciled,
            detail=f"{self.reconciled} of {expected} execution starts reconciled"))
        out.append(self._feed_condition())
        state = self.risk_state
        out.append(Condition(name="risk", ok=state != "HALTED",
                             detail=state + (f": {self.risk_reason}" if state != "ACTIVE"
                                             and self.risk_reason else "")))
        return out

    def _feed_condition(self) -> Condition:
        if not self._alive("feed"):
            return Condition(name="feed", ok=False, detail="the feed is not running")
        if self.live_feed() is None:
            return Condition(name="feed", ok=True, detail="replay")
        status = self.feed_status if self._feed_incarnation == self._restarts("feed") else None
        return Condition(name="feed", ok=status == "connected",
                         detail=status or "connecting")

    def last_bar_time_ns(self) -> int:
        feed = self.live_feed()
        return max(feed.last_bar_ns if feed is not None else 0, self.last_bar_ns)

    def status(self) -> dict[str, Any]:
        """What ``/status`` and the HTML page show (JSON-ready)."""
        g = self._graph
        last_bar = self.last_bar_time_ns()
        checks = self.readiness()
        return {
            "version": __version__,
            "run_id": g.run_info.run_id if g is not None else None,
            "mode": g.adapters.mode if g is not None else None,
            "ready": all(c.ok for c in checks),
            "conditions": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
            "risk_state": self.risk_state,
            "feed_status": self.feed_status,
            "last_bar_ns": last_bar or None,
            "last_bar_age_s": self._bar_age_s(last_bar),
            "equity": None if self.equity_cents is None else _dollars(self.equity_cents),
            "cash": None if self.cash_cents is None else _dollars(self.cash_cents),
            "gross_exposure": _dollars(self.exposure_cents),
            "realized_pnl": _dollars(self.realized_cents),
            "unrealized_pnl": _dollars(self.unrealized_cents),
            "drawdown": ((self.peak_cents - (self.equity_cents or 0)) / self.peak_cents
                         if self.peak_cents and self.equity_cents is not None else 0.0),
            "open_orders": len(self.open_order_ids),
            "positions": {s: {"qty": q, "avg_price": p}
                          for s, (q, p) in sorted(self.positions.items())},
            "restarts": dict(g.supervisor.restart_counts) if g is not None else {},
        }

    def _bar_age_s(self, last_bar_ns: int) -> float | None:
        g = self._graph
        if g is None or not last_bar_ns:
            return None
        # The graph's clock: market time, which in the sandbox runs fast.
        return max(g.clock.now_ns() - last_bar_ns, 0) / NS_PER_S


class _GraphCollector(Collector):
    """Series read from the graph at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics
        self._feed: LiveFeed | None = None
        # Counters of feed incarnations that have ended: a restarted feed
        # starts from zero, the series must not.
        self._feed_base: dict[str, int] = dict.fromkeys(_FEED_COUNTERS, 0)
        self._invalid_base: dict[str, int] = {}
        self._quality_base: dict[str, int] = dict.fromkeys(LIVE_KINDS, 0)
        # Channel received counts step back when a crashed actor's batch is
        # requeued; a counter must not.
        self._received_max: dict[str, int] = {}

    def describe(self) -> Iterator[Metric]:
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        fams = self._families()
        m = self._m
        g = m._graph
        if g is not None:
            self._fill_graph(fams, g)
        self._fill_feed(fams)
        yield from fams.values()

    @staticmethod
    def _families() -> dict[str, Metric]:
        def g(name: str, doc: str, labels: Sequence[str] = ()) -> tuple[str, Metric]:
            return name, GaugeMetricFamily(name, doc, labels=labels)

        def c(name: str, doc: str, labels: Sequence[str] = ()) -> tuple[str, Metric]:
            # Keyed by the name as written: the family itself drops "_total".
            return name, CounterMetricFamily(name, doc, labels=labels)

        return dict([
            g("trader_ready", "1 when /readyz answers 200."),
            g("trader_ready_condition", "Each readiness condition (1 holds, 0 fails).",
              ["condition"]),
            g("trader_actor_up", "1 while the actor's current incarnation runs.", ["actor"]),
            c("trader_actor_restarts_total", "Supervisor restarts per actor.", ["actor"]),
            g("trader_inbox_depth", "Messages waiting in each actor's inbox.", ["actor"]),
            g("trader_inbox_capacity", "Each inbox's bound.", ["actor"]),
            c("trader_messages_received_total", "Messages each actor took from its inbox.",
              ["actor"]),
            g("trader_messages_in_flight", "Messages sent on tracked inboxes, not yet handled."),
            g("trader_risk_state", "The trading state (1 for the current one).", ["state"]),
            g("trader_last_bar_timestamp_seconds", "Close time of the newest bar (Unix time)."),
            g("trader_last_bar_age_seconds",
              "Market-clock seconds since the newest bar closed."),
            g("trader_feed_connected", "1 while the market-data feed is connected."),
            g("trader_feed_timeframe_seconds", "The bar length the feed delivers ([feed])."),
            g("trader_market_open", "1 while the NYSE session is open (by the graph's clock)."),
            c("trader_feed_bars_received_total", "Bars read from the live feed."),
            c("trader_feed_bars_emitted_total", "Bars the live feed passed on."),
            c("trader_feed_bars_backfilled_total", "Bars passed on from the REST backfill."),
            c("trader_feed_bars_invalid_total", "Bars dropped as invalid, by reason.",
              ["reason"]),
            c("trader_feed_bars_duplicate_total", "Bars dropped as duplicate or out of order."),
            c("trader_feed_malformed_frames_total", "Feed frames that could not be decoded."),
            c("trader_feed_reconnects_total", "Live feed reconnections."),
            c("trader_feed_data_quality_findings_total",
              "Data-quality findings in the bars the live feed passed on, by kind "
              "(trader.data.live_quality; the bars are not dropped).", ["kind"]),
        ])

    def _fill_graph(self, fams: dict[str, Metric], g: Graph) -> None:
        m = self._m
        checks = m.readiness()
        _add(fams["trader_ready"], [], float(all(c.ok for c in checks)))
        for cond in checks:
            _add(fams["trader_ready_condition"], [cond.name], float(cond.ok))
        alive = {a.name for a in g.supervisor.actors()}
        for actor, n in g.supervisor.restart_counts.items():
            _add(fams["trader_actor_up"], [actor], float(actor in alive))
            _add(fams["trader_actor_restarts_total"], [actor], n)
        for st in g.channel_stats():
            received = max(st.received, self._received_max.get(st.name, 0))
            self._received_max[st.name] = received
            _add(fams["trader_inbox_depth"], [st.name], st.depth)
            _add(fams["trader_inbox_capacity"], [st.name], st.capacity)
            _add(fams["trader_messages_received_total"], [st.name], received)
        _add(fams["trader_messages_in_flight"], [], g.inflight.count)
        state = m.risk_state
        for s in _STATES:
            _add(fams["trader_risk_state"], [s], float(s == state))
        last = m.last_bar_time_ns()
        if last:
            _add(fams["trader_last_bar_timestamp_seconds"], [], last / NS_PER_S)
            _add(fams["trader_last_bar_age_seconds"], [], m._bar_age_s(last) or 0.0)
        feed_ok = next(c.ok for c in checks if c.name == "feed")
        _add(fams["trader_feed_connected"], [], float(feed_ok))
        _add(fams["trader_feed_timeframe_seconds"], [], g.config.feed.timeframe_s)
        _add(fams["trader_market_open"], [], float(calendar.is_open(g.clock.now_ns())))

    def _fill_feed(self, fams: dict[str, Metric]) -> None:
        current = self._m.live_feed()
        if current is not None and current is not self._feed:
            old = self._feed
            if old is not None:  # its counters are final: it has been replaced
                for k in _FEED_COUNTERS:
                    self._feed_base[k] += getattr(old, k)
                for reason, n in old.dropped_invalid.items():
                    self._invalid_base[reason] = self._invalid_base.get(reason, 0) + n
                for kind, n in old.quality_findings.items():
                    self._quality_base[kind] += n
            self._feed = current
        feed = self._feed
        if feed is None:
            return
        totals = {k: self._feed_base[k] + getattr(feed, k) for k in _FEED_COUNTERS}
        _add(fams["trader_feed_bars_received_total"], [], totals["received"])
        _add(fams["trader_feed_bars_emitted_total"], [], totals["emitted"])
        _add(fams["trader_feed_bars_backfilled_total"], [], totals["backfilled"])
        _add(fams["trader_feed_bars_duplicate_total"], [], totals["duplicates"])
        _add(fams["trader_feed_malformed_frames_total"], [], totals["malformed_frames"])
        _add(fams["trader_feed_reconnects_total"], [], totals["reconnects"])
        for reason in get_args(Reason):
            n = self._invalid_base.get(reason, 0) + feed.dropped_invalid.get(reason, 0)
            _add(fams["trader_feed_bars_invalid_total"], [reason], n)
        for kind in LIVE_KINDS:
            n = self._quality_base[kind] + feed.quality_findings[kind]
            _add(fams["trader_feed_data_quality_findings_total"], [kind], n)


def _add(family: Metric, labels: list[str], value: float) -> None:
    # GaugeMetricFamily and CounterMetricFamily share add_metric's signature.
    family.add_metric(labels, value)  # type: ignore[attr-defined]
