"""Every fault switch does what it says, seen from a client."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import aiohttp
import anyio
import msgpack  # type: ignore[import-untyped]
import msgspec
import pytest

from tests.sandbox.sandbox_support import (
    KEY,
    SECRET,
    Rest,
    WsClient,
    alpaca,
    data_session,
    minute_tables,
    trade_session,
    trading_client,
)
from trader.sandbox import FaultConfig, Sandbox

START = "2024-01-02T14:30:00Z"


def _sandbox(faults: FaultConfig | None = None, **kw: Any) -> Sandbox:
    return Sandbox(minute_tables(), key_id=KEY, secret=SECRET, start=START, faults=faults, **kw)


async def _set(rest: Rest, **switches: Any) -> Any:
    return await rest.ok("POST", "/admin/faults", json=switches, headers={})


def _cut(msg: aiohttp.WSMessage) -> bool:
    """The socket ended without a close frame from the server (a dropped connection)."""
    return msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


@pytest.mark.asyncio
async def test_drop_now_cuts_every_websocket() -> None:
    """``drop_now`` cuts data and trade sockets at once, with no close frame."""
    async with _sandbox() as sb, aiohttp.ClientSession() as http:
        data = await data_session(http, sb)
        trade = await trade_session(http, sb)
        reply = await _set(Rest(http, sb), drop_now=True)
        assert reply["dropped"] == 2
        assert _cut(await data.recv_raw())
        assert _cut(await trade.recv_raw())
        await data.close()
        await trade.close()


@pytest.mark.asyncio
async def test_drop_every_n_messages_cuts_after_the_nth_frame() -> None:
    """With ``drop_every=3`` each socket is cut right after its third server frame."""
    async with _sandbox(FaultConfig(drop_every=3)) as sb, aiohttp.ClientSession() as http:
        data = await data_session(http, sb)  # frames 1 and 2: connected, authenticated
        await data.send({"action": "subscribe", "bars": ["AAPL"]})
        assert (await data.recv())[0]["T"] == "subscription"  # frame 3
        assert _cut(await data.recv_raw())
        await data.close()

        trade = await trade_session(http, sb)  # frames 1 and 2: authorization, listening
        await Rest(http, sb).order(symbol="AAPL", qty=1)
        assert (await trade.recv())["data"]["event"] == "new"  # frame 3
        assert _cut(await trade.recv_raw())
        await trade.close()


@pytest.mark.asyncio
async def test_rest_errors_for_the_next_n_requests() -> None:
    """429 and 504 for N requests are retried by alpaca-py; 500 is raised at once; the
    bodies carry Alpaca codes and 429 carries rate-limit headers."""
    api_error = alpaca()["exceptions"].APIError
    async with _sandbox() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        tc = trading_client(sb)

        await _set(rest, rest_error_status=429, rest_error_count=2)
        account = await anyio.to_thread.run_sync(tc.get_account)  # two retries, then 200
        assert account.cash == "100000.00"
        assert (await rest.ok("GET", "/admin/faults", headers={}))["rest_errors_left"] == 0

        await _set(rest, rest_error_status=429, rest_error_count=1)
        async with http.get(sb.base_url + "/v2/clock") as resp:
            assert resp.status == 429
            assert resp.headers["X-Ratelimit-Remaining"] == "0"
            assert (await resp.json())["code"] == 42910000

        await _set(rest, rest_error_status=500, rest_error_count=1)
        with pytest.raises(api_error) as err:
            await anyio.to_thread.run_sync(tc.get_clock)
        assert err.value.status_code == 500
        assert err.value.code == 50010000
        await anyio.to_thread.run_sync(tc.get_clock)

        await _set(rest, rest_error_status=504, rest_error_count=10)
        with pytest.raises(api_error) as err:
            await anyio.to_thread.run_sync(tc.get_clock)  # 1 try + 3 retries, all 504
        assert err.value.status_code == 504
        assert (await rest.ok("GET", "/admin/faults", headers={}))["rest_errors_left"] == 6


@pytest.mark.asyncio
async def test_rest_error_rate_is_a_seeded_fraction() -> None:
    """``rest_error_rate`` fails about that fraction of requests, the same ones per seed."""
    async with _sandbox() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)

        async def pattern() -> list[int]:
            await _set(rest, rest_error_status=500, rest_error_rate=0.3, seed=42)
            return [(await rest.call("GET", "/v2/clock"))[0] for _ in range(100)]

        first, second = await pattern(), await pattern()
        assert first == second
        assert set(first) == {200, 500}
        assert 15 <= first.count(500) <= 45
        await rest.ok("DELETE", "/admin/faults", headers={})
        assert (await rest.call("GET", "/v2/clock"))[0] == 200


@pytest.mark.asyncio
async def test_delay_holds_rest_responses() -> None:
    """``delay_s`` holds each REST response at least that long; admin is never delayed."""
    async with _sandbox(FaultConfig(delay_s=0.3)) as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        began = time.monotonic()
        await rest.ok("GET", "/v2/clock")
        assert time.monotonic() - began >= 0.3
        await _set(rest, delay_s=0)
        assert (await rest.ok("GET", "/admin/faults", headers={}))["delay_s"] == 0


@pytest.mark.asyncio
async def test_malformed_and_truncated_data_frames() -> None:
    """``corrupt`` spoils the next N data frames (not control frames); later ones are fine."""
    async with _sandbox() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        plain = await data_session(http, sb)
        await plain.send({"action": "subscribe", "bars": ["AAPL"]})
        await plain.recv()
        await _set(rest, corrupt="malformed", corrupt_count=1)
        await sb.market.advance(bars=2)
        spoiled = await plain.recv_raw()
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(spoiled.data)
        assert (await plain.recv())[0]["T"] == "b"
        await plain.close()

        packed = await data_session(http, sb, msgpack_mode=True, feed="sip")
        await packed.send({"action": "subscribe", "bars": ["AAPL"]})
        await packed.recv()
        await _set(rest, corrupt="truncated", corrupt_count=1)
        await sb.market.advance(bars=2)
        cut_short = await packed.recv_raw()
        with pytest.raises(ValueError, match=r".+"):
            msgpack.unpackb(cut_short.data)
        assert (await packed.recv())[0]["T"] == "b"
        await packed.close()


@pytest.mark.asyncio
async def test_refuse_auth_fails_rest_and_both_streams() -> None:
    """``refuse_auth``: REST 401, data stream 402, trade stream unauthorized."""
    api_error = alpaca()["exceptions"].APIError
    async with _sandbox(FaultConfig(refuse_auth=True)) as sb, aiohttp.ClientSession() as http:
        with pytest.raises(api_error) as err:
            await anyio.to_thread.run_sync(trading_client(sb).get_account)
        assert err.value.status_code == 401

        data = await WsClient.connect(http, sb.data_ws_url)
        await data.recv()
        await data.send({"action": "auth", "key": KEY, "secret": SECRET})
        assert await data.recv() == [{"T": "error", "code": 402, "msg": "auth failed"}]
        await data.close()

        trade = await WsClient.connect(http, sb.trade_ws_url)
        await trade.send({"action": "authenticate",
                          "data": {"key_id": KEY, "secret_key": SECRET}})
        assert (await trade.recv())["data"]["status"] == "unauthorized"
        await trade.close()

        await _set(Rest(http, sb), refuse_auth=False)
        await anyio.to_thread.run_sync(trading_client(sb).get_account)


@pytest.mark.asyncio
async def test_paused_trade_updates_are_not_sent_but_fills_happen() -> None:
    """``pause_trade_updates`` silences the stream while the order still fills; the events
    are lost, so the next message after resuming is about the next order."""
    async with _sandbox() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        trade = await trade_session(http, sb)
        await _set(rest, pause_trade_updates=True)
        silent = await rest.order(symbol="AAPL", qty=2)
        await sb.market.advance(bars=3)
        assert (await rest.ok("GET", f"/v2/orders/{silent['id']}"))["status"] == "filled"
        await _set(rest, pause_trade_updates=False)
        heard = await rest.order(symbol="MSFT", qty=1)
        first = (await trade.recv())["data"]
        assert (first["event"], first["order"]["id"]) == ("new", heard["id"])
        await trade.close()


@pytest.mark.asyncio
async def test_clock_skew_shifts_the_reported_clock() -> None:
    """``clock_skew_s`` moves /v2/clock's timestamp, and only that."""
    async with _sandbox(FaultConfig(clock_skew_s=90)) as sb:
        clock = await anyio.to_thread.run_sync(trading_client(sb).get_clock)
        assert clock.timestamp == dt.datetime(2024, 1, 2, 14, 31, 30, tzinfo=dt.UTC)
        assert sb.market.now_ns() == int(dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
                                         .timestamp()) * 1_000_000_000


@pytest.mark.asyncio
async def test_admin_rejects_unknown_or_invalid_switches() -> None:
    """Unknown fields and out-of-range values are 400 and change nothing."""
    async with _sandbox() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        for body in ({"nope": 1}, {"rest_error_rate": 2}, {"rest_error_status": 418},
                     {"drop_now": "yes"}):
            status, _ = await rest.call("POST", "/admin/faults", json=body, headers={})
            assert status == 400, body
        assert (await rest.ok("GET", "/admin/faults", headers={}))["rest_error_rate"] == 0


@pytest.mark.asyncio
async def test_changing_one_switch_does_not_rearm_another() -> None:
    """A partial update leaves the other switches' counters where they were."""
    async with _sandbox() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        await _set(rest, rest_error_status=504, rest_error_count=3)
        assert (await rest.call("GET", "/v2/clock"))[0] == 504
        state = await _set(rest, pause_trade_updates=True)
        assert state["rest_errors_left"] == 2
        assert state["pause_trade_updates"] is True
