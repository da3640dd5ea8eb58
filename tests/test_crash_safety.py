"""Crash safety: SIGKILL the daemon at seeded random points during order flow.

The sandbox runs as its own process (it is the broker: it must outlive the
daemon), on a manual clock the test advances. Each round starts the daemon,
lets the market move a few bars, and kills the daemon with SIGKILL after a
seeded random delay: during a submit, a fill, a journal commit, a
reconciliation, wherever it happens to be. Afterwards no order exists twice at
the sandbox, no fill is missing from (or doubled in) the journal, and the
journal's positions equal the sandbox's.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from trader.data.synth import synth_bars, write_csv

REPO = Path(__file__).resolve().parent.parent
KEY, SECRET = "crash-key", "crash-secret"
SYMBOLS = ["AAPL", "IBM", "MSFT"]
ROUNDS = 22
SEED = 20261120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited {proc.returncode}:\n{path.read_text()}")
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} not seen in {path} within {timeout}s")


class SandboxProcess:
    def __init__(self, data: Path, log: Path) -> None:
        self.port = _free_port()
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trader", "sandbox", "--port", str(self.port),
                 "--data", str(data), "--speed", "max", "--key-id", KEY, "--secret", SECRET],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )
        _wait_for(log, "sandbox.listening", self.proc, 60)
        self.url = f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET,
                     "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def advance(self, bars: int) -> None:
        self._call("POST", "/admin/advance", {"bars": bars})

    def orders(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self._call("GET", "/v2/orders?status=all&limit=500")
        return out

    def positions(self) -> dict[str, float]:
        return {p["symbol"]: float(p["qty"]) for p in self._call("GET", "/v2/positions")}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        finally:
            self.proc.kill()


def _daemon_config(tmp: Path, sandbox: SandboxProcess) -> Path:
    cfg = tmp / "daemon.toml"
    url = sandbox.url
    cfg.write_text(f"""
[run]
db = "{tmp / 'journal.db'}"
shutdown_deadline_s = 10.0
control_socket = "{tmp / 'c.sock'}"
[http]
enabled = false
[alpaca]
trading_url = "{url}"
data_url = "{url}"
data_stream_url = "ws://127.0.0.1:{sandbox.port}/v2/iex"
trade_stream_url = "ws://127.0.0.1:{sandbox.port}/stream"
update_timeout_s = 1.0
request_timeout_s = 5.0
[feed]
kind = "alpaca"
symbols = {json.dumps(SYMBOLS)}
timeframe_s = 86400
stale_after_s = 3600.0
reconnect_initial_s = 0.05
reconnect_max_s = 0.5
[strategy]
name = "sma_cross"
instance = "crash"
params = {{ fast = 2, slow = 4 }}
[risk]
sizing = "fixed_fraction"
fixed_fraction = 0.3
""")
    return cfg


def _start_daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET}
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "trader", "run", "--config", str(cfg)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err,
        )


def _journal(db: Path) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """Filled qty per order (each execution once), last status per order, intents sent."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        filled: dict[str, float] = {}
        for coid, qty in conn.execute(
            "SELECT client_order_id, qty FROM "
            "(SELECT DISTINCT execution_id, client_order_id, qty FROM fills)"
        ):
            filled[coid] = round(filled.get(coid, 0.0) + qty, 9)
        status: dict[str, str] = {}
        for coid, event in conn.execute(
            "SELECT client_order_id, event FROM order_events ORDER BY rowid"
        ):
            if event != "denied":
                status[coid] = event
        submitted = [c for (c,) in conn.execute(
            "SELECT DISTINCT client_order_id FROM order_events WHERE event = 'submitted'")]
    return filled, status, submitted


@pytest.mark.slow
def test_sigkill_at_random_points_never_duplicates_or_loses_orders_and_fills(
    tmp_path: Path,
) -> None:
    """22 SIGKILLs during order flow: no order twice, no fill missing, positions agree."""
    data = tmp_path / "data"
    write_csv(synth_bars(SYMBOLS, days=90, freq="1d", seed=13), data)
    sandbox = SandboxProcess(data, tmp_path / "sandbox.log")
    rng = random.Random(SEED)
    db = tmp_path / "journal.db"
    try:
        cfg = _daemon_config(tmp_path, sandbox)
        kills = 0
        for round_ in range(ROUNDS):
            log = tmp_path / f"daemon-{round_}.log"
            proc = _start_daemon(cfg, log)
            _wait_for(log, '"graph ready"', proc, 60)
            sandbox.advance(rng.randint(1, 3))
            time.sleep(rng.uniform(0.0, 0.25))  # the injected fault's timing, seeded
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
        # A last, clean run: let it reconcile and catch up, then stop it.
        log = tmp_path / "daemon-final.log"
        proc = _start_daemon(cfg, log)
        _wait_for(log, '"graph ready"', proc, 60)
        deadline = time.monotonic() + 60
        while True:
            orders = sandbox.orders()
            filled, status, _ = _journal(db)
            settled = all(
                filled.get(o["client_order_id"], 0.0) == round(float(o["filled_qty"]), 9)
                and status.get(o["client_order_id"]) in (o["status"], "partially_filled")
                for o in orders
            )
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
        orders = sandbox.orders()
        positions = sandbox.positions()
    finally:
        sandbox.stop()

    assert kills == ROUNDS
    assert len(orders) >= 6, "the scenario must trade while being killed"
    coids = [o["client_order_id"] for o in orders]
    # No order twice: one broker order per intent (instance, symbol, signal time, side).
    assert len(coids) == len(set(coids))
    intents = [tuple(c.split(":")) for c in coids]
    assert len(intents) == len(set(intents))
    filled, status, submitted = _journal(db)
    for o in orders:
        coid = o["client_order_id"]
        # No fill missing from the journal, and none counted twice.
        assert filled.get(coid, 0.0) == round(float(o["filled_qty"]), 9), coid
        assert coid in status, coid
    # Every order the sandbox has was one the daemon decided to send.
    assert set(coids) <= set(submitted)
    # Positions: the journal's fills add up to the sandbox's positions.
    net: dict[str, float] = {}
    with sqlite3.connect(db) as conn:
        for symbol, side, qty in conn.execute(
            "SELECT symbol, side, qty FROM "
            "(SELECT DISTINCT execution_id, symbol, side, qty FROM fills)"
        ):
            net[symbol] = round(net.get(symbol, 0.0) + (qty if side == "buy" else -qty), 9)
    assert {s: q for s, q in net.items() if q} == positions
