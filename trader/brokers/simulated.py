"""The simulated exchange: orders, fills and a ledger, driven by bars.

:class:`Exchange` is synchronous and deterministic. Replay drives it through
:class:`SimulatedBroker` (the :class:`~trader.brokers.base.Broker` port), and
``trader sandbox`` drives the *same* class behind Alpaca's REST and websocket
protocols, so fills in replay and in the sandbox are the same code.

Order ids and execution ids are UUIDs derived from counters (uuid5), so a
replay produces the same ids run after run.

What it is not: a matching engine with an order book. Orders trade against
bars by the rules in :mod:`trader.brokers.fills`.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Collection, KeysView, Mapping, Sequence
from typing import Any, Literal

import anyio
import msgspec
from anyio.abc import TaskStatus

from trader import calendar
from trader.brokers import brackets
from trader.brokers.base import AccountState, OrderState, PositionState
from trader.brokers.fills import (
    commission_cents,
    match,
    notional_shares,
    participation_cap,
    tick,
)
from trader.brokers.ledger import Ledger
from trader.channels import Channel
from trader.clock import Clock
from trader.config import BrokerConfig
from trader.errors import BrokerRejected
from trader.messages import (
    BarClosed,
    ClientOrderId,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderType,
    Side,
    SubmitOrder,
    SymbolDelisted,
    TimeInForce,
)
from trader.money import to_cents, value_cents

_NS = uuid.UUID("6f1c2a4e-8d3b-4f5a-9e7c-1b2d3e4f5a6b")
_NS_BYTES = _NS.bytes


def uuid5_str(name: str) -> str:
    """``str(uuid.uuid5(_NS, name))``, without building a ``UUID`` object.

    Two ids per order; ``uuid.UUID`` validation and formatting cost several
    times the SHA-1 itself.
    """
    h = hashlib.sha1(_NS_BYTES + name.encode()).hexdigest()
    # RFC 4122: version 5 in the high nibble of byte 6, variant 10xx in byte 8.
    variant = "89ab"[int(h[16], 16) & 0x3]
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}"

OrderStatus = Literal[
    "new", "partially_filled", "filled", "canceled", "expired", "rejected", "replaced",
    "held",  # a bracket's leg until its entry fills (trader/brokers/brackets.py)
]
ReportEvent = Literal["new", "partial_fill", "fill", "canceled", "expired", "rejected"]


class SimOrder(msgspec.Struct, kw_only=True):
    """An order as the exchange holds it (mutable; copied into reports)."""

    id: str
    client_order_id: str
    symbol: str
    side: Side
    qty: float | None
    notional_cents: int | None
    order_type: OrderType
    limit_price: float | None
    stop_price: float | None
    time_in_force: TimeInForce
    status: OrderStatus = "new"
    filled_qty: float = 0.0
    filled_value_cents: int = 0
    created_ns: int = 0
    updated_ns: int = 0
    filled_ns: int | None = None
    canceled_ns: int | None = None
    expired_ns: int | None = None
    expires_ns: int | None = None
    triggered: bool = False
    fills: int = 0
    reason: str = ""
    # Brackets (trader/brokers/brackets.py): an entry's levels and its legs' ids;
    # a leg's entry.
    order_class: Literal["simple", "bracket", "oto"] = "simple"
    take_profit_price: float | None = None
    stop_loss_price: float | None = None
    legs: list[str] = msgspec.field(default_factory=list)
    parent_client_order_id: str = ""

    @property
    def filled_avg_price(self) -> float | None:
        if not self.filled_qty:
            return None
        return round(self.filled_value_cents / 100 / self.filled_qty, 6)

    @property
    def is_open(self) -> bool:
        return self.status in ("new", "partially_filled")


class ExecReport(msgspec.Struct, frozen=True, kw_only=True):
    """One trade update, as Alpaca's trade-updates stream would carry it."""

    event: ReportEvent
    order: SimOrder
    ts_ns: int
    price: float | None = None
    qty: float | None = None
    position_qty: float | None = None
    execution_id: str | None = None
    commission_cents: int = 0


class Delisting(msgspec.Struct, frozen=True, kw_only=True):
    """What delisting one symbol did (:meth:`Exchange.delist`).

    ``qty`` is the position closed (0: none was held), at ``price``;
    ``realized_cents`` is what that close realized.
    """

    symbol: str
    ts_ns: int
    canceled: list[ExecReport]
    qty: float
    price: float
    realized_cents: int


class Exchange:
    """Accounts for one simulated account: orders in, fills out, exact ledger.

    Args:
        config: fill, commission and cash rules.
        session_close_after: maps a submission time to the close of the session
            a day order lives in (the market calendar by default).
    """

    def __init__(
        self,
        config: BrokerConfig,
        *,
        session_close_after: Callable[[int], int] | None = None,
    ) -> None:
        self.config = config
        self.ledger = Ledger(to_cents(config.cash_usd))
        self.orders: dict[str, SimOrder] = {}
        self._by_client_id: dict[str, SimOrder] = {}
        self._open: dict[str, SimOrder] = {}
        # The same open orders by symbol (each in submission order): a bar
        # looks only at its own symbol's, not at every open order.
        self._open_of: dict[str, dict[str, SimOrder]] = {}
        self._order_seq = 0
        self._session_close_after = session_close_after or calendar.next_close_ns
        self.delisted: dict[str, int] = {}  # symbol -> when

    # --- queries ---------------------------------------------------------------

    def open_orders(self) -> list[SimOrder]:
        return list(self._open.values())

    def has_open_orders(self) -> bool:
        return bool(self._open)

    def symbols_with_open_orders(self) -> KeysView[str]:
        """The symbols with an open order: a live view, it follows every order."""
        return self._open_of.keys()

    def order_by_client_id(self, client_order_id: str) -> SimOrder | None:
        return self._by_client_id.get(client_order_id)

    def buying_power_cents(self) -> int:
        """Cash less what open buy orders may still spend (a cash account: no margin)."""
        reserved = 0
        for o in self._open.values():
            if o.side == "buy":
                reserved += self._estimate_cents(o)
        return max(self.ledger.cash_cents - reserved, 0)

    def _estimate_cents(self, o: SimOrder) -> int:
        if o.qty is None:
            return (o.notional_cents or 0) - o.filled_value_cents
        ref = o.limit_price or o.stop_price or self.ledger.last_price.get(o.symbol, 0.0)
        return value_cents(o.qty - o.filled_qty, ref)

    # --- commands ----------------------------------------------------------------

    def submit(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: Side,
        qty: float | None,
        notional_cents: int | None,
        order_type: OrderType,
        limit_price: float | None,
        stop_price: float | None,
        time_in_force: TimeInForce,
        now_ns: int,
        take_profit_price: float | None = None,
        stop_loss_price: float | None = None,
    ) -> ExecReport:
        """Accept an order or refuse it.

        With ``take_profit_price`` and/or ``stop_loss_price`` it is a bracket
        (``oto`` with one of them) whose legs close it once it fills
        (:mod:`trader.brokers.brackets`).

        Raises:
            BrokerRejected: duplicate client order id (422), bad parameters (422),
                insufficient buying power (403), or more shares than bracket legs
                leave available (403); nothing is booked.
        """
        if client_order_id in self._by_client_id:
            raise BrokerRejected("client_order_id must be unique", code="40010001", status=422)
        if symbol in self.delisted:
            raise BrokerRejected(f"asset {symbol} is not active (delisted)", code="42210000",
                                 status=422)
        if (qty is None) == (notional_cents is None):
            raise BrokerRejected("qty or notional is required", code="40010001", status=422)
        if qty is not None and qty <= 0:
            raise BrokerRejected("qty must be > 0", code="40010001", status=422)
        if notional_cents is not None and notional_cents <= 0:
            raise BrokerRejected("notional must be > 0", code="40010001", status=422)
        if order_type in ("limit", "stop_limit") and (limit_price is None or limit_price <= 0):
            raise BrokerRejected("limit_price is required", code="40010001", status=422)
        if order_type in ("stop", "stop_limit") and (stop_price is None or stop_price <= 0):
            raise BrokerRejected("stop_price is required", code="40010001", status=422)
        if notional_cents is not None and (order_type != "market" or time_in_force != "day"):
            raise BrokerRejected(
                "notional orders must be day market orders", code="40010001", status=422
            )
        bracket = take_profit_price is not None or stop_loss_price is not None
        if bracket:
            take_profit_price, stop_loss_price = brackets.validate(
                self, symbol=symbol, side=side, qty=qty, take_profit_price=take_profit_price,
                stop_loss_price=stop_loss_price)
        free = brackets.available(self, symbol, side) if qty is not None else None
        if free is not None and qty is not None and qty > free + 1e-9:
            raise BrokerRejected(f"insufficient qty available for order (requested {qty:g}, "
                                 f"available {free:g}: the rest is held by bracket legs)",
                                 code="40310000", status=403)
        order = SimOrder(
            id=self._next_id(),
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            qty=qty,
            notional_cents=notional_cents,
            order_type=order_type,
            limit_price=limit_price,
            stop_price=stop_price,
            time_in_force=time_in_force,
            created_ns=now_ns,
            updated_ns=now_ns,
            expires_ns=self._session_close_after(now_ns) if time_in_force == "day" else None,
        )
        if bracket:
            order.order_class = (
                "bracket" if take_profit_price is not None and stop_loss_price is not None
                else "oto")
            order.take_profit_price, order.stop_loss_price = take_profit_price, stop_loss_price
        if side == "buy":
            need = self._estimate_cents(order)
            if need > self.buying_power_cents():
                raise BrokerRejected("insufficient buying power", code="40310000", status=403)
        self.orders[order.id] = order
        self._by_client_id[client_order_id] = order
        self._add_open(order)
        if bracket:
            for leg in brackets.held_legs(order, self._next_id):
                order.legs.append(leg.id)
                self.orders[leg.id] = leg
                self._by_client_id[leg.client_order_id] = leg
        return self._report("new", order, now_ns)

    def _add_open(self, order: SimOrder) -> None:
        self._open[order.id] = order
        self._open_of.setdefault(order.symbol, {})[order.id] = order

    def _drop_open(self, order: SimOrder) -> None:
        if self._open.pop(order.id, None) is not None:
            mine = self._open_of[order.symbol]
            del mine[order.id]
            if not mine:
                del self._open_of[order.symbol]

    def _next_id(self) -> str:
        self._order_seq += 1
        return uuid5_str(f"order:{self._order_seq}")

    def activate(self, leg: SimOrder) -> ExecReport:
        """A bracket's held leg starts working (its ``new`` event)."""
        self._add_open(leg)
        return self._report("new", leg, leg.created_ns)

    def cancel(self, order_id: str, now_ns: int, reason: str = "") -> ExecReport:
        """Cancel an open order.

        Raises:
            BrokerRejected: unknown order (404) or not cancelable any more (422).
        """
        order = self.orders.get(order_id)
        if order is None:
            raise BrokerRejected("order not found", code="40410000", status=404)
        if not order.is_open:
            raise BrokerRejected(
                f"order is not cancelable (status {order.status})", code="42210000", status=422
            )
        return self._close(order, "canceled", now_ns, reason)

    # --- the market --------------------------------------------------------------

    def on_bar(self, bar: BarClosed) -> list[ExecReport]:
        """Trade the open orders of ``bar.symbol`` against it, then mark to its close."""
        reports: list[ExecReport] = []
        mine = self._open_of.get(bar.symbol)
        if mine:
            for order in list(mine.values()):
                if not order.is_open:
                    continue  # closed by an earlier order of this bar (a bracket's other leg)
                if order.created_ns >= bar.ts_ns:
                    continue  # never fill on the bar that was current at submission
                if order.expires_ns is not None and bar.ts_ns > order.expires_ns:
                    reports.append(self._close(order, "expired", order.expires_ns))
                    continue
                report = self._try_fill(order, bar)
                if report is not None:
                    reports.extend(report)
        self.ledger.mark(bar.symbol, bar.close)
        return reports

    def delist(self, symbol: str, ts_ns: int) -> Delisting | None:
        """Take ``symbol`` off the exchange at ``ts_ns``: cancel its open orders and close
        its position at its last price, with no commission and no slippage.

        No commission, because no trade happens: the position is settled at
        the last price the market printed, as a cash-out would be (the real
        outcome of a delisting — OTC trading, a merger's terms — is not in
        the data). Later orders for the symbol are rejected.

        Returns:
            What was done; None if the symbol was already delisted (so a
            restarted replay feed cannot close a position twice).
        """
        if symbol in self.delisted:
            return None
        self.delisted[symbol] = ts_ns
        canceled = [self._close(o, "canceled", ts_ns, "delisted")
                    for o in list(self._open_of.get(symbol, {}).values())]
        ledger = self.ledger
        pos = ledger.positions.get(symbol)
        qty = pos.qty if pos is not None else 0.0
        price = tick(ledger.last_price[symbol]) if symbol in ledger.last_price else 0.0
        realized = 0
        if pos is not None and qty:
            before = pos.realized_cents
            ledger.apply_fill(symbol, "sell" if qty > 0 else "buy", abs(qty), price, 0)
            realized = pos.realized_cents - before
        return Delisting(symbol=symbol, ts_ns=ts_ns, canceled=canceled, qty=qty, price=price,
                         realized_cents=realized)

    def expire_until(self, now_ns: int) -> list[ExecReport]:
        """Expire day orders whose session closed at or before ``now_ns``."""
        return [
            self._close(o, "expired", o.expires_ns)
            for o in list(self._open.values())
            if o.expires_ns is not None and o.expires_ns <= now_ns
        ]

    def _try_fill(self, order: SimOrder, bar: BarClosed) -> list[ExecReport] | None:
        raw, order.triggered = match(
            side=order.side,
            order_type=order.order_type,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            triggered=order.triggered,
            bar=bar,
            slippage_bps=self.config.slippage_bps,
        )
        if raw is None:
            return None
        price = tick(raw)
        if order.qty is None:
            # A notional order becomes a share quantity at its first fill.
            assert order.notional_cents is not None
            order.qty = notional_shares(self.config, order.notional_cents, price)
            if order.qty <= 0:
                return [self._close(order, "canceled", bar.ts_ns, "notional buys no shares")]
        qty = participation_cap(self.config, order.qty - order.filled_qty, bar.volume)
        if order.side == "buy":
            # A gap up after submission may make the order unaffordable: fill
            # what cash pays for, never let cash go negative.
            qty = min(qty, notional_shares(self.config, self.ledger.cash_cents, price))
            if qty <= 0 < participation_cap(self.config, 1.0, bar.volume):
                return [self._close(order, "canceled", bar.ts_ns, "insufficient buying power")]
        if qty <= 0:
            return None  # participation cap left nothing this bar
        commission = commission_cents(self.config, qty, price)
        pos = self.ledger.apply_fill(order.symbol, order.side, qty, price, commission)
        order.filled_qty = round(order.filled_qty + qty, 9)
        order.filled_value_cents += value_cents(qty, price)
        order.fills += 1
        order.updated_ns = bar.ts_ns
        assert order.qty is not None
        done = order.filled_qty >= order.qty - 1e-12
        execution_id = uuid5_str(f"exec:{order.id}:{order.fills}")
        if done:
            order.status = "filled"
            order.filled_ns = bar.ts_ns
            self._drop_open(order)
        else:
            order.status = "partially_filled"
        return [
            ExecReport(
                event="fill" if done else "partial_fill",
                order=_copy(order),
                ts_ns=bar.ts_ns,
                price=price,
                qty=qty,
                position_qty=pos.qty,
                execution_id=execution_id,
                commission_cents=commission,
            ),
            *brackets.after_fill(self, order, qty, bar.ts_ns),
        ]

    def _close(
        self, order: SimOrder, status: Literal["canceled", "expired"], ts_ns: int, reason: str = ""
    ) -> ExecReport:
        order.status = status
        order.updated_ns = ts_ns
        order.reason = reason
        if status == "canceled":
            order.canceled_ns = ts_ns
        else:
            order.expired_ns = ts_ns
        self._drop_open(order)
        if order.legs:
            brackets.drop_held(self, order)
        return self._report(status, order, ts_ns)

    @staticmethod
    def _report(event: ReportEvent, order: SimOrder, ts_ns: int) -> ExecReport:
        return ExecReport(event=event, order=_copy(order), ts_ns=ts_ns)


def _copy(order: SimOrder) -> SimOrder:
    # Reports must not change when the exchange later mutates the order.
    return msgspec.structs.replace(order)


def report_to_message(report: ExecReport) -> Message:
    """Translate an exchange report into the graph's order event message."""
    o = report.order
    coid = ClientOrderId(o.client_order_id)
    common: dict[str, Any] = {"ts_ns": report.ts_ns, "client_order_id": coid, "symbol": o.symbol}
    if report.event == "new":
        return OrderAccepted(
            **common,
            broker_order_id=o.id,
            side=o.side,
            qty=o.qty,
            notional_cents=o.notional_cents,
            order_type=o.order_type,
            limit_price=o.limit_price,
            stop_price=o.stop_price,
            time_in_force=o.time_in_force,
            parent_client_order_id=o.parent_client_order_id,
        )
    if report.event in ("fill", "partial_fill"):
        assert report.qty is not None
        assert report.price is not None
        assert report.execution_id is not None
        return OrderFilled(
            **common,
            broker_order_id=o.id,
            execution_id=report.execution_id,
            side=o.side,
            qty=report.qty,
            price=report.price,
            commission_cents=report.commission_cents,
            cum_qty=o.filled_qty,
            avg_price=o.filled_avg_price or 0.0,
            status="filled" if report.event == "fill" else "partially_filled",
        )
    if report.event == "canceled":
        return OrderCanceled(
            **common, broker_order_id=o.id, filled_qty=o.filled_qty, reason=o.reason
        )
    if report.event == "expired":
        return OrderExpired(**common, broker_order_id=o.id, filled_qty=o.filled_qty)
    return OrderRejected(**common, broker_order_id=o.id, reason=o.reason or "rejected")


class SimulatedBroker:
    """The broker port over an :class:`Exchange`, for replay.

    The replay feed calls :meth:`on_bars` before the strategy sees those bars,
    exactly as a live market trades before the bar closes; the fills land on
    ``updates`` (a tracked channel, so quiescence waits for them).
    """

    durable_updates = False  # in-process: it cannot outlive a crash of ours

    def __init__(self, exchange: Exchange, updates: Channel[Message], clock: Clock) -> None:
        self.exchange = exchange
        self.updates = updates
        self._clock = clock

    async def stream(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # In-process: updates are on the channel the moment they happen.
        task_status.started()
        await anyio.sleep_forever()

    async def sync(self, symbols: Collection[str]) -> None:
        # In-process: every event is on the channel the moment it happens.
        return None

    async def submit(self, order: SubmitOrder) -> None:
        report = self.exchange.submit(
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            notional_cents=order.notional_cents,
            order_type=order.order_type,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            time_in_force=order.time_in_force,
            # The command's own time (the signal's bar close), not the replay
            # clock, which may still stand at the start of the batch.
            now_ns=order.ts_ns,
            take_profit_price=order.take_profit_price,
            stop_loss_price=order.stop_loss_price,
        )
        await self.updates.send(report_to_message(report))

    async def cancel(self, client_order_id: str) -> None:
        order = self.exchange.order_by_client_id(client_order_id)
        if order is None:
            raise BrokerRejected("order not found", code="40410000", status=404)
        report = self.exchange.cancel(order.id, self._clock.now_ns())
        await self.updates.send(report_to_message(report))

    async def on_bars(self, bars: Sequence[BarClosed]) -> int:
        """Let the market trade ``bars``; returns how many order events it produced."""
        exchange = self.exchange
        if not exchange.has_open_orders():
            self.mark(bars)
            return 0
        n = 0
        # Live views: a fill may close a symbol's last order or open a leg.
        trading = exchange.symbols_with_open_orders()
        mark = exchange.ledger.mark
        for bar in bars:
            if bar.symbol not in trading:
                mark(bar.symbol, bar.close)
                continue
            for report in exchange.on_bar(bar):
                await self.updates.send(report_to_message(report))
                n += 1
        return n

    async def delist(self, ts_ns: int, last_bars: Mapping[str, int]) -> int:
        """Delist the symbols of ``last_bars`` (symbol -> its last bar's close) at ``ts_ns``
        (:meth:`Exchange.delist`): the cancels, then one ``SymbolDelisted`` each, go out
        on ``updates``. Returns how many messages."""
        n = 0
        for symbol, last_bar_ns in last_bars.items():
            done = self.exchange.delist(symbol, ts_ns)
            if done is None:
                continue
            for report in done.canceled:
                await self.updates.send(report_to_message(report))
            await self.updates.send(SymbolDelisted(
                ts_ns=ts_ns, symbol=symbol, qty=done.qty, price=done.price,
                realized_pnl_cents=done.realized_cents, last_bar_ns=last_bar_ns,
            ))
            n += len(done.canceled) + 1
        return n

    def mark(self, bars: Sequence[BarClosed]) -> None:
        """Mark positions to ``bars`` without trading them (they closed before any
        order now open was placed)."""
        self.exchange.ledger.mark_bars(bars)

    async def account(self) -> AccountState:
        led = self.exchange.ledger
        return AccountState(
            cash_cents=led.cash_cents,
            equity_cents=led.equity_cents(),
            buying_power_cents=self.exchange.buying_power_cents(),
        )

    async def positions(self) -> list[PositionState]:
        return [
            PositionState(symbol=s, qty=p.qty, avg_price=p.avg_price, cost_cents=p.cost_cents)
            for s, p in sorted(self.exchange.ledger.positions.items())
            if p.qty
        ]

    async def open_orders(self) -> list[OrderState]:
        return [_order_state(o) for o in self.exchange.open_orders()]

    async def order(self, client_order_id: str) -> OrderState | None:
        o = self.exchange.order_by_client_id(client_order_id)
        return None if o is None else _order_state(o)


def _order_state(o: SimOrder) -> OrderState:
    return OrderState(
        broker_order_id=o.id,
        client_order_id=o.client_order_id,
        symbol=o.symbol,
        side=o.side,
        status=o.status,
        qty=o.qty,
        filled_qty=o.filled_qty,
        filled_avg_price=o.filled_avg_price,
        parent_client_order_id=o.parent_client_order_id,
    )
