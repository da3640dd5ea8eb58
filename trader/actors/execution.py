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

Sending, live (a task per actor)::

    take up to max_in_flight commands ─▶ one journal barrier ─▶ a task per command:
      (what is free of the inbox)          (every order taken     wait for the previous
                                            is on disk)           command of its symbol
                                                                  (a cancel: for its
                                                                  order's submit), send

So orders of different symbols are at the broker concurrently, each still
journaled before the broker can know it, and sent once: the client order id
is registered before its task starts, and a repeat is dropped. At most
``max_in_flight`` commands are taken from the inbox and not yet finished
(the rest wait there: backpressure on risk). Under inline delivery (replay)
commands are handled one after another, in order: a backtest must not
depend on task scheduling.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from trader.actors.base import Outbox, consume, put_back_after_cancel, put_back_after_crash
from trader.brokers.base import AccountState, Broker, OrderState, PositionState
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
#: Reads of the broker's orders between two agreeing reads of its book (see _snapshot).
_SNAPSHOT_TRIES = 5


class ExecutionActor:
    """Sends orders, follows their lifecycle, reconciles on every start.

    Args:
        max_in_flight: commands taken from the inbox and not yet finished, at
            most (``[alpaca] max_concurrent_submits``); 1 sends one order at a
            time, each after its own journal barrier.
    """

    name = "execution"

    def __init__(
        self,
        inbox: Channel[Message],
        outbox: Outbox,
        *,
        broker: Broker,
        now_ns: Callable[[], int],
        known_orders: Callable[[], list[KnownOrder]] | None = None,
        known_positions: Callable[[], Mapping[str, float]] | None = None,
        tick_to_order: TickToOrder | None = None,
        max_in_flight: int = 8,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._tick_to_order = tick_to_order
        self._inbox = inbox
        self._out = outbox
        self._broker = broker
        self._now_ns = now_ns
        self._known_orders = known_orders
        self._known_positions = known_positions
        self._orders: dict[str, TrackedOrder] = {}
        self._max_in_flight = max_in_flight
        # Commands taken from the inbox and not finished, in arrival order:
        # what a crash or a cancellation puts back for the next incarnation.
        self._unfinished: dict[int, Message] = {}
        self._taken = 0
        self._room: anyio.Event | None = None
        # The last command of each symbol still in progress, and each order
        # whose submit is: a later command waits for it (see _serve_commands).
        self._symbol_busy: dict[str, anyio.Event] = {}
        self._sending: dict[str, anyio.Event] = {}
        # Outbox.flush is not safe from two tasks at once: the update stream
        # and the send tasks emit one at a time. Uncontended (always, in a
        # replay) it is taken without a trip through the event loop.
        self._emit_lock = anyio.Lock(fast_acquire=True)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        broker = self._broker
        async with anyio.create_task_group() as tg:
            # Listen first: an order sent before the update stream is up
            # could fill unseen.
            await tg.start(broker.stream)
            await self._reconcile()
            if broker.durable_updates and broker.updates.driver is None:
                tg.start_soon(self._serve_updates)
            else:
                tg.start_soon(consume, broker.updates, self._on_update, self.name)
            task_status.started()
            if self._inbox.driver is not None:
                # Inline delivery (replay): one command after another, in the
                # driver's task, so the journal does not depend on scheduling.
                await consume(self._inbox, self._on_command, self.name)
            else:
                await self._serve_commands()
            tg.cancel_scope.cancel()

    async def _snapshot(
        self, known: Sequence[KnownOrder],
    ) -> tuple[AccountState, list[PositionState], list[OrderState], list[OrderState | None]]:
        """The broker's account, positions and orders as of one moment.

        The REST API has no snapshot: a fill landing between the read of the
        positions and the read of its order would leave one without the
        other, and the fill would be either lost (adopted from the order but
        missing from the positions, so never booked) or booked twice. So the
        orders are read between two reads of cash and positions, and again
        while those moved meanwhile (a fill moves both).
        """
        broker = self._broker
        account, positions = await broker.account(), await broker.positions()
        for _ in range(_SNAPSHOT_TRIES):
            open_orders = await broker.open_orders()
            states = [await broker.order(k.client_order_id) for k in known]
            again, positions_again = await broker.account(), await broker.positions()
            if _book(account, positions) == _book(again, positions_again):
                break
            account, positions = again, positions_again
        else:
            log.warning("the broker's positions kept moving during reconciliation;"
                        " adopting the last reads", tries=_SNAPSHOT_TRIES)
        return again, positions_again, open_orders, states

    async def _reconcile(self) -> None:
        now = self._now_ns()
        # The journal's reads are blocking SQLite: off the event loop.
        known = (await anyio.to_thread.run_sync(self._known_orders)
                 if self._known_orders is not None else [])
        account, positions, open_orders, states = await self._snapshot(known)
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
        differences = await self._positions_gone(positions, now)
        # Orders the journal last saw open: adopt what the broker says
        # happened to them while we were away, fills first.
        for k, state in zip(known, states, strict=True):
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
                qty=o.qty, parent_client_order_id=o.parent_client_order_id,
            ))
        if differences:
            log.warning("reconciliation adopted the broker's state", differences=differences)
        await self._out.emit(ReconciliationDone(ts_ns=now, differences=differences))

    async def _positions_gone(self, positions: Sequence[PositionState], now: int) -> int:
        """Announce, as closed, what the journal last saw held and the broker no longer
        holds (closed by hand while we were away); count every quantity that differs.

        Without it nothing would ever say so: the broker lists open positions
        only, the strategy would be told the journal's stale quantity, and the
        journal would keep it.
        """
        if self._known_positions is None:
            return 0  # no journal to compare with (a replay)
        recorded = await anyio.to_thread.run_sync(self._known_positions)
        held = {p.symbol: p.qty for p in positions}
        differences = 0
        for symbol, qty in sorted(recorded.items()):
            if held.get(symbol, 0.0) == qty:
                continue
            differences += 1
            if symbol in held or not qty:
                continue  # announced above with the broker's quantity
            log.warning("position closed while we were away", symbol=symbol, recorded_qty=qty)
            await self._out.emit(PositionChanged(
                ts_ns=now, symbol=symbol, qty=0.0, avg_price=0.0, realized_pnl_cents=0))
        differences += sum(1 for symbol in held if symbol not in recorded)
        return differences

    async def _adopt(self, known: KnownOrder, state: OrderState | None, now: int) -> int:
        coid = ClientOrderId(known.client_order_id)
        if state is None:
            # Journaled but never acknowledged by the broker: it does not exist.
            await self._out.emit(OrderCanceled(
                ts_ns=now, client_order_id=coid, symbol=known.symbol,
                reason="never reached the broker (found at start-up)",
            ), durable=True)
            return 1
        # The update stream was listening before these reads: what it brings
        # of the same executions must be recognised as already adopted.
        status = state.status
        self._orders[coid] = TrackedOrder(
            client_order_id=coid, symbol=known.symbol, broker_order_id=state.broker_order_id,
            filled_qty=state.filled_qty,
            phase=status if status in TERMINAL  # type: ignore[arg-type]
            else "partially_filled" if state.filled_qty else "new",
        )
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

    # --- commands -------------------------------------------------------------------

    async def _on_command(self, msg: Message) -> None:
        """One command, start to finish (inline delivery: one after another)."""
        if isinstance(msg, SubmitOrder):
            if self._register(msg):
                if self._broker.durable_updates:
                    # Journal first: risk journaled this command before sending
                    # it here; make that durable before the broker can act on
                    # it, so a crash can never leave an order at the broker we
                    # have no record of.
                    await self._out.barrier()
                await self._send(msg)
        elif isinstance(msg, CancelOrder):
            await self._cancel(msg)

    async def _serve_commands(self) -> None:
        """Take commands in passes, journal them once per pass, send them concurrently.

        Each pass takes what the inbox holds, up to the free room of
        ``max_in_flight``. Before the first order of a pass goes out, one
        barrier makes everything journaled so far durable: risk journaled
        every command of the pass before it sent it here, so all of them are
        on disk before any reaches the broker. Each command then runs in its
        own task, after the previous command of its symbol (so one symbol's
        orders reach the broker in the order risk decided them) and, for a
        cancel, after its order's submit.

        Crash and cancellation semantics are :func:`~trader.actors.base.consume`'s:
        a command that raises crashes the actor (it is logged and dropped),
        and every command taken but not finished goes back to the head of
        the inbox, in order, for the next incarnation; resending is safe,
        the broker refuses a known client order id and we adopt it.
        """
        inbox = self._inbox
        unfinished = self._unfinished
        crashed: list[tuple[int, Exception]] = []
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    while len(unfinished) >= self._max_in_flight:
                        self._room = anyio.Event()
                        await self._room.wait()
                    try:
                        batch = await inbox.receive_batch(
                            limit=self._max_in_flight - len(unfinished))
                    except anyio.EndOfStream:
                        break
                    first = self._taken
                    self._taken += len(batch)
                    unfinished.update(zip(range(first, self._taken), batch, strict=True))
                    sends = False
                    for n, msg in enumerate(batch, first):
                        if isinstance(msg, SubmitOrder) and not self._register(msg):
                            self._finished(n)  # a repeat: nothing to send
                        elif isinstance(msg, SubmitOrder | CancelOrder):
                            sends = sends or isinstance(msg, SubmitOrder)
                        else:
                            self._finished(n)
                    if sends and self._broker.durable_updates:
                        # Journal first, once for the whole pass (see above).
                        await self._out.barrier()
                    for n in range(first, self._taken):
                        command = unfinished.get(n)
                        if isinstance(command, SubmitOrder | CancelOrder):
                            self._start(tg, n, command, crashed)
        except BaseException:
            # Cancelled (a restart or shutdown): the successor finishes what
            # this incarnation took.
            inbox.requeue_front(list(unfinished.values()))
            unfinished.clear()
            raise
        if crashed:
            n, exc = crashed[0]
            msg = unfinished.pop(n)
            # The poison message is dropped (done); the rest wait, in order.
            inbox.requeue_front(list(unfinished.values()))
            unfinished.clear()
            inbox.done(1)
            log.error("actor crashed on message", actor=self.name,
                      message_type=type(msg).__name__, message=repr(msg)[:500], exc_info=exc)
            raise exc

    def _start(self, tg: TaskGroup, n: int, msg: SubmitOrder | CancelOrder,
               crashed: list[tuple[int, Exception]]) -> None:
        """Run command ``n`` in its own task, after the commands it must follow."""
        done = anyio.Event()
        after: list[anyio.Event] = []
        if isinstance(msg, SubmitOrder):
            previous = self._symbol_busy.get(msg.symbol)
            if previous is not None:
                after.append(previous)
            self._symbol_busy[msg.symbol] = done
            self._sending[msg.client_order_id] = done
        else:
            sending = self._sending.get(msg.client_order_id)
            if sending is not None:
                after.append(sending)

        async def run() -> None:
            try:
                for event in after:
                    await event.wait()
                if isinstance(msg, SubmitOrder):
                    await self._send(msg)
                else:
                    await self._cancel(msg)
            except Exception as exc:
                # Raised in the actor's own task (see _serve_commands), with
                # the message it crashed on; the other sends are cancelled.
                crashed.append((n, exc))
                tg.cancel_scope.cancel()
                return
            finally:
                done.set()
                if isinstance(msg, SubmitOrder):
                    if self._symbol_busy.get(msg.symbol) is done:
                        del self._symbol_busy[msg.symbol]
                    if self._sending.get(msg.client_order_id) is done:
                        del self._sending[msg.client_order_id]
            self._finished(n)

        tg.start_soon(run)

    def _finished(self, n: int) -> None:
        del self._unfinished[n]
        self._inbox.done(1)
        if self._room is not None:
            self._room.set()
            self._room = None

    def _register(self, cmd: SubmitOrder) -> bool:
        """Claim ``cmd``'s client order id; False if it was sent already (send once)."""
        coid = cmd.client_order_id
        known = self._orders.get(coid)
        if known is not None:
            log.info("order already sent; not sending again", client_order_id=coid,
                     symbol=cmd.symbol, phase=known.phase)
            return False
        self._orders[coid] = TrackedOrder(
            client_order_id=coid, symbol=cmd.symbol, submitted_ns=cmd.ts_ns
        )
        return True

    async def _cancel(self, cmd: CancelOrder) -> None:
        try:
            await self._broker.cancel(cmd.client_order_id)
        except BrokerRejected as exc:
            log.warning("cancel refused", client_order_id=cmd.client_order_id,
                        reason=exc.reason)

    async def _send(self, cmd: SubmitOrder) -> None:
        """Hand a registered, journaled order to the broker."""
        coid = cmd.client_order_id
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
            tracked = self._orders.get(coid)
            if tracked is not None:
                tracked.phase = "rejected"
            await self._emit(
                OrderRejected(
                    ts_ns=cmd.ts_ns,
                    client_order_id=coid,
                    symbol=cmd.symbol,
                    reason=exc.reason,
                    code=exc.code,
                ),
                durable=self._broker.durable_updates,
            )

    async def _emit(self, msg: Message, *, durable: bool = False) -> None:
        async with self._emit_lock:
            await self._out.emit(msg, durable=durable)

    async def _on_update(self, msg: Message) -> None:
        durable = self._admit(msg)
        if durable is not None:
            await self._emit(msg, durable=durable)

    async def _serve_updates(self) -> None:
        """The broker's updates when it outlives us: :meth:`_on_update`, a batch at a time.

        Why batches: every fill and final state is committed before it goes
        downstream, and the fills of a bar arrive together (market first books
        fifty at once in a burst). One commit for the batch, not one each,
        keeps that from costing a commit's round trip per fill. Nothing goes
        downstream before the journal has it, and the order is kept.

        Crash and cancellation semantics are :func:`~trader.actors.base.consume`'s.
        """
        updates = self._broker.updates
        while True:
            try:
                batch = await updates.receive_batch()
            except anyio.EndOfStream:
                return
            out: list[Message] = []
            durable = False
            i = 0
            try:
                for msg in batch:
                    admitted = self._admit(msg)
                    if admitted is not None:
                        out.append(msg)
                        durable = durable or admitted
                    i += 1
                if durable:
                    async with self._emit_lock:
                        await self._out.emit_durably(out)
                else:
                    for msg in out:
                        await self._emit(msg)
            except Exception as exc:
                if i < len(batch):
                    # The successor (fresh state, reconciled) takes the rest,
                    # including what this one admitted but never sent on.
                    # (The poison message first: it is the one dropped.)
                    put_back_after_crash(updates, [batch[i], *batch[:i], *batch[i + 1:]], 0,
                                         exc, self.name)
                else:
                    # Handled, but not delivered: not a reason to book it twice.
                    updates.done(len(batch))
                raise
            except BaseException:
                # Cancelled mid-way: the successor reconciles with the broker
                # and handles the whole batch again (a fill already booked is
                # recognised by its cumulative quantity).
                put_back_after_cancel(updates, batch, 0)
                raise
            updates.done(len(batch))

    def _admit(self, msg: Message) -> bool | None:
        """Apply an update to the order's state: None to drop it, else whether it
        must be durable before anyone downstream sees it."""
        if not isinstance(msg, OrderEvent):
            return False
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
            return None
        if isinstance(msg, OrderFilled) and msg.cum_qty <= tracked.filled_qty + 1e-9:
            # Already booked (by reconciliation or polling): one execution, once.
            log.info("duplicate fill ignored", client_order_id=msg.client_order_id,
                     symbol=msg.symbol, execution_id=msg.execution_id)
            return None
        tracked.phase = new_phase
        tracked.broker_order_id = msg.broker_order_id or tracked.broker_order_id
        if isinstance(msg, OrderFilled):
            tracked.filled_qty = msg.cum_qty
        if new_phase in TERMINAL:
            # Keep only what is live: a finished order cannot change again,
            # and the journal has it.
            del self._orders[msg.client_order_id]
        return self._broker.durable_updates and (
            isinstance(msg, OrderFilled) or new_phase in TERMINAL
        )


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


def _book(account: AccountState, positions: Sequence[PositionState]) -> tuple[object, ...]:
    """What a fill changes: cash and the quantities held (equity moves with prices)."""
    return account.cash_cents, sorted((p.symbol, p.qty) for p in positions)
