"""Alpaca's order REST API: submit, look up, list, replace and cancel orders.

Every handler reads the request, asks :class:`~trader.sandbox.market.Market`
(which stamps the sandbox time and publishes trade updates), and renders with
:mod:`trader.sandbox.wire`. Refusals from the exchange arrive as
:class:`~trader.errors.BrokerRejected` carrying Alpaca's HTTP status and code,
and go out unchanged.

Supported: ``market``, ``limit``, ``stop``, ``stop_limit``; ``day`` or
``gtc``; ``qty`` xor ``notional`` (numbers or strings); the ``simple``
order class, and ``bracket`` (``take_profit.limit_price`` and
``stop_loss.stop_price``) or ``oto`` (one of the two) on whole-share
orders, whose legs the answer lists under ``legs``
(:mod:`trader.brokers.brackets`; no stop-limit legs); fractional
quantities only when the broker config allows them.
Anything else is a 422 naming the limitation, never a silent approximation.
A submit answers ``accepted``; the stream then says ``new``.

What it is not: the fill logic (:mod:`trader.brokers.fills`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from trader.brokers.simulated import SimOrder
from trader.errors import BrokerRejected
from trader.messages import OrderType, Side, TimeInForce
from trader.money import to_cents
from trader.sandbox.market import Market
from trader.sandbox.params import (
    RequestError,
    invalid,
    json_body,
    json_response,
    number,
    query_bool,
    query_choice,
    query_int,
    query_list,
    query_time,
    rejected,
)

_SIDES: tuple[Side, ...] = ("buy", "sell")
_TYPES: tuple[OrderType, ...] = ("market", "limit", "stop", "stop_limit")
_TIFS: tuple[TimeInForce, ...] = ("day", "gtc")


class OrdersApi:
    """The order endpoints over one market."""

    def __init__(self, market: Market) -> None:
        self.market = market

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v2/orders", self.submit),
            web.get("/v2/orders", self.list_orders),
            web.delete("/v2/orders", self.cancel_all),
            web.get("/v2/orders:by_client_order_id", self.order_by_client_id),
            web.get("/v2/orders/{order_id}", self.get_order),
            web.patch("/v2/orders/{order_id}", self.replace_order),
            web.delete("/v2/orders/{order_id}", self.cancel_order),
        ]

    async def submit(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        fields = self._order_fields(body)
        try:
            report = self.market.submit(**fields)
        except BrokerRejected as exc:
            raise rejected(exc) from None
        return json_response(self.market.order_json(report.order, status="accepted"))

    async def list_orders(self, request: web.Request) -> web.Response:
        status = query_choice(request, "status", ("open", "closed", "all"), "open")
        limit = query_int(request, "limit", 50, 1, 500)
        direction = query_choice(request, "direction", ("asc", "desc"), "desc")
        after = query_time(request, "after")
        until = query_time(request, "until")
        side = query_choice(request, "side", ("buy", "sell", ""), "")
        symbols = set(query_list(request, "symbols"))
        # Nested: a bracket's legs appear inside their entry (order_json's
        # ``legs``), not on their own, as Alpaca rolls them up.
        nested = query_bool(request, "nested")
        selected: list[SimOrder] = []
        for o in self.market.exchange.orders.values():
            if (status == "open" and not o.is_open) or (status == "closed" and o.is_open):
                continue
            if nested and o.parent_client_order_id:
                continue
            if symbols and o.symbol not in symbols:
                continue
            if side and o.side != side:
                continue
            if after is not None and o.created_ns <= after:
                continue
            if until is not None and o.created_ns >= until:
                continue
            selected.append(o)
        # dict order is submission order; created_ns ties keep it (stable sort).
        selected.sort(key=lambda o: o.created_ns, reverse=direction == "desc")
        return json_response([self.market.order_json(o) for o in selected[:limit]])

    async def get_order(self, request: web.Request) -> web.Response:
        return json_response(self.market.order_json(self._order(request)))

    async def order_by_client_id(self, request: web.Request) -> web.Response:
        coid = request.query.get("client_order_id", "")
        o = self.market.exchange.order_by_client_id(coid)
        if o is None:
            raise RequestError(404, 40410000, "order not found")
        return json_response(self.market.order_json(o))

    async def cancel_order(self, request: web.Request) -> web.Response:
        o = self._order(request)
        try:
            self.market.cancel(o.id)
        except BrokerRejected as exc:
            raise rejected(exc) from None
        return web.Response(status=204)

    async def cancel_all(self, request: web.Request) -> web.Response:
        results = []
        for o in self.market.exchange.open_orders():
            report = self.market.cancel(o.id)
            results.append(
                {"id": o.id, "status": 200, "body": self.market.order_json(report.order)}
            )
        return json_response(results, status=207)

    async def replace_order(self, request: web.Request) -> web.Response:
        o = self._order(request)
        body = await json_body(request)
        if body.get("trail") is not None:
            raise invalid("trailing stop orders are not supported by the sandbox")
        tif = body.get("time_in_force")
        if tif is not None and tif not in _TIFS:
            raise invalid(f"time_in_force {tif!r} is not supported by the sandbox (day, gtc)")
        qty = number(body, "qty")
        if qty is not None:
            self._check_qty(qty)
        try:
            report = self.market.replace(
                o.id,
                client_order_id=self._client_order_id(body),
                qty=qty,
                limit_price=number(body, "limit_price"),
                stop_price=number(body, "stop_price"),
                time_in_force=tif,
            )
        except BrokerRejected as exc:
            raise rejected(exc) from None
        return json_response(self.market.order_json(report.order, status="accepted"))

    # --- helpers -----------------------------------------------------------------

    def _order(self, request: web.Request) -> SimOrder:
        o = self.market.exchange.orders.get(request.match_info["order_id"])
        if o is None:
            raise RequestError(404, 40410000, "order not found")
        return o

    def _client_order_id(self, body: dict[str, Any]) -> str:
        coid = body.get("client_order_id")
        if coid is None or coid == "":
            return self.market.next_client_order_id()
        if not isinstance(coid, str) or len(coid) > 128:
            raise invalid("client_order_id must be a string of at most 128 characters")
        return coid

    def _check_qty(self, qty: float) -> None:
        if not qty.is_integer() and not self.market.exchange.config.fractional:
            raise invalid("qty must be a whole number (fractional trading is off)")

    def _order_fields(self, body: dict[str, Any]) -> dict[str, Any]:
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise invalid("symbol is required")
        if symbol not in self.market.tape.tables:
            raise invalid(f'asset "{symbol}" not found')
        side = body.get("side")
        if side not in _SIDES:
            raise invalid("side must be buy or sell")
        order_type = body.get("type", body.get("order_type", "market"))
        if order_type not in _TYPES:
            raise invalid(f"order type {order_type!r} is not supported by the sandbox")
        tif = body.get("time_in_force")
        if tif not in _TIFS:
            raise invalid(f"time_in_force {tif!r} is not supported by the sandbox (day, gtc)")
        order_class = body.get("order_class")
        if order_class not in (None, "", "simple", "bracket", "oto"):
            raise invalid(f"order_class {order_class!r} is not supported by the sandbox")
        if body.get("extended_hours") is True:
            raise invalid("extended hours orders are not supported by the sandbox")
        for unsupported in ("trail_price", "trail_percent", "legs"):
            if body.get(unsupported) is not None:
                raise invalid(f"{unsupported} is not supported by the sandbox")
        take_profit, stop_loss = _legs(order_class, body)
        qty = number(body, "qty")
        notional = number(body, "notional")
        if (qty is None) == (notional is None):
            raise invalid("qty or notional is required")
        if qty is not None:
            self._check_qty(qty)
        return {
            "client_order_id": self._client_order_id(body),
            "symbol": symbol,
            "side": side,
            "qty": qty,
            "notional_cents": None if notional is None else to_cents(notional),
            "order_type": order_type,
            "limit_price": number(body, "limit_price"),
            "stop_price": number(body, "stop_price"),
            "time_in_force": tif,
            "take_profit_price": take_profit,
            "stop_loss_price": stop_loss,
        }


def _legs(order_class: object, body: dict[str, Any]) -> tuple[float | None, float | None]:
    """A bracket's (take profit limit, stop loss stop) from the body; (None, None) for a
    simple order.

    Raises:
        RequestError: legs missing for the class, given for a simple order, or a
            stop-limit stop loss (422).
    """
    tp_body, sl_body = body.get("take_profit"), body.get("stop_loss")
    if order_class not in ("bracket", "oto"):
        if tp_body is not None or sl_body is not None:
            raise invalid("take_profit and stop_loss need order_class bracket or oto")
        return None, None
    take = stop = None
    if tp_body is not None:
        if not isinstance(tp_body, dict):
            raise invalid("take_profit must be an object")
        take = number(tp_body, "limit_price")
    if sl_body is not None:
        if not isinstance(sl_body, dict):
            raise invalid("stop_loss must be an object")
        if sl_body.get("limit_price") is not None:
            raise invalid("stop_loss.limit_price (a stop-limit leg) is not supported by "
                          "the sandbox")
        stop = number(sl_body, "stop_price")
    if order_class == "bracket" and (take is None or stop is None):
        raise invalid("bracket orders require take_profit.limit_price and "
                      "stop_loss.stop_price")
    if take is None and stop is None:
        raise invalid("oto orders require either take_profit or stop_loss")
    return take, stop
