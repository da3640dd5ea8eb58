"""Alpaca protocol details the sandbox must get right, checked with raw HTTP and websockets."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import anyio
import msgpack  # type: ignore[import-untyped]
import pytest
from websockets.asyncio.client import connect as ws_connect

from tests.sandbox.sandbox_support import (
    HEADERS,
    KEY,
    SECRET,
    Rest,
    WsClient,
    daily_tables,
    data_session,
    minute_tables,
    ns,
    trade_session,
)
from trader.config import BrokerConfig
from trader.sandbox import Sandbox

START = "2024-01-02T14:30:00Z"

ORDER_KEYS = {
    "id", "client_order_id", "created_at", "updated_at", "submitted_at", "filled_at",
    "expired_at", "expires_at", "canceled_at", "failed_at", "replaced_at", "replaced_by",
    "replaces", "asset_id", "symbol", "asset_class", "notional", "qty", "filled_qty",
    "filled_avg_price", "order_class", "order_type", "type", "side", "time_in_force",
    "limit_price", "stop_price", "status", "extended_hours", "legs", "trail_percent",
    "trail_price", "hwm",
}


def _minutes(**kw: Any) -> Sandbox:
    return Sandbox(minute_tables(), key_id=KEY, secret=SECRET, start=START, **kw)


# --- REST ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_rest_requires_the_key_pair() -> None:
    """No key, an unknown key or a wrong secret gets 401 with code 40110000; Basic auth works."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        for headers in (
            {},
            {"APCA-API-KEY-ID": "other", "APCA-API-SECRET-KEY": SECRET},
            {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": "wrong"},
        ):
            status, body = await rest.call("GET", "/v2/account", headers=headers)
            assert (status, body) == (
                401, {"code": 40110000, "message": "request is not authorized"}
            )
        basic = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
        status, _ = await rest.call(
            "GET", "/v2/account", headers={"Authorization": f"Basic {basic}"}
        )
        assert status == 200
        status, body = await rest.call("GET", "/v2/nowhere")
        assert status == 404
        assert body["code"] == 40400000


@pytest.mark.asyncio
async def test_orders_accept_numbers_or_strings_and_render_every_key() -> None:
    """qty, notional and prices may be JSON numbers or strings; the Order carries every
    key, with decimals as strings and notional orders quantity-less until filled."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        as_strings = await rest.order(
            symbol="AAPL", qty="2", type="limit", limit_price="10.5", time_in_force="gtc"
        )
        as_numbers = await rest.order(symbol="AAPL", qty=2.0, type="limit", limit_price=10.5)
        for o in (as_strings, as_numbers):
            assert set(o) >= ORDER_KEYS
            assert (o["qty"], o["limit_price"], o["filled_qty"]) == ("2", "10.5", "0")
            assert o["status"] == "accepted"
            assert o["filled_avg_price"] is None
        notional = await rest.order(symbol="MSFT", notional="150.25")
        assert notional["notional"] == "150.25"
        assert notional["qty"] is None
        await sb.market.advance(bars=3)
        filled = await rest.ok("GET", f"/v2/orders/{notional['id']}")
        assert filled["status"] == "filled"
        assert float(filled["qty"]) >= 1


@pytest.mark.asyncio
async def test_order_validation_answers_422_with_alpaca_code() -> None:
    """Duplicate client ids, unsupported types/tifs and fractional qty are 422 code 40010001."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        await rest.order(symbol="AAPL", qty=1, client_order_id="same")
        bad_bodies: list[dict[str, Any]] = [
            {"symbol": "AAPL", "qty": 1, "client_order_id": "same"},
            {"symbol": "AAPL", "qty": 1, "type": "trailing_stop", "trail_percent": 1},
            {"symbol": "AAPL", "qty": 1, "time_in_force": "ioc"},
            {"symbol": "AAPL", "qty": 1.5},
            {"symbol": "AAPL"},
            {"symbol": "NOPE", "qty": 1},
            {"symbol": "AAPL", "qty": "abc"},
        ]
        for extra in bad_bodies:
            body = {"side": "buy", "type": "market", "time_in_force": "day", **extra}
            status, err = await rest.call("POST", "/v2/orders", json=body)
            assert (status, err["code"]) == (422, 40010001), (extra, err)
            assert isinstance(err["message"], str)
        status, err = await rest.call("GET", "/v2/orders:by_client_order_id",
                                      params={"client_order_id": "unknown"})
        assert status == 404
        assert err["code"] == 40410000


@pytest.mark.asyncio
async def test_replace_links_old_and_new_orders_and_streams_replaced() -> None:
    """PATCH returns the new order (``replaces``); the old one becomes ``replaced``."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        updates = await trade_session(http, sb)
        old = await rest.order(symbol="AAPL", qty=3, type="limit", limit_price=1)
        new = await rest.ok("PATCH", f"/v2/orders/{old['id']}", json={"limit_price": "2"})
        assert new["replaces"] == old["id"]
        assert new["limit_price"] == "2"
        assert new["qty"] == "3"
        replaced = await rest.ok("GET", f"/v2/orders/{old['id']}")
        assert replaced["status"] == "replaced"
        assert replaced["replaced_by"] == new["id"]
        events = [(await updates.recv())["data"] for _ in range(3)]
        assert [(e["event"], e["order"]["id"]) for e in events] == [
            ("new", old["id"]), ("replaced", old["id"]), ("new", new["id"])
        ]
        await updates.close()


@pytest.mark.asyncio
async def test_day_orders_expire_at_the_session_close_and_gtc_orders_stay() -> None:
    """A resting day order expires when the clock passes 16:00 New York; gtc does not."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        day = await rest.order(symbol="AAPL", qty=1, type="limit", limit_price=1)
        gtc = await rest.order(symbol="AAPL", qty=1, type="limit", limit_price=1,
                               time_in_force="gtc")
        await sb.market.advance(until_ns=ns("2024-01-02T20:59:00Z"))
        assert (await rest.ok("GET", f"/v2/orders/{day['id']}"))["status"] == "new"
        await sb.market.advance(until_ns=ns("2024-01-02T21:00:00Z"))
        expired = await rest.ok("GET", f"/v2/orders/{day['id']}")
        assert expired["status"] == "expired"
        assert expired["expired_at"] == "2024-01-02T21:00:00Z"
        assert (await rest.ok("GET", f"/v2/orders/{gtc['id']}"))["status"] == "new"


@pytest.mark.asyncio
async def test_history_serves_only_closed_bars_with_alpaca_start_times() -> None:
    """Daily bars are stamped at midnight New York (05:00Z in winter); bars after the
    sandbox clock are never served; tokens are opaque and validated."""
    async with (
        Sandbox(daily_tables(), key_id=KEY, secret=SECRET, start="2024-01-05") as sb,
        aiohttp.ClientSession() as http,
    ):
        rest = Rest(http, sb)
        params = {"symbols": "AAPL,MSFT", "timeframe": "1Day", "start": "2024-01-01"}
        body = await rest.ok("GET", "/v2/stocks/bars", params=params)
        # 2024-01-05 00:00 New York: the bars of Jan 2, 3 and 4 have closed, Jan 5's has not.
        assert [b["t"] for b in body["bars"]["AAPL"]] == [
            "2024-01-02T05:00:00Z", "2024-01-03T05:00:00Z", "2024-01-04T05:00:00Z"
        ]
        assert body["next_page_token"] is None
        assert set(body["bars"]["AAPL"][0]) == {"t", "o", "h", "l", "c", "v", "n", "vw"}
        await sb.market.advance(bars=1)
        body = await rest.ok("GET", "/v2/stocks/bars", params=params)
        assert body["bars"]["AAPL"][-1]["t"] == "2024-01-05T05:00:00Z"

        paged = await rest.ok("GET", "/v2/stocks/bars", params={**params, "limit": "5"})
        assert [len(v) for v in paged["bars"].values()] == [4, 1]
        rest_of = await rest.ok("GET", "/v2/stocks/bars",
                                params={**params, "page_token": paged["next_page_token"]})
        assert list(rest_of["bars"]) == ["MSFT"]
        assert len(rest_of["bars"]["MSFT"]) == 3

        single = await rest.ok("GET", "/v2/stocks/IBM/bars",
                               params={"timeframe": "1Day", "start": "2024-01-01",
                                       "sort": "desc"})
        assert single["symbol"] == "IBM"
        assert single["bars"][0]["t"] == "2024-01-05T05:00:00Z"
        latest = await rest.ok("GET", "/v2/stocks/bars/latest", params={"symbols": "IBM"})
        assert latest["bars"]["IBM"] == single["bars"][0]

        for bad in ({"page_token": "garbage!"}, {"adjustment": "weird"}, {"feed": "nasdaq"}):
            status, _ = await rest.call("GET", "/v2/stocks/bars", params={**params, **bad})
            assert status in (400, 422), bad
        status, err = await rest.call("GET", "/v2/stocks/bars",
                                      params={**params, "timeframe": "5Min"})
        assert status == 422
        assert "1Day" in err["message"]


# --- data stream ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_data_stream_json_by_default_and_msgpack_on_request() -> None:
    """JSON text frames with RFC 3339 ``t`` by default; binary msgpack frames with the
    Timestamp extension when the upgrade says Content-Type: application/msgpack."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        plain = await data_session(http, sb)
        packed = await data_session(http, sb, msgpack_mode=True, feed="sip")
        for c in (plain, packed):
            await c.send({"action": "subscribe", "bars": ["AAPL"], "trades": ["MSFT"]})
            sub = (await c.recv())[0]
            assert sub["T"] == "subscription"
            assert sub["bars"] == ["AAPL"]
            assert sub["corrections"] == sub["cancelErrors"] == ["MSFT"]
        await sb.market.advance(bars=1)
        text_msg = await plain.recv_raw()
        assert text_msg.type == aiohttp.WSMsgType.TEXT
        (bar,) = json.loads(text_msg.data)
        assert bar["T"] == "b"
        assert bar["S"] == "AAPL"
        assert bar["t"] == "2024-01-02T14:30:00Z"
        assert "n" in bar
        assert "vw" in bar
        binary = await packed.recv_raw()
        assert binary.type == aiohttp.WSMsgType.BINARY
        (packed_bar,) = msgpack.unpackb(binary.data)
        assert isinstance(packed_bar["t"], msgpack.Timestamp)
        assert packed_bar["t"].to_unix_nano() == ns("2024-01-02T14:30:00Z")
        assert {k: v for k, v in packed_bar.items() if k != "t"} == {
            k: v for k, v in bar.items() if k != "t"
        }
        await plain.close()
        await packed.close()


@pytest.mark.asyncio
async def test_data_stream_reassembles_fragmented_subscribe_frames() -> None:
    """A subscribe sent as a fragmented binary message (alpaca-py does this) works."""
    async with _minutes() as sb, ws_connect(
        sb.data_ws_url, additional_headers={"Content-Type": "application/msgpack"},
        proxy=None,
    ) as ws:
        assert msgpack.unpackb(await ws.recv()) == [{"T": "success", "msg": "connected"}]
        await ws.send(msgpack.packb({"action": "auth", "key": KEY, "secret": SECRET}))
        assert msgpack.unpackb(await ws.recv())[0]["msg"] == "authenticated"
        payload = msgpack.packb({"action": "subscribe", "bars": ["AAPL", "MSFT"]})
        await ws.send([payload[:5], payload[5:11], payload[11:], b""])
        reply = msgpack.unpackb(await ws.recv())
        assert reply[0]["bars"] == ["AAPL", "MSFT"]


@pytest.mark.asyncio
async def test_data_stream_control_errors() -> None:
    """401 before auth, 400 for bad syntax, 402 for bad keys, 403 when already
    authenticated; unsubscribe answers with the remaining set."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        c = await WsClient.connect(http, sb.data_ws_url)
        assert (await c.recv())[0]["msg"] == "connected"
        await c.send({"action": "subscribe", "bars": ["AAPL"]})
        assert await c.recv() == [{"T": "error", "code": 401, "msg": "not authenticated"}]
        await c.ws.send_str("{not json")
        assert await c.recv() == [{"T": "error", "code": 400, "msg": "invalid syntax"}]
        await c.send({"action": "auth", "key": KEY, "secret": SECRET})
        assert (await c.recv())[0]["msg"] == "authenticated"
        await c.send({"action": "auth", "key": KEY, "secret": SECRET})
        assert (await c.recv())[0]["code"] == 403
        await c.send({"action": "subscribe", "bars": ["AAPL", "MSFT"], "quotes": ["*"]})
        await c.recv()
        await c.send({"action": "unsubscribe", "bars": ["AAPL"]})
        sub = (await c.recv())[0]
        assert sub["bars"] == ["MSFT"]
        assert sub["quotes"] == ["*"]
        await c.close()

        bad = await WsClient.connect(http, sb.data_ws_url)
        await bad.recv()
        await bad.send({"action": "auth", "key": KEY, "secret": "nope"})
        assert await bad.recv() == [{"T": "error", "code": 402, "msg": "auth failed"}]
        await bad.expect_closed()
        await bad.close()


@pytest.mark.asyncio
async def test_second_data_connection_gets_406_until_the_first_closes() -> None:
    """One live session per key and endpoint: a second gets 406; closing frees the slot."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        first = await data_session(http, sb)
        second = await WsClient.connect(http, sb.data_ws_url)
        await second.recv()
        await second.send({"action": "auth", "key": KEY, "secret": SECRET})
        assert await second.recv() == [
            {"T": "error", "code": 406, "msg": "connection limit exceeded"}
        ]
        await second.expect_closed()
        await second.close()
        other_feed = await WsClient.connect(http, sb.data_ws_url.replace("iex", "sip"))
        await other_feed.recv()
        await other_feed.send({"action": "auth", "key": KEY, "secret": SECRET})
        assert (await other_feed.recv())[0]["msg"] == "authenticated"
        await other_feed.close()
        await first.close()
        with anyio.fail_after(10):
            await sb.hub.wait_until(lambda h: not h.data_conns)
        third = await data_session(http, sb)
        await third.close()


@pytest.mark.asyncio
async def test_data_stream_auth_timeout_sends_404_and_closes() -> None:
    """A client that does not authenticate in time gets 404 auth timeout."""
    async with _minutes(auth_timeout_s=0.2) as sb, aiohttp.ClientSession() as http:
        c = await WsClient.connect(http, sb.data_ws_url)
        assert (await c.recv())[0]["msg"] == "connected"
        assert await c.recv() == [{"T": "error", "code": 404, "msg": "auth timeout"}]
        await c.expect_closed()
        await c.close()


# --- trade stream ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_trade_stream_sends_binary_frames_and_every_event() -> None:
    """Binary JSON frames; text or binary client frames; new, partial_fill, fill,
    canceled events with execution details on fills."""
    broker = BrokerConfig(max_participation=0.5, cash_usd=1e9)
    async with _minutes(broker=broker) as sb, aiohttp.ClientSession() as http:
        early = await WsClient.connect(http, sb.trade_ws_url)
        await early.ws.send_bytes(b'{"action":"listen","data":{"streams":["trade_updates"]}}')
        assert (await early.recv())["data"] == {"action": "listen", "status": "unauthorized"}
        await early.close()

        c = await trade_session(http, sb)
        rest = Rest(http, sb)
        # Half of a bar's volume per bar: a big order fills over two bars.
        row = sb.tape.last_row_at_or_before("AAPL", sb.market.now_ns()) + 1
        volume = float(sb.tape.tables["AAPL"].volume[row])
        big = int(volume * 0.5) + 1
        order = await rest.order(symbol="AAPL", qty=big)
        resting = await rest.order(symbol="MSFT", qty=1, type="limit", limit_price=1)
        await rest.ok("DELETE", f"/v2/orders/{resting['id']}")
        events = []
        for _ in range(3):
            raw = await c.recv_raw()
            assert raw.type == aiohttp.WSMsgType.BINARY
            events.append(json.loads(raw.data)["data"])
        assert [e["event"] for e in events] == ["new", "new", "canceled"]
        assert all("timestamp" in e for e in events)
        await sb.market.advance(until_ns=int(sb.tape.tables["AAPL"].ts_ns[row + 1]))
        partial = (await c.recv())["data"]
        fill = (await c.recv())["data"]
        assert partial["event"] == "partial_fill"
        assert fill["event"] == "fill"
        assert partial["order"]["status"] == "partially_filled"
        assert float(partial["qty"]) + float(fill["qty"]) == big
        assert fill["position_qty"] == str(big)
        assert fill["order"]["id"] == order["id"]
        assert isinstance(fill["price"], str)
        assert len(fill["execution_id"]) == 36
        await c.close()


@pytest.mark.asyncio
async def test_headers_are_case_insensitive_and_admin_needs_no_key() -> None:
    """Header names are case-insensitive; /admin/state answers without credentials."""
    async with _minutes() as sb, aiohttp.ClientSession() as http:
        rest = Rest(http, sb)
        lower = {k.lower(): v for k, v in HEADERS.items()}
        status, _ = await rest.call("GET", "/v2/clock", headers=lower)
        assert status == 200
        status, state = await rest.call("GET", "/admin/state", headers={})
        assert status == 200
        assert state["now"] == "2024-01-02T14:30:00Z"
