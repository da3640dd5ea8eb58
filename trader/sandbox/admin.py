"""The sandbox's own control API under ``/admin`` (not part of Alpaca's protocol).

==========================  =================================================
``GET /admin/faults``       the fault switches and the counters left
``POST /admin/faults``      change some switches: a JSON object of
                            :class:`~trader.sandbox.faults.FaultConfig` fields;
                            ``"drop_now": true`` also cuts every websocket
``DELETE /admin/faults``    back to a well-behaved exchange
``POST /admin/advance``     ``{"bars": n}`` or ``{"until": "<RFC 3339>"}``:
                            move a ``speed="max"`` clock (409 otherwise)
``GET /admin/state``        clock, watermark, next bar, connection counts
==========================  =================================================

The admin API needs no credentials (the sandbox binds to 127.0.0.1 by
default) and no fault ever applies to it, so a test keeps control of a
misbehaving exchange.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from trader.sandbox import wire
from trader.sandbox.faults import Faults
from trader.sandbox.hub import Hub
from trader.sandbox.market import ClockNotManual, Market
from trader.sandbox.params import RequestError, json_body, json_response


class AdminApi:
    """Handlers for ``/admin``."""

    def __init__(self, market: Market, faults: Faults, hub: Hub) -> None:
        self.market = market
        self.faults = faults
        self.hub = hub

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/admin/faults", self.get_faults),
            web.post("/admin/faults", self.set_faults),
            web.delete("/admin/faults", self.reset_faults),
            web.post("/admin/advance", self.advance),
            web.get("/admin/state", self.state),
        ]

    async def get_faults(self, request: web.Request) -> web.Response:
        return json_response(self.faults.snapshot())

    async def set_faults(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        drop_now = body.pop("drop_now", False)
        if not isinstance(drop_now, bool):
            raise RequestError(400, 40010001, "drop_now must be a boolean")
        try:
            self.faults.update(body)
        except msgspec.ValidationError as exc:
            raise RequestError(400, 40010001, f"invalid fault settings: {exc}") from None
        snapshot = self.faults.snapshot()
        if drop_now:
            snapshot["dropped"] = self.hub.drop_all()
        return json_response(snapshot)

    async def reset_faults(self, request: web.Request) -> web.Response:
        self.faults.reset()
        return json_response(self.faults.snapshot())

    async def advance(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        bars, until = body.get("bars"), body.get("until")
        if (bars is None) == (until is None):
            raise RequestError(400, 40010001, "give exactly one of bars and until")
        try:
            if bars is not None:
                if not isinstance(bars, int) or isinstance(bars, bool) or bars < 0:
                    raise RequestError(400, 40010001, "bars must be a non-negative integer")
                published = await self.market.advance(bars=bars)
            else:
                if not isinstance(until, str):
                    raise RequestError(400, 40010001, "until must be an RFC 3339 string")
                try:
                    until_ns = wire.parse_time(until)
                except ValueError:
                    raise RequestError(400, 40010001, f"invalid until: {until!r}") from None
                published = await self.market.advance(until_ns=until_ns)
        except ClockNotManual as exc:
            raise RequestError(409, 40910000, str(exc)) from None
        return json_response({"published": published, **self._clock()})

    async def state(self, request: web.Request) -> web.Response:
        hub = self.hub
        return json_response(
            {
                **self._clock(),
                "speed": self.market.speed,
                "connections": {
                    "data": len(hub.data_conns),
                    "data_authenticated": sum(1 for c in hub.data_conns if c.key_id),
                    "trade": len(hub.trade_conns),
                    "trade_listening": sum(1 for c in hub.trade_conns if c.listening),
                },
            }
        )

    def _clock(self) -> dict[str, str | None]:
        nxt = self.market.next_bar_ns()
        return {
            "now": wire.rfc3339(self.market.now_ns()),
            "watermark": wire.rfc3339(self.market.watermark_ns),
            "next_bar": None if nxt is None else wire.rfc3339(nxt),
        }
