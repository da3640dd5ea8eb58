"""The market-data websocket (``/v2/iex``, ``/v2/sip``, ``/v2/test``).

Protocol (alpaca-protocol.md section 3): ``connected`` at once; ``auth``
within ``auth_timeout_s`` or ``404 auth timeout``; ``402 auth failed``; ``406
connection limit exceeded`` for a second live session of the same key on the
same path (the slot is freed when the socket closes); ``401`` for a subscribe
before auth; ``403`` for a second auth; ``400 invalid syntax``; every
(un)subscribe answered with the complete subscription (``corrections`` and
``cancelErrors`` mirror ``trades``). Trades and quotes may be subscribed, but
the sandbox has only bars to send.

Encoding: JSON text frames, or MessagePack binary frames with Timestamp
extensions (type -1, full nanoseconds) when the upgrade request says
``Content-Type: application/msgpack`` (alpaca-py always does). Every server
message is an array; fragmented client messages are reassembled by aiohttp.

What it is not: the fan-out (:mod:`trader.sandbox.hub`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from aiohttp import web

from trader.messages import BarClosed
from trader.sandbox import wire
from trader.sandbox.connection import Close, Connection, Frame
from trader.sandbox.tape import Tape
from trader.sandbox.wire import rfc3339

if TYPE_CHECKING:
    from trader.sandbox.hub import Hub

DATA_CHANNELS = (
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
)
_MIRRORS_TRADES = ("corrections", "cancelErrors")

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def msgpack_timestamp(ts_ns: int) -> msgspec.msgpack.Ext:
    """UTC ns as the MessagePack Timestamp extension (type -1), full ns precision."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    if seconds >> 34 == 0:
        if nanos == 0 and seconds < 2**32:
            return msgspec.msgpack.Ext(-1, seconds.to_bytes(4, "big"))
        return msgspec.msgpack.Ext(-1, ((nanos << 34) | seconds).to_bytes(8, "big"))
    return msgspec.msgpack.Ext(
        -1, nanos.to_bytes(4, "big") + seconds.to_bytes(8, "big", signed=True)
    )


class DataConnection(Connection):
    """One market-data websocket session."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        hub: Hub,
        *,
        msgpack_mode: bool,
    ) -> None:
        super().__init__(ws, request, hub.faults)
        self._hub = hub
        self.msgpack = msgpack_mode
        self.path = request.path
        self.key_id: str | None = None
        self.subs: dict[str, set[str]] = {c: set() for c in DATA_CHANNELS}

    def decode(self, data: bytes, binary: bool) -> Any:
        if binary and self.msgpack:
            return msgspec.msgpack.decode(data)
        return msgspec.json.decode(data)

    def encode(self, messages: list[dict[str, Any]], ts_key: bool = False) -> bytes:
        if self.msgpack:
            if ts_key:
                for m in messages:
                    m["t"] = msgpack_timestamp(m["t"])
            return _msgpack_encoder.encode(messages)
        if ts_key:
            for m in messages:
                m["t"] = rfc3339(m["t"])
        return _json_encoder.encode(messages)

    def control(self, message: dict[str, Any]) -> None:
        self.put(Frame(self.encode([message]), binary=self.msgpack))

    def error(self, code: int, msg: str) -> None:
        self.control({"T": "error", "code": code, "msg": msg})

    def offer_bars(self, tape: Tape, bars: Sequence[BarClosed]) -> None:
        if self.key_id is None:
            return
        want_bars = self.subs["bars"]
        want_daily = self.subs["dailyBars"] if tape.period_ns is None else set()
        if not want_bars and not want_daily:
            return
        messages: list[dict[str, Any]] = []
        for bar in bars:
            for kind, wanted in (("b", want_bars), ("d", want_daily)):
                if "*" in wanted or bar.symbol in wanted:
                    messages.append(_bar_message(kind, bar, tape))
        if messages:
            self.put(Frame(self.encode(messages, ts_key=True), self.msgpack, is_data=True))

    async def read_loop(self) -> None:
        hub = self._hub
        self.control({"T": "success", "msg": "connected"})
        with anyio.move_on_after(hub.auth_timeout_s) as scope:
            authed = await self._await_auth()
        if scope.cancelled_caught:
            self.error(404, "auth timeout")
            self.put(Close())
            await self._drain_until_closed()
            return
        if not authed:
            await self._drain_until_closed()
            return
        while True:
            got = await self.receive()
            if got is None:
                return
            message, ok = got
            if not ok or not isinstance(message, dict):
                self.error(400, "invalid syntax")
                continue
            action = message.get("action")
            if action == "auth":
                self.error(403, "already authenticated")
            elif action in ("subscribe", "unsubscribe"):
                self._subscribe(message, add=action == "subscribe")
            else:
                self.error(400, "invalid syntax")

    async def _await_auth(self) -> bool:
        """Handle messages until auth succeeds (True) or the session must end (False)."""
        hub = self._hub
        while True:
            got = await self.receive()
            if got is None:
                return False
            message, ok = got
            if not ok or not isinstance(message, dict) or "action" not in message:
                self.error(400, "invalid syntax")
                continue
            if message["action"] != "auth":
                self.error(401, "not authenticated")
                continue
            key, secret = message.get("key"), message.get("secret")
            if hub.faults.config.refuse_auth or not hub.credentials.check(key, secret):
                self.error(402, "auth failed")
                self.put(Close())
                return False
            assert isinstance(key, str)
            if not hub.take_slot(key, self):
                self.error(406, "connection limit exceeded")
                self.put(Close())
                return False
            self.key_id = key
            hub.notify()
            self.control({"T": "success", "msg": "authenticated"})
            return True

    async def _drain_until_closed(self) -> None:
        # Keep reading so the close handshake the writer starts can complete.
        while await self.receive() is not None:
            pass

    def _subscribe(self, message: dict[str, Any], *, add: bool) -> None:
        changes: dict[str, list[str]] = {}
        for channel in DATA_CHANNELS:
            if channel in _MIRRORS_TRADES or channel not in message:
                continue
            symbols = message[channel]
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                self.error(400, "invalid syntax")
                return
            changes[channel] = symbols
        for channel, symbols in changes.items():
            if add:
                self.subs[channel].update(symbols)
            else:
                self.subs[channel].difference_update(symbols)
        for mirror in _MIRRORS_TRADES:
            self.subs[mirror] = set(self.subs["trades"])
        self._hub.notify()
        reply: dict[str, Any] = {"T": "subscription"}
        reply.update({c: sorted(self.subs[c]) for c in DATA_CHANNELS})
        self.control(reply)


def _bar_message(kind: str, bar: BarClosed, tape: Tape) -> dict[str, Any]:
    row = tape.last_row_at_or_before(bar.symbol, bar.ts_ns)
    body = wire.bar(
        tape.start_ns(bar.symbol, row),
        o=bar.open,
        h=bar.high,
        low=bar.low,
        c=bar.close,
        volume=bar.volume,
        trades=bar.trades,
        vwap=bar.vwap,
    )
    return {"T": kind, "S": bar.symbol, **body}


async def data_stream(request: web.Request, hub: Hub) -> web.WebSocketResponse:
    """``GET /v2/{iex,sip,test}`` upgraded to a websocket."""
    content_type = request.headers.get("Content-Type", "")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    conn = DataConnection(ws, request, hub, msgpack_mode="msgpack" in content_type.lower())
    hub.data_conns.add(conn)
    hub.notify()
    try:
        await conn.serve()
    finally:
        hub.data_conns.discard(conn)
        hub.release(conn)
        hub.notify()
    return ws
