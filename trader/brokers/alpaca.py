"""The Alpaca adapter: the broker port over alpaca-py's REST client and the trade stream.

REST goes through alpaca-py's ``TradingClient``, which is synchronous and has
no timeout. Every call therefore runs in a worker thread under our own
deadline, after taking a token from the :class:`~trader.ratelimit.RateLimiter`
(cancels first). alpaca-py's own 3-second retry sleeps are switched off; we
retry here with jittered exponential backoff and a bounded attempt count.

Errors: 429, 5xx, timeouts and connection failures are transient (retried,
then :class:`~trader.errors.BrokerUnavailable`); any other 4xx is a definite
:class:`~trader.errors.BrokerRejected` carrying Alpaca's message, code and
HTTP status. A submit that failed in a way that may have reached the broker
(timeout, 5xx, dropped connection) is never simply resent: the order is first
looked up by client order id, and a resend answered "client_order_id must be
unique" means the first one landed. So one intended order is one order.

Order events come from the trade-updates websocket (``stream``), never from
REST responses. The stream can drop or stall, so it is backed by polling:
an order with no update for ``update_timeout_s`` (or while the stream is
down, and all live orders right after a reconnect) is read by client order
id and the events its state implies are emitted. Both paths feed one ledger
per order (:class:`_Orders`), which emits each execution once: by execution
id for stream fills, and by cumulative filled quantity for polled state
(polled fills get an execution id derived from the order id and that
quantity). A stream that starts (first start, or after the execution actor
restarted) takes the broker's open orders as its baseline and emits nothing
for what happened before, because the actor reconciles to that same state.
Life of an order here::

    submit ─▶ tracked ─▶ OrderAccepted ─▶ OrderFilled* ─▶ filled | canceled |
    (REST)    (polled if    (stream "new"    (stream or        expired | replaced
              silent)        or poll)         poll deltas)     | rejected  (done)

Health (:mod:`trader.brokers.health`): every REST outcome, every trade
update and the broker's clock (``/v2/clock``, at start and every
``clock_check_interval_s``) are measured against the ``[alpaca]`` limits; a
check that flips goes out on ``updates`` as a ``BrokerHealthChanged``, which
the execution actor passes to risk.

What it is not: market data (the feed's job), order state policy (the
execution actor's) or breaker policy (risk's). Nothing secret is logged:
client order ids and symbols are.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import uuid
import warnings
from collections.abc import Callable, Collection, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
import msgspec
import requests
import structlog
from anyio.abc import TaskStatus
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from trader.brokers.base import AccountState, OrderState, PositionState
from trader.brokers.health import BrokerHealth, HealthChange
from trader.channels import Channel
from trader.config import AlpacaConfig
from trader.errors import BrokerError, BrokerRejected, BrokerUnavailable
from trader.messages import (
    BrokerHealthChanged,
    ClientOrderId,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    OrderType,
    Side,
    SubmitOrder,
    TimeInForce,
)
from trader.money import round_price, to_cents, to_dollars
from trader.ratelimit import Priority, RateLimiter
from trader.secrets import Credentials

with warnings.catch_warnings():
    # alpaca.trading imports its own websockets.legacy stream client, which
    # warns on import; we use only the REST client.
    warnings.filterwarnings("ignore", "websockets.legacy", DeprecationWarning)
    from alpaca.common.exceptions import APIError
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderClass, OrderSide, QueryOrderStatus
    from alpaca.trading.enums import TimeInForce as AlpacaTif
    from alpaca.trading.requests import (
        GetOrdersRequest,
        LimitOrderRequest,
        MarketOrderRequest,
        OrderRequest,
        StopLimitOrderRequest,
        StopLossRequest,
        StopOrderRequest,
        TakeProfitRequest,
    )

log = structlog.get_logger("trader.brokers.alpaca")

T = TypeVar("T")

_DUPLICATE = "40010001"
_EPS = 1e-9
_EXEC_IDS = uuid.UUID("3b0f8f3e-6a51-4f0e-9d1c-7f2b8e5a4c10")
_PRE_NEW = frozenset({"accepted", "pending_new", "accepted_for_bidding", "held", "pending_review"})
_POLL_MAX_S = 60.0  # a quiet resting order is re-read at least this often
_MISSES = 3  # 404s in a row before a never-acknowledged submit is given up
_DONE_KEPT = 10_000  # finished orders remembered, so late stream events are dropped
_CLOSE_S = 3.0
_OPEN_ORDERS_LIMIT = 500  # Alpaca's maximum page


# --- wire shapes (decoded with strict=False: Alpaca sends decimals as strings) ----------


class _WireOrder(msgspec.Struct, frozen=True, kw_only=True):
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
    legs: list[_WireOrder] | None = None  # a bracket entry's take profit and stop loss


class _Update(msgspec.Struct, frozen=True, kw_only=True):
    event: str
    order: _WireOrder
    timestamp: str | None = None
    execution_id: str | None = None
    price: float | None = None
    qty: float | None = None


class _Envelope(msgspec.Struct, frozen=True):
    stream: str = ""
    data: msgspec.Raw = msgspec.Raw(b"null")


class _Control(msgspec.Struct, frozen=True):
    status: str = ""
    streams: list[str] = msgspec.field(default_factory=list)


class _WireAccount(msgspec.Struct, frozen=True):
    cash: str
    equity: str
    buying_power: str


class _WireClock(msgspec.Struct, frozen=True):
    timestamp: str


class _WirePosition(msgspec.Struct, frozen=True):
    symbol: str
    qty: float
    avg_entry_price: float
    cost_basis: str


_envelopes = msgspec.json.Decoder(_Envelope)
_updates = msgspec.json.Decoder(_Update, strict=False)
_controls = msgspec.json.Decoder(_Control)
_json = msgspec.json.Encoder()


def _convert(raw: object, kind: type[T], what: str) -> T:
    """A REST payload (alpaca-py ``raw_data``) as our struct.

    Raises:
        BrokerUnavailable: the payload is not the documented shape.
    """
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise BrokerUnavailable(f"{what}: unexpected response shape: {exc}") from exc


# --- the per-order ledger: what has been emitted, and when to poll (pure, synchronous) ---


class _Track:
    """What we have told the graph about one order, and its polling schedule."""

    __slots__ = ("accepted", "coid", "cum_qty", "cum_value", "done", "exec_ids", "interval",
                 "market", "misses", "next_poll", "order_id", "symbol")

    def __init__(self, coid: str, symbol: str, next_poll: float, interval: float) -> None:
        self.coid = coid
        self.symbol = symbol
        self.order_id = ""
        self.accepted = False
        self.cum_qty = 0.0  # filled quantity covered by emitted fills
        self.cum_value = 0.0  # sum of qty * price over emitted fills
        self.done = False
        self.exec_ids: set[str] = set()
        self.next_poll = next_poll
        self.interval = interval
        self.misses = 0
        # A market order is due to fill at once; a resting limit or stop order
        # is not, so only market orders are polled before a bar is released.
        self.market = False


class _Orders:
    """Turns stream updates and polled order states into messages, each fact once.

    Args:
        timeout_s: ``update_timeout_s``: poll an order after this long without news.
        now_ns: fallback event time when the broker gives none.
    """

    def __init__(self, timeout_s: float, now_ns: Callable[[], int]) -> None:
        self._timeout = timeout_s
        self._now_ns = now_ns
        self._live: dict[str, _Track] = {}
        self._done: dict[str, _Track] = {}  # insertion order = finishing order
        self.stream_up = False
        # A bracket leg's client order id -> its entry's. Alpaca names legs
        # itself and links them only from the entry (its ``legs``), so we
        # remember every link we see (the submit's answer, updates, polls).
        self.parents: dict[str, str] = {}

    def note_legs(self, o: _WireOrder) -> None:
        """Remember which entry ``o``'s legs (if any) belong to."""
        for leg in o.legs or ():
            self.parents[leg.client_order_id] = o.client_order_id

    def get(self, coid: str) -> _Track | None:
        return self._live.get(coid) or self._done.get(coid)

    def is_live(self, coid: str) -> bool:
        return coid in self._live

    def live(self) -> list[_Track]:
        return list(self._live.values())

    def expect(self, coid: str, symbol: str, now: float) -> bool:
        """Watch an order we are about to submit; True if this created its track."""
        if self.get(coid) is not None:
            return False
        self._live[coid] = _Track(coid, symbol, now + self._timeout, self._timeout)
        return True

    def submitted(self, coid: str, symbol: str, now: float) -> None:
        """The submit went through: expect its first update within the timeout."""
        self.expect(coid, symbol, now)
        t = self._live.get(coid)
        if t is not None:
            t.misses = 0
            t.next_poll = max(t.next_poll, now + self._timeout)

    def forget(self, coid: str) -> None:
        self._live.pop(coid, None)

    def rebase(self, open_orders: Sequence[_WireOrder], now: float) -> None:
        """Start of a stream: take the broker's open orders as already reported.

        The execution actor reconciles from the broker's state right after the
        stream starts, so what happened before now must not come again as
        events. Orders we were following that are no longer open finished (or
        never landed) while nobody listened: forget them, so a late first event
        for one starts afresh rather than being taken for a repeat.
        """
        self._live.clear()
        for o in open_orders:
            t = _Track(o.client_order_id, o.symbol, now + self._timeout, self._timeout)
            t.order_id = o.id
            t.accepted = o.status not in _PRE_NEW
            t.cum_qty = o.filled_qty or 0.0
            t.cum_value = t.cum_qty * (o.filled_avg_price or 0.0)
            self._live[o.client_order_id] = t

    # --- polling schedule ----------------------------------------------------------

    def due(self, now: float) -> list[str]:
        return [t.coid for t in self._live.values() if t.next_poll <= now]

    def next_due(self) -> float | None:
        return min((t.next_poll for t in self._live.values()), default=None)

    def recover(self, now: float) -> None:
        """Poll every live order now (after a reconnect: events may have been missed)."""
        for t in self._live.values():
            t.next_poll = now
            t.interval = self._timeout

    def quiet(self, coid: str, now: float) -> None:
        """A poll brought nothing new (or failed): wait longer next time, unless the
        stream is down, when polling is the only source."""
        t = self._live.get(coid)
        if t is not None:
            if self.stream_up:
                t.interval = min(t.interval * 2, max(_POLL_MAX_S, self._timeout))
            t.next_poll = now + t.interval

    def missing(self, coid: str, now: float) -> None:
        """The broker does not know the order (404)."""
        t = self._live.get(coid)
        if t is None:
            return
        t.misses += 1
        if t.misses >= _MISSES and not t.accepted:
            log.warning("alpaca.order_unknown", client_order_id=coid, symbol=t.symbol)
            del self._live[coid]
        else:
            self.quiet(coid, now)

    # --- facts in, messages out ---------------------------------------------------

    def on_update(self, u: _Update, now: float) -> list[OrderEvent]:
        """A trade-updates event."""
        ts = _ts(u.timestamp) or self._now_ns()
        event: str | None = u.event
        fill = None
        if event in ("fill", "partial_fill") and u.execution_id and u.qty and u.price:
            fill = (u.execution_id, u.qty, u.price)
        if event not in ("new", "fill", "partial_fill", "canceled", "expired", "rejected",
                         "replaced"):
            event = _status_event(u.order.status)  # done_for_day, pending_cancel, ...
        return self._apply(u.order, event, fill, ts, now, heard=True)

    def on_state(self, o: _WireOrder, now: float) -> list[OrderEvent]:
        """A polled order."""
        return self._apply(o, _status_event(o.status), None, None, now, heard=False)

    def _apply(
        self,
        o: _WireOrder,
        event: str | None,
        fill: tuple[str, float, float] | None,
        ts: int | None,
        now: float,
        *,
        heard: bool,
    ) -> list[OrderEvent]:
        coid = o.client_order_id
        self.note_legs(o)
        t = self.get(coid)
        if t is None:  # not ours, or placed before we started: follow it anyway
            t = self._live[coid] = _Track(coid, o.symbol, now, self._timeout)
        if t.done or (fill is not None and fill[0] in t.exec_ids):
            return []
        t.order_id, t.symbol, t.misses = o.id, o.symbol or t.symbol, 0
        out: list[OrderEvent] = []
        common: dict[str, Any] = {
            "client_order_id": ClientOrderId(coid), "symbol": t.symbol, "broker_order_id": o.id,
        }
        if event == "rejected":
            reason = "rejected by the broker"
            out.append(OrderRejected(ts_ns=ts or self._order_ts(o, o.failed_at), reason=reason,
                                     **common))
            self._finish(t)
            return out
        if not t.accepted and (event is not None or o.status not in _PRE_NEW):
            out.append(_accepted(o, ts or self._order_ts(o, o.submitted_at), common,
                                 parent=self.parents.get(coid, "")))
            t.accepted = True
        filled = o.filled_qty or 0.0
        fill_ts = ts or self._order_ts(o, o.filled_at)
        if fill is not None:
            exec_id, qty, price = fill
            if o.filled_qty is None:
                filled = t.cum_qty + qty
            before = filled - qty
            if before - t.cum_qty > _EPS:  # executions we never saw: fill the gap first
                value = filled * (o.filled_avg_price or price) - qty * price
                out.append(self._fill(t, o, before, value, None, fill_ts, common, last=False))
            if filled - t.cum_qty > _EPS:
                exact = abs(filled - t.cum_qty - qty) <= _EPS
                value = t.cum_value + qty * price if exact else filled * (
                    o.filled_avg_price or price)
                out.append(self._fill(t, o, filled, value, exec_id, fill_ts, common,
                                      last=True, price=price if exact else None,
                                      done=event == "fill"))
            t.exec_ids.add(exec_id)
        elif filled - t.cum_qty > _EPS:
            value = filled * (o.filled_avg_price or 0.0)
            out.append(self._fill(t, o, filled, value, None, fill_ts, common, last=True,
                                  done=event == "fill"))
        if event == "fill":
            self._finish(t)
        elif event == "canceled":
            out.append(OrderCanceled(ts_ns=ts or self._order_ts(o, o.canceled_at),
                                     filled_qty=t.cum_qty, **common))
            self._finish(t)
        elif event == "expired":
            out.append(OrderExpired(ts_ns=ts or self._order_ts(o, o.expired_at),
                                    filled_qty=t.cum_qty, **common))
            self._finish(t)
        elif event == "replaced":
            out.append(OrderReplaced(ts_ns=ts or self._order_ts(o, o.replaced_at),
                                     replaced_by=o.replaced_by or "", **common))
            self._finish(t)
        if not t.done:
            if heard or out:
                t.interval = self._timeout
                t.next_poll = now + self._timeout
            else:
                self.quiet(coid, now)
        return out

    def _order_ts(self, o: _WireOrder, stamp: str | None) -> int:
        return _ts(stamp) or _ts(o.updated_at) or self._now_ns()

    def _fill(
        self,
        t: _Track,
        o: _WireOrder,
        cum_qty: float,
        cum_value: float,
        exec_id: str | None,
        ts: int,
        common: dict[str, Any],
        *,
        last: bool,
        price: float | None = None,
        done: bool = False,
    ) -> OrderFilled:
        qty = round(cum_qty - t.cum_qty, 9)
        if price is None:  # derived from averages: one delta of cumulative value
            price = round_price((cum_value - t.cum_value) / qty)
        if exec_id is None:
            exec_id = str(uuid.uuid5(_EXEC_IDS, f"{o.id}:{cum_qty:.9f}"))
        avg = o.filled_avg_price if last and o.filled_avg_price else cum_value / cum_qty
        filled = last and (done or o.status == "filled")
        t.cum_qty, t.cum_value = cum_qty, cum_value
        t.exec_ids.add(exec_id)
        return OrderFilled(
            ts_ns=ts, execution_id=exec_id, side=_side(o.side), qty=qty, price=price,
            commission_cents=0, cum_qty=cum_qty, avg_price=round(avg, 6),
            status="filled" if filled else "partially_filled", **common,
        )

    def _finish(self, t: _Track) -> None:
        t.done = True
        self._live.pop(t.coid, None)
        self._done[t.coid] = t
        if len(self._done) > _DONE_KEPT:
            del self._done[next(iter(self._done))]


def _status_event(status: str) -> str | None:
    """The event an order status implies for polling (None: nothing terminal)."""
    if status == "filled":
        return "fill"
    if status in ("canceled", "expired", "rejected", "replaced"):
        return status
    return None


def _accepted(o: _WireOrder, ts: int, common: dict[str, Any], *, parent: str = ""
              ) -> OrderAccepted:
    order_type = _ORDER_TYPES.get(o.order_type or o.type or "market", "market")
    tif: TimeInForce = "gtc" if o.time_in_force == "gtc" else "day"  # ioc/fok/opg/cls: intraday
    return OrderAccepted(
        ts_ns=ts, side=_side(o.side), qty=o.qty,
        notional_cents=None if o.notional is None else to_cents(o.notional),
        order_type=order_type, limit_price=o.limit_price, stop_price=o.stop_price,
        time_in_force=tif, parent_client_order_id=parent, **common,
    )


_ORDER_TYPES: dict[str, OrderType] = {
    "market": "market", "limit": "limit", "stop": "stop", "stop_limit": "stop_limit",
    "trailing_stop": "stop",
}


def _side(side: str) -> Side:
    return "sell" if side == "sell" else "buy"




def _ts(text: str | None) -> int | None:
    """RFC 3339 (``Z`` or offset, up to 9 fraction digits) as UTC ns; None if absent/bad."""
    if not text:
        return None
    extra = 0
    body = text.replace("Z", "+00:00").replace("z", "+00:00")
    dot = body.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(body) and body[end].isdigit():
            end += 1
        digits = body[dot + 1 : end]
        extra = int(digits[6:9].ljust(3, "0")) if len(digits) > 6 else 0
        body = body[: dot + 1] + digits[:6].ljust(6, "0") + body[end:]
    try:
        when = dt.datetime.fromisoformat(body)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    micros = (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    return micros * 1000 + extra


def _order_state(o: _WireOrder) -> OrderState:
    return OrderState(
        broker_order_id=o.id, client_order_id=o.client_order_id, symbol=o.symbol,
        side=o.side, status=o.status, qty=o.qty, filled_qty=o.filled_qty or 0.0,
        filled_avg_price=o.filled_avg_price,
    )


def _order_request(order: SubmitOrder) -> OrderRequest:
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


class _Transient(Exception):
    """A failure worth retrying. ``status`` is None when no HTTP answer came."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status


class _SocketTimeout(HTTPAdapter):
    """An HTTP adapter that gives every request a socket timeout."""

    def __init__(self, timeout_s: float, pool_maxsize: int) -> None:
        super().__init__(pool_maxsize=pool_maxsize)
        self._timeout_s = timeout_s

    def send(self, request: PreparedRequest, *args: Any, **kwargs: Any) -> Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout_s
        return super().send(request, *args, **kwargs)


class _StreamRefused(Exception):
    """The trade stream refused our keys."""


def _api_error(exc: APIError, what: str) -> Exception:
    status = exc.status_code
    # .code/.message parse the body on every access and raise on anything
    # that is not a JSON object with those keys (a proxy's HTML page, say).
    try:
        code = str(exc.code)
    except (ValueError, KeyError, TypeError):
        code = ""
    try:
        message = str(exc.message)
    except (ValueError, KeyError, TypeError):
        message = str(exc)[:200] or f"HTTP {status}"
    if status is None or status in (408, 429) or status >= 500:
        return _Transient(f"{what}: HTTP {status} {message}", status)
    return BrokerRejected(message, code=code, status=status)


# --- the adapter -----------------------------------------------------------------------


class AlpacaBroker:
    """The broker port over Alpaca (or the sandbox, which speaks its protocol).

    Args:
        updates: where order events go.
        config: ``[alpaca]``: URLs, request and update timeouts, request budget.
        credentials: the key pair (never logged).
        trading_url: REST base, overriding ``config.trading_url``.
        trade_stream_url: trade-updates websocket, overriding ``config.trade_stream_url``.
        now_ns: the graph clock, for events the broker gives no time for.
        attempts: tries per request before BrokerUnavailable (default 5).
        backoff_s: first retry delay; doubles per attempt, jittered (default 0.25).
        backoff_max_s: the longest retry delay (default 4).
        reconnect_initial_s, reconnect_max_s: trade-stream reconnect backoff bounds.
    """

    durable_updates = True  # the broker outlives us: journal fills before acting

    def __init__(
        self,
        *,
        updates: Channel[Message],
        config: AlpacaConfig,
        credentials: Credentials,
        trading_url: str | None = None,
        trade_stream_url: str | None = None,
        now_ns: Callable[[], int],
        attempts: int = 5,
        backoff_s: float = 0.25,
        backoff_max_s: float = 4.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
    ) -> None:
        self.updates = updates
        self._config = config
        self._credentials = credentials
        self._stream_url = trade_stream_url or config.trade_stream_url
        self._now_ns = now_ns
        self._attempts = max(attempts, 1)
        self._backoff = (backoff_s, backoff_max_s)
        self._reconnect = (reconnect_initial_s, reconnect_max_s)
        self._limiter = RateLimiter(config.max_requests_per_minute)
        self._orders = _Orders(config.update_timeout_s, now_ns)
        self._health = BrokerHealth.from_config(config)
        self._health_out: list[HealthChange] = []
        self._health_wake = anyio.Event()
        self._emit_lock = anyio.Lock()
        self._wake = anyio.Event()
        self._rng = random.Random()
        self.reconnects = 0
        """Trade-stream reconnections so far (for metrics)."""
        client = TradingClient(
            credentials.key_id, credentials.secret_key, raw_data=True,
            url_override=trading_url or config.trading_url,
        )
        # alpaca-py would sleep 3 s per 429/504 inside our worker thread, past
        # our deadline; we retry ourselves.
        client._retry = 0
        client._retry_wait = 0
        client._retry_codes = []
        # A socket timeout as a backstop behind our deadline, so a worker thread
        # abandoned at the deadline cannot hang on a dead connection forever.
        # Keep-alive connections for every request that can be in flight at
        # once (concurrent submits, the polls before a bar, the poll loop and
        # the clock), so none is opened afresh on the hot path.
        adapter = _SocketTimeout(2 * config.request_timeout_s + 1,
                                 pool_maxsize=2 * config.max_concurrent_submits + 2)
        client._session.mount("http://", adapter)
        client._session.mount("https://", adapter)
        self._client = client

    # --- REST plumbing ---------------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., object], *args: Any,
                    priority: Priority = "normal") -> object:
        """One request: a rate token, a worker thread, our deadline.

        Raises:
            _Transient: timeout, connection failure, 429 or 5xx.
            BrokerRejected: any other error answer.
        """
        await self._limiter.acquire(priority)
        try:
            with anyio.fail_after(self._config.request_timeout_s):
                # abandon_on_cancel: a hung socket must not hold up our deadline;
                # the thread finishes (or fails) on its own, into the void.
                result = await anyio.to_thread.run_sync(partial(fn, *args),
                                                        abandon_on_cancel=True)
        except TimeoutError as exc:
            self._answered(failed=True)
            raise _Transient(f"{what}: no answer in {self._config.request_timeout_s}s",
                             None) from exc
        except APIError as exc:
            error = _api_error(exc, what)
            # A refusal about the order (404, 403, 422) is an answer; no
            # answer, a throttle or refused keys mean the broker is failing us.
            self._answered(failed=isinstance(error, _Transient) or exc.status_code == 401)
            raise error from exc
        except requests.RequestException as exc:
            self._answered(failed=True)
            raise _Transient(f"{what}: {type(exc).__name__}: {exc}", None) from exc
        self._answered(failed=False)
        return result

    def _answered(self, *, failed: bool) -> None:
        self._tell(self._health.request(anyio.current_time(), failed=failed))

    async def _pause(self, attempt: int) -> None:
        base, cap = self._backoff
        await anyio.sleep(min(cap, base * 2 ** (attempt - 1)) * self._rng.uniform(0.5, 1.0))

    async def _request(self, what: str, fn: Callable[..., object], *args: Any,
                       priority: Priority = "normal") -> object:
        """:meth:`_call` with retries (for requests that are safe to repeat)."""
        last: _Transient | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._pause(attempt)
            try:
                return await self._call(what, fn, *args, priority=priority)
            except _Transient as exc:
                last = exc
                log.warning("alpaca.retry", request=what, attempt=attempt + 1, error=str(exc))
        raise BrokerUnavailable(f"{last} (gave up after {self._attempts} attempts)") from last

    async def _lookup(self, coid: str, priority: Priority = "normal",
                      *, retry: bool = True) -> _WireOrder | None:
        call = self._request if retry else self._call
        try:
            raw = await call("order lookup", self._client.get_order_by_client_id, coid,
                             priority=priority)
        except BrokerRejected as exc:
            if exc.status == 404:
                return None
            raise
        return _convert(raw, _WireOrder, "order lookup")

    # --- the port: commands ----------------------------------------------------------------

    async def submit(self, order: SubmitOrder) -> None:
        """Send an order once; its events arrive on ``updates``.

        Raises:
            BrokerRejected: refused (duplicate client order id: code ``40010001``).
            BrokerUnavailable: still failing after the retries; the order may or
                may not exist (it stays watched, so its events still arrive if it does).
        """
        coid = order.client_order_id
        request = _order_request(order)
        created = self._orders.expect(coid, order.symbol, anyio.current_time())
        track = self._orders.get(coid)
        if track is not None:
            track.market = order.order_type == "market"
        self._poke()
        # From here an update about it is due (the stream may beat the answer).
        self._health.sending(coid)
        uncertain = False  # an earlier attempt may have reached the broker
        last: _Transient | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._pause(attempt)
            try:
                if uncertain and await self._lookup(coid, retry=False) is not None:
                    log.info("alpaca.submit_landed", client_order_id=coid, symbol=order.symbol)
                    break
                answer = await self._call("submit", self._client.submit_order, request)
                self._note_legs(answer)
                log.info("alpaca.submitted", client_order_id=coid, symbol=order.symbol)
                break
            except _Transient as exc:
                last = exc
                uncertain = uncertain or exc.status != 429  # a 429 was refused unread
                log.warning("alpaca.retry", request="submit", client_order_id=coid,
                            attempt=attempt + 1, error=str(exc))
            except BrokerRejected as exc:
                duplicate = exc.code == _DUPLICATE and "client_order_id" in exc.reason
                if uncertain and duplicate:
                    log.info("alpaca.submit_landed", client_order_id=coid, symbol=order.symbol)
                    break
                if created:
                    # Not ours to follow: a duplicate is an order from before a
                    # restart, which reconciliation has already adopted.
                    self._orders.forget(coid)
                log.info("alpaca.rejected", client_order_id=coid, symbol=order.symbol,
                         code=exc.code, reason=exc.reason)
                self._health.answered(coid, anyio.current_time(), landed=False)
                raise
        else:
            self._health.answered(coid, anyio.current_time(), landed=False)
            raise BrokerUnavailable(
                f"submit {coid}: {last} (gave up after {self._attempts} attempts)") from last
        self._orders.submitted(coid, order.symbol, anyio.current_time())
        self._health.answered(coid, anyio.current_time(), landed=True)
        self._poke()

    def _note_legs(self, answer: object) -> None:
        """Link a bracket's legs to it from the submit's answer. The order has
        landed: an answer we cannot read only loses the link (updates and polls
        of the entry carry it again), never the order."""
        if not (isinstance(answer, dict) and answer.get("legs")):
            return
        try:
            self._orders.note_legs(_convert(answer, _WireOrder, "submitted order"))
        except BrokerUnavailable as exc:
            log.warning("alpaca.legs_unreadable", error=str(exc))

    async def cancel(self, client_order_id: str) -> None:
        """Ask the broker to cancel; ``OrderCanceled`` arrives on ``updates``.

        Raises:
            BrokerRejected: unknown order (404) or not cancelable (422).
            BrokerUnavailable: still failing after the retries.
        """
        order = await self._lookup(client_order_id, "cancel")
        if order is None:
            raise BrokerRejected("order not found", code="40410000", status=404)
        self._health.sending(client_order_id)  # the cancel's update will be due
        landed = False
        try:
            await self._cancel(client_order_id, order)
            landed = True
        finally:
            self._health.answered(client_order_id, anyio.current_time(), landed=landed)

    async def _cancel(self, client_order_id: str, order: _WireOrder) -> None:
        tried = False
        last: _Transient | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._pause(attempt)
            try:
                await self._call("cancel", self._client.cancel_order_by_id, order.id,
                                 priority="cancel")
                log.info("alpaca.cancel_sent", client_order_id=client_order_id,
                         symbol=order.symbol)
                return
            except _Transient as exc:
                last, tried = exc, True
                log.warning("alpaca.retry", request="cancel", client_order_id=client_order_id,
                            attempt=attempt + 1, error=str(exc))
            except BrokerRejected as exc:
                if tried and exc.status == 422:  # perhaps our earlier try canceled it
                    now = await self._lookup(client_order_id, "cancel")
                    if now is not None and now.status in ("canceled", "pending_cancel"):
                        return
                raise
        raise BrokerUnavailable(f"cancel {client_order_id}: {last}") from last

    # --- the port: queries -----------------------------------------------------------------

    async def account(self) -> AccountState:
        """Cash, equity and buying power in cents.

        Raises:
            BrokerRejected, BrokerUnavailable: as for any request.
        """
        a = _convert(await self._request("account", self._client.get_account), _WireAccount,
                     "account")
        return AccountState(cash_cents=_cents(a.cash), equity_cents=_cents(a.equity),
                            buying_power_cents=_cents(a.buying_power))

    async def positions(self) -> list[PositionState]:
        raw = await self._request("positions", self._client.get_all_positions)
        return [
            PositionState(symbol=p.symbol, qty=p.qty, avg_price=p.avg_entry_price,
                          cost_cents=_cents(p.cost_basis))
            for p in _convert(raw, list[_WirePosition], "positions")
            if p.qty
        ]

    async def open_orders(self) -> list[OrderState]:
        orders = await self._open_orders()
        if orders:
            # Reconciliation after a restart: this process has not seen the
            # entries that the open bracket legs belong to, and Alpaca links a
            # leg only from its entry. Read the recent orders rolled up
            # (nested) to learn the links, or a leg would pass for an order
            # of our own (and a flatten would wait on it).
            request = GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True,
                                       limit=_OPEN_ORDERS_LIMIT)
            raw = await self._request("orders with legs", self._client.get_orders, request)
            for o in _convert(raw, list[_WireOrder], "orders with legs"):
                self._orders.note_legs(o)
        parents = self._orders.parents
        return [msgspec.structs.replace(_order_state(o), parent_client_order_id=parents.get(
            o.client_order_id, "")) for o in orders]

    async def order(self, client_order_id: str) -> OrderState | None:
        """The broker's view of one order; None if it does not know it."""
        o = await self._lookup(client_order_id)
        return None if o is None else _order_state(o)

    async def _open_orders(self) -> list[_WireOrder]:
        request = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=_OPEN_ORDERS_LIMIT)
        raw = await self._request("open orders", self._client.get_orders, request)
        orders = _convert(raw, list[_WireOrder], "open orders")
        if len(orders) >= _OPEN_ORDERS_LIMIT:
            log.warning("alpaca.open_orders_truncated", limit=_OPEN_ORDERS_LIMIT)
        return orders

    # --- the update stream -----------------------------------------------------------------

    async def stream(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow trade updates (and poll silent orders) onto ``updates`` until cancelled.

        ``task_status.started()`` once listening and the open orders are known.

        Raises:
            BrokerRejected: the stream refused our keys at the first connection.
            BrokerUnavailable: the first connection or the open-order read kept failing.
        """
        ws = await self._first_connection()
        try:
            async with anyio.create_task_group() as tg:
                self._orders.rebase(await self._open_orders(), anyio.current_time())
                self._orders.stream_up = True
                # A restarted execution actor's stream: the time nobody
                # listened is not the stream's silence.
                self._health.stream_restarted(anyio.current_time())
                tg.start_soon(self._poll_loop)
                if self._health.enabled:
                    tg.start_soon(self._health_loop)
                task_status.started()
                while True:
                    await self._follow(ws)
                    self._orders.stream_up = False
                    self._poke()
                    await _close(ws)
                    ws = await self._reconnect_forever()
                    self.reconnects += 1
                    self._orders.stream_up = True
                    self._health.stream_restarted(anyio.current_time())
                    self._orders.recover(anyio.current_time())
                    self._poke()
        finally:
            await _close(ws)

    async def _connect(self) -> ClientConnection:
        """Connect, authenticate and listen to ``trade_updates``.

        Raises:
            _StreamRefused: unauthorized.
            OSError, WebSocketException, msgspec.DecodeError: connection trouble.
        """
        creds = self._credentials
        with anyio.fail_after(self._config.request_timeout_s):
            ws = await connect(self._stream_url, proxy=None, open_timeout=None,
                               close_timeout=_CLOSE_S - 1)
            try:
                await ws.send(_json.encode({"action": "authenticate", "data": {
                    "key_id": creds.key_id, "secret_key": creds.secret_key}}).decode())
                reply = _envelopes.decode(await ws.recv())
                if reply.stream != "authorization":
                    raise WebSocketException(f"unexpected reply to authenticate: {reply.stream}")
                if _controls.decode(reply.data).status != "authorized":
                    raise _StreamRefused("trade stream refused the API keys")
                await ws.send(_json.encode(
                    {"action": "listen", "data": {"streams": ["trade_updates"]}}).decode())
                reply = _envelopes.decode(await ws.recv())
                if reply.stream != "listening" or "trade_updates" not in _controls.decode(
                        reply.data).streams:
                    raise WebSocketException(f"unexpected reply to listen: {reply.stream}")
            except BaseException:
                await _close(ws)
                raise
        log.info("alpaca.stream_listening")
        return ws

    async def _first_connection(self) -> ClientConnection:
        last: Exception | None = None
        for attempt in range(self._attempts):
            if attempt:
                await self._pause(attempt)
            try:
                return await self._connect()
            except _StreamRefused as exc:
                raise BrokerRejected(str(exc), status=401) from exc
            except (OSError, WebSocketException, msgspec.DecodeError) as exc:
                last = exc
                log.warning("alpaca.stream_connect_failed", attempt=attempt + 1, error=repr(exc))
        raise BrokerUnavailable(f"trade stream: {last!r}") from last

    async def _reconnect_forever(self) -> ClientConnection:
        initial, cap = self._reconnect
        delay = initial
        while True:
            await anyio.sleep(delay * self._rng.uniform(0.5, 1.0))
            try:
                return await self._connect()
            except (_StreamRefused, OSError, WebSocketException, msgspec.DecodeError) as exc:
                log.warning("alpaca.stream_reconnect_failed", error=repr(exc))
            delay = min(delay * 2, cap)

    async def _follow(self, ws: ClientConnection) -> None:
        """Handle frames until the connection ends."""
        try:
            async for frame in ws:
                await self._on_frame(frame)
        except ConnectionClosed as exc:
            log.warning("alpaca.stream_dropped", error=repr(exc))
        else:
            log.warning("alpaca.stream_closed")

    async def _on_frame(self, frame: str | bytes) -> None:
        try:
            envelope = _envelopes.decode(frame)
            if envelope.stream != "trade_updates":
                log.info("alpaca.stream_message", stream=envelope.stream)
                return
            update = _updates.decode(envelope.data)
        except msgspec.DecodeError as exc:
            # We may have missed a fill: read every live order instead.
            log.error("alpaca.bad_trade_update", error=str(exc))
            self._tell(self._health.heard(None))  # garbled, but the stream speaks
            self._orders.recover(anyio.current_time())
            self._poke()
            return
        self._tell(self._health.heard(update.order.client_order_id))
        async with self._emit_lock:
            await self._send(self._orders.on_update(update, anyio.current_time()))

    # --- polling ---------------------------------------------------------------------------

    def _poke(self) -> None:
        self._wake.set()

    async def _poll_loop(self) -> None:
        while True:
            wake = self._wake = anyio.Event()  # a poke from here on cuts the wait short
            for coid in self._orders.due(anyio.current_time()):
                await self._poll(coid)
            nxt = self._orders.next_due()
            delay = math.inf if nxt is None else max(nxt - anyio.current_time(), 0.0)
            with anyio.move_on_after(delay):
                await wake.wait()

    async def _poll(self, coid: str) -> None:
        if not self._orders.is_live(coid):  # finished while earlier polls ran
            return
        try:
            order = await self._lookup(coid, retry=False)
        except (_Transient, BrokerError) as exc:
            log.warning("alpaca.poll_failed", client_order_id=coid, error=str(exc))
            self._orders.quiet(coid, anyio.current_time())
            return
        now = anyio.current_time()
        if order is None:
            self._orders.missing(coid, now)
            return
        async with self._emit_lock:
            await self._send(self._orders.on_state(order, now))

    # --- health ------------------------------------------------------------------------

    def _tell(self, change: HealthChange | None) -> None:
        """Queue a health change for the health loop to send (callable from anywhere,
        even a request being cancelled: sending may wait for room)."""
        if change is not None:
            self._health_out.append(change)
            self._health_wake.set()

    async def _health_loop(self) -> None:
        """Run the time-driven checks and send what changed, until cancelled."""
        health = self._health
        tick = health.tick_s
        interval = self._config.clock_check_interval_s
        next_clock = anyio.current_time()  # the first reading at start-up
        while True:
            wake = self._health_wake = anyio.Event()  # a _tell from here on cuts the wait
            now = anyio.current_time()
            if health.clock_enabled and now >= next_clock:
                next_clock = now + interval
                await self._check_clock()
            now = anyio.current_time()
            self._tell(health.check_silence(now, stream_up=self._orders.stream_up))
            self._tell(health.check_errors(now))
            out, self._health_out = self._health_out, []
            for change in out:
                (log.info if change.healthy else log.warning)(
                    "alpaca.health_changed", check=change.check, healthy=change.healthy,
                    reason=change.reason)
                await self.updates.send(BrokerHealthChanged(
                    ts_ns=self._now_ns(), check=change.check, healthy=change.healthy,
                    reason=change.reason, measured=change.measured))
            if self._health_out:
                continue
            with anyio.move_on_after(tick):
                await wake.wait()

    async def _check_clock(self) -> None:
        """Read the broker's clock; the skew is its time minus ours at the round
        trip's midpoint (so half the round trip is allowed for)."""
        before = self._now_ns()
        try:
            raw = await self._call("clock", self._client.get_clock)
            stamp = _ts(_convert(raw, _WireClock, "clock").timestamp)
        except (_Transient, BrokerError) as exc:
            # The failure is counted by the error-rate check; the clock is
            # read again at the next interval.
            log.warning("alpaca.clock_check_failed", error=str(exc))
            return
        after = self._now_ns()
        if stamp is None:
            log.warning("alpaca.clock_check_failed", error="unreadable timestamp")
            return
        self._tell(self._health.clock(stamp - (before + after) // 2))

    async def sync(self, symbols: Collection[str]) -> None:
        """Poll our open *market* orders in ``symbols`` now (see the Broker port).

        Resting limit and stop orders are not polled here: nothing says they
        traded, and polling every one of them on every bar would spend the
        200 requests a minute; their fills come on the stream (or the regular
        polling) and risk's order_pending rule covers the gap.

        The polls run concurrently (at most ``max_concurrent_submits`` at
        once): the bar waits for one round trip, not one per order. Each
        order's events still go out whole and one order at a time.
        """
        live = [t.coid for t in self._orders.live() if t.market and t.symbol in symbols]
        if len(live) <= 1:
            for coid in live:
                await self._poll(coid)
            return
        slots = anyio.CapacityLimiter(self._config.max_concurrent_submits)

        async def poll(coid: str) -> None:
            async with slots:
                await self._poll(coid)

        async with anyio.create_task_group() as tg:
            for coid in live:
                tg.start_soon(poll, coid)

    async def _send(self, messages: Sequence[OrderEvent]) -> None:
        for msg in messages:
            log.info("alpaca.order_event", type=type(msg).__name__,
                     client_order_id=msg.client_order_id, symbol=msg.symbol)
            await self.updates.send(msg)


def _cents(text: str) -> int:
    return to_cents(float(text))


async def _close(ws: ClientConnection) -> None:
    """Close within a deadline, even while being cancelled."""
    with anyio.move_on_after(_CLOSE_S, shield=True):
        await ws.close()
