"""Assemble and run a graph: the replay adapters, signals, and the outcome.

The CLI calls these; tests call them directly. A replay is: load the data,
build the simulated exchange and the replay feed, build the *same* graph as
live (graph.py), run it until the data ends or a signal stops it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import structlog

from trader import __version__, calendar, control
from trader.actors.base import Actor
from trader.actors.recorder import RunInfo
from trader.brokers.simulated import Exchange, SimulatedBroker
from trader.channels import Channel, InFlight
from trader.clock import Clock, ReplayClock
from trader.config import Config
from trader.data.bars import load_dir
from trader.data.store import check_adjustments
from trader.errors import ConfigError
from trader.graph import Adapters, Graph, build_graph
from trader.messages import BarsClosed, Message
from trader.replay import Cursor, MergedBars, ReplayFeed

if TYPE_CHECKING:
    from trader.http import Ops

log = structlog.get_logger("trader.runner")


class ReplayOutcome(msgspec.Struct, kw_only=True):
    """What a finished (or stopped) replay leaves behind."""

    run_id: str
    db_path: str
    bars: int
    completed: bool
    exchange: Exchange
    data_hash: str


def _date_bound_ns(text: str, *, end: bool, field: str) -> int:
    if not text:
        return 0
    try:
        d = date.fromisoformat(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{field}: not an ISO date or timestamp: {text!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000
    bound = datetime.combine(d, dtime.max if end else dtime.min, tzinfo=UTC)
    if end:
        # The end date includes that whole New York trading day.
        session = calendar.session_for(d)
        if session is not None:
            return session.close_ns
    return int(bound.timestamp() * 1_000_000_000)


async def run_replay(
    config: Config,
    *,
    db_path: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_graph: Callable[[Graph], None] | None = None,
    install_signal_handlers: bool = False,
    ops: Ops | None = None,
    control_socket: str | None = None,
    restore_risk_state: bool = False,
) -> ReplayOutcome:
    """Replay ``config.data`` through the graph with the simulated broker.

    ``ops`` (``trader run`` only): metrics, the HTTP endpoint and systemd
    notification, served for as long as the graph runs.

    ``control_socket`` and ``restore_risk_state`` (``trader run`` only): serve
    operator commands (trader.control) and start in the trading state the
    journal at the db path last recorded, like a restarting daemon.

    Raises:
        DataError: a bad data file (with file:line).
        ConfigError: bad dates or strategy parameters.
        RestartBudgetExhausted: an actor kept crashing.
    """
    # Adjusted and unadjusted prices of one symbol must never meet in a replay.
    check_adjustments(Path(config.data.dir))
    tables, reports = load_dir(
        Path(config.data.dir),
        on_bad_row=config.data.on_bad_row,
        symbols=list(config.data.symbols) or None,
    )
    for rep in reports:
        if rep.rows_skipped:
            log.warning("bad rows skipped", file=rep.path, rows=rep.rows_skipped,
                        reasons=rep.skipped_by_reason)
    data_hash = hashlib.sha256(
        "".join(sorted(r.sha256 for r in reports)).encode()
    ).hexdigest()
    start_ns = _date_bound_ns(config.data.start, end=False, field="$.data.start")
    end_ns = _date_bound_ns(config.data.end, end=True, field="$.data.end")
    merged = MergedBars(tables, start_ns, end_ns)
    # The merged columns are all the replay needs: do not hold the data twice.
    del tables

    inflight = InFlight()
    clock = ReplayClock()
    exchange = Exchange(config.broker)
    updates: Channel[Message] = Channel("broker", config.channels.execution, inflight)
    broker = SimulatedBroker(exchange, updates, clock)
    cursor = Cursor()
    speed = None if config.replay.speed == "max" else float(config.replay.speed)
    batch_bars = config.replay.batch_bars
    risk = config.risk
    if risk.flatten_on_halt and (risk.max_drawdown_pct or risk.daily_loss_limit_usd):
        # A breaker that flattens sends orders at the bar where it trips, which
        # no strategy signal may have cut the batch at: risk would mark the
        # batch's later bars before the fill reached it. One timestamp per batch
        # keeps the journal independent of batch_bars (DESIGN.md: batching only
        # where it cannot change semantics; tests/test_risk.py checks it).
        batch_bars = 1
    if risk.stop_loss_pct or risk.take_profit_pct or risk.trailing_stop_pct:
        # The same for exits: risk sends one at any bar of a held symbol.
        batch_bars = 1
    if risk.flatten_before_close_min:
        # And for the flatten before the close: risk must see the window's
        # first bar as the last bar of a batch, or a batch running past the
        # close would keep the position overnight.
        batch_bars = 1

    def feed(graph: Graph) -> Actor:
        return ReplayFeed(
            merged,
            cursor,
            graph.outbox("feed"),
            graph.inboxes["feed"],
            inflight=graph.inflight,
            broker=broker,
            clock=clock,
            batch_bars=batch_bars,
            speed=speed,
            on_finished=graph.feed_finished,
            on_progress=on_progress,
            settle=graph.settle,
        )

    run = RunInfo(
        run_id=uuid.uuid4().hex,
        mode="replay",
        started_wall_ns=time.time_ns(),
        config=msgspec.json.encode(config).decode(),
        data_hash=data_hash,
        code_version=__version__,
    )
    path = db_path or config.run.db
    graph = build_graph(
        config,
        Adapters(clock=clock, broker=broker, feed=feed, mode="replay"),
        run,
        db_path=path,
        inflight=inflight,
        on_journal_commit=ops.metrics.on_commit if ops is not None else None,
        risk_state=_last_risk_state(path) if restore_risk_state else "ACTIVE",
    )
    if on_graph is not None:
        on_graph(graph)
    log.info("replay starting", run_id=run.run_id, bars=len(merged), symbols=len(merged.symbols),
             db=path, strategy=config.strategy.name)
    await run_until_stopped(graph, install_signal_handlers=install_signal_handlers, ops=ops,
                            control_socket=control_socket)
    return ReplayOutcome(
        run_id=run.run_id,
        db_path=path,
        bars=cursor.position,
        completed=graph.finished,
        exchange=exchange,
        data_hash=data_hash,
    )


def _sandbox_start(configured: str, db_path: str) -> str | int | None:
    """Where the embedded sandbox's market starts: ``[sandbox] start``, or just after
    the last bar the journal holds if that is later.

    The embedded sandbox is a new market every run, but the journal is not: a
    daemon restarted on it must not be taken back in time (its feed would ask
    for the bars between its last one and a "now" that lies before it). So the
    market goes on where the journal stopped; its account starts afresh, and
    start-up reconciliation journals the difference.
    """
    from trader.journal import last_seen, recent_bars
    from trader.sandbox import wire

    seen = last_seen(recent_bars(db_path)) if Path(db_path).exists() else {}
    if not seen:
        return configured or None
    resume = max(seen.values())
    if configured and wire.parse_time(configured) >= resume:
        return configured
    log.info("embedded sandbox resumes after the journal's last bar", db=db_path,
             last_bar=datetime.fromtimestamp(resume / 1e9, tz=UTC).isoformat())
    return resume


class LiveOutcome(msgspec.Struct, kw_only=True):
    """What a stopped daemon leaves behind."""

    run_id: str
    db_path: str


# Why: the daemon's other threads (the journal's, alpaca-py's) let go of the
# GIL around every blocking call and must take it back from the event loop;
# while the loop is busy (a burst of bars) each of those waits out the
# interpreter's switch interval, 5 ms by default. A commit of a few
# statements then took tens of milliseconds. A shorter turn bounds each
# wait; the loop loses nothing measurable to the extra switches.
GIL_SWITCH_INTERVAL_S = 0.0005


@contextlib.contextmanager
def _short_gil_turns() -> Iterator[None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, GIL_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


async def run_live(
    config: Config,
    *,
    db_path: str | None = None,
    install_signal_handlers: bool = False,
    on_graph: Callable[[Graph], None] | None = None,
    sandbox: Any = None,
    ops: Ops | None = None,
    control_socket: str | None = None,
) -> LiveOutcome:
    """Run the daemon against Alpaca (or the embedded sandbox) until stopped.

    With ``[sandbox] enabled`` the bundled Alpaca-compatible exchange starts in
    this process first and ``[alpaca]`` is pointed at it, with its own keys:
    the same code path as real paper trading, no keys and no network.

    Raises:
        ConfigError: missing credentials or bad settings.
        RestartBudgetExhausted: an actor kept crashing.
    """
    from trader.actors.feed import LiveFeed
    from trader.brokers.alpaca import AlpacaBroker
    from trader.clock import LiveClock
    from trader.journal import known_open_orders, last_positions, last_seen, recent_bars
    from trader.secrets import Credentials, load_credentials

    path = db_path or config.run.db
    # Live, a journaled batch is one bar time: as many batches as the
    # strategy needs bars per symbol.
    warmup = _warmup_batches(config)
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(_short_gil_turns())
        alpaca = config.alpaca
        if config.sandbox.enabled and sandbox is None:
            from trader.sandbox.app import Sandbox

            sb = config.sandbox
            sandbox = await stack.enter_async_context(
                Sandbox(sb.data, port=sb.port, speed=sb.speed,
                        start=_sandbox_start(sb.start, path), broker=config.broker)
            )
        if sandbox is not None:
            alpaca = msgspec.structs.replace(
                alpaca,
                trading_url=sandbox.base_url,
                data_url=sandbox.base_url,
                data_stream_url=sandbox.data_ws_url,
                trade_stream_url=sandbox.trade_ws_url,
            )
            credentials = Credentials(
                key_id=sandbox.credentials.key_id, secret_key=sandbox.credentials.secret
            )
            log.info("embedded sandbox", url=sandbox.base_url)
        else:
            credentials = load_credentials(
                key_id_env=alpaca.key_id_env, secret_env=alpaca.secret_env,
                key_id_file=alpaca.key_id_file, secret_file=alpaca.secret_file,
            )
        symbols = list(config.feed.symbols or config.data.symbols)
        if not symbols:
            raise ConfigError("$.feed.symbols: the live feed needs a universe of symbols")

        history = recent_bars(path, warmup)
        clock: Clock = LiveClock() if sandbox is None else _SandboxClock(sandbox.market)
        inflight = InFlight()
        updates: Channel[Message] = Channel("broker", config.channels.execution, inflight)
        broker = AlpacaBroker(updates=updates, config=alpaca, credentials=credentials,
                              now_ns=clock.now_ns)

        # What the previous feed incarnation passed on: a restarted feed
        # resumes after it (backfilling the gap), even where the strategy had
        # not journaled those bars yet.
        feeds: list[LiveFeed] = []

        async def market_first(batch: BarsClosed) -> None:
            # As in replay: what the broker did up to this bar is booked, and
            # the graph is quiet, before the strategy sees the bar.
            await broker.sync({b.symbol for b in batch.bars})
            await inflight.wait_quiet()

        def feed(graph: Graph) -> Actor:
            # The first incarnation starts from the history read above; a
            # restart re-reads the journal, which has grown since.
            seen = last_seen(recent_bars(path, warmup) if feeds else history)
            for previous in feeds:
                for symbol, ts in previous.last_emitted.items():
                    seen[symbol] = max(ts, seen.get(symbol, 0))
            actor = LiveFeed(
                graph.outbox("feed"),
                config=config.feed,
                stream_url=alpaca.data_stream_url,
                data_url=alpaca.data_url,
                credentials=credentials,
                clock=clock,
                symbols=symbols,
                last_seen=seen or None,
                request_timeout_s=alpaca.request_timeout_s,
                before_emit=market_first,
                tick_to_order=graph.tick_to_order,
            )
            feeds[:] = [actor]
            return actor

        run = RunInfo(
            run_id=uuid.uuid4().hex,
            mode="live",
            started_wall_ns=time.time_ns(),
            config=msgspec.json.encode(config).decode(),
            data_hash="",
            code_version=__version__,
        )
        graph = build_graph(
            config,
            Adapters(clock=clock, broker=broker, feed=feed, mode="live"),
            run,
            db_path=path,
            inflight=inflight,
            known_orders=lambda: known_open_orders(path),
            warmup=history,
            rewarm=lambda: recent_bars(path, warmup),
            positions=lambda: last_positions(path),
            on_journal_commit=ops.metrics.on_commit if ops is not None else None,
            # A halted daemon stays halted across restarts until an operator resumes.
            risk_state=_last_risk_state(path),
        )
        if on_graph is not None:
            on_graph(graph)
        log.info("daemon starting", run_id=run.run_id, symbols=symbols, db=path,
                 strategy=config.strategy_instance, warmup_bars=len(history))
        # Everything built so far (imports, config, warm-up bars, the graph)
        # lives as long as the daemon: move it out of the collector's sight, so
        # a full collection does not walk it in the middle of a bar's path.
        gc.collect()
        gc.freeze()
        await run_until_stopped(graph, install_signal_handlers=install_signal_handlers,
                                ops=ops, control_socket=control_socket)
    return LiveOutcome(run_id=run.run_id, db_path=path)


class _SandboxClock:
    """The embedded sandbox's market clock: with the sandbox replaying 2004 at
    43,200x, "now" is the sandbox's now, not the wall's."""

    def __init__(self, market: Any) -> None:
        self._market = market

    def now_ns(self) -> int:
        now: int = self._market.now_ns()
        return now

    async def sleep_until(self, ts_ns: int) -> None:
        # The sandbox's clock moves with wall time at its own speed and signals
        # nothing; a short poll is the honest way to wait for it.
        while self.now_ns() < ts_ns:  # noqa: ASYNC110
            await anyio.sleep(0.05)


#: A regular session is 6.5 hours; its bars at the feed's timeframe.
_SESSION_S = 23_400


def _warmup_batches(config: Config) -> int:
    """How many journaled bar times a new strategy incarnation replays.

    Raises:
        ConfigError: the bar retention would delete bars the warm-up needs.
    """
    from trader.strategies import build
    from trader.strategies.base import warmup_bars

    bars = warmup_bars(build(config.strategy.name, config.strategy.params))
    keep = config.recorder.bar_retention_days
    if keep:
        per_session = max(1, _SESSION_S // config.feed.timeframe_s)
        sessions = -(-bars // per_session)
        # Five sessions a week, and a margin for holidays.
        days = -(-sessions * 7 // 5) + 4
        if keep < days:
            raise ConfigError(
                f"$.recorder.bar_retention_days: {keep} days keep fewer bars than the "
                f"strategy's warm-up needs ({bars} bars of {config.feed.timeframe_s} s, "
                f"about {days} days); keep at least {days}, or 0 to keep every bar"
            )
    return bars


def _last_risk_state(db_path: str) -> str:
    from trader.journal import last_risk_state

    state = last_risk_state(db_path)
    if state != "ACTIVE":
        log.warning("trading state restored from the journal; `trader resume` to trade",
                    state=state, db=db_path)
    return state


class Interrupted(Exception):
    """A second signal arrived during the drain: stop now."""


async def run_until_stopped(
    graph: Graph, *, install_signal_handlers: bool, ops: Ops | None = None,
    control_socket: str | None = None,
) -> None:
    """Run ``graph``; the first SIGTERM/SIGINT drains it, a second one cancels at once.

    ``ops`` starts before the graph (``/healthz`` answers during start-up) and
    stops after it has drained (``/metrics`` stays scrapeable meanwhile).
    ``control_socket``: serve operator commands there (trader.control) for as
    long as the graph runs.

    Raises:
        Interrupted: a second signal cut the drain short.
    """
    async with anyio.create_task_group() as tg:
        if install_signal_handlers:
            tg.start_soon(_watch_signals, graph, tg.cancel_scope)
        if ops is not None:
            await tg.start(ops.run, graph)
        if control_socket:
            await tg.start(control.serve, graph, control_socket)
        await graph.run()
        tg.cancel_scope.cancel()
    if graph.interrupted:
        raise Interrupted


async def _watch_signals(graph: Graph, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        count = 0
        async for signum in signals:
            count += 1
            if count == 1:
                log.info("signal received; draining", signal=signal.Signals(signum).name)
                graph.request_stop()
            else:
                log.warning("second signal; exiting now", signal=signal.Signals(signum).name)
                graph.interrupted = True
                scope.cancel()
                return
