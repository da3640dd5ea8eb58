"""The operations endpoint: /metrics, /healthz, /readyz, /status and the page.

The main test runs the daemon against the embedded sandbox with the server on
port 0 and follows /readyz through start-up, trading, a feed outage and a HALT.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from tests.test_live_e2e import SYMBOLS, Daemon
from tests.test_metrics import idle_graph
from tests.test_notify import FakeSystemd
from trader.config import Config, HttpConfig, decode_config
from trader.data.synth import synth_bars, write_csv
from trader.errors import ConfigError
from trader.graph import Graph
from trader.http import Ops, parse_listen, render_page
from trader.messages import HaltTrading, ResumeTrading
from trader.notify import Notifier
from trader.runner import run_live
from trader.sandbox import Sandbox

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 20.0

Reply = tuple[int, Any]


async def _get(http: aiohttp.ClientSession, url: str) -> Reply:
    async with http.get(url) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` (an HTTP round trip, or state another task owns), bounded in time."""
    with anyio.fail_after(WAIT_S):
        while not await check():  # noqa: ASYNC110
            await anyio.sleep(0.01)


def _values(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, from an exposition."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def _promtool_check(text: str) -> None:
    if shutil.which("promtool") is None:
        return
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- without a running graph -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_every_endpoint_answers_while_the_graph_has_not_started(tmp_path: Path) -> None:
    """Alive but not ready; /status, the page and /metrics answer from the first moment."""
    graph = idle_graph(tmp_path)
    ops = Ops(HttpConfig(listen="127.0.0.1:0"), registry=CollectorRegistry(),
              notifier=Notifier(None))
    async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
        await tg.start(ops.run, graph)
        assert ops.url is not None
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", ops.url)
        status, health = await _get(http, ops.url + "/healthz")
        assert (status, health["ok"]) == (200, True)
        status, ready = await _get(http, ops.url + "/readyz")
        assert status == 503
        assert ready["ready"] is False
        assert ready["failing"] == ["graph", "trade_stream", "reconciliation", "feed"]
        assert ready["conditions"]["graph"]["detail"] == "the actors are starting"
        status, info = await _get(http, ops.url + "/status")
        assert status == 200
        assert info["mode"] == "replay"
        assert info["open_orders"] == 0
        assert info["run_id"] == graph.run_info.run_id
        status, page = await _get(http, ops.url + "/")
        assert status == 200
        assert "<html" in page
        assert graph.run_info.run_id in page
        async with http.get(ops.url + "/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            values = _values(await resp.text())
        assert values["trader_ready"] == 0
        assert values['trader_ready_condition{condition="graph"}'] == 0
        openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with http.get(ops.url + "/metrics", headers=openmetrics) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await resp.text()).endswith("# EOF\n")
        tg.cancel_scope.cancel()
    assert ops.url is None  # the server is gone: the port is free again


def test_the_status_page_is_self_contained_and_escapes_what_it_shows() -> None:
    """No external assets; values are HTML-escaped."""
    status = {
        "version": "0.1.0", "run_id": "<script>", "mode": "live", "ready": False,
        "conditions": {"risk": {"ok": False, "detail": "HALTED: <b>x</b>"}},
        "risk_state": "HALTED", "feed_status": "connected", "last_bar_ns": 1_700_000_000 * 10**9,
        "last_bar_age_s": 5.0, "equity": 1234.5, "cash": None, "gross_exposure": 0.0,
        "realized_pnl": 0.0, "unrealized_pnl": 0.0, "drawdown": 0.05, "open_orders": 2,
        "positions": {"AAPL": {"qty": 3.0, "avg_price": 10.0}}, "restarts": {"feed": 1},
    }
    page = render_page(status)
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "<b>x</b>" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "2023-11-14 22:13:20 UTC" in page
    assert "1,234.50" in page
    assert "5.00%" in page


def test_listen_addresses_are_checked() -> None:
    """host:port, [v6]:port; anything else is a config error naming the field."""
    assert parse_listen("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9108", ":9108", "localhost:http", "127.0.0.1:70000"):
        with pytest.raises(ConfigError, match=r"\$\.http\.listen"):
            parse_listen(bad)


@pytest.mark.asyncio
async def test_a_port_in_use_is_logged_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """Observability never stops trading: a busy port is an error line, not an exit."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ops = Ops(HttpConfig(listen=f"127.0.0.1:{port}"), registry=CollectorRegistry(),
                  notifier=Notifier(None))
        graph = idle_graph(tmp_path)
        with capture_logs() as logs:
            async with anyio.create_task_group() as tg:
                await tg.start(ops.run, graph)
                assert ops.url is None
                tg.cancel_scope.cancel()
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["http endpoint not started: cannot listen"]
    assert errors[0]["listen"] == f"127.0.0.1:{port}"


@pytest.mark.asyncio
async def test_healthz_fails_while_the_event_loop_lags(tmp_path: Path) -> None:
    """Liveness reflects the loop: a lag past the threshold is a 503 until it recovers."""
    graph = idle_graph(tmp_path)
    ops = Ops(HttpConfig(listen="127.0.0.1:0", max_loop_lag_s=0.2),
              registry=CollectorRegistry(), notifier=Notifier(None))
    m = ops.metrics
    async with anyio.create_task_group() as tg, aiohttp.ClientSession() as http:
        await tg.start(ops.run, graph)
        assert ops.url is not None
        url = ops.url + "/healthz"

        async def monitoring() -> bool:
            return m.last_tick is not None

        await _until(monitoring, "the loop monitor has run once")
        # Longer than the monitor's 0.5 s timer, so it wakes late by at least 0.3 s.
        time.sleep(0.8)  # noqa: ASYNC251 (the blocked loop under test)

        async def lag_seen() -> bool:
            return m.last_lag_s > 0.2

        await _until(lag_seen, "the monitor measured the block")
        status, body = await _get(http, url)
        assert status == 503
        assert "loop lag" in body["event_loop"]

        async def recovered() -> bool:
            return (await _get(http, url))[0] == 200

        await _until(recovered, "healthy again")
        tg.cancel_scope.cancel()


# --- a live session against the sandbox ------------------------------------------------------


def _live_config(db: Path) -> Config:
    return decode_config({
        "run": {"db": str(db), "shutdown_deadline_s": 10.0},
        "feed": {"kind": "alpaca", "symbols": SYMBOLS, "timeframe_s": 86400,
                 "stale_after_s": 3600.0, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2},
        "alpaca": {"update_timeout_s": 2.0, "request_timeout_s": 5.0},
        "strategy": {"name": "sma_cross", "instance": "ops", "params": {"fast": 2, "slow": 4}},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.3},
        "http": {"listen": "127.0.0.1:0"},
    })


@pytest.mark.asyncio
async def test_a_live_session_is_scraped_and_readiness_follows_startup_outage_and_halt(
    tmp_path: Path,
) -> None:
    """/metrics moves as the daemon trades; /readyz flips for start-up, a feed outage and a
    HALT while /healthz stays 200."""
    db = tmp_path / "live.db"
    config = _live_config(db)
    reg = CollectorRegistry()
    ops = Ops(config.http, registry=reg, notifier=Notifier(None))
    tables = synth_bars(SYMBOLS, days=40, freq="1d", seed=5)
    async with Sandbox(tables, speed="max") as sb, aiohttp.ClientSession() as http:
        daemon = Daemon(sb, config, db)

        def on_graph(g: Graph) -> None:
            daemon.graph = g

        async def readyz() -> Reply:
            assert ops.url is not None
            return await _get(http, ops.url + "/readyz")

        async def metrics() -> dict[str, float]:
            assert ops.url is not None
            async with http.get(ops.url + "/metrics") as resp:
                text = await resp.text()
            return _values(text)

        def ready_is(expected: bool, failing: list[str] | None = None) -> Callable[
                [], Awaitable[bool]]:
            async def check() -> bool:
                status, body = await readyz()
                return status == (200 if expected else 503) and (
                    failing is None or body["failing"] == failing)
            return check

        async def healthy() -> None:
            assert ops.url is not None
            assert (await _get(http, ops.url + "/healthz"))[0] == 200

        async with anyio.create_task_group() as tg:
            # A slow broker: reconciliation takes seconds, so start-up is observable.
            sb.faults.update({"delay_s": 1.0})

            async def run() -> None:
                await run_live(config, sandbox=sb, ops=ops, on_graph=on_graph)

            tg.start_soon(run)

            async def serving() -> bool:
                return ops.url is not None

            await _until(serving, "the endpoint is up")
            status, body = await readyz()
            assert status == 503, body
            assert "reconciliation" in body["failing"], body
            await healthy()
            sb.faults.update({"delay_s": 0.0})
            await _until(ready_is(True), "ready after start-up")
            assert daemon.graph is not None
            assert daemon.graph.ready

            # Trade until something has filled (and a little beyond).
            for _ in range(40):
                await sb.market.advance(bars=1)
                await daemon.settle()
                if sum(v for k, v in (await metrics()).items()
                       if k.startswith("trader_fills_total")) >= 2:
                    break
            async with http.get(ops.url + "/metrics") as resp:  # type: ignore[operator]
                text = await resp.text()
            _promtool_check(text)
            values = _values(text)
            fills = sum(v for k, v in values.items() if k.startswith("trader_fills_total"))
            assert fills >= 2, "the session must trade"
            assert values["trader_equity_dollars"] > 0
            assert values["trader_reconciliations_total"] == 1
            assert values['trader_messages_received_total{actor="risk"}'] > 0
            assert values["trader_feed_bars_emitted_total"] >= 3
            assert values["trader_journal_write_seconds_count"] > 0
            assert values["trader_feed_connected"] == 1
            assert values["trader_ready"] == 1
            status, info = await _get(http, ops.url + "/status")  # type: ignore[operator]
            assert info["ready"]
            assert info["equity"] == values["trader_equity_dollars"]
            assert info["last_bar_ns"] == sb.market.watermark_ns

            # A feed outage: logins refused, every socket cut.
            sb.faults.update({"refuse_auth": True})
            assert sb.drop_connections() >= 1
            await _until(ready_is(False, ["feed"]), "not ready while the feed is down")
            await healthy()
            assert (await metrics())["trader_feed_connected"] == 0
            sb.faults.update({"refuse_auth": False})
            await _until(ready_is(True), "ready once the feed is back")
            assert (await metrics())["trader_feed_reconnects_total"] >= 1

            # An operator halt, then a resume.
            graph = daemon.graph
            control = graph.outbox("control")
            control.post(HaltTrading(ts_ns=graph.clock.now_ns(), reason="ops test"))
            await _until(ready_is(False, ["risk"]), "not ready while HALTED")
            await healthy()
            values = await metrics()
            assert values['trader_risk_state{state="HALTED"}'] == 1
            status, info = await _get(http, ops.url + "/status")  # type: ignore[operator]
            assert info["risk_state"] == "HALTED"
            control.post(ResumeTrading(ts_ns=graph.clock.now_ns(), reason="ops test"))
            await _until(ready_is(True), "ready after the resume")

            graph.request_stop()
    assert ops.url is None


# --- trader run, in a real process --------------------------------------------------------------


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return False


def test_trader_run_serves_the_endpoint_and_talks_to_systemd(tmp_path: Path) -> None:
    """The CLI wires it all: the URL is logged, /readyz turns 200, systemd hears READY,
    pings and STOPPING, and SIGTERM still exits 0."""
    data = tmp_path / "data"
    write_csv(synth_bars(2, days=2, seed=7), data)
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[run]\ndb = "{tmp_path / "run.db"}"\n[data]\ndir = "{data}"\n'
        "[replay]\nspeed = 600.0\n"
        '[strategy]\nname = "sma_cross"\nparams = { fast = 2, slow = 5 }\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
    )
    with tempfile.TemporaryDirectory(prefix="sd") as d:
        fake = FakeSystemd(str(Path(d) / "notify"))
        env = {**os.environ, "PYTHONWARNINGS": "always", "NOTIFY_SOCKET": fake.address,
               "WATCHDOG_USEC": "200000"}
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "trader", "run", "--config", str(cfg)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            assert proc.stderr is not None
            url = None
            deadline = time.monotonic() + 30
            seen: list[str] = []
            while url is None and time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                seen.append(line)
                if '"http listening"' in line:
                    url = json.loads(line)["url"]
            assert url is not None, "".join(seen)
            while not _ready(url):  # a bounded poll: the process cannot signal us
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.05)
            with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
            assert "trader_build_info" in text
            assert "process_start_time_seconds" in text  # the global registry's collectors
            while time.monotonic() < deadline and fake.firsts().count("WATCHDOG=1") < 2:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
            fake.close()
    assert proc.returncode == 0, err
    for bad in ("Traceback", "unclosed", "Warning"):
        assert bad not in err, err
    lines = fake.firsts()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert lines.count("WATCHDOG=1") >= 2
