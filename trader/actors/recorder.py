"""The recorder: the single writer of the SQLite journal.

Every message that any actor emits reaches it as ``(source, message)``. It
writes them in batches, one transaction per batch (take everything queued,
write, commit), on aiosqlite in WAL mode, so it never blocks the event loop
and a slow disk only deepens its queue. After each commit it advances
:class:`~trader.actors.base.JournalCommits`, which is what ``durable`` emits
wait for.

Tables (schema version 1; see DESIGN.md):

* ``runs``: one row per run: config, data hash, code version, mode.
* ``journal``: every message, msgpack-encoded, keyed by
  ``(run_id, ts_ns, source, seq)`` where ``seq`` counts records of that source
  at that timestamp. That key depends only on what each actor emitted, not on
  how the actors interleaved, so two replays produce identical rows.
* ``signals``, ``orders``, ``order_events``, ``fills``, ``positions``,
  ``equity``: the same facts in queryable form. A delisting's closing trade
  (``SymbolDelisted``) is a ``fills`` row whose execution and client order
  id are ``delist:<symbol>:<ts_ns>`` (it has no order).

Retention (``[recorder] bar_retention_days``): raw bars are the bulk of a
long-running daemon's journal and are only needed for warm-up and reports,
so ``BarsClosed`` records older than the retention, measured back from the
newest bar written, are deleted as the daemon goes: at the first bars after
start, then whenever the newest bar has moved an hour of market time, at most
:data:`PRUNE_CHUNK` records per transaction (a big backlog is worked off over
the following commits). Nothing else is ever deleted. The file does not
shrink (SQLite reuses the freed pages); ``VACUUM`` it offline to shrink it.

On shutdown it drains its queue and commits before returning.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import structlog
from anyio.abc import TaskStatus

from trader.actors.base import JournalCommits, JournalRecord
from trader.channels import Channel
from trader.messages import (
    AccountUpdated,
    BarsClosed,
    EquitySampled,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionChanged,
    RiskStateChanged,
    SignalEmitted,
    SignalScored,
    SubmitOrder,
    SymbolDelisted,
    encode,
)

log = structlog.get_logger("trader.recorder")

SCHEMA_VERSION = 1

NS_PER_DAY = 86_400 * 1_000_000_000
PRUNE_EVERY_NS = 3_600 * 1_000_000_000
"""Market time between retention passes once the backlog is gone."""
PRUNE_CHUNK = 5_000
"""The most bar records one retention pass deletes (bounds one transaction)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    started_wall_ns INTEGER NOT NULL,
    config TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    code_version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    run_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    source TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (run_id, ts_ns, source, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS signals (
    run_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    target_weight REAL NOT NULL,
    strength REAL NOT NULL,
    price REAL NOT NULL,
    probability REAL,
    model_id TEXT,
    PRIMARY KEY (run_id, ts_ns, strategy, symbol)
);
CREATE TABLE IF NOT EXISTS orders (
    run_id TEXT NOT NULL,
    client_order_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty REAL,
    notional_cents INTEGER,
    order_type TEXT NOT NULL,
    limit_price REAL,
    stop_price REAL,
    time_in_force TEXT NOT NULL,
    status TEXT NOT NULL,
    broker_order_id TEXT,
    filled_qty REAL NOT NULL DEFAULT 0,
    avg_price REAL,
    reason TEXT,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (run_id, client_order_id)
);
CREATE TABLE IF NOT EXISTS order_events (
    run_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    client_order_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    detail TEXT,
    PRIMARY KEY (run_id, client_order_id, seq)
);
CREATE TABLE IF NOT EXISTS fills (
    run_id TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    client_order_id TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty REAL NOT NULL,
    price REAL NOT NULL,
    commission_cents INTEGER NOT NULL,
    cum_qty REAL NOT NULL,
    avg_price REAL NOT NULL,
    PRIMARY KEY (run_id, execution_id)
);
CREATE TABLE IF NOT EXISTS positions (
    run_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    symbol TEXT NOT NULL,
    seq INTEGER NOT NULL,
    qty REAL NOT NULL,
    avg_price REAL NOT NULL,
    realized_pnl_cents INTEGER NOT NULL,
    PRIMARY KEY (run_id, symbol, ts_ns, seq)
);
CREATE TABLE IF NOT EXISTS equity (
    run_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    equity_cents INTEGER NOT NULL,
    exposure_cents INTEGER NOT NULL,
    PRIMARY KEY (run_id, ts_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS accounts (
    run_id TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    cash_cents INTEGER NOT NULL,
    equity_cents INTEGER NOT NULL,
    buying_power_cents INTEGER NOT NULL,
    gross_exposure_cents INTEGER NOT NULL,
    realized_pnl_cents INTEGER NOT NULL,
    unrealized_pnl_cents INTEGER NOT NULL,
    PRIMARY KEY (run_id, ts_ns, seq)
);
"""


# Tables only ever appended to, and read by nothing else the recorder writes:
# their rows may go in after the batch's other statements, many to a
# statement (see insert_rows). Each maps to its multi-row form.
_POSITIONS = "INSERT INTO positions VALUES (?, ?, ?, ?, ?, ?, ?)"
_ACCOUNTS = "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_FILLS = "INSERT OR IGNORE INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_EVENTS = "INSERT INTO order_events VALUES (?, ?, ?, ?, ?, ?)"
_APPEND_ONLY = {sql: sql.split(" (", 1)[0] for sql in (_POSITIONS, _ACCOUNTS, _FILLS, _EVENTS)}


class RunInfo:
    """What identifies a run in the ``runs`` table."""

    def __init__(
        self, *, run_id: str, mode: str, started_wall_ns: int, config: str, data_hash: str,
        code_version: str,
    ) -> None:
        self.run_id = run_id
        self.mode = mode
        self.started_wall_ns = started_wall_ns
        self.config = config
        self.data_hash = data_hash
        self.code_version = code_version


class Recorder:
    """The journal writer actor.

    Args:
        inbox: ``(source, message)`` records from every actor's outbox.
        path: the SQLite file (created with its parent directory).
        run: this run's identity row.
        commits: advanced after every commit.
        linger_s: how long a small batch waits for company before it is
            written (group commit), unless a durable emit is waiting.
        max_batch: the most records in one transaction.
        on_commit: called after each commit with the batch and the seconds the
            write took (trader.metrics counts what was journaled from it).
        bar_retention_days: delete ``BarsClosed`` records this many days older
            than the newest bar written (0: keep them all); see the module
            docstring.
    """

    name = "recorder"

    def __init__(
        self,
        inbox: Channel[JournalRecord],
        *,
        path: str | Path,
        run: RunInfo,
        commits: JournalCommits,
        linger_s: float = 0.02,
        max_batch: int = 50_000,
        on_commit: Callable[[Sequence[JournalRecord], float], None] | None = None,
        bar_retention_days: int = 0,
    ) -> None:
        self._on_commit = on_commit
        self._retention_ns = bar_retention_days * NS_PER_DAY
        self._newest_bar_ns = 0
        self._next_prune_ns = 0
        # Bars below this were all deleted by an earlier pass: later passes
        # start their scan here.
        self._pruned_below_ns = 0
        self._linger_s = linger_s
        self._max_batch = max_batch
        self._inbox = inbox
        self._path = Path(path)
        self._run = run
        self._commits = commits
        self._seq: dict[tuple[int, str], int] = defaultdict(int)
        self._event_seq: dict[str, int] = defaultdict(int)
        self._written = commits.committed

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self._path)
        try:
            await self._serve(db, task_status)
        finally:
            # Even when cancelled hard (a second signal), wait for the database
            # thread to finish and close: a thread left running would write
            # into a closed event loop.
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await db.close()

    async def _serve(self, db: aiosqlite.Connection, task_status: TaskStatus[None]) -> None:
        await db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash (SIGKILL);
        # only a power loss can lose the last transactions.
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.executescript(SCHEMA)
        await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        r = self._run
        await db.execute(
            "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
            (r.run_id, r.mode, r.started_wall_ns, r.config, r.data_hash, r.code_version),
        )
        await db.commit()
        await self._restore_sequences(db)
        task_status.started()
        inbox = self._inbox
        commits = self._commits
        while True:
            try:
                batch = await inbox.receive_batch()
            except anyio.EndOfStream:
                break
            try:
                if not commits.urgent and len(batch) < self._max_batch:
                    # Group commit: let records accumulate for a moment, unless
                    # someone waits for durability. Thousands of one-record
                    # transactions would cost more than the replay itself.
                    with anyio.move_on_after(self._linger_s):
                        await commits.wait_urgent()
                    batch.extend(_drain(inbox, self._max_batch - len(batch)))
            finally:
                # Taken from the inbox means written, even if we are being
                # cancelled; and a cancellation must not tear a transaction.
                started = time.perf_counter()
                with anyio.CancelScope(shield=True):
                    await self._write(db, batch)
                self._written += len(batch)
                commits.advance(self._written)
                if self._on_commit is not None:
                    self._on_commit(batch, time.perf_counter() - started)

    async def _restore_sequences(self, db: aiosqlite.Connection) -> None:
        # After a restart within the same run, continue the per-key sequences.
        run_id = self._run.run_id
        async with db.execute(
            "SELECT ts_ns, source, MAX(seq) FROM journal WHERE run_id = ? GROUP BY ts_ns, source",
            (run_id,),
        ) as cur:
            async for ts_ns, source, seq in cur:
                self._seq[(ts_ns, source)] = seq + 1
        async with db.execute(
            "SELECT client_order_id, MAX(seq) FROM order_events WHERE run_id = ? "
            "GROUP BY client_order_id",
            (run_id,),
        ) as cur:
            async for coid, seq in cur:
                self._event_seq[coid] = seq + 1

    async def _write(self, db: aiosqlite.Connection, batch: list[JournalRecord]) -> None:
        run_id = self._run.run_id
        journal: list[tuple[Any, ...]] = []
        equity: list[Any] = []  # flat: four values a row (see insert_flat)
        statements: list[tuple[str, tuple[Any, ...]]] = []
        appends: dict[str, list[tuple[Any, ...]]] = {}
        seq = self._seq
        for source, msg in batch:
            key = (msg.ts_ns, source)
            n = seq[key]
            seq[key] = n + 1
            journal.append((run_id, msg.ts_ns, source, n, type(msg).__name__, encode(msg)))
            if isinstance(msg, EquitySampled):
                # A row per bar timestamp: laid out by slice assignment,
                # which runs in C (a tuple per row was most of this loop).
                k, rows = len(equity), len(msg.ts)
                if len(msg.equity_cents) != rows or len(msg.exposure_cents) != rows:
                    raise ValueError("EquitySampled columns differ in length")
                equity.extend((run_id,) * (4 * rows))
                equity[k + 1::4] = msg.ts
                equity[k + 2::4] = msg.equity_cents
                equity[k + 3::4] = msg.exposure_cents
            else:
                for sql, params in self._rows(run_id, source, n, msg):
                    insert = _APPEND_ONLY.get(sql)
                    if insert is None:
                        statements.append((sql, params))
                    else:
                        appends.setdefault(insert, []).append(params)
        prune = self._prune_due(batch) if self._retention_ns else None
        # One trip to the database thread per batch: aiosqlite would otherwise
        # hop threads for every statement. (_execute is aiosqlite's own
        # "run this function on the connection's thread".)
        pruned: int = await db._execute(  # type: ignore[no-untyped-call]
            _write_sync, db._conn, journal, equity, statements, prune, appends
        )
        if prune is not None:
            self._pruned(prune[1], pruned)

    def _prune_due(self, batch: list[JournalRecord]) -> tuple[int, int] | None:
        """The ``(since, cutoff)`` window of bar records to delete now, if a pass is due."""
        newest = max((m.ts_ns for _, m in batch if type(m) is BarsClosed), default=0)
        if newest > self._newest_bar_ns:
            self._newest_bar_ns = newest
        if not self._newest_bar_ns or self._newest_bar_ns < self._next_prune_ns:
            return None
        cutoff = self._newest_bar_ns - self._retention_ns
        if cutoff <= self._pruned_below_ns:
            return None
        return self._pruned_below_ns, cutoff

    def _pruned(self, cutoff: int, deleted: int) -> None:
        if deleted < PRUNE_CHUNK:
            # The window is clear; the next pass is due an hour of market time on.
            self._pruned_below_ns = cutoff
            self._next_prune_ns = self._newest_bar_ns + PRUNE_EVERY_NS
        if deleted:
            log.info("journal bars pruned", records=deleted, older_than_ns=cutoff,
                     retention_days=self._retention_ns // NS_PER_DAY,
                     backlog=deleted >= PRUNE_CHUNK)

    def _rows(
        self, run_id: str, source: str, n: int, msg: Message
    ) -> list[tuple[str, tuple[Any, ...]]]:
        match msg:
            case SignalEmitted():
                return [(
                    "INSERT OR REPLACE INTO signals VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                    (run_id, msg.ts_ns, msg.strategy, msg.symbol, msg.target_weight,
                     msg.strength, msg.price),
                )]
            case SignalScored() if msg.probability is not None:
                s = msg.signal
                return [(
                    "UPDATE signals SET probability = ?, model_id = ? "
                    "WHERE run_id = ? AND ts_ns = ? AND strategy = ? AND symbol = ?",
                    (msg.probability, msg.model_id, run_id, s.ts_ns, s.strategy, s.symbol),
                )]
            case SubmitOrder():
                return [
                    (
                        "INSERT OR IGNORE INTO orders (run_id, client_order_id, ts_ns, strategy,"
                        " symbol, side, qty, notional_cents, order_type, limit_price, stop_price,"
                        " time_in_force, status, updated_ns)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending_new', ?)",
                        (run_id, msg.client_order_id, msg.ts_ns, msg.strategy, msg.symbol,
                         msg.side, msg.qty, msg.notional_cents, msg.order_type, msg.limit_price,
                         msg.stop_price, msg.time_in_force, msg.ts_ns),
                    ),
                    self._event(run_id, msg.ts_ns, msg.client_order_id, "submitted", ""),
                ]
            case OrderDenied():
                return [self._event(run_id, msg.ts_ns, msg.client_order_id, "denied",
                                    f"{msg.reason_code}: {msg.reason}")]
            case OrderEvent():
                return self._order_event(run_id, msg)
            case PositionChanged():
                return [(
                    _POSITIONS,
                    (run_id, msg.ts_ns, msg.symbol, n, msg.qty, msg.avg_price,
                     msg.realized_pnl_cents),
                )] if source == "risk" else []
            case AccountUpdated():
                return [(
                    _ACCOUNTS,
                    (run_id, msg.ts_ns, n, msg.cash_cents, msg.equity_cents,
                     msg.buying_power_cents, msg.gross_exposure_cents, msg.realized_pnl_cents,
                     msg.unrealized_pnl_cents),
                )] if source == "risk" else []
            case SymbolDelisted() if msg.qty:
                # The closing trade, so the fills still add up to every position
                # (and the report counts the round trip); the id is deterministic.
                delist_id = f"delist:{msg.symbol}:{msg.ts_ns}"
                qty = abs(msg.qty)
                return [(
                    _FILLS,
                    (run_id, delist_id, msg.ts_ns, delist_id, msg.symbol,
                     "sell" if msg.qty > 0 else "buy", qty, msg.price, 0, qty, msg.price),
                )]
            case RiskStateChanged():
                return []
            case _:
                return []

    def _event(
        self, run_id: str, ts_ns: int, coid: str, event: str, detail: str
    ) -> tuple[str, tuple[Any, ...]]:
        seq = self._event_seq[coid]
        self._event_seq[coid] = seq + 1
        return (
            _EVENTS,
            (run_id, ts_ns, coid, seq, event, detail),
        )

    def _order_event(self, run_id: str, msg: OrderEvent) -> list[tuple[str, tuple[Any, ...]]]:
        coid = msg.client_order_id
        out: list[tuple[str, tuple[Any, ...]]] = []
        update = "UPDATE orders SET status = ?, broker_order_id = ?, updated_ns = ?"
        where = " WHERE run_id = ? AND client_order_id = ?"
        match msg:
            case OrderAccepted():
                # An order we did not submit in this run (adopted at start-up)
                # still gets a row.
                out.append((
                    "INSERT OR IGNORE INTO orders (run_id, client_order_id, ts_ns, strategy,"
                    " symbol, side, qty, notional_cents, order_type, limit_price, stop_price,"
                    " time_in_force, status, updated_ns)"
                    " VALUES (?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?)",
                    (run_id, coid, msg.ts_ns, msg.symbol, msg.side, msg.qty,
                     msg.notional_cents, msg.order_type, msg.limit_price, msg.stop_price,
                     msg.time_in_force, msg.ts_ns),
                ))
                out.append((update + where, ("new", msg.broker_order_id, msg.ts_ns, run_id, coid)))
                out.append(self._event(run_id, msg.ts_ns, coid, "accepted", ""))
            case OrderFilled():
                out.append((
                    _FILLS,
                    (run_id, msg.execution_id, msg.ts_ns, coid, msg.symbol, msg.side, msg.qty,
                     msg.price, msg.commission_cents, msg.cum_qty, msg.avg_price),
                ))
                out.append((
                    update + ", filled_qty = ?, avg_price = ?" + where,
                    (msg.status, msg.broker_order_id, msg.ts_ns, msg.cum_qty, msg.avg_price,
                     run_id, coid),
                ))
                out.append(self._event(run_id, msg.ts_ns, coid, msg.status,
                                       f"{msg.qty:g} @ {msg.price:g}"))
            case OrderCanceled() | OrderExpired() | OrderRejected():
                status = {OrderCanceled: "canceled", OrderExpired: "expired",
                          OrderRejected: "rejected"}[type(msg)]
                reason = getattr(msg, "reason", "")
                out.append((
                    update + ", reason = ?" + where,
                    (status, msg.broker_order_id, msg.ts_ns, reason, run_id, coid),
                ))
                out.append(self._event(run_id, msg.ts_ns, coid, status, reason))
            case _:
                out.append(self._event(run_id, msg.ts_ns, coid, type(msg).__name__, ""))
        return out


def _write_sync(
    conn: sqlite3.Connection,
    journal: list[tuple[Any, ...]],
    equity: list[Any],
    statements: list[tuple[str, tuple[Any, ...]]],
    prune: tuple[int, int] | None = None,
    appends: Mapping[str, list[tuple[Any, ...]]] | None = None,
) -> int:
    """Runs on aiosqlite's thread: the whole batch (and a retention pass) in one
    transaction. ``statements`` run in order; ``appends`` (rows of append-only
    tables, by their ``INSERT ... VALUES``) after them, many rows to a
    statement. Returns how many bar records the pass deleted."""
    insert_rows(conn, "INSERT INTO journal VALUES", journal, 6)
    insert_flat(conn, "INSERT OR REPLACE INTO equity VALUES", equity, 4)
    for sql, params in statements:
        conn.execute(sql, params)
    for insert, rows in (appends or {}).items():
        insert_rows(conn, insert, rows, len(rows[0]))
    deleted = prune_bars(conn, *prune, limit=PRUNE_CHUNK) if prune is not None else 0
    conn.commit()
    return deleted


# Rows per statement, largest first: any count is a few statements of these
# sizes, so the connection's statement cache holds them all.
_ROWS_PER_STATEMENT = (256, 64, 16, 4, 1)


def insert_rows(conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]],
                columns: int) -> None:
    """``executemany`` of ``insert`` (``"INSERT ... VALUES"``), but many rows per statement.

    Why: the sqlite3 module lets go of the GIL around every step of every
    statement, and taking it back while the event loop is busy waits for the
    loop's switch interval. A row per statement turned a 50-row commit made
    during a burst of bars into hundreds of milliseconds; 256 rows per
    statement make it a handful of waits.
    """
    insert_flat(conn, insert, [v for row in rows for v in row], columns)


def insert_flat(conn: sqlite3.Connection, insert: str, values: Sequence[Any],
                columns: int) -> None:
    """:func:`insert_rows` for rows laid end to end, ``columns`` values each."""
    done = 0
    n = len(values) // columns
    for size in _ROWS_PER_STATEMENT:
        if n - done < size:
            continue
        sql = _values_sql(insert, columns, size)
        while n - done >= size:
            conn.execute(sql, values[done * columns:(done + size) * columns])
            done += size


@functools.cache
def _values_sql(insert: str, columns: int, rows: int) -> str:
    return insert + ",".join(("(" + ",".join("?" * columns) + ")",) * rows)


def prune_bars(conn: sqlite3.Connection, since_ns: int, cutoff_ns: int, *, limit: int) -> int:
    """Delete up to ``limit`` ``BarsClosed`` journal records with
    ``since_ns <= ts_ns < cutoff_ns``, in every run; nothing else. Returns the count.

    Per run, so each scan is a range of the primary key ``(run_id, ts_ns, ...)``
    rather than the whole journal.
    """
    deleted = 0
    runs = [r for (r,) in conn.execute("SELECT run_id FROM runs ORDER BY started_wall_ns")]
    for run_id in runs:
        if deleted >= limit:
            break
        cur = conn.execute(
            "DELETE FROM journal WHERE (run_id, ts_ns, source, seq) IN ("
            " SELECT run_id, ts_ns, source, seq FROM journal"
            " WHERE run_id = ? AND ts_ns >= ? AND ts_ns < ? AND type = 'BarsClosed'"
            " LIMIT ?)",
            (run_id, since_ns, cutoff_ns, limit - deleted),
        )
        deleted += cur.rowcount
    return deleted


def _drain(inbox: Channel[JournalRecord], limit: int) -> list[JournalRecord]:
    out: list[JournalRecord] = []
    while len(out) < limit:
        try:
            out.append(inbox.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    return out


def connect_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection for reports and checks (safe while a daemon writes)."""
    return sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
