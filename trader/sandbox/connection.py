"""One websocket session's plumbing, shared by the data and trade streams.

A :class:`Connection` owns a bounded outbox and one writer task draining it,
so frames go out in the order they were produced and a control reply cannot
overtake data. The market publishes synchronously into every outbox; a client
too slow to keep :data:`OUTBOX_FRAMES` frames in flight is disconnected (Alpaca
would first send ``407 slow client``, which a client that is not reading would
not see anyway), so one stuck client cannot stall the market.

Fault switches applied here: ``drop_every`` (cut after N frames), ``corrupt``
(spoil data frames) and "drop now" (:meth:`Connection.drop`).

What it is not: either protocol (see :mod:`trader.sandbox.data_stream` and
:mod:`trader.sandbox.trade_stream`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from aiohttp import WSMsgType, web

from trader.sandbox.faults import Faults

# Deep enough for a burst of a whole trading day of minute bars to one client
# at speed="max"; past that the client is not keeping up.
OUTBOX_FRAMES = 100_000
_CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Credentials:
    """The one API key pair the sandbox accepts (REST headers and both streams)."""

    key_id: str
    secret: str

    def check(self, key_id: str | None, secret: str | None) -> bool:
        # compare_digest: constant time, out of habit with secrets.
        return (
            key_id is not None
            and secret is not None
            and hmac.compare_digest(key_id.encode(), self.key_id.encode())
            and hmac.compare_digest(secret.encode(), self.secret.encode())
        )


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes
    binary: bool
    is_data: bool = False


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket gracefully after the frames before it."""


Item = Frame | Close


class Connection:
    """What both kinds of connection share: the outbox, the writer, the drop."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, faults: Faults) -> None:
        self.ws = ws
        self._request = request
        self._faults = faults
        self._send, self._recv = anyio.create_memory_object_stream[Item](OUTBOX_FRAMES)
        self.sent = 0
        self.dropped = False

    def put(self, item: Item) -> None:
        try:
            self._send.send_nowait(item)
        except anyio.WouldBlock:
            self.drop()  # a slow client; Alpaca would send 407 first, but it is not reading
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the connection is going away

    def drop(self) -> None:
        """Cut the TCP connection with no close frame, like a network failure."""
        self.dropped = True
        transport = self._request.transport
        if transport is not None:
            transport.abort()

    async def write_loop(self) -> None:
        """Send the outbox in order; return on a close request, a drop or a dead peer."""
        async with self._recv:
            async for item in self._recv:
                if isinstance(item, Close):
                    return
                payload = item.payload
                if item.is_data:
                    payload = self._faults.corrupt_frame(payload) or payload
                try:
                    if item.binary:
                        await self.ws.send_bytes(payload)
                    else:
                        await self.ws.send_str(payload.decode("utf-8", errors="replace"))
                except (ConnectionError, RuntimeError):
                    # The peer is gone: aiohttp raises ClientConnectionResetError
                    # (a ConnectionError), or RuntimeError on a closing socket.
                    self.drop()
                    return
                self.sent += 1
                every = self._faults.config.drop_every
                if every and self.sent % every == 0:
                    self.drop()
                    return

    def close_outbox(self) -> None:
        self._send.close()

    async def serve(self) -> None:
        """Run the reader and the writer until either side ends the connection.

        The writer ending (close requested, drop, dead peer) closes the socket,
        which wakes the reader; the reader ending (the client closed) cancels
        the writer, since nothing more can be sent.
        """
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, tg.cancel_scope)
                await self.write_loop()
                with anyio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                    await self.ws.close()
        finally:
            self.close_outbox()
            with anyio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await self.ws.close()

    async def _read(self, scope: anyio.CancelScope) -> None:
        await self.read_loop()
        scope.cancel()

    async def read_loop(self) -> None:
        raise NotImplementedError

    async def receive(self) -> tuple[Any, bool] | None:
        """The next client message decoded, ``(message, ok)``; None when the socket ended."""
        while True:
            msg = await self.ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return None
            if msg.type == WSMsgType.TEXT:
                data: bytes = msg.data.encode()
                binary = False
            elif msg.type == WSMsgType.BINARY:
                data, binary = msg.data, True
            else:
                continue  # ping/pong are handled by aiohttp
            try:
                return self.decode(data, binary), True
            except msgspec.DecodeError:
                return None, False

    def decode(self, data: bytes, binary: bool) -> Any:
        return msgspec.json.decode(data)
