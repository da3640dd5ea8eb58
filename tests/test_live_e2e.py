"""The live path end to end: the daemon against the sandbox over real sockets.

The sandbox runs with a manual clock (``speed="max"``); the test advances it
one bar at a time and lets the daemon settle: the feed has passed the bar on,
nothing is in flight in the graph, and the journal agrees with the sandbox
about every order. That last condition is also the property under test.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from tests.sandbox.sandbox_support import alpaca
from trader.actors.feed import LiveFeed
from trader.config import Config, decode_config
from trader.data.synth import synth_bars, write_csv
from trader.graph import Graph
from trader.journal import last_positions
from trader.messages import BarClosed, BarsClosed, decode
from trader.runner import GIL_SWITCH_INTERVAL_S, run_live, run_replay
from trader.sandbox import Sandbox
from trader.strategies.sma_cross import SmaCross

SYMBOLS = ["AAPL", "IBM", "MSFT"]
WAIT_S = 20.0


def _config(db: Path, **extra: Any) -> Config:
    raw: dict[str, Any] = {
        "run": {"db": str(db), "shutdown_deadline_s": 10.0},
        "feed": {"kind": "alpaca", "symbols": SYMBOLS, "timeframe_s": 86400,
                 "stale_after_s": 3600.0},
        "alpaca": {"update_timeout_s": 2.0, "request_timeout_s": 5.0},
        "strategy": {"name": "sma_cross", "instance": "e2e", "params": {"fast": 2, "slow": 4}},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.3},
    }
    raw.update(extra)
    return decode_config(raw)


def _journal_orders(db: Path) -> dict[str, tuple[str, float]]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT client_order_id, status, filled_qty FROM orders").fetchall()
    except sqlite3.OperationalError:
        return {}  # the schema is not there yet
    return {coid: (status, round(filled, 9)) for coid, status, filled in rows}


def _sandbox_orders(sb: Sandbox) -> dict[str, tuple[str, float]]:
    return {
        o.client_order_id: (o.status, round(o.filled_qty, 9))
        for o in sb.market.exchange.orders.values()
    }


def _commands(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The journal's signals and order commands, in a run-independent order."""
    with sqlite3.connect(db) as conn:
        signals = conn.execute(
            "SELECT ts_ns, strategy, symbol, target_weight FROM signals ORDER BY 1, 3"
        ).fetchall()
        orders = conn.execute(
            "SELECT client_order_id, side, qty, notional_cents, order_type FROM orders "
            "ORDER BY 1").fetchall()
    return signals, orders


def _journaled_bars(db: Path) -> list[tuple[int, str]]:
    """``(ts_ns, symbol)`` of every journaled bar (batching differs between replay and live)."""
    with sqlite3.connect(db) as conn:
        bodies = conn.execute("SELECT body FROM journal WHERE type = 'BarsClosed'").fetchall()
    batches = [m for m in (decode(body) for (body,) in bodies) if isinstance(m, BarsClosed)]
    return sorted((b.ts_ns, b.symbol) for m in batches for b in m.bars)


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Poll a condition on state owned by other tasks, bounded in time (``what`` is
    for the reader of a timeout's traceback)."""
    with anyio.fail_after(WAIT_S):
        # Polling on purpose: the state lives in SQLite and in another process's
        # view of the world (the sandbox), which can signal no event to us.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


class Daemon:
    """``run_live`` in a task group, with hooks to watch it settle."""

    def __init__(self, sb: Sandbox, config: Config, db: Path) -> None:
        self.sb = sb
        self.config = config
        self.db = db
        self.graph: Graph | None = None

    def feed(self) -> LiveFeed | None:
        assert self.graph is not None
        for f in self.graph.supervisor.actors():
            if isinstance(f, LiveFeed):
                return f
        return None

    async def settle(self) -> None:
        """Wait until the daemon has seen everything the sandbox published and did.

        All three at one instant: the feed passed the last published bar on,
        the graph is quiet, and the journal agrees with the sandbox about every
        order. (A fill is journaled before risk sees it, and the message stays
        in flight until then, so quiet + agreement means risk has booked it.)
        """
        published = self.sb.market.watermark_ns

        def settled() -> bool:
            f = self.feed() if self.graph is not None else None
            return (
                f is not None
                and len(f.last_emitted) == len(SYMBOLS)
                and all(ts >= published for ts in f.last_emitted.values())
                and self.graph is not None
                and self.graph.inflight.count == 0
                and _journal_orders(self.db) == _sandbox_orders(self.sb)
            )

        await _until(settled, "the daemon settles")


async def _drive(sb: Sandbox, config: Config, db: Path, steps: int,
                 after_step: Callable[[int], Awaitable[None]] | None = None) -> None:
    daemon = Daemon(sb, config, db)
    switch_interval = sys.getswitchinterval()
    async with anyio.create_task_group() as tg:
        async def run() -> None:
            await run_live(config, sandbox=sb, on_graph=lambda g: setattr(daemon, "graph", g))

        tg.start_soon(run)
        await _until(lambda: daemon.graph is not None and daemon.feed() is not None
                     and daemon.graph.ready, "daemon ready")
        # The journal's and alpaca-py's threads get the GIL back within 0.5 ms.
        assert sys.getswitchinterval() == GIL_SWITCH_INTERVAL_S
        for step in range(steps):
            await sb.market.advance(bars=1)
            await daemon.settle()
            if after_step is not None:
                await after_step(step)
        assert daemon.graph is not None
        daemon.graph.request_stop()
    assert sys.getswitchinterval() == switch_interval  # the process's own, once it is done


@pytest.mark.asyncio
async def test_orders_and_fills_in_the_journal_equal_the_sandboxs_ledger(tmp_path: Path) -> None:
    """The daemon trades through the sandbox; its journal and the sandbox agree exactly."""
    tables = synth_bars(SYMBOLS, days=40, freq="1d", seed=5)
    db = tmp_path / "live.db"
    async with Sandbox(tables, speed="max") as sb:
        await _drive(sb, _config(db), db, steps=40)
        exchange = sb.market.exchange
        sandbox_fills = sorted(
            (o.client_order_id, round(o.filled_qty, 9), o.filled_avg_price)
            for o in exchange.orders.values() if o.filled_qty
        )
        positions = {s: p.qty for s, p in exchange.ledger.positions.items() if p.qty}
        cash = exchange.ledger.cash_cents
    assert len(sandbox_fills) >= 4, "the scenario must trade"
    with sqlite3.connect(db) as conn:
        fills = conn.execute(
            "SELECT client_order_id, SUM(qty), SUM(qty * price) FROM fills "
            "GROUP BY client_order_id ORDER BY client_order_id").fetchall()
        (journal_cash,) = conn.execute(
            "SELECT cash_cents FROM accounts ORDER BY ts_ns DESC, seq DESC LIMIT 1").fetchone()
        journal_positions = dict(conn.execute(
            "SELECT symbol, qty FROM positions p WHERE ts_ns = (SELECT MAX(ts_ns) FROM "
            "positions q WHERE q.symbol = p.symbol) AND qty != 0").fetchall())
    assert [(c, round(q, 9), round(v / q, 6)) for c, q, v in fills] == [
        (c, q, round(p or 0.0, 6)) for c, q, p in sandbox_fills
    ]
    assert journal_positions == positions
    assert journal_cash == cash


@pytest.mark.asyncio
async def test_replay_and_live_make_the_same_signals_and_order_commands(tmp_path: Path) -> None:
    """The same bars through trader replay and through trader run give the same client order ids."""
    tables = synth_bars(SYMBOLS, days=40, freq="1d", seed=8)
    data = tmp_path / "data"
    write_csv(tables, data)
    live_db = tmp_path / "live.db"
    async with Sandbox(tables, speed="max") as sb:
        await _drive(sb, _config(live_db), live_db, steps=40)
    replay_db = tmp_path / "replay.db"
    replay_cfg = _config(replay_db, data={"dir": str(data)})
    await run_replay(replay_cfg)

    live_signals, live_orders = _commands(live_db)
    replay_signals, replay_orders = _commands(replay_db)
    assert live_orders, "the scenario must trade"
    assert live_signals == replay_signals
    assert live_orders == replay_orders


class CrashesOnceSmaCross(SmaCross):
    """sma_cross that raises once, on the bar named in ``crash_on`` (a transient fault)."""

    crash_on: ClassVar[tuple[str, int] | None] = None
    seen_by_incarnation: ClassVar[list[list[int]]] = []
    #: What each incarnation had been told it holds when it met the crash bar.
    held_at_crash_bar: ClassVar[list[dict[str, float]]] = []
    crash_bar: ClassVar[tuple[str, int] | None] = None

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.seen: list[int] = []
        self.held: dict[str, float] = {}
        CrashesOnceSmaCross.seen_by_incarnation.append(self.seen)

    def on_position(self, symbol: str, qty: float) -> None:
        self.held[symbol] = qty

    def on_bar(self, bar: BarClosed) -> float | None:
        if (bar.symbol, bar.ts_ns) == CrashesOnceSmaCross.crash_bar:
            CrashesOnceSmaCross.held_at_crash_bar.append(dict(self.held))
        if (bar.symbol, bar.ts_ns) == CrashesOnceSmaCross.crash_on:
            CrashesOnceSmaCross.crash_on = None
            raise RuntimeError("a transient fault in the strategy")
        if bar.symbol == "IBM":
            self.seen.append(bar.ts_ns)
        return super().on_bar(bar)


@pytest.mark.asyncio
async def test_a_strategy_crash_in_the_daemon_skips_no_bar_and_changes_no_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The strategy raises once, mid-run, on IBM's 21st bar. Its successor rebuilds the
    indicators from the journal, is told the positions its predecessor knew of, and
    handles that bar again, so the daemon makes exactly the signals and orders a replay
    of the same bars makes without any crash."""
    tables = synth_bars(SYMBOLS, days=40, freq="1d", seed=8)
    data = tmp_path / "data"
    write_csv(tables, data)
    ibm = [int(t) for t in tables["IBM"].ts_ns]
    monkeypatch.setattr(CrashesOnceSmaCross, "crash_on", ("IBM", ibm[20]))
    monkeypatch.setattr(CrashesOnceSmaCross, "seen_by_incarnation", [])
    monkeypatch.setattr(CrashesOnceSmaCross, "crash_bar", ("IBM", ibm[20]))
    monkeypatch.setattr(CrashesOnceSmaCross, "held_at_crash_bar", [])
    live_db = tmp_path / "live.db"
    flaky = {"name": "tests.test_live_e2e:CrashesOnceSmaCross", "instance": "e2e",
             "params": {"fast": 2, "slow": 4}}
    async with Sandbox(tables, speed="max") as sb:
        await _drive(sb, _config(live_db, strategy=flaky), live_db, steps=40)
    assert CrashesOnceSmaCross.crash_on is None, "the strategy must have crashed"
    # (Config validation builds instances that never see a bar.)
    first, second = [seen for seen in CrashesOnceSmaCross.seen_by_incarnation if seen]
    assert first == ibm[:20]
    # The successor replayed the journal's bars, then took the bar it crashed on.
    assert second == ibm
    # Knowing what its predecessor knew of the positions (from the journal).
    before, after = CrashesOnceSmaCross.held_at_crash_bar
    assert any(before.values()), "the scenario must hold a position at the crash"
    assert after == before

    replay_db = tmp_path / "replay.db"
    await run_replay(_config(replay_db, data={"dir": str(data)}))

    live_signals, live_orders = _commands(live_db)
    assert live_orders, "the scenario must trade"
    assert (live_signals, live_orders) == _commands(replay_db)
    # Every bar journaled once: the one crashed on too.
    assert _journaled_bars(live_db) == _journaled_bars(replay_db)


@pytest.mark.asyncio
async def test_a_position_closed_by_hand_while_the_daemon_was_down_is_journaled_closed(
    tmp_path: Path,
) -> None:
    """The daemon trades until it holds positions, then stops, with one of its own sells
    still open. An operator closes another position at the broker (alpaca-py's
    close_position); both sells fill at the next bar, with nobody listening. At restart
    the journal's last quantity of every symbol is the sandbox's: the closed-by-hand one
    is 0 (the broker lists open positions only, so reconciliation announces it), and the
    daemon's own sale, adopted as a fill, is not booked again on top of the broker's
    positions (which would make it a phantom short)."""
    tables = synth_bars(SYMBOLS, days=40, freq="1d", seed=5)
    db = tmp_path / "live.db"
    config = _config(db)
    async with Sandbox(tables, speed="max") as sb:
        await _drive(sb, config, db, steps=30)
        held = {s: p.qty for s, p in sb.market.exchange.ledger.positions.items() if p.qty}
        assert held, "the scenario must hold a position when the daemon stops"
        assert {s: q for s, q in last_positions(db).items() if q} == held
        selling = {o.symbol for o in sb.market.exchange.open_orders() if o.side == "sell"}
        assert selling, "the scenario must stop with one of the daemon's sells open"
        closed = sorted(set(held) - selling)[0]

        client = alpaca()["trading_client"].TradingClient(
            "sandbox-key", "sandbox-secret", url_override=sb.base_url)  # the sandbox's defaults
        await anyio.to_thread.run_sync(client.close_position, closed)
        await sb.market.advance(bars=1)
        left = {s: p.qty for s, p in sb.market.exchange.ledger.positions.items() if p.qty}
        assert closed not in left, "the operator's close must have filled"

        graph: list[Graph] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(run_live, config, sandbox=sb, on_graph=graph.append))
            await _until(lambda: bool(graph) and graph[0].ready, "the restarted daemon is ready")
            await _until(lambda: graph[0].inflight.count == 0, "start-up is journaled")
            graph[0].request_stop()

    journal = last_positions(db)
    assert journal[closed] == 0.0
    assert {s: q for s, q in journal.items() if q} == left
