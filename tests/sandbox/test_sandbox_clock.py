"""The sandbox clock (wall-time speed, manual stepping, start), the tape, and the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from tests.sandbox.sandbox_support import (
    KEY,
    SECRET,
    WAIT_S,
    Rest,
    daily_tables,
    data_session,
    minute_tables,
)
from trader.data.synth import write_csv
from trader.sandbox import ClockNotManual, Sandbox
from trader.sandbox.commands import add_sandbox_command
from trader.sandbox.tape import Tape

START = "2024-01-02T14:30:00Z"


@pytest.mark.asyncio
async def test_wall_clock_speed_publishes_bars_as_they_close() -> None:
    """At speed 1200 a minute bar closes every 50 ms of wall time and is pushed in order;
    manual stepping is refused."""
    async with (
        Sandbox(minute_tables(), key_id=KEY, secret=SECRET, start=START, speed=1200) as sb,
        aiohttp.ClientSession() as http,
    ):
        client = await data_session(http, sb)
        await client.send({"action": "subscribe", "bars": ["AAPL"]})
        await client.recv()
        stamps: list[str] = []
        while len(stamps) < 3:
            stamps.extend(bar["t"] for bar in await client.recv())
        minutes = [int(s[14:16]) for s in stamps[:3]]
        assert minutes == [minutes[0], minutes[0] + 1, minutes[0] + 2]
        assert sb.market.now_ns() >= sb.market.watermark_ns
        with pytest.raises(ClockNotManual):
            await sb.market.advance(bars=1)
        status, _ = await Rest(http, sb).call("POST", "/admin/advance", json={"bars": 1})
        assert status == 409
        await client.close()


@pytest.mark.asyncio
async def test_admin_advance_steps_a_manual_clock() -> None:
    """POST /admin/advance moves a ``max`` clock by bars or to a time."""
    async with (
        Sandbox(minute_tables(), key_id=KEY, secret=SECRET, start=START) as sb,
        aiohttp.ClientSession() as http,
    ):
        rest = Rest(http, sb)
        stepped = await rest.ok("POST", "/admin/advance", json={"bars": 3}, headers={})
        assert stepped["published"] == 3
        assert stepped["now"] == "2024-01-02T14:33:00Z"
        jumped = await rest.ok("POST", "/admin/advance",
                               json={"until": "2024-01-02T15:00:30Z"}, headers={})
        assert jumped["now"] == "2024-01-02T15:00:30Z"
        assert jumped["watermark"] == "2024-01-02T15:00:00Z"
        assert jumped["next_bar"] == "2024-01-02T15:01:00Z"
        clock = await rest.ok("GET", "/v2/clock")
        assert clock["timestamp"] == "2024-01-02T10:00:30-05:00"
        assert clock["is_open"]
        for bad in ({}, {"bars": -1}, {"bars": 1, "until": START}, {"until": "soon"}):
            status, _ = await rest.call("POST", "/admin/advance", json=bad, headers={})
            assert status == 400, bad


@pytest.mark.asyncio
async def test_start_in_the_middle_marks_prices_and_serves_history() -> None:
    """Bars before ``start`` are history: served over REST, used for prices (so buying
    power is checked at submission), never traded."""
    async with (
        Sandbox(daily_tables(), key_id=KEY, secret=SECRET, start="2024-01-20") as sb,
        aiohttp.ClientSession() as http,
    ):
        rest = Rest(http, sb)
        bars = await rest.ok("GET", "/v2/stocks/bars",
                             params={"symbols": "IBM", "timeframe": "1Day",
                                     "start": "2024-01-01"})
        assert len(bars["bars"]["IBM"]) == 13  # Jan 2..19 sessions (MLK day closed)
        last = bars["bars"]["IBM"][-1]["c"]
        too_big = int(100_000 / last) + 10
        status, err = await rest.call("POST", "/v2/orders", json={
            "symbol": "IBM", "qty": too_big, "side": "buy", "type": "market",
            "time_in_force": "day"})
        assert status == 403
        assert err["code"] == 40310000
        calendar = await rest.ok("GET", "/v2/calendar",
                                 params={"start": "2024-01-12", "end": "2024-01-16"})
        assert [d["date"] for d in calendar] == ["2024-01-12", "2024-01-16"]
        assert calendar[0]["open"] == "09:30"
        assert calendar[0]["close"] == "16:00"


def test_tape_infers_the_bar_period_and_alpaca_start_times(tmp_path: Path) -> None:
    """Minute data is ``1Min`` with start = close - 1 min; daily data is ``1Day`` stamped
    at midnight New York; a directory of CSVs loads through trader.data.bars."""
    minutes = Tape(minute_tables())
    assert minutes.timeframe == "1Min"
    assert minutes.period_ns == 60_000_000_000
    assert minutes.start_ns("AAPL", 0) == int(minutes.tables["AAPL"].ts_ns[0]) - 60_000_000_000
    write_csv(daily_tables(), tmp_path)
    daily = Tape.from_dir(tmp_path)
    assert daily.timeframe == "1Day"
    assert daily.period_ns is None
    assert daily.symbols == ("AAPL", "IBM", "MSFT")
    first_close = int(daily.tables["AAPL"].ts_ns[0])
    assert daily.start_ns("AAPL", 0) == first_close - 16 * 3600 * 1_000_000_000  # 05:00Z


def test_cli_registers_sandbox_with_its_flags() -> None:
    """``trader sandbox`` parses every documented flag and sets a handler."""
    parser = argparse.ArgumentParser()
    add_sandbox_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sandbox"])
    assert (args.host, args.port, args.speed) == ("127.0.0.1", 8765, 1.0)
    assert args.data == Path("replay_data/1Day")
    assert callable(args.handler)
    args = parser.parse_args([
        "sandbox", "--port", "9000", "--speed", "max", "--start", "2024-01-02",
        "--key-id", "k", "--secret", "s", "--data", "elsewhere",
    ])
    assert (args.port, args.speed, args.start, args.key_id, args.secret) == (
        9000, "max", "2024-01-02", "k", "s"
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["sandbox", "--speed", "fast"])


@pytest.mark.asyncio
async def test_cli_serves_until_sigterm_and_exits_zero(tmp_path: Path) -> None:
    """The command binds, logs its URLs, answers requests, and exits 0 on SIGTERM."""
    write_csv(daily_tables(), tmp_path)
    code = (
        "import argparse, sys\n"
        "from trader.sandbox.commands import add_sandbox_command\n"
        "p = argparse.ArgumentParser(); add_sandbox_command(p.add_subparsers())\n"
        "a = p.parse_args(sys.argv[1:]); sys.exit(a.handler(a))\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "sandbox", "--port", "0", "--data", str(tmp_path),
        "--speed", "max", "--start", "2024-01-10",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TRADER_SANDBOX_KEY_ID": KEY, "TRADER_SANDBOX_SECRET": SECRET},
    )
    assert proc.stderr is not None
    try:
        with anyio.fail_after(WAIT_S):
            while True:
                line = await proc.stderr.readline()
                assert line, "the sandbox exited before listening"
                event = json.loads(line)
                if event.get("event") == "sandbox.listening":
                    break
        async with aiohttp.ClientSession() as http:
            headers = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
            async with http.get(event["base_url"] + "/v2/clock", headers=headers) as resp:
                assert resp.status == 200
                assert (await resp.json())["timestamp"] == "2024-01-10T00:00:00-05:00"
        proc.send_signal(signal.SIGTERM)
        with anyio.fail_after(WAIT_S):
            await proc.stderr.read()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.asyncio
async def test_sandbox_runs_inside_a_task_group_with_a_readiness_handshake() -> None:
    """``await tg.start(sandbox.run)`` returns once the port is bound; cancelling stops it."""
    sb = Sandbox(minute_tables(), key_id=KEY, secret=SECRET, start=START)
    async with anyio.create_task_group() as tg:
        await tg.start(sb.run)
        async with aiohttp.ClientSession() as http:
            clock = await Rest(http, sb).ok("GET", "/v2/clock")
            assert clock["timestamp"] == "2024-01-02T09:30:00-05:00"
        tg.cancel_scope.cancel()
    with pytest.raises(RuntimeError):
        _ = sb.port  # not serving any more
