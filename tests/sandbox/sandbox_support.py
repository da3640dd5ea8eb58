"""Shared helpers for the sandbox tests: data, a raw REST client, alpaca-py imports.

Not a test module. alpaca-py imports ``websockets.legacy``, which warns on
import; the tests run with warnings as errors, so :func:`alpaca` imports it
with that one warning silenced.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import warnings
from functools import cache
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import msgpack  # type: ignore[import-untyped]
import msgspec

from trader.data.bars import BarTable
from trader.data.synth import synth_bars
from trader.sandbox import Sandbox

KEY = "test-key"
SECRET = "test-secret"
HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}
WAIT_S = 15.0
"""Upper bound for any wait on the network; tests normally finish far sooner."""


@cache
def minute_tables(days: int = 2, seed: int = 7) -> dict[str, BarTable]:
    """Two symbols of synthetic 1-minute bars from 2024-01-02 (tables are read-only)."""
    return synth_bars(["AAPL", "MSFT"], days=days, freq="1min", seed=seed)


@cache
def daily_tables() -> dict[str, BarTable]:
    """Three symbols of synthetic daily bars, 30 sessions from 2024-01-02."""
    return synth_bars(["AAPL", "IBM", "MSFT"], days=30, freq="1d", seed=3)


def alpaca() -> dict[str, ModuleType]:
    """alpaca-py's modules, imported without its websockets.legacy deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "websockets.legacy", DeprecationWarning)
        import alpaca.common.exceptions as exceptions
        import alpaca.data.historical as historical
        import alpaca.data.live as live
        import alpaca.data.requests as data_requests
        import alpaca.data.timeframe as timeframe
        import alpaca.trading.client as trading_client
        import alpaca.trading.enums as enums
        import alpaca.trading.requests as requests
        import alpaca.trading.stream as trading_stream
    return {
        "exceptions": exceptions,
        "historical": historical,
        "live": live,
        "data_requests": data_requests,
        "timeframe": timeframe,
        "trading_client": trading_client,
        "enums": enums,
        "requests": requests,
        "trading_stream": trading_stream,
    }


def trading_client(sandbox: Sandbox) -> Any:
    """alpaca-py's TradingClient on the sandbox, with retries instant."""
    client = alpaca()["trading_client"].TradingClient(KEY, SECRET, url_override=sandbox.base_url)
    client._retry_wait = 0
    return client


def data_client(sandbox: Sandbox) -> Any:
    client = alpaca()["historical"].StockHistoricalDataClient(
        KEY, SECRET, url_override=sandbox.base_url
    )
    client._retry_wait = 0
    return client


class Rest:
    """A thin async REST client for raw protocol checks (aiohttp, authenticated)."""

    def __init__(self, session: aiohttp.ClientSession, sandbox: Sandbox) -> None:
        self.session = session
        self.base = sandbox.base_url

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """``(status, decoded JSON body or None)``."""
        async with self.session.request(
            method,
            self.base + path,
            json=json,
            params=params,
            headers=HEADERS if headers is None else headers,
        ) as resp:
            raw = await resp.read()
            return resp.status, msgspec.json.decode(raw) if raw else None

    async def ok(self, method: str, path: str, **kw: Any) -> Any:
        status, body = await self.call(method, path, **kw)
        assert status in (200, 204, 207), (status, body)
        return body

    async def order(self, **fields: Any) -> Any:
        body = {"side": "buy", "type": "market", "time_in_force": "day", **fields}
        return await self.ok("POST", "/v2/orders", json=body)


def ns(text: str) -> int:
    """An RFC 3339 time as UTC ns."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(when.timestamp()) * 1_000_000_000


class StreamThread:
    """Run an alpaca-py stream's blocking ``run()`` in a thread; stop it fast.

    alpaca-py polls its stop flag only between 5 s receive timeouts, so
    :meth:`stop` sets the flag and then has the sandbox cut the socket, which
    wakes the stream at once.
    """

    def __init__(self, stream: Any, sandbox: Sandbox) -> None:
        self.stream = stream
        self.sandbox = sandbox
        self.thread = threading.Thread(target=stream.run, daemon=True)

    def start(self) -> StreamThread:
        # Reconnects after a drop happen in well under a second.
        self.stream._reconnect_min_backoff = 0.01
        self.stream._reconnect_max_backoff = 0.05
        self.thread.start()
        return self

    async def stop(self) -> None:
        await anyio.to_thread.run_sync(self.stream.stop)
        self.sandbox.drop_connections()
        with anyio.fail_after(WAIT_S):
            await anyio.to_thread.run_sync(self.thread.join)


class Mailbox:
    """Items handed over from another thread's event loop (alpaca-py's streams) to the
    test's loop; :meth:`get` waits on them, bounded, with no polling."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def put_threadsafe(self, item: Any) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def get(self) -> Any:
        with anyio.fail_after(WAIT_S):
            return await self._queue.get()


class WsClient:
    """A raw websocket client (aiohttp) speaking JSON text or msgpack binary frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, msgpack_mode: bool) -> None:
        self.ws = ws
        self.msgpack = msgpack_mode

    @classmethod
    async def connect(
        cls, session: aiohttp.ClientSession, url: str, *, msgpack_mode: bool = False
    ) -> WsClient:
        headers = {"Content-Type": "application/msgpack"} if msgpack_mode else {}
        ws = await session.ws_connect(url, headers=headers, autoclose=False)
        return cls(ws, msgpack_mode)

    async def send(self, message: Any) -> None:
        if self.msgpack:
            await self.ws.send_bytes(msgpack.packb(message))
        else:
            await self.ws.send_str(msgspec.json.encode(message).decode())

    async def recv_raw(self) -> aiohttp.WSMessage:
        with anyio.fail_after(WAIT_S):
            return await self.ws.receive()

    async def recv(self) -> Any:
        msg = await self.recv_raw()
        if msg.type == aiohttp.WSMsgType.TEXT:
            return msgspec.json.decode(msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            if self.msgpack:
                return msgpack.unpackb(msg.data)
            return msgspec.json.decode(msg.data)
        raise AssertionError(f"expected a data frame, got {msg.type!r} {msg.data!r}")

    async def expect_closed(self) -> aiohttp.WSMessage:
        """The next frame must end the connection (close frame or a cut socket)."""
        msg = await self.recv_raw()
        assert msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.ERROR,
        ), msg
        return msg

    async def close(self) -> None:
        await self.ws.close()


async def data_session(
    session: aiohttp.ClientSession,
    sandbox: Sandbox,
    *,
    msgpack_mode: bool = False,
    feed: str = "iex",
) -> WsClient:
    """A data-stream client on ``/v2/<feed>``, connected and authenticated."""
    url = sandbox.data_ws_url.replace("/iex", f"/{feed}")
    c = await WsClient.connect(session, url, msgpack_mode=msgpack_mode)
    assert await c.recv() == [{"T": "success", "msg": "connected"}]
    await c.send({"action": "auth", "key": KEY, "secret": SECRET})
    assert await c.recv() == [{"T": "success", "msg": "authenticated"}]
    return c


async def trade_session(session: aiohttp.ClientSession, sandbox: Sandbox) -> WsClient:
    """A trade-stream client, authenticated and listening to trade_updates."""
    c = await WsClient.connect(session, sandbox.trade_ws_url)
    await c.send({"action": "authenticate", "data": {"key_id": KEY, "secret_key": SECRET}})
    reply = await c.recv()
    assert reply["data"]["status"] == "authorized", reply
    await c.send({"action": "listen", "data": {"streams": ["trade_updates"]}})
    assert await c.recv() == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
    return c
