"""The status page in a real browser: headless Chromium (Debian's ``chromium``).

The daemon trades against the embedded sandbox until it holds positions; then
Chromium loads ``/`` from its HTTP endpoint, and the rendered DOM must show
every position and the P&L figures ``/status`` reports, and the screenshot
must be a PNG of the window's size with something drawn on it. Skipped when
``chromium`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import html
import re
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from prometheus_client import CollectorRegistry

from tests.test_live_e2e import SYMBOLS, Daemon
from trader.config import Config, decode_config
from trader.data.synth import synth_bars
from trader.graph import Graph
from trader.http import Ops
from trader.notify import Notifier
from trader.runner import run_live
from trader.sandbox import Sandbox

CHROMIUM = shutil.which("chromium")
WIDTH, HEIGHT = 1024, 900
BROWSER_S = 30.0

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")


def _config(db: Path) -> Config:
    return decode_config({
        "run": {"db": str(db), "shutdown_deadline_s": 10.0},
        "feed": {"kind": "alpaca", "symbols": SYMBOLS, "timeframe_s": 86400,
                 "stale_after_s": 3600.0},
        "alpaca": {"update_timeout_s": 2.0, "request_timeout_s": 5.0},
        "strategy": {"name": "sma_cross", "instance": "page", "params": {"fast": 2, "slow": 4}},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.3},
        "http": {"listen": "127.0.0.1:0"},
    })


async def _chromium(profile: Path, *args: str) -> bytes:
    """Run headless Chromium once (its own profile dir, no sandbox: we may be root)."""
    assert CHROMIUM is not None
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    with anyio.fail_after(BROWSER_S):
        proc = await anyio.run_process(cmd, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels of an 8-bit RGB(A), non-interlaced PNG.

    A small decoder, so the test needs nothing beyond the standard library.
    """
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0)
    assert colour in (2, 6), colour
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        method, row = line[0], bytearray(line[1:])
        for i in range(stride):
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if method == 1:
                row[i] = (row[i] + a) & 0xFF
            elif method == 2:
                row[i] = (row[i] + b) & 0xFF
            elif method == 3:
                row[i] = (row[i] + (a + b) // 2) & 0xFF
            elif method == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                row[i] = (row[i] + pred) & 0xFF
        rows.append(row)
        prev = row
    pixels = [bytes(r[x * bpp:x * bpp + 3]) for r in rows for x in range(width)]
    return width, height, pixels


def _text(dom: str) -> str:
    """The DOM's visible text, whitespace collapsed (enough for tables of figures)."""
    body = dom.split("<body", 1)[1]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


async def _journal_committed(graph: Graph | None) -> None:
    """Wait until everything journaled so far is committed: /status is read from the
    commits, so only then does it show what the daemon has done."""
    assert graph is not None
    with anyio.fail_after(20):
        await graph.commits.wait_for(graph.journal.sent)


def _money(value: float) -> str:
    return f"{value:,.2f}"


@pytest.mark.asyncio
async def test_the_status_page_renders_positions_and_pnl_in_headless_chromium(
    tmp_path: Path,
) -> None:
    """After the daemon has traded, Chromium shows every position and the P&L figures
    that /status reports, and its screenshot is a drawn PNG of the window's size."""
    db = tmp_path / "live.db"
    config = _config(db)
    ops = Ops(config.http, registry=CollectorRegistry(), notifier=Notifier(None))
    tables = synth_bars(SYMBOLS, days=40, freq="1d", seed=5)
    shot = tmp_path / "status.png"
    status: dict[str, Any] = {}
    async with Sandbox(tables, speed="max") as sb, aiohttp.ClientSession() as http:
        daemon = Daemon(sb, config, db)

        def on_graph(g: Graph) -> None:
            daemon.graph = g

        async with anyio.create_task_group() as tg:
            async def run() -> None:
                await run_live(config, sandbox=sb, ops=ops, on_graph=on_graph)

            tg.start_soon(run)
            with anyio.fail_after(20):
                while not (ops.url and daemon.graph and daemon.graph.ready  # noqa: ASYNC110
                           and daemon.feed() is not None):
                    await anyio.sleep(0.01)
            # Trade until the account holds positions with realised P&L behind it.
            for _ in range(40):
                await sb.market.advance(bars=1)
                await daemon.settle()
                await _journal_committed(daemon.graph)
                async with http.get(f"{ops.url}/status") as resp:
                    status = await resp.json()
                if status["positions"] and status["realized_pnl"]:
                    break
            assert status["positions"], "the scenario must hold positions"
            assert status["realized_pnl"], "the scenario must have closed a trade"
            url = f"{ops.url}/"
            # The market stands still (the sandbox advances only when told),
            # so the page shows the state /status just reported.
            dom = (await _chromium(tmp_path / "profile-dom", "--dump-dom", url)).decode()
            await _chromium(tmp_path / "profile-shot", f"--screenshot={shot}",
                            f"--window-size={WIDTH},{HEIGHT}", url)
            async with http.get(f"{ops.url}/status") as resp:
                after = await resp.json()
            for key in ("positions", "equity", "realized_pnl", "unrealized_pnl"):
                assert after[key] == status[key], key
            assert daemon.graph is not None
            daemon.graph.request_stop()

    text = _text(dom)
    assert "ready yes" in text
    for symbol, position in status["positions"].items():
        assert f"{symbol} {position['qty']:g} {_money(position['avg_price'])}" in text, text
    assert f"equity {_money(status['equity'])}" in text, text
    assert f"realised P&L {_money(status['realized_pnl'])}" in text, text
    assert f"unrealised P&L {_money(status['unrealized_pnl'])}" in text, text

    width, height, pixels = _png_pixels(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    colours = Counter(pixels)
    background, n = colours.most_common(1)[0]
    assert background == b"\xff\xff\xff", "the page background is white"
    dark = sum(c for px, c in colours.items() if max(px) < 128)
    # Text was drawn: a page of tables covers a visible share of the window.
    assert dark > 0.005 * width * height, (dark, len(colours))
    assert n < 0.99 * width * height
