"""Assemble and run a graph: the replay adapters, signals, and the outcome.

The CLI calls these; tests call them directly. A replay is: load the data,
build the simulated exchange and the replay feed, build the *same* graph as
live (graph.py), run it until the data ends or a signal stops it.
"""

from __future__ import annotations

import hashlib
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path

import anyio
import msgspec
import structlog

from trader import __version__, calendar
from trader.actors.base import Actor
from trader.actors.recorder import RunInfo
from trader.brokers.simulated import Exchange, SimulatedBroker
from trader.channels import Channel, InFlight
from trader.clock import ReplayClock
from trader.config import Config
from trader.data.bars import load_dir
from trader.errors import ConfigError
from trader.graph import Adapters, Graph, build_graph
from trader.messages import Message
from trader.replay import Cursor, MergedBars, ReplayFeed

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
    on_progress: Callable[[int], None] | None = None,
    on_graph: Callable[[Graph], None] | None = None,
    install_signal_handlers: bool = False,
) -> ReplayOutcome:
    """Replay ``config.data`` through the graph with the simulated broker.

    Raises:
        DataError: a bad data file (with file:line).
        ConfigError: bad dates or strategy parameters.
        RestartBudgetExhausted: an actor kept crashing.
    """
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

    inflight = InFlight()
    clock = ReplayClock()
    exchange = Exchange(config.broker)
    updates: Channel[Message] = Channel("broker", config.channels.execution, inflight)
    broker = SimulatedBroker(exchange, updates, clock)
    cursor = Cursor()
    speed = None if config.replay.speed == "max" else float(config.replay.speed)

    def feed(graph: Graph) -> Actor:
        return ReplayFeed(
            merged,
            cursor,
            graph.outbox("feed"),
            graph.inboxes["feed"],
            inflight=graph.inflight,
            broker=broker,
            clock=clock,
            batch_bars=config.replay.batch_bars,
            speed=speed,
            on_finished=graph.feed_finished,
            on_progress=on_progress,
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
    )
    if on_graph is not None:
        on_graph(graph)
    log.info("replay starting", run_id=run.run_id, bars=len(merged), symbols=len(merged.symbols),
             db=path, strategy=config.strategy.name)
    await run_until_stopped(graph, install_signal_handlers=install_signal_handlers)
    return ReplayOutcome(
        run_id=run.run_id,
        db_path=path,
        bars=cursor.position,
        completed=graph.finished,
        exchange=exchange,
        data_hash=data_hash,
    )


class Interrupted(Exception):
    """A second signal arrived during the drain: stop now."""


async def run_until_stopped(graph: Graph, *, install_signal_handlers: bool) -> None:
    """Run ``graph``; the first SIGTERM/SIGINT drains it, a second one cancels at once.

    Raises:
        Interrupted: a second signal cut the drain short.
    """
    async with anyio.create_task_group() as tg:
        if install_signal_handlers:
            tg.start_soon(_watch_signals, graph, tg.cancel_scope)
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
