"""systemd notification: READY, watchdog pings from the event loop, STOPPING.

A real AF_UNIX datagram socket stands in for systemd. A reader thread stamps
each datagram as it arrives, so the test can tell *when* pings came even while
the event loop (which sends them) is blocked.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.builders import replay_config
from trader.config import HttpConfig, decode_config
from trader.data.synth import synth_bars, write_csv
from trader.http import Ops
from trader.notify import Notifier
from trader.runner import run_replay

WAIT_S = 10.0


class FakeSystemd:
    """A bound datagram socket and a thread that records (arrival time, message)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(0.05)
        self.address = address
        self.received: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self._lock:
                self.received.append((time.monotonic(), data.decode()))

    def messages(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.received)

    def firsts(self) -> list[str]:
        """The first line of each datagram, in arrival order."""
        return [m.split("\n")[0] for _, m in self.messages()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def systemd() -> Iterator[FakeSystemd]:
    # A short directory: AF_UNIX paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="sd") as d:
        fake = FakeSystemd(str(Path(d) / "notify"))
        try:
            yield fake
        finally:
            fake.close()


async def _until_received(fake: FakeSystemd, first_line: str, count: int = 1) -> None:
    with anyio.fail_after(WAIT_S):
        # The reader is a thread: it cannot set an anyio event for us.
        while fake.firsts().count(first_line) < count:  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.mark.asyncio
async def test_ready_then_watchdog_pings_arrive_on_the_notify_socket(
    systemd: FakeSystemd,
) -> None:
    """READY=1 goes out when the readiness wait returns; pings come every WATCHDOG_USEC/2."""
    notifier = Notifier(systemd.address, watchdog_usec=100_000)
    assert notifier.watchdog_interval_s == pytest.approx(0.05)
    ready = anyio.Event()
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: notifier.run(
            ready=ready.wait, stopping=stop.wait, task_status=task_status))
        await _until_received(systemd, "WATCHDOG=1", 3)
        assert "READY=1" not in systemd.firsts(), "ready before the graph said so"
        ready.set()
        await _until_received(systemd, "READY=1")
        stop.set()
        await _until_received(systemd, "STOPPING=1")
        tg.cancel_scope.cancel()
    lines = systemd.firsts()
    assert lines.count("READY=1") == 1
    assert lines.count("STOPPING=1") == 1
    ready_msg = next(m for _, m in systemd.messages() if m.startswith("READY=1"))
    assert "STATUS=" in ready_msg


@pytest.mark.asyncio
async def test_pings_stop_while_the_event_loop_is_blocked(systemd: FakeSystemd) -> None:
    """A loop blocked for many ping intervals sends no ping until it runs again."""
    interval = 0.05
    notifier = Notifier(systemd.address, watchdog_usec=int(interval * 2 * 1_000_000))
    never = anyio.Event()
    async with anyio.create_task_group() as tg:
        await tg.start(lambda task_status: notifier.run(
            ready=never.wait, stopping=never.wait, task_status=task_status))
        await _until_received(systemd, "WATCHDOG=1", 2)
        blocked_from = time.monotonic()
        time.sleep(8 * interval)  # noqa: ASYNC251 (the blocked loop under test)
        blocked_until = time.monotonic()
        before = len(systemd.messages())
        await _until_received(systemd, "WATCHDOG=1", systemd.firsts().count("WATCHDOG=1") + 2)
        tg.cancel_scope.cancel()
    # A ping sent just before the block may be stamped a moment after it began.
    grace = interval / 2
    during = [t for t, m in systemd.messages()
              if m == "WATCHDOG=1" and blocked_from + grace < t < blocked_until]
    assert during == [], f"{len(during)} pings while the loop was blocked"
    assert len(systemd.messages()) > before, "pings resume once the loop runs"


@pytest.mark.asyncio
async def test_the_abstract_namespace_address_works() -> None:
    """``@name`` in NOTIFY_SOCKET means the abstract namespace."""
    fake = FakeSystemd(f"@trader-test-{uuid.uuid4().hex}")
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": fake.address})
        assert notifier.enabled
        assert notifier.watchdog_interval_s is None
        assert notifier.notify("READY=1")
        await _until_received(fake, "READY=1")
        notifier.close()
    finally:
        fake.close()


def test_the_environment_decides_what_is_sent() -> None:
    """No NOTIFY_SOCKET: nothing; a WATCHDOG_PID of another process: no pings."""
    quiet = Notifier.from_env({})
    assert not quiet.enabled
    assert quiet.notify("READY=1") is False
    other = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000",
                               "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval_s is None
    mine = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000",
                              "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval_s == 15.0


def test_an_unreachable_socket_is_logged_not_raised(tmp_path: Path) -> None:
    """systemd being gone must not stop trading: notify() returns False."""
    notifier = Notifier(str(tmp_path / "nobody-listens"))
    assert notifier.notify("WATCHDOG=1") is False
    assert notifier.notify("WATCHDOG=1") is False
    notifier.close()


@pytest.mark.asyncio
async def test_a_run_says_ready_after_reconciliation_and_stopping_when_it_drains(
    systemd: FakeSystemd, tmp_path: Path,
) -> None:
    """trader run's ops: READY=1 once the graph is up and reconciled, then STOPPING=1."""
    data = tmp_path / "data"
    write_csv(synth_bars(2, days=3, seed=3), data)
    config = decode_config(replay_config(data_dir=data, db=tmp_path / "run.db",
                                         strategy="sma_cross", params={"fast": 2, "slow": 5}))
    ops = Ops(HttpConfig(enabled=False), registry=CollectorRegistry(),
              notifier=Notifier(systemd.address, watchdog_usec=1_000_000))
    with anyio.fail_after(60):
        await run_replay(config, ops=ops)
    await _until_received(systemd, "STOPPING=1")
    lines = [line for line in systemd.firsts() if line != "WATCHDOG=1"]
    assert lines == ["READY=1", "STOPPING=1"]
    assert ops.metrics.reconciled == 1
