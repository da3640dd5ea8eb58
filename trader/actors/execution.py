"""The execution actor: the only actor that talks to the broker.

Every start is a recovery: before it reports ready it reads the broker's
account, positions and open orders and sends them downstream as facts
(``AccountUpdated``, ``PositionChanged``, ``ReconciliationDone``), so risk and
the strategy rebuild from the broker's truth, not from memory.

Commands in (``SubmitOrder``, ``CancelOrder``); order events out, from the
broker's update stream. Fills and terminal order events are journaled
*durably* (committed to SQLite) before they are passed on when the broker
outlives us (``Broker.durable_updates``), so nothing the broker acknowledged
can be lost by a crash after we acted on it.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskStatus

from trader.actors.base import Outbox, consume
from trader.brokers.base import Broker, OrderState
from trader.channels import Channel
from trader.errors import BrokerRejected
from trader.journal import KnownOrder
from trader.latency import TickToOrder
from trader.messages import (
    AccountUpdated,
    CancelOrder,
    ClientOrderId,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionChanged,
    ReconciliationDone,
    SubmitOrder,
)
from trader.money import round_price
from trader.orders import TERMINAL, OrderPhase, TrackedOrder, can_move

log = structlog.get_logger("trader.execution")

_DUPLICATE = "40010001"


class ExecutionActor:
    """Sends orders, follows their lifecycle, reconciles on every start."""

    name = "execution"

    def __init__(
        self,
        inbox: Channel[Message],
        outbox: Outbox,
        *,
        broker: Broker,
        now_ns: Callable[[], int],
        known_orders: Callable[[], list[KnownOrder]] | None = None,
        tick_to_order: TickToOrder | None = None,
    ) -> None:
        self._tick_to_order = tick_to_order
        self._inbox = inbox
        self._out = outbox
        self._broker = broker
        self._now_ns = now_ns
        self._known_orders = known_orders
        self._orders: dict[str, TrackedOrder] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        broker = self._broker
        async with anyio.create_task_group() as tg:
            # Listen first: an order sent before the update stream is up
            # could fill unseen.
            await tg.start(broker.stream)
            await self._reconcile()
            tg.start_soon(consume, broker.updates, self._on_update, self.name)
            task_status.started()
            await consume(self._inbox, self._on_command, self.name)
            tg.cancel_scope.cancel()

    async def _reconcile(self) -> None:
        broker = self._broker
        now = self._now_ns()
        account = await broker.account()
        positions = await broker.positions()
        open_orders = await broker.open_orders()
        await self._out.emit(
            AccountUpdated(
                ts_ns=now,
                cash_cents=account.cash_cents,
                equity_cents=account.equity_cents,
                buying_power_cents=account.buying_power_cents,
                gross_exposure_cents=0,
                realized_pnl_cents=0,
                unrealized_pnl_cents=0,
            )
        )
        for p in positions:
            await self._out.emit(
                PositionChanged(
                    ts_ns=now, symbol=p.symbol, qty=p.qty, avg_price=p.avg_price,
                    realized_pnl_cents=0,
                )
            )
        differences = 0
        # Orders the journal last saw open: adopt what the broker says
        # happened to them while we were away, fills first.
        known = self._known_orders() if self._known_orders is not None else []
        for k in known:
            state = await broker.order(k.client_order_id)
            differences += await self._adopt(k, state, now)
        for o in open_orders:
            tracked = self._orders.get(o.client_order_id)
            if tracked is None:
                self._orders[o.client_order_id] = TrackedOrder(
                    client_order_id=o.client_order_id,
                    symbol=o.symbol,
                    phase="partially_filled" if o.filled_qty else "new",
                    broker_order_id=o.broker_order_id,
                    filled_qty=o.filled_qty,
                )
            # Risk rebuilds its open-order book from these.
            await self._out.emit(OrderAccepted(
                ts_ns=now, client_order_id=ClientOrderId(o.client_order_id), symbol=o.symbol,
                broker_order_id=o.broker_order_id, side="buy" if o.side == "buy" else "sell",
                qty=o.qty,
            ))
        if differences:
            log.warning("reconciliation adopted the broker's state", differences=differences)
        await self._out.emit(ReconciliationDone(ts_ns=now, differences=differences))

    async def _adopt(self, known: KnownOrder, state: OrderState | None, now: int) -> int:
        coid = ClientOrderId(known.client_order_id)
        if state is None:
            # Journaled but never acknowledged by the broker: it does not exist.
            await self._out.emit(OrderCanceled(
                ts_ns=now, client_order_id=coid, symbol=known.symbol,
                reason="never reached the broker (found at start-up)",
            ), durable=True)
            return 1
        changed = 0
        delta = round(state.filled_qty - known.filled_qty, 9)
        if delta > 0:
            value_now = state.filled_qty * (state.filled_avg_price or 0.0)
            value_then = known.filled_qty * (known.avg_price or 0.0)
            price = round_price((value_now - value_then) / delta)
            await self._out.emit(OrderFilled(
                ts_ns=now, client_order_id=coid, symbol=known.symbol,
                broker_order_id=state.broker_order_id,
                # Deterministic: a second restart finds the same id and the
                # recorder ignores the duplicate.
                execution_id=f"reconcile:{state.broker_order_id}:{state.filled_qty:g}",
                side="buy" if known.side == "buy" else "sell",
                qty=delta, price=price, commission_cents=0,
                cum_qty=state.filled_qty, avg_price=state.filled_avg_price or price,
                status="filled" if state.status == "filled" else "partially_filled",
            ), durable=True)
            changed += 1
        terminal = {"canceled": OrderCanceled, "expired": OrderExpired,
                    "rejected": OrderRejected}.get(state.status)
        if terminal is OrderCanceled or terminal is OrderExpired:
            await self._out.emit(terminal(
                ts_ns=now, client_order_id=coid, symbol=known.symbol,
                broker_order_id=state.broker_order_id, filled_qty=state.filled_qty,
            ), durable=True)
            changed += 1
        elif terminal is OrderRejected:
            await self._out.emit(OrderRejected(
                ts_ns=now, client_order_id=coid, symbol=known.symbol,
                broker_order_id=state.broker_order_id, reason="rejected while we were down",
            ), durable=True)
            changed += 1
        return changed

    async def _on_command(self, msg: Message) -> None:
        if isinstance(msg, SubmitOrder):
            await self._submit(msg)
        elif isinstance(msg, CancelOrder):
            try:
                await self._broker.cancel(msg.client_order_id)
            except BrokerRejected as exc:
                log.warning("cancel refused", client_order_id=msg.client_order_id,
                            reason=exc.reason)

    async def _submit(self, cmd: SubmitOrder) -> None:
        coid = cmd.client_order_id
        known = self._orders.get(coid)
        if known is not None:
            log.info("order already sent; not sending again", client_order_id=coid,
                     symbol=cmd.symbol, phase=known.phase)
            return
        self._orders[coid] = TrackedOrder(
            client_order_id=coid, symbol=cmd.symbol, submitted_ns=cmd.ts_ns
        )
        if self._broker.durable_updates:
            # Journal first: risk journaled this command before sending it
            # here; make that durable before the broker can act on it, so a
            # crash can never leave an order at the broker we have no record of.
            await self._out.barrier()
        if self._tick_to_order is not None:
            # The order leaves our hands here: the end of tick-to-order.
            self._tick_to_order.submitting(cmd.symbol, cmd.ts_ns)
        try:
            await self._broker.submit(cmd)
        except BrokerRejected as exc:
            if exc.code == _DUPLICATE and "client_order_id" in exc.reason:
                # A resend after a crash: the broker has it. Adopt, never resend.
                state = await self._broker.order(coid)
                log.info("broker already has this order; adopted", client_order_id=coid,
                         symbol=cmd.symbol, status=state.status if state else None)
                return
            self._orders[coid].phase = "rejected"
            await self._out.emit(
                OrderRejected(
                    ts_ns=cmd.ts_ns,
                    client_order_id=coid,
                    symbol=cmd.symbol,
                    reason=exc.reason,
                    code=exc.code,
                ),
                durable=self._broker.durable_updates,
            )

    async def _on_update(self, msg: Message) -> None:
        if not isinstance(msg, OrderEvent):
            await self._out.emit(msg)
            return
        tracked = self._orders.get(msg.client_order_id)
        if tracked is None:
            # An order we did not send in this incarnation (placed by hand, or
            # before a restart): follow it anyway, the broker is the truth.
            tracked = self._orders[msg.client_order_id] = TrackedOrder(
                client_order_id=msg.client_order_id, symbol=msg.symbol
            )
        new_phase = _phase_of(msg)
        if tracked.phase in TERMINAL or not can_move(tracked.phase, new_phase):
            if not (isinstance(msg, OrderAccepted) and tracked.phase != "pending_new"):
                log.warning("ignored out-of-order update", client_order_id=msg.client_order_id,
                            symbol=msg.symbol, phase=tracked.phase, update=new_phase)
            return
        if isinstance(msg, OrderFilled) and msg.cum_qty <= tracked.filled_qty + 1e-9:
            # Already booked (by reconciliation or polling): one execution, once.
            log.info("duplicate fill ignored", client_order_id=msg.client_order_id,
                     symbol=msg.symbol, execution_id=msg.execution_id)
            return
        tracked.phase = new_phase
        tracked.broker_order_id = msg.broker_order_id or tracked.broker_order_id
        if isinstance(msg, OrderFilled):
            tracked.filled_qty = msg.cum_qty
        durable = self._broker.durable_updates and (
            isinstance(msg, OrderFilled) or new_phase in TERMINAL
        )
        await self._out.emit(msg, durable=durable)
        if new_phase in TERMINAL:
            # Keep only what is live: a finished order cannot change again,
            # and the journal has it.
            del self._orders[msg.client_order_id]


def _phase_of(msg: OrderEvent) -> OrderPhase:
    match msg:
        case OrderAccepted():
            return "new"
        case OrderFilled():
            return msg.status
        case OrderCanceled():
            return "canceled"
        case OrderRejected():
            return "rejected"
        case OrderExpired():
            return "expired"
        case _:
            return "replaced"
