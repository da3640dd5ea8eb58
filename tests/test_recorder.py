"""The recorder's group commit (records wait for company, unless someone waits for them),
and how it writes a batch."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.actors.base import JournalCommits, JournalRecord, Outbox
from trader.actors.recorder import Recorder, RunInfo, insert_rows
from trader.channels import Channel
from trader.messages import (
    ClientOrderId,
    Message,
    OrderAccepted,
    OrderFilled,
    PositionChanged,
    SubmitOrder,
)

T = 1_704_230_400_000_000_000


def _order(n: int) -> SubmitOrder:
    return SubmitOrder(ts_ns=T + n, client_order_id=ClientOrderId(f"s:AAPL:{T + n}:buy"),
                       strategy="s", symbol="AAPL", side="buy", qty=1.0)


def _recorder(tmp_path: Path, *, linger_s: float) -> tuple[
        Channel[JournalRecord], JournalCommits, Recorder]:
    """A recorder of a live run writing tmp_path/j.db: its inbox, commits and itself."""
    inbox: Channel[JournalRecord] = Channel("recorder", 1024)
    commits = JournalCommits()
    run = RunInfo(run_id="r", mode="live", started_wall_ns=0, config="{}", data_hash="",
                  code_version="test")
    return inbox, commits, Recorder(inbox, path=tmp_path / "j.db", run=run, commits=commits,
                                    linger_s=linger_s)


@pytest.mark.asyncio
async def test_a_journal_barrier_is_committed_at_once_not_after_the_linger(
    tmp_path: Path,
) -> None:
    """With a 60 s group-commit linger, a record nobody waits for stays queued, and a
    barrier (an order about to go to the broker) has it committed at once."""
    inbox, commits, recorder = _recorder(tmp_path, linger_s=60.0)
    sink: Channel[Message] = Channel("execution", 64)
    risk = Outbox("risk", {SubmitOrder: [sink]}, inbox, commits)
    execution = Outbox("execution", {}, inbox, commits)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(recorder.run)
            risk.post(_order(1))
            await anyio.wait_all_tasks_blocked()
            assert commits.committed == 0  # lingering for company (group commit)
            risk.post(_order(2))
            await execution.barrier()  # well within the fail_after, far from 60 s
            assert commits.committed == 2
            inbox.close()


@given(n=st.integers(min_value=0, max_value=700))
@settings(max_examples=40, deadline=None)
def test_many_rows_per_statement_write_every_row_once_in_order(n: int) -> None:
    """Any number of rows lands whole, each once, whatever sizes of statement it splits into."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, label TEXT, body BLOB)")
    rows = [(i, f"row {i}", bytes([i % 256]) * 3) for i in range(n)]
    insert_rows(conn, "INSERT INTO t VALUES", rows, 3)
    assert conn.execute("SELECT i, label, body FROM t ORDER BY i").fetchall() == rows


def test_a_large_batch_is_a_handful_of_statements_not_one_per_row(tmp_path: Path) -> None:
    """Why it matters: every statement lets go of the GIL and must take it back from a busy
    event loop (up to the switch interval each time), so a burst's commit must not cost a
    statement per row."""
    conn = sqlite3.connect(tmp_path / "j.db")
    conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v REAL)")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    insert_rows(conn, "INSERT INTO t VALUES", [(i, i / 2) for i in range(1000)], 2)
    assert conn.execute("SELECT COUNT(*), SUM(v) FROM t").fetchone() == (1000, 249750.0)
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) <= 10  # 3 x 256 + 3 x 64 + 2 x 16 + 2 x 4: 10


@pytest.mark.asyncio
async def test_a_batch_of_order_lives_lands_whole_in_every_table(tmp_path: Path) -> None:
    """Twenty orders submitted, accepted, filled and booked in one transaction: each table
    has its rows, and the order events keep each order's sequence."""
    inbox, _, recorder = _recorder(tmp_path, linger_s=0.0)
    for n in range(20):
        order = _order(n)
        coid = order.client_order_id
        inbox.try_send(("risk", order))
        inbox.try_send(("execution", OrderAccepted(
            ts_ns=T + n, client_order_id=coid, symbol="AAPL", broker_order_id=f"b{n}")))
        inbox.try_send(("execution", OrderFilled(
            ts_ns=T + n + 1, client_order_id=coid, symbol="AAPL", broker_order_id=f"b{n}",
            execution_id=f"e{n}", side="buy", qty=1.0, price=100.0 + n, commission_cents=1,
            cum_qty=1.0, avg_price=100.0 + n, status="filled")))
        inbox.try_send(("risk", PositionChanged(ts_ns=T + n + 1, symbol="AAPL", qty=n + 1.0,
                                                avg_price=100.0, realized_pnl_cents=0)))
    inbox.close()
    with anyio.fail_after(10):
        await recorder.run()
    with sqlite3.connect(tmp_path / "j.db") as db:
        assert db.execute("SELECT COUNT(*), MIN(status), MAX(status) FROM orders").fetchone() \
            == (20, "filled", "filled")
        assert db.execute("SELECT SUM(price * qty), SUM(commission_cents) FROM fills") \
            .fetchone() == (sum(100.0 + n for n in range(20)), 20)
        assert [q for (q,) in db.execute("SELECT qty FROM positions ORDER BY ts_ns")] == [
            n + 1.0 for n in range(20)]
        events = db.execute("SELECT client_order_id, seq, event FROM order_events "
                            "ORDER BY client_order_id, seq").fetchall()
    assert len(events) == 60
    assert {tuple(e for _, _, e in events[i:i + 3]) for i in range(0, 60, 3)} == {
        ("submitted", "accepted", "filled")}
