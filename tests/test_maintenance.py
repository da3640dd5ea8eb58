"""Journal maintenance: ``trader db backup``, ``trader db check`` and bar retention.

Backups and checks must be safe while a daemon writes; retention deletes old
raw bars and nothing else.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.builders import replay_config
from trader.actors import recorder as recorder_module
from trader.actors.base import JournalCommits, JournalRecord
from trader.actors.recorder import NS_PER_DAY, SCHEMA, Recorder, RunInfo
from trader.channels import Channel
from trader.cli import main
from trader.config import decode_config
from trader.data.synth import synth_bars, write_csv
from trader.errors import ConfigError
from trader.maintenance import backup, check
from trader.messages import (
    BarClosed,
    BarsClosed,
    ClientOrderId,
    OrderFilled,
    PositionChanged,
    SubmitOrder,
)
from trader.runner import run_replay

ROWS_PER_COMMIT = 50


class Writer:
    """A daemon-like writer: WAL mode, one thread, commits of ``ROWS_PER_COMMIT``
    journal records (seq 0, 1, 2, ...) plus a runs row naming the last seq, until stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.commits = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._committed = threading.Condition()
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        conn.execute("PRAGMA user_version=1")
        conn.commit()
        conn.close()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path)
            conn.execute("PRAGMA synchronous=NORMAL")
            seq = 0
            blob = bytes(range(256)) * 8  # records of realistic size
            while not self._stop.is_set():
                rows = [("run", i, "risk", i, "SubmitOrder", blob)
                        for i in range(seq, seq + ROWS_PER_COMMIT)]
                conn.executemany("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?)", rows)
                seq += ROWS_PER_COMMIT
                conn.execute("INSERT OR REPLACE INTO runs VALUES ('run', 'live', ?, '{}', '', '')",
                             (seq,))
                conn.commit()
                with self._committed:
                    self.commits += 1
                    self._committed.notify_all()
            conn.close()
        except BaseException as exc:  # reported by stop(), in the test's thread
            self.error = exc
            with self._committed:
                self._committed.notify_all()

    def start(self) -> None:
        self._thread.start()

    def wait_commits(self, n: int) -> None:
        with self._committed:
            assert self._committed.wait_for(lambda: self.commits >= n or self.error is not None,
                                            timeout=20)
        assert self.error is None, self.error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=20)
        assert not self._thread.is_alive()
        assert self.error is None, self.error


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(tmp_path / "live.db")
    w.start()
    try:
        yield w
    finally:
        w.stop()


def test_a_backup_taken_while_the_daemon_commits_is_an_intact_consistent_prefix(
    writer: Writer, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The copy passes integrity_check and holds exactly the first N commits, whole."""
    writer.wait_commits(20)
    dest = tmp_path / "backups" / "copy.db"
    assert main(["db", "backup", str(writer.path), str(dest)]) == 0
    during = writer.commits
    writer.wait_commits(during + 20)  # the writer never had to stop
    assert "integrity ok" in capsys.readouterr().out
    with sqlite3.connect(dest) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        seqs = [s for (s,) in conn.execute("SELECT seq FROM journal ORDER BY seq")]
        (last,) = conn.execute("SELECT started_wall_ns FROM runs").fetchone()
    assert mode == "delete", "a backup is one self-contained file"
    assert seqs == list(range(len(seqs))), "no gaps: a prefix of what was written"
    assert len(seqs) == last, "the runs row and the journal are from the same commit"
    assert len(seqs) % ROWS_PER_COMMIT == 0, "no commit is cut in half"
    assert 20 * ROWS_PER_COMMIT <= len(seqs) < writer.commits * ROWS_PER_COMMIT
    assert not dest.with_name("copy.db.partial").exists()
    assert check(dest).ok


def test_a_journal_being_written_checks_ok(
    writer: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`trader db check` reads a live journal without disturbing the writer."""
    writer.wait_commits(5)
    assert main(["db", "check", str(writer.path)]) == 0
    before = writer.commits
    writer.wait_commits(before + 5)
    out = capsys.readouterr().out
    assert f"{writer.path}: ok (schema v1, 1 runs, " in out


def _damage(path: Path) -> None:
    """Overwrite the middle of the file (table pages, not the header) with garbage."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\xde\xad\xbe\xef" * 2048)


def _journal_file(path: Path, records: int = 2000) -> Path:
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA)
        conn.executemany("INSERT INTO journal VALUES ('r', ?, 'risk', 0, 'SubmitOrder', ?)",
                         [(i, bytes(200)) for i in range(records)])
    return path


def test_a_damaged_journal_fails_the_check_with_exit_code_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Damage is reported line by line; the exit code is 1."""
    db = _journal_file(tmp_path / "j.db")
    assert main(["db", "check", str(db)]) == 0
    _damage(db)
    assert main(["db", "check", str(db)]) == 1
    out = capsys.readouterr().out
    assert f"{db}: damaged:" in out


def test_a_file_that_is_not_a_database_fails_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not SQLite at all is an integrity failure too, not a crash."""
    bogus = tmp_path / "notes.db"
    bogus.write_text("hello\n" * 100)
    assert main(["db", "check", str(bogus)]) == 1
    assert "file is not a database" in capsys.readouterr().out


def test_a_damaged_journal_is_not_backed_up(tmp_path: Path) -> None:
    """The copy of a damaged journal fails its check: exit 1 and no DEST left behind."""
    db = _journal_file(tmp_path / "j.db")
    _damage(db)
    dest = tmp_path / "copy.db"
    assert main(["db", "backup", str(db), str(dest)]) == 1
    assert not dest.exists()
    assert not dest.with_name("copy.db.partial").exists()


def test_missing_files_and_an_existing_destination_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit code 2 naming the path; an existing backup is replaced only with --force."""
    missing = tmp_path / "nope.db"
    assert main(["db", "check", str(missing)]) == 2
    assert main(["db", "backup", str(missing), str(tmp_path / "c.db")]) == 2
    assert f"{missing}: no such journal" in capsys.readouterr().err
    db = _journal_file(tmp_path / "j.db", records=10)
    dest = tmp_path / "c.db"
    dest.write_bytes(b"an older backup")
    assert main(["db", "backup", str(db), str(dest)]) == 2
    assert "exists (--force replaces it)" in capsys.readouterr().err
    assert dest.read_bytes() == b"an older backup"
    assert main(["db", "backup", "--force", str(db), str(dest)]) == 0
    assert main(["db", "backup", "--force", str(db), str(db)]) == 2
    assert "is the journal itself" in capsys.readouterr().err
    assert check(db).records == 10
    report = backup(db, dest, overwrite=True)
    assert report.ok
    assert report.check.records == 10


# --- retention -------------------------------------------------------------------------------


DAY = NS_PER_DAY


def _bars(day: int) -> BarsClosed:
    ts = day * DAY
    bar = BarClosed(ts_ns=ts, symbol="AAPL", open=10, high=11, low=9, close=10.5, volume=100)
    return BarsClosed(ts_ns=ts, bars=(bar,))


def _trade(day: int) -> list[JournalRecord]:
    ts = day * DAY
    coid = ClientOrderId(f"s:AAPL:{ts}:buy")
    return [
        ("risk", SubmitOrder(ts_ns=ts, client_order_id=coid, strategy="s", symbol="AAPL",
                             side="buy", qty=1)),
        ("execution", OrderFilled(ts_ns=ts, client_order_id=coid, symbol="AAPL",
                                  execution_id=f"e{day}", side="buy", qty=1, price=10.0,
                                  commission_cents=0, cum_qty=1, avg_price=10.0,
                                  status="filled")),
        ("risk", PositionChanged(ts_ns=ts, symbol="AAPL", qty=day + 1, avg_price=10.0,
                                 realized_pnl_cents=0)),
    ]


def _bar_days(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [ts // DAY for (ts,) in conn.execute(
            "SELECT ts_ns FROM journal WHERE type = 'BarsClosed' ORDER BY ts_ns")]


@pytest.mark.asyncio
async def test_the_recorder_deletes_bars_older_than_the_retention_as_it_goes(
    tmp_path: Path,
) -> None:
    """With a 3-day retention, bars more than 3 days older than the newest go while the
    recorder runs; orders, fills, positions and their journal records all stay."""
    db = tmp_path / "j.db"
    inbox: Channel[JournalRecord] = Channel("recorder", 1024)
    commits = JournalCommits()
    run = RunInfo(run_id=uuid.uuid4().hex, mode="live", started_wall_ns=0, config="{}",
                  data_hash="", code_version="test")
    recorder = Recorder(inbox, path=db, run=run, commits=commits, linger_s=0.0,
                        bar_retention_days=3)

    async def written(n: int) -> None:
        with anyio.fail_after(10):
            await commits.wait_for(n)

    async with anyio.create_task_group() as tg:
        await tg.start(recorder.run)
        for day in range(5):
            await inbox.send_all([("strategy", _bars(day)), *_trade(day)])
        await written(inbox.sent)
        assert _bar_days(db) == [1, 2, 3, 4]
        for day in range(5, 10):
            await inbox.send_all([("strategy", _bars(day)), *_trade(day)])
            await written(inbox.sent)
        assert _bar_days(db) == [6, 7, 8, 9], "pruned while running, not only at the end"
        inbox.close()
    with sqlite3.connect(db) as conn:
        kinds = dict(conn.execute("SELECT type, COUNT(*) FROM journal GROUP BY type"))
        (fills,) = conn.execute("SELECT COUNT(*) FROM fills").fetchone()
        (orders,) = conn.execute("SELECT COUNT(*) FROM orders").fetchone()
        (positions,) = conn.execute("SELECT COUNT(*) FROM positions").fetchone()
    assert kinds == {"BarsClosed": 4, "SubmitOrder": 10, "OrderFilled": 10,
                     "PositionChanged": 10}
    assert (fills, orders, positions) == (10, 10, 10)


@pytest.mark.asyncio
async def test_a_backlog_of_old_bars_is_deleted_a_bounded_chunk_per_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Enabling retention on an old journal never makes one huge transaction: each
    commit deletes at most PRUNE_CHUNK bars, and the following commits finish the job."""
    monkeypatch.setattr(recorder_module, "PRUNE_CHUNK", 3)
    db = tmp_path / "j.db"
    inbox: Channel[JournalRecord] = Channel("recorder", 1024)
    commits = JournalCommits()
    run = RunInfo(run_id="r", mode="live", started_wall_ns=0, config="{}", data_hash="",
                  code_version="test")
    recorder = Recorder(inbox, path=db, run=run, commits=commits, linger_s=0.0,
                        bar_retention_days=1)

    async def commit(records: list[JournalRecord]) -> list[int]:
        await inbox.send_all(records)
        with anyio.fail_after(10):
            await commits.wait_for(inbox.sent)
        return _bar_days(db)

    async with anyio.create_task_group() as tg:
        await tg.start(recorder.run)
        # Ten days of bars in one batch: eight are beyond the one-day retention.
        assert await commit([("strategy", _bars(day)) for day in range(10)]) == [3, 4, 5, 6,
                                                                                  7, 8, 9]
        assert await commit(_trade(9)) == [6, 7, 8, 9]
        assert await commit(_trade(9)[:1]) == [8, 9]
        inbox.close()
    assert _bar_days(db) == [8, 9]


@pytest.mark.asyncio
async def test_bars_are_kept_without_a_retention(tmp_path: Path) -> None:
    """The default (0) keeps every bar."""
    db = tmp_path / "j.db"
    inbox: Channel[JournalRecord] = Channel("recorder", 1024)
    commits = JournalCommits()
    run = RunInfo(run_id="r", mode="live", started_wall_ns=0, config="{}", data_hash="",
                  code_version="test")
    async with anyio.create_task_group() as tg:
        await tg.start(Recorder(inbox, path=db, run=run, commits=commits, linger_s=0.0).run)
        await inbox.send_all([("strategy", _bars(day)) for day in range(400)])
        inbox.close()
    assert _bar_days(db) == list(range(400))


@pytest.mark.asyncio
@pytest.mark.parametrize(("timeframe_s", "days", "refused"), [
    (86_400, 700, True),   # 512 daily bars are ~2 years of sessions
    (86_400, 730, False),
    (60, 3, True),         # 512 minute bars span two sessions, maybe over a weekend
    (60, 7, False),
])
async def test_a_daemon_refuses_a_retention_shorter_than_the_strategys_warm_up(
    tmp_path: Path, timeframe_s: int, days: int, refused: bool,
) -> None:
    """The warm-up after a restart reads journaled bars; a retention that deletes them
    first is a config error naming the field, before anything starts."""
    from trader.runner import run_live

    config = decode_config({
        "run": {"db": str(tmp_path / "j.db")},
        # No keys and no sandbox: a daemon that got past the check stops at the credentials.
        "alpaca": {"key_id_env": "TRADER_TEST_NO_SUCH_KEY",
                   "secret_env": "TRADER_TEST_NO_SUCH_SECRET"},
        "feed": {"kind": "alpaca", "symbols": ["X"], "timeframe_s": timeframe_s},
        "recorder": {"bar_retention_days": days},
    })
    with pytest.raises(ConfigError) as caught:
        await run_live(config)
    field = "$.recorder.bar_retention_days"
    assert (field in str(caught.value)) is refused, str(caught.value)


@pytest.mark.asyncio
async def test_a_replay_with_bar_retention_keeps_only_its_last_days_of_bars(
    tmp_path: Path,
) -> None:
    """`[recorder] bar_retention_days` reaches the recorder through the config; the
    replay's orders and fills are all still in the journal."""
    data = tmp_path / "data"
    write_csv(synth_bars(2, days=30, freq="1d", seed=3), data)

    async def replay(db: Path, retention: int) -> None:
        raw = replay_config(data_dir=data, db=db, strategy="sma_cross",
                            params={"fast": 2, "slow": 5}, batch_bars=1)
        raw["recorder"] = {"bar_retention_days": retention}
        with anyio.fail_after(60):
            await run_replay(decode_config(raw))

    full, pruned = tmp_path / "full.db", tmp_path / "pruned.db"
    await replay(full, 0)
    await replay(pruned, 7)
    kept = _bar_days(pruned)
    assert kept, "the newest bars are kept"
    assert kept[-1] - kept[0] <= 7
    assert kept == [d for d in _bar_days(full) if d >= kept[-1] - 7]
    assert len(_bar_days(full)) > len(kept)

    def trades(db: Path) -> list[tuple[object, ...]]:
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "SELECT client_order_id, qty, price FROM fills ORDER BY client_order_id"
            ).fetchall()

    assert trades(pruned) == trades(full)
    assert trades(full), "the scenario must trade"
