"""Alpaca's trading API on the wire: the JSON shapes we read, and how they map to
our messages and alpaca-py's requests.

Pure and synchronous: decoding (``strict=False``: Alpaca sends decimals as
strings), RFC 3339 times as UTC nanoseconds, an order's status as the event it
implies, and a :class:`~trader.messages.SubmitOrder` as an alpaca-py request.
The adapter (:mod:`trader.brokers.alpaca`) and its per-order ledger
(:mod:`trader.brokers.alpaca_orders`) build on these.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

import msgspec

from trader.brokers.base import OrderState
from trader.errors import BrokerRejected, BrokerUnavailable
from trader.feedcheck import parse_rfc3339_ns
from trader.messages import OrderAccepted, OrderType, Side, SubmitOrder, TimeInForce
from trader.money import round_price, to_cents, to_dollars

with warnings.catch_warnings():
    # alpaca.trading imports its own websockets.legacy stream client, which
    # warns on import; we use only the REST client.
    warnings.filterwarnings("ignore", "websockets.legacy", DeprecationWarning)
    from alpaca.trading.enums import OrderClass, OrderSide
    from alpaca.trading.enums import TimeInForce as AlpacaTif
    from alpaca.trading.requests import (
        LimitOrderRequest,
        MarketOrderRequest,
        OrderRequest,
        StopLimitOrderRequest,
        StopLossRequest,
        StopOrderRequest,
        TakeProfitRequest,
    )

T = TypeVar("T")

class WireOrder(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    client_order_id: str
    status: str
    symbol: str = ""
    side: str = "buy"
    qty: float | None = None
    notional: float | None = None
    filled_qty: float | None = None
    filled_avg_price: float | None = None
    order_type: str | None = None
    type: str | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    time_in_force: str = "day"
    submitted_at: str | None = None
    updated_at: str | None = None
    filled_at: str | None = None
    canceled_at: str | None = None
    expired_at: str | None = None
    failed_at: str | None = None
    replaced_at: str | None = None
    replaced_by: str | None = None
    order_class: str | None = None
    legs: list[WireOrder] | None = None  # a bracket entry's take profit and stop loss


class WireUpdate(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    order: WireOrder
    timestamp: str | None = None
    execution_id: str | None = None
    price: float | None = None
    qty: float | None = None


class WireEnvelope(msgspec.Struct, frozen=True):
    stream: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


class WireControl(msgspec.Struct, frozen=True):
    status: str = ""
    streams: list[str] = msgspec.field(default_factory=list)


class WireAccount(msgspec.Struct, frozen=True):
    cash: str
    equity: str
    buying_power: str


class WireClock(msgspec.Struct, frozen=True):
    timestamp: str


class WirePosition(msgspec.Struct, frozen=True):
    symbol: str
    qty: float
    avg_entry_price: float
    cost_basis: str


envelope_decoder = msgspec.json.Decoder(WireEnvelope)
update_decoder = msgspec.json.Decoder(WireUpdate, strict=False)
control_decoder = msgspec.json.Decoder(WireControl)
json_encoder = msgspec.json.Encoder()


def convert_payload(raw: object, kind: type[T], what: str) -> T:
    """A REST payload (alpaca-py ``raw_data``) as our struct.

    Raises:
        BrokerUnavailable: the payload is not the documented shape.
    """
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise BrokerUnavailable(f"{what}: unexpected response shape: {exc}") from exc


def status_event(status: str) -> str | None:
    """The event an order status implies for polling (None: nothing terminal)."""
    if status == "filled":
        return "fill"
    if status in ("canceled", "expired", "rejected", "replaced"):
        return status
    return None


def accepted_message(o: WireOrder, ts: int, common: dict[str, Any], *, parent: str = ""
              ) -> OrderAccepted:
    order_type = ORDER_TYPES.get(o.order_type or o.type or "market", "market")
    tif: TimeInForce = "gtc" if o.time_in_force == "gtc" else "day"  # ioc/fok/opg/cls: intraday
    return OrderAccepted(
        ts_ns=ts, side=side_of(o.side), qty=o.qty,
        notional_cents=None if o.notional is None else to_cents(o.notional),
        order_type=order_type, limit_price=o.limit_price, stop_price=o.stop_price,
        time_in_force=tif, parent_client_order_id=parent, **common,
    )


ORDER_TYPES: dict[str, OrderType] = {
    "market": "market", "limit": "limit", "stop": "stop", "stop_limit": "stop_limit",
    "trailing_stop": "stop",
}


def side_of(side: str) -> Side:
    return "sell" if side == "sell" else "buy"




def parse_ts(text: str | None) -> int | None:
    """RFC 3339 as UTC ns, every fraction digit kept; None if absent or not a
    timestamp with a zone (Alpaca always sends one)."""
    if not text:
        return None
    try:
        return parse_rfc3339_ns(text)
    except ValueError:
        return None


def order_state(o: WireOrder) -> OrderState:
    return OrderState(
        broker_order_id=o.id, client_order_id=o.client_order_id, symbol=o.symbol,
        side=o.side, status=o.status, qty=o.qty, filled_qty=o.filled_qty or 0.0,
        filled_avg_price=o.filled_avg_price,
    )


def order_request(order: SubmitOrder) -> OrderRequest:
    fields: dict[str, Any] = {
        "symbol": order.symbol,
        "side": OrderSide(order.side),
        "time_in_force": AlpacaTif(order.time_in_force),
        "client_order_id": order.client_order_id,
    }
    if order.qty is not None:
        fields["qty"] = order.qty
    if order.notional_cents is not None:
        fields["notional"] = to_dollars(order.notional_cents)
    take, stop = order.take_profit_price, order.stop_loss_price
    if take is not None or stop is not None:
        # Alpaca's bracket needs both legs; with one it is "one triggers other".
        fields["order_class"] = (
            OrderClass.BRACKET if take is not None and stop is not None else OrderClass.OTO)
        if take is not None:
            fields["take_profit"] = TakeProfitRequest(limit_price=round_price(take))
        if stop is not None:
            fields["stop_loss"] = StopLossRequest(stop_price=round_price(stop))
    try:
        match order.order_type:
            case "market":
                return MarketOrderRequest(**fields)
            case "limit":
                return LimitOrderRequest(limit_price=order.limit_price, **fields)
            case "stop":
                return StopOrderRequest(stop_price=order.stop_price, **fields)
            case _:
                return StopLimitOrderRequest(
                    stop_price=order.stop_price, limit_price=order.limit_price, **fields)
    except ValueError as exc:  # pydantic's ValidationError: refused before sending
        raise BrokerRejected(f"invalid order: {exc}", status=0) from exc


# --- errors ----------------------------------------------------------------------------


def cents_of(text: str) -> int:
    return to_cents(float(text))
