"""The trade-updates websocket (``/stream``).

Protocol (alpaca-protocol.md section 4): nothing on connect;
``authenticate`` -> ``authorization`` (``authorized``/``unauthorized``);
``listen`` -> ``listening`` (the list replaces the previous one; a listen
before auth is ``unauthorized``); then every exchange report as a
``trade_updates`` message, in *binary* frames (JSON bytes) like the paper
server. Client frames may be text or binary.

What it is not: the rendering of the events (:meth:`Market.update_json`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from trader.sandbox.connection import Connection, Frame

if TYPE_CHECKING:
    from trader.sandbox.hub import Hub

_json_encoder = msgspec.json.Encoder()


class TradeConnection(Connection):
    """One trade-updates websocket session."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        hub: Hub,
        *,
        binary: bool,
    ) -> None:
        super().__init__(ws, request, hub.faults)
        self._hub = hub
        self.binary = binary
        self.authorized = False
        self.streams: set[str] = set()

    @property
    def listening(self) -> bool:
        return self.authorized and "trade_updates" in self.streams

    def reply(self, message: dict[str, Any]) -> None:
        self.put(Frame(_json_encoder.encode(message), binary=self.binary))

    def offer(self, payload: bytes) -> None:
        if self.authorized and "trade_updates" in self.streams:
            self.put(Frame(payload, binary=self.binary))

    async def read_loop(self) -> None:
        hub = self._hub
        while True:
            got = await self.receive()
            if got is None:
                return
            message, ok = got
            if not ok or not isinstance(message, dict):
                self.reply({"stream": "error", "data": {"error_message": "invalid syntax"}})
                continue
            action = message.get("action")
            data = message.get("data")
            data = data if isinstance(data, dict) else {}
            if action in ("authenticate", "auth"):
                key, secret = data.get("key_id"), data.get("secret_key")
                ok = not hub.faults.config.refuse_auth and hub.credentials.check(key, secret)
                self.authorized = ok
                self.reply(
                    {
                        "stream": "authorization",
                        "data": {
                            "action": "authenticate",
                            "status": "authorized" if ok else "unauthorized",
                        },
                    }
                )
            elif action == "listen":
                if not self.authorized:
                    self.reply(
                        {
                            "stream": "authorization",
                            "data": {"action": "listen", "status": "unauthorized"},
                        }
                    )
                    continue
                streams = data.get("streams")
                if not isinstance(streams, list):
                    self.reply({"stream": "error", "data": {"error_message": "invalid syntax"}})
                    continue
                self.streams = {s for s in streams if isinstance(s, str)}
                hub.notify()
                self.reply({"stream": "listening", "data": {"streams": sorted(self.streams)}})
            else:
                self.reply({"stream": "error", "data": {"error_message": "invalid syntax"}})


async def trade_stream(request: web.Request, hub: Hub) -> web.WebSocketResponse:
    """``GET /stream`` upgraded to a websocket."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    conn = TradeConnection(ws, request, hub, binary=hub.trade_binary)
    hub.trade_conns.add(conn)
    hub.notify()
    try:
        await conn.serve()
    finally:
        hub.trade_conns.discard(conn)
        hub.notify()
    return ws
