"""The recorder's group commit: records wait for company, unless someone waits for them."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from trader.actors.base import JournalCommits, JournalRecord, Outbox
from trader.actors.recorder import Recorder, RunInfo
from trader.channels import Channel
from trader.messages import ClientOrderId, Message, SubmitOrder

T = 1_704_230_400_000_000_000


def _order(n: int) -> SubmitOrder:
    return SubmitOrder(ts_ns=T + n, client_order_id=ClientOrderId(f"s:AAPL:{T + n}:buy"),
                       strategy="s", symbol="AAPL", side="buy", qty=1.0)


@pytest.mark.asyncio
async def test_a_journal_barrier_is_committed_at_once_not_after_the_linger(
    tmp_path: Path,
) -> None:
    """With a 60 s group-commit linger, a record nobody waits for stays queued, and a
    barrier (an order about to go to the broker) has it committed at once."""
    inbox: Channel[JournalRecord] = Channel("recorder", 1024)
    commits = JournalCommits()
    run = RunInfo(run_id="r", mode="live", started_wall_ns=0, config="{}", data_hash="",
                  code_version="test")
    recorder = Recorder(inbox, path=tmp_path / "j.db", run=run, commits=commits,
                        linger_s=60.0)
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
