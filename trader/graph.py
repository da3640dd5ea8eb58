"""The actor graph: the one place the topology is declared.

::

      ┌──────┐ BarsClosed ┌──────────┐ SignalEmitted ┌────────┐ SignalScored ┌──────┐
      │ feed │───────────▶│ strategy │──────────────▶│ scorer │─────────────▶│ risk │
      └──────┘            └──────────┘               └────────┘              └──────┘
         ▲   BatchCut (replay) │  │ BarsClosed (seen)    ▲                    ▲  │
         └─────────────────────┘  └──────────────────────┴────────────────────┘  │
                                                           SubmitOrder, CancelOrder
                      PositionChanged ◀── risk                                   ▼
                                                                          ┌───────────┐
                       order events, fills, reconciliation  ◀─────────────│ execution │
                       (to risk; positions also to strategy)              └───────────┘

    every message ──▶ recorder (the journal)

The strategy forwards the bars it has seen to risk (marking) and to the scorer
(features), always before the signals those bars caused.

Live and replay build this same graph; :class:`Adapters` carries what differs:
the feed, the clock and the broker. Start order is recorder → execution →
risk → scorer → strategy → feed (consumers before producers) under one
``rest_for_one`` supervisor, so a crashed recorder restarts everything after
it (no trading without a journal), a crashed execution restarts everything
downstream of reconciliation, and a crashed feed only reconnects.

Shutdown drains in the same direction as the data: stop the feed, wait until
nothing is in flight, then close each inbox in start order after the recorder
(each actor finishes its backlog and returns), and finally close the journal
so the recorder commits the last batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from trader.actors.base import Actor, JournalCommits, JournalRecord, Outbox
from trader.actors.execution import ExecutionActor
from trader.actors.recorder import Recorder, RunInfo
from trader.actors.risk import RiskActor
from trader.actors.scorer import ScorerActor
from trader.actors.strategy import StrategyActor
from trader.brokers.base import Broker
from trader.channels import Channel, ChannelStats, InFlight
from trader.clock import Clock
from trader.config import Config
from trader.inline import InlineDriver
from trader.journal import KnownOrder
from trader.latency import TickToOrder
from trader.messages import (
    AccountUpdated,
    BarClosed,
    BarsClosed,
    BatchCut,
    BrokerHealthChanged,
    CancelOrder,
    DriftDetected,
    DriftMeasured,
    EquitySampled,
    ExitTriggered,
    FeedStatusChanged,
    FlattenAll,
    HaltTrading,
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
    ResumeTrading,
    RiskStateChanged,
    ScorerStateChanged,
    SignalEmitted,
    SignalScored,
    SubmitOrder,
    SymbolDelisted,
)
from trader.strategies import build as build_strategy
from trader.supervisor import ChildSpec, RestartBudget, Supervisor
from trader.trading_state import TradingStateMachine

log = structlog.get_logger("trader.graph")

_ORDER_EVENTS = (
    OrderAccepted, OrderFilled, OrderCanceled, OrderRejected, OrderExpired, OrderReplaced,
)

#: Who receives what. Keys are the emitting actor; an empty tuple means
#: "journal only". Emitting a type not listed here is a wiring bug and raises.
ROUTES: Mapping[str, Mapping[type[Message], tuple[str, ...]]] = {
    "feed": {BarsClosed: ("strategy",), FeedStatusChanged: ("risk",)},
    "strategy": {
        # The scorer computes its features from the bars the strategy has seen,
        # delivered before the signals they caused (FIFO per inbox).
        BarsClosed: ("risk", "scorer"),
        SignalEmitted: ("scorer",),
        BatchCut: ("feed",),
    },
    "scorer": {
        SignalScored: ("risk",),
        ScorerStateChanged: (),
        # Facts about the model for the journal and the metrics; risk does not
        # act on drift (the degradation rule is about a missing model, not a drifting one).
        DriftMeasured: (),
        DriftDetected: (),
        ModelSwapped: (),
        ModelSwapRefused: (),
    },
    "risk": {
        SubmitOrder: ("execution",),
        CancelOrder: ("execution",),
        OrderDenied: (),
        PositionChanged: ("strategy",),
        AccountUpdated: (),
        EquitySampled: (),
        RiskStateChanged: (),
        ExitTriggered: (),
    },
    "execution": {
        **dict.fromkeys(_ORDER_EVENTS, ("risk",)),
        AccountUpdated: ("risk",),
        PositionChanged: ("risk", "strategy"),
        ReconciliationDone: ("risk",),
        # The broker adapter measures (trader.brokers.health); risk decides.
        BrokerHealthChanged: ("risk",),
        # Books like a fill; the strategy learns of the flat position from
        # risk's PositionChanged, like after any fill.
        SymbolDelisted: ("risk",),
    },
    "control": {HaltTrading: ("risk",), ResumeTrading: ("risk",), FlattenAll: ("risk",)},
}

#: Start order (consumers first). Shutdown closes inboxes in this order after the feed.
START_ORDER = ("recorder", "execution", "risk", "scorer", "strategy", "feed")

#: Inboxes whose messages the graph waits for before it calls itself quiet.
_TRACKED = ("strategy", "scorer", "risk", "execution")


FeedFactory = Callable[["Graph"], Actor]

#: Called after each journal commit with the batch and the seconds it took (metrics).
OnJournalCommit = Callable[[Sequence[JournalRecord], float], None]


class Adapters(msgspec.Struct, frozen=True, kw_only=True):
    """What live and replay swap: the clock, the broker and the feed."""

    clock: Clock
    broker: Broker
    feed: FeedFactory
    mode: str


class Graph:
    """The wired actors, their channels and their supervisor.

    Build it with :func:`build_graph`; run it with :meth:`run`; stop it with
    :meth:`request_stop` (or a signal, see trader.cli).
    """

    def __init__(
        self,
        config: Config,
        adapters: Adapters,
        run: RunInfo,
        *,
        db_path: str,
        inflight: InFlight | None = None,
        known_orders: Callable[[], list[KnownOrder]] | None = None,
        warmup: Sequence[BarClosed] = (),
        rewarm: Callable[[], Sequence[BarClosed]] | None = None,
        positions: Callable[[], Mapping[str, float]] | None = None,
        on_journal_commit: OnJournalCommit | None = None,
        risk_state: str = "ACTIVE",
    ) -> None:
        self._known_orders = known_orders
        # The trading state and breaker marks outlive risk restarts (like the
        # replay cursor outlives the feed); risk_state is the journal's, at start.
        self.trading_state = TradingStateMachine(risk_state)
        self._on_journal_commit = on_journal_commit
        self._warmup = tuple(warmup)
        self._rewarm = rewarm
        self._positions = positions
        self._warmed: set[str] = set()
        self.config = config
        self.adapters = adapters
        self.clock = adapters.clock
        # Shared with the broker adapter when its update stream must count
        # towards quiescence (the simulated broker's fills).
        self.inflight = inflight or InFlight()
        # Bar arrivals (live feed) matched to orders (execution); trader.metrics
        # observes the latencies. Outlives restarts of either actor.
        self.tick_to_order = TickToOrder()
        caps = config.channels
        self.inboxes: dict[str, Channel[Message]] = {
            "strategy": Channel("strategy", caps.strategy, self.inflight),
            "scorer": Channel("scorer", caps.scorer, self.inflight),
            "risk": Channel("risk", caps.risk, self.inflight),
            "execution": Channel("execution", caps.execution, self.inflight),
            # Untracked: the feed reads it only once the graph is quiet.
            "feed": Channel("feed", caps.feed, None),
        }
        # Untracked: quiescence must not wait for the disk.
        backlog = config.replay.journal_backlog if adapters.mode == "replay" else caps.recorder
        self.journal: Channel[JournalRecord] = Channel("recorder", backlog, None)
        # Replay: the same actors, handled run-to-completion by whoever waits
        # for quiet (trader.inline); live keeps a task per actor, where nothing
        # slow may hold up the others. Data-flow order: a drain round takes
        # bars to the strategy first and order events back last.
        self.driver: InlineDriver | None = None
        if adapters.mode == "replay":
            self.driver = InlineDriver(
                [self.inboxes[n] for n in ("strategy", "scorer", "risk", "execution")]
                + [adapters.broker.updates],
                self.inflight,
            )
        self.commits = JournalCommits()
        self.run_info = run
        self._db_path = db_path
        self._stop = anyio.Event()
        self._ready = anyio.Event()
        self.finished = False
        self.interrupted = False
        self.ready = False
        strategy_cfg = config.strategy
        # Validate strategy parameters now, so a bad one is a config error
        # before anything starts.
        build_strategy(strategy_cfg.name, strategy_cfg.params)
        self.supervisor = Supervisor(
            self._child_specs(),
            strategy="rest_for_one",
            budget=RestartBudget(
                intensity=config.supervisor.intensity, period=config.supervisor.period_s
            ),
        )

    # --- wiring --------------------------------------------------------------------

    def outbox(self, source: str) -> Outbox:
        routes = {
            t: [self.inboxes[d] for d in dests] for t, dests in ROUTES[source].items()
        }
        return Outbox(source, routes, self.journal, self.commits)

    def _warmup_for(
        self, actor: str
    ) -> Sequence[BarClosed] | Callable[[], Awaitable[Sequence[BarClosed]]]:
        """What a new strategy or scorer incarnation replays to rebuild its indicators."""
        if self._rewarm is None or actor not in self._warmed:
            self._warmed.add(actor)
            return self._warmup
        rewarm, outbox = self._rewarm, self.outbox(actor)

        async def from_journal() -> Sequence[BarClosed]:
            # The bars at start are hours old by now. What the predecessors
            # consumed is committed first, so the series has no hole.
            await outbox.barrier()
            return await anyio.to_thread.run_sync(rewarm)

        return from_journal

    def _positions_for_strategy(self) -> Callable[[], Awaitable[Mapping[str, float]]] | None:
        """What a new strategy incarnation is told it holds (a daemon's journal)."""
        if self._positions is None:
            return None
        read, outbox = self._positions, self.outbox("strategy")

        async def from_journal() -> Mapping[str, float]:
            # The fills its predecessor was told of are committed first.
            await outbox.barrier()
            return await anyio.to_thread.run_sync(read)

        return from_journal

    def _child_specs(self) -> list[ChildSpec]:
        cfg = self.config
        adapters = self.adapters

        def recorder() -> Actor:
            return Recorder(self.journal, path=self._db_path, run=self.run_info,
                            commits=self.commits, on_commit=self._on_journal_commit,
                            bar_retention_days=cfg.recorder.bar_retention_days)

        def execution() -> Actor:
            return ExecutionActor(self.inboxes["execution"], self.outbox("execution"),
                                  broker=adapters.broker, now_ns=adapters.clock.now_ns,
                                  known_orders=self._known_orders,
                                  known_positions=self._positions,
                                  tick_to_order=self.tick_to_order,
                                  max_in_flight=cfg.alpaca.max_concurrent_submits)

        def risk() -> Actor:
            return RiskActor(self.inboxes["risk"], self.outbox("risk"), config=cfg.risk,
                             instance=cfg.strategy_instance,
                             trading_state=self.trading_state, clock=adapters.clock)

        def scorer() -> Actor:
            # Only a daemon follows the champion and retrains: a replay scores
            # with one model, so its journal depends on the data alone.
            live = adapters.mode != "replay"
            return ScorerActor(self.inboxes["scorer"], self.outbox("scorer"),
                               config=cfg.scorer, now_ns=adapters.clock.now_ns,
                               warmup=self._warmup_for("scorer"), follow_champion=live,
                               retrain_config=cfg if live else None)

        def strategy() -> Actor:
            # A fresh strategy per incarnation: its state is rebuilt from the
            # journal, never carried over from a crashed predecessor.
            return StrategyActor(
                self.inboxes["strategy"],
                self.outbox("strategy"),
                strategy=build_strategy(cfg.strategy.name, cfg.strategy.params),
                instance=cfg.strategy_instance,
                warmup=self._warmup_for("strategy"),
                positions=self._positions_for_strategy(),
                keep_crashed=adapters.mode != "replay",
            )

        def feed() -> Actor:
            return adapters.feed(self)

        factories: dict[str, Callable[[], Actor]] = {
            "recorder": recorder, "execution": execution, "risk": risk, "scorer": scorer,
            "strategy": strategy, "feed": feed,
        }
        return [
            ChildSpec(
                name=name,
                factory=factories[name],
                # A replay feed that reaches the end of its data is done, not dead.
                restart="transient" if name == "feed" else "permanent",
            )
            for name in START_ORDER
        ]

    # --- running -------------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin an orderly shutdown (idempotent)."""
        self._stop.set()

    def feed_finished(self) -> None:
        """The feed ran out of data: a replay is complete."""
        self.finished = True
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """A stop was requested (or the data ended): the graph is draining."""
        return self._stop.is_set()

    async def wait_stopping(self) -> None:
        """Return once a stop has been requested."""
        await self._stop.wait()

    async def settle(self) -> None:
        """Return once every message caused so far has been handled (see trader.channels).

        Under inline delivery this handles them, in the caller's task.
        """
        if self.driver is not None:
            await self.driver.drain()
        else:
            await self.inflight.wait_quiet()

    async def wait_ready(self) -> None:
        """Return once every actor has started (never, if start-up fails)."""
        await self._ready.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped, then drain in order.

        Raises:
            RestartBudgetExhausted: an actor crashed too often; the graph is down.
        """
        async with anyio.create_task_group() as tg:
            if self.driver is not None:
                # Handles what arrives while no feed drives (an operator's
                # command, the shutdown drain); cancelled below, once stopped.
                tg.start_soon(self.driver.run)
            await tg.start(self.supervisor.run)
            self.ready = True
            self._ready.set()
            log.info("graph ready", actors=list(START_ORDER), mode=self.adapters.mode)
            task_status.started()
            await self._stop.wait()
            await self._shutdown()
            tg.cancel_scope.cancel()
        log.info("graph stopped", finished=self.finished, journal_records=self.journal.sent)

    async def _shutdown(self) -> None:
        sup = self.supervisor
        sup.begin_shutdown()
        deadline = self.config.run.shutdown_deadline_s
        with anyio.move_on_after(deadline) as scope:
            await sup.stop_child("feed")
            await self.settle()
            # Close inboxes along the data flow: each actor finishes its
            # backlog (nothing, once quiet) and returns.
            for name in reversed(START_ORDER[1:-1]):
                self.inboxes[name].close()
                await sup.wait_child(name)
            self.inboxes["feed"].close()
            self.journal.close()
            await sup.wait_child("recorder")
        if scope.cancelled_caught:
            log.error("shutdown deadline passed; stopping without a full drain",
                      deadline_s=deadline, in_flight=self.inflight.count)
            for name in reversed(START_ORDER):
                await sup.stop_child(name)

    def channel_stats(self) -> list[ChannelStats]:
        stats = [c.statistics() for c in self.inboxes.values()]
        return [*stats, self.journal.statistics()]


def build_graph(
    config: Config,
    adapters: Adapters,
    run: RunInfo,
    *,
    db_path: str | None = None,
    inflight: InFlight | None = None,
    known_orders: Callable[[], list[KnownOrder]] | None = None,
    warmup: Sequence[BarClosed] = (),
    rewarm: Callable[[], Sequence[BarClosed]] | None = None,
    positions: Callable[[], Mapping[str, float]] | None = None,
    on_journal_commit: OnJournalCommit | None = None,
    risk_state: str = "ACTIVE",
) -> Graph:
    """Wire the graph for ``config`` with the given adapters.

    Args:
        known_orders: what the journal last saw open, for reconciliation (live).
        warmup: bars the first strategy (and scorer) incarnation replays silently
            to rebuild its indicators (a daemon's journal; empty in replay).
        rewarm: reads the journal's recent bars for later incarnations (a
            daemon; run in a worker thread once the journal is committed).
            Without it, a restarted strategy starts from ``warmup`` again.
        positions: reads the quantity the journal last recorded per symbol,
            told to every strategy incarnation after its warm-up (a daemon).
        on_journal_commit: told about every committed journal batch (trader.metrics).
        risk_state: the trading state to start in (``journal.last_risk_state``
            for a restarting daemon; ACTIVE for a backtest).
    """
    return Graph(config, adapters, run, db_path=db_path or config.run.db, inflight=inflight,
                 known_orders=known_orders, warmup=warmup, rewarm=rewarm,
                 positions=positions, on_journal_commit=on_journal_commit, risk_state=risk_state)


def route_table() -> Sequence[tuple[str, str, str]]:
    """``(source, message type, destination)`` rows, for docs and tests."""
    return [
        (src, t.__name__, dst)
        for src, table in ROUTES.items()
        for t, dests in table.items()
        for dst in (dests or ("journal",))
    ]
