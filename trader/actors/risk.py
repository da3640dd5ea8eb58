"""The risk actor: the one thing between a strategy's idea and money.

It keeps a mirror of the account (cash, positions, last prices) from the
broker's reconciliation and from fills, turns scored signals into sized orders
or denials, marks equity at every bar timestamp, and runs the trading state.

**Orders.** Sizing (:mod:`trader.sizing`) turns a target weight into a target
value. An increase is a notional market buy (whole shares at the next open, as
the broker rounds them), capped by buying power (cash less what open buys may
spend) and the per-symbol limits; a decrease or a close is a share-quantity
sell. Before sizing, :data:`~trader.risk_checks.GATES` decide whether the
symbol may trade now; after it, :data:`~trader.risk_checks.CHECKS` vet the
order. Every refusal is an ``OrderDenied`` with the first failing check's
reason code; nothing is dropped silently.

**Trading state** (:mod:`trader.trading_state`): ACTIVE, REDUCING (only
orders that shrink a position) or HALTED (none), set by breakers and the
operator. The actor feeds it (bars' equity marks, the kill-switch file, the
feed's status, the broker's health, ``HaltTrading``/``ResumeTrading``) and
carries out what it decides: every change is journaled as a
``RiskStateChanged`` and logged, and entering HALTED cancels open entries
(orders that would not shrink a position). The machine belongs to the
graph, so it outlives a restart of this actor; the daemon starts in the state
the journal last recorded.

**Flatten.** ``FlattenAll`` (``trader flatten``), or a halt by the drawdown or
daily-loss breaker with ``flatten_on_halt``, cancels open entries and sends a
share-quantity market order closing what each position's open exits do not
already close. An entry that fills before its cancel lands is closed too.

**Exits.** With ``[risk] stop_loss_pct``, ``take_profit_pct`` or
``trailing_stop_pct``, every bar of a held symbol is checked, after marking,
against its position's levels (:mod:`trader.exits`); a breach sends one
share-quantity market order closing the position, with the reason as its
intent, journaled as ``ExitTriggered``. Not again for that position while
the order is open; again at a later breach if it ends without closing it.

**Native exits** (``[risk] exits = "native"``). An entry goes out as a
whole-share gtc market order (sized at the signal's price, rounded down;
Alpaca takes no bracket on a notional or fractional order) carrying its take
profit and stop loss, computed from the signal's price, for the broker to
hold as bracket legs. Legs are orders the broker placed: risk learns of them
from their ``OrderAccepted`` (``parent_client_order_id``), books their fills
like any fill, and does not count them as pending orders. While a symbol
has working legs only its trailing stop is emulated. The broker holds the
legs' shares, so any order that would close them (a flatten, an exit, the
strategy's own sell) first cancels the legs and goes out once the broker has
confirmed every cancel, for no more than the position then left.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from bisect import bisect_right, insort

import msgspec
import structlog

from trader import calendar
from trader.actors.base import InboxActor, Outbox
from trader.brokers.ledger import Ledger, Position
from trader.channels import Channel
from trader.clock import Clock
from trader.config import RiskConfig
from trader.exits import Exits, Trigger
from trader.messages import (
    AccountUpdated,
    BarsClosed,
    BrokerHealthChanged,
    CancelOrder,
    ClientOrderId,
    EquitySampled,
    ExitTriggered,
    FeedStatusChanged,
    FlattenAll,
    HaltTrading,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionChanged,
    ReconciliationDone,
    ResumeTrading,
    Side,
    SignalScored,
    SubmitOrder,
    SymbolDelisted,
    TimeInForce,
)
from trader.money import to_cents, value_cents
from trader.orders import client_order_id
from trader.risk_checks import (
    CHECKS,
    GATES,
    MINUTE_NS,
    Context,
    Denial,
    Intent,
    first_denial,
    near_close,
    shrinks,
)
from trader.sizing import Atr, target_cents
from trader.trading_state import StateEvent, TradingStateMachine

log = structlog.get_logger("trader.risk")

class _Open:
    """An order sent and not final, as risk tracks it."""

    __slots__ = ("cancel_sent", "flatten_if_filled", "qty", "reduces", "side", "spend", "symbol")

    def __init__(self, symbol: str, side: str, qty: float | None, spend: int, reduces: bool
                 ) -> None:
        self.symbol = symbol
        self.side = side
        self.qty = qty  # shares still open; None for a notional order
        self.spend = spend  # cents a buy may still spend
        self.reduces = reduces
        self.cancel_sent = False
        self.flatten_if_filled = False


class RiskActor(InboxActor):
    """Pre-trade checks, sizing, the trading state and the account mirror."""

    name = "risk"

    def __init__(
        self,
        inbox: Channel[Message],
        outbox: Outbox,
        *,
        config: RiskConfig,
        instance: str = "risk",
        trading_state: TradingStateMachine | None = None,
        clock: Clock | None = None,
    ) -> None:
        """
        Args:
            instance: the strategy instance, for the client order ids of the
                orders risk makes itself (flatten).
            trading_state: the graph's, which outlives this incarnation; a
                fresh one (ACTIVE) if None.
            clock: stamps the state restored at start; messages carry their
                own time otherwise.
        """
        super().__init__(inbox, outbox)
        self._cfg = config
        self._instance = instance
        self._ts = trading_state or TradingStateMachine()
        self._clock = clock
        self._ledger = Ledger(0)
        self._synced = False
        # Between execution's reconciliation AccountUpdated and ReconciliationDone:
        # the symbols whose position the broker stated so far (None outside).
        self._stated: set[str] | None = None
        self._open: dict[str, _Open] = {}
        self._symbols_with_orders: dict[str, int] = {}
        self._orders_ns: list[int] = []
        self._symbol_orders_ns: dict[str, list[int]] = {}
        self._last_intent_ns: dict[tuple[str, str], int] = {}
        self._atr: dict[str, Atr] | None = {} if config.sizing == "volatility_target" else None
        self._flattened_day: dt.date | None = None
        self._equity_breakers = bool(config.max_drawdown_pct or config.daily_loss_limit_usd)
        # Rebuilt from the positions reconciliation reports: a restarted actor
        # has each entry price back, but its trailing marks start there again.
        self._exits = Exits(config.stop_loss_pct, config.take_profit_pct,
                            config.trailing_stop_pct)
        self._native = config.exits == "native"
        # Bracket legs working at the broker (not ours: not in _open), the
        # bracket entries we sent and not yet done (coid -> symbol), and the
        # closing orders waiting for a symbol's legs to be canceled.
        self._legs: dict[str, _Open] = {}
        self._bracket_entries: dict[str, str] = {}
        self._after_legs: dict[str, list[SubmitOrder]] = {}

    @property
    def state(self) -> str:
        return self._ts.state

    async def setup(self) -> None:
        # A state restored from the journal is journaled again in this run,
        # so the run's own journal says why it is not trading.
        now = self._clock.now_ns() if self._clock is not None else 0
        self._carry_out(StateEvent(self._ts.settle(now), False, now, ""))
        await self._out.flush()

    def handle(self, msg: Message) -> None:
        match msg:
            case BarsClosed():
                self._on_bars(msg)
            case SignalScored():
                self._on_signal(msg)
            case OrderFilled() if self._stated is not None:
                self._on_fill_adopted(msg)
            case OrderFilled():
                self._on_fill(msg)
            case SymbolDelisted():
                self._on_delisted(msg)
            case OrderAccepted() if msg.parent_client_order_id:
                self._legs[msg.client_order_id] = _Open(msg.symbol, msg.side, msg.qty, 0, True)
                self._exits.native(msg.symbol, True)
            case OrderAccepted():
                if msg.client_order_id not in self._open:
                    # An order open at the broker when we (re)started.
                    qty = msg.qty
                    reduces = qty is not None and shrinks(
                        self._ledger.qty(msg.symbol), msg.side, qty)
                    self._track(msg.client_order_id, msg.symbol, msg.side, qty, 0, reduces)
            case OrderCanceled() | OrderRejected() | OrderExpired():
                self._forget(msg.client_order_id)
                self._bracket_entries.pop(msg.client_order_id, None)
                if msg.client_order_id in self._legs:
                    self._leg_gone(msg.client_order_id)
                if self._exits.pending(msg.symbol) == msg.client_order_id:
                    # The exit did not close the position: the next breach sends another.
                    self._exits.rearm(msg.symbol)
            case AccountUpdated():
                # The broker's truth at reconciliation, which starts here.
                self._ledger.cash_cents = msg.cash_cents
                self._ledger.initial_cash_cents = msg.cash_cents
                self._synced = True
                self._stated = set()
            case PositionChanged():
                self._ledger.set_position(msg.symbol, msg.qty,
                                          value_cents(msg.qty, msg.avg_price), msg.avg_price)
                if self._stated is not None:
                    self._stated.add(msg.symbol)
                self._exits.on_position(msg.symbol, msg.qty, msg.avg_price)
            case ReconciliationDone():
                self._reconciled(msg.ts_ns)
            case HaltTrading():
                self._carry_out(self._ts.trip("operator", "HALTED", _operator(msg.reason),
                                              msg.ts_ns))
            case ResumeTrading():
                path = self._cfg.kill_switch_file
                kill = path if path and os.path.exists(path) else ""
                if kill:
                    log.warning("resume refused while the kill-switch file exists", path=kill)
                self._carry_out(self._ts.resume(_operator(msg.reason), msg.ts_ns,
                                                kill_switch=kill))
            case FlattenAll():
                self._flatten(msg.ts_ns, _operator(msg.reason))
            case FeedStatusChanged():
                self._carry_out(self._ts.on_feed_status(msg.status, msg.reason, msg.ts_ns,
                                                        self._cfg))
            case BrokerHealthChanged():
                self._carry_out(self._ts.on_broker_health(msg.check, msg.healthy, msg.reason,
                                                          msg.ts_ns, self._cfg))
            case _:
                pass

    # --- marking and breakers -----------------------------------------------------

    def _on_bars(self, msg: BarsClosed) -> None:
        bars = msg.bars
        ts_list, equity_list, exposure_list = self._ledger.mark_curve(bars)
        self._out.post(
            EquitySampled(
                ts_ns=msg.ts_ns,
                ts=tuple(ts_list),
                equity_cents=tuple(equity_list),
                exposure_cents=tuple(exposure_list),
            )
        )
        exits = self._exits
        if exits.enabled:
            for bar in bars:
                trigger = exits.on_bar(bar)
                if trigger is not None:
                    self._exit(bar.symbol, bar.ts_ns, trigger)
        if self._atr is not None:
            atrs, period = self._atr, self._cfg.atr_period_bars
            for bar in bars:
                atr = atrs.get(bar.symbol)
                if atr is None:
                    atr = atrs[bar.symbol] = Atr(period)
                atr.update(bar.high, bar.low, bar.close)
        if self._equity_breakers and self._synced:
            for event in self._ts.check_equity(ts_list, equity_list, self._cfg):
                self._carry_out(event)
        minutes = self._cfg.flatten_before_close_min
        if minutes and near_close(msg.ts_ns, minutes):
            day = calendar.ny_date(msg.ts_ns)
            if day != self._flattened_day:
                self._flattened_day = day
                self._flatten(msg.ts_ns, f"{minutes:g} min before the close")
        path = self._cfg.kill_switch_file
        if path:
            self._carry_out(self._ts.check_kill_switch(path, os.path.exists(path), msg.ts_ns,
                                                       self._cfg))

    # --- the trading state ----------------------------------------------------------

    def _carry_out(self, event: StateEvent | None) -> None:
        """Journal and log a state change; cancel entries on HALTED; flatten if configured."""
        if event is None:
            return
        change = event.change
        if change is not None:
            self._out.post(change)
            (log.info if change.state == "ACTIVE" else log.warning)(
                "trading state changed", state=change.state, previous=change.previous,
                reason=change.reason)
            if change.state == "HALTED":
                self._cancel_entries(change.ts_ns, flatten_if_filled=False)
        if event.breaker and self._cfg.flatten_on_halt:
            self._flatten(event.ts_ns, event.reason)

    def _cancel_entries(self, ts_ns: int, *, flatten_if_filled: bool) -> None:
        for coid, order in self._open.items():
            if order.reduces:
                continue
            order.flatten_if_filled = order.flatten_if_filled or flatten_if_filled
            if not order.cancel_sent:
                order.cancel_sent = True
                self._out.post(CancelOrder(ts_ns=ts_ns, client_order_id=ClientOrderId(coid)))

    def _flatten(self, ts_ns: int, reason: str) -> None:
        self._cancel_entries(ts_ns, flatten_if_filled=True)
        symbols = self._ledger.held()
        log.warning("flattening every position", reason=reason, symbols=symbols)
        for symbol in symbols:
            self._flatten_symbol(symbol, ts_ns)

    def _flatten_symbol(self, symbol: str, ts_ns: int) -> None:
        qty = self._ledger.qty(symbol)
        if not qty:
            return
        side: Side = "sell" if qty > 0 else "buy"
        closing = sum(o.qty or 0.0 for o in self._open.values()
                      if o.symbol == symbol and o.side == side and o.reduces)
        left = round(abs(qty) - closing, 9)
        if left <= 0:
            return
        coid = client_order_id(self._instance, symbol, ts_ns, "flatten")
        if coid in self._open:
            return  # already closing from this very instant
        self._submit(ts_ns, self._instance, symbol, side, qty=left, intent="flatten",
                     reduces=True)

    def _exit(self, symbol: str, ts_ns: int, trigger: Trigger) -> None:
        """Close ``symbol``'s position at market for ``trigger`` (trader/exits.py).

        Like a flatten it is sent in every trading state (it only shrinks a
        position) and closes only what open reducing orders do not already.
        """
        qty = self._ledger.qty(symbol)
        side: Side = "sell" if qty > 0 else "buy"
        closing = sum(o.qty or 0.0 for o in self._open.values()
                      if o.symbol == symbol and o.side == side and o.reduces)
        left = round(abs(qty) - closing, 9)
        if left <= 0:
            return  # a flatten or the strategy's own exit is closing it already
        coid = client_order_id(self._instance, symbol, ts_ns, trigger.reason)
        if coid in self._open:
            return
        self._exits.sent(symbol, coid)
        self._out.post(ExitTriggered(
            ts_ns=ts_ns, client_order_id=coid, symbol=symbol, reason=trigger.reason, qty=left,
            entry_price=trigger.entry_price, level=trigger.level, price=trigger.price))
        log.info("exit triggered", symbol=symbol, reason=trigger.reason, qty=left,
                 entry_price=trigger.entry_price, level=trigger.level, price=trigger.price)
        self._submit(ts_ns, self._instance, symbol, side, qty=left, intent=trigger.reason,
                     reduces=True)

    # --- sizing and checks -----------------------------------------------------------

    def _exposure(self) -> tuple[int, int]:
        """Gross and net exposure in cents at the last prices."""
        led = self._ledger
        return led.gross_exposure_cents(), led.market_value_cents()

    def _context(
        self, symbol: str, side: str, ts_ns: int, gross: int, net: int
    ) -> Context:
        led = self._ledger
        last = led.last_price
        cutoff = ts_ns - MINUTE_NS
        orders_ns = self._orders_ns
        del orders_ns[: bisect_right(orders_ns, cutoff)]
        symbol_ns = self._symbol_orders_ns.get(symbol, [])
        del symbol_ns[: bisect_right(symbol_ns, cutoff)]
        return Context(
            state=self._ts.state,
            equity_cents=led.cash_cents + net,
            buying_power_cents=self._buying_power(),
            position_qty=led.qty(symbol),
            mark_price=last.get(symbol, 0.0),
            gross_cents=gross,
            net_cents=net,
            open_orders=len(self._open),
            symbol_open_orders=self._symbols_with_orders.get(symbol, 0),
            orders_ns=orders_ns,
            symbol_orders_ns=symbol_ns,
            last_same_intent_ns=self._last_intent_ns.get((symbol, side)),
        )

    def _on_signal(self, msg: SignalScored) -> None:
        sig = msg.signal
        if not msg.passed:
            return
        cfg = self._cfg
        led = self._ledger
        symbol = sig.symbol
        price = led.last_price.get(symbol) or sig.price
        pos = led.positions.get(symbol) or Position(symbol=symbol)
        atr = None
        if self._atr is not None and symbol in self._atr:
            atr = self._atr[symbol].value
        gross, net = self._exposure()
        # cash + net is the ledger's equity, without a second pass over positions.
        target = target_cents(cfg, sig.target_weight, led.cash_cents + net, price, atr=atr,
                              probability=msg.probability)
        ts = sig.ts_ns
        if target is None:
            self._deny(ts, sig.strategy, symbol, "buy" if sig.target_weight > 0 else "sell", Denial(
                "volatility_unknown", f"fewer than {cfg.atr_period_bars} bars for the ATR"))
            return
        if target < 0 and not cfg.allow_short:
            target = 0
        current = value_cents(pos.qty, price)
        delta = target - current
        side: Side = "buy" if delta > 0 else "sell"
        if target == 0 and pos.qty == 0:
            return  # already flat: nothing to do, nothing to deny
        ctx = self._context(symbol, side, ts, gross, net)
        reduces = abs(target) < abs(current) and target * current >= 0
        gate = Intent(ts_ns=ts, symbol=symbol, side=side, qty=_shares(abs(delta), price),
                      price=sig.price or price, notional_cents=abs(delta), reduces=reduces)
        denial = first_denial(GATES, gate, ctx, cfg)
        if denial is not None:
            self._deny(ts, sig.strategy, symbol, side, denial)
            return
        qty: float | None = None
        notional: int | None = None
        if target == 0:
            side = "sell" if pos.qty > 0 else "buy"
            qty = abs(pos.qty)
        elif delta > 0:
            delta, binding = self._cap_position(delta, current, price)
            if delta <= 0:
                self._deny(ts, sig.strategy, symbol, "buy",
                           Denial(binding, "position limit reached"))
                return
            if delta > self._buying_power():
                delta = self._buying_power()
            if delta < to_cents(price):
                self._deny(ts, sig.strategy, symbol, "buy", Denial(
                    "insufficient_buying_power",
                    f"buying power {self._buying_power() / 100:.2f} buys no share"))
                return
            if pos.qty < 0:  # covering a short: in shares, the remainder as notional later
                qty = float(math.floor(delta / 100 / price))
            elif self._native:
                # A bracket must be whole shares: sized at the signal's price.
                qty = float(math.floor(delta / 100 / (sig.price or price)))
                if qty <= 0:
                    self._deny(ts, sig.strategy, symbol, "buy", Denial(
                        "insufficient_buying_power",
                        f"{delta / 100:.2f} buys no whole share at {sig.price or price}"))
                    return
            else:
                notional = delta
        elif delta < 0:
            qty = float(math.floor(-delta / 100 / price))
            if qty <= 0:
                return
        else:
            return
        est = qty if qty is not None else _shares(notional or 0, price)
        intent = Intent(
            ts_ns=ts, symbol=symbol, side=side, qty=est, price=sig.price or price,
            notional_cents=notional if notional is not None else value_cents(est, price),
            reduces=shrinks(pos.qty, side, est),
        )
        denial = first_denial(CHECKS, intent, ctx, cfg)
        if denial is not None:
            self._deny(ts, sig.strategy, symbol, side, denial)
            return
        if self._native and not intent.reduces and pos.qty * (1 if side == "buy" else -1) >= 0:
            # An entry (not a flip through zero): the broker holds its exits,
            # from the signal's price (the fill price is not known yet).
            take, stop = self._exits.bracket(side == "buy", sig.price or price)
            self._submit(ts, sig.strategy, symbol, side, qty=qty, reduces=False,
                         take_profit=take, stop_loss=stop, time_in_force="gtc")
            return
        self._submit(ts, sig.strategy, symbol, side, qty=qty, notional=notional,
                     reduces=intent.reduces)

    def _cap_position(self, delta: int, current: int, price: float) -> tuple[int, str]:
        cfg = self._cfg
        cap, binding = delta, ""
        if cfg.max_position_notional_usd:
            room = to_cents(cfg.max_position_notional_usd) - current
            if room < cap:
                cap, binding = room, "max_position_notional"
        if cfg.max_position_shares:
            room = value_cents(float(cfg.max_position_shares), price) - current
            if room < cap:
                cap, binding = room, "max_position_shares"
        return cap, binding

    def _buying_power(self) -> int:
        reserved = sum(o.spend for o in self._open.values() if o.side == "buy")
        return max(self._ledger.cash_cents - reserved, 0)

    def _submit(
        self,
        ts_ns: int,
        strategy: str,
        symbol: str,
        side: Side,
        *,
        qty: float | None = None,
        notional: int | None = None,
        intent: str | None = None,
        reduces: bool = False,
        take_profit: float | None = None,
        stop_loss: float | None = None,
        time_in_force: TimeInForce = "day",
    ) -> None:
        coid = client_order_id(strategy, symbol, ts_ns, intent or side)
        price = self._ledger.last_price.get(symbol, 0.0)
        spend = notional if notional is not None else value_cents(qty or 0.0, price)
        self._track(coid, symbol, side, qty, spend if side == "buy" else 0, reduces)
        insort(self._orders_ns, ts_ns)
        insort(self._symbol_orders_ns.setdefault(symbol, []), ts_ns)
        self._last_intent_ns[(symbol, side)] = ts_ns
        order = SubmitOrder(
            ts_ns=ts_ns,
            client_order_id=coid,
            strategy=strategy,
            symbol=symbol,
            side=side,
            qty=qty,
            notional_cents=notional,
            time_in_force=time_in_force,
            signal_ts_ns=ts_ns,
            take_profit_price=take_profit,
            stop_loss_price=stop_loss,
        )
        if take_profit is not None or stop_loss is not None:
            self._bracket_entries[coid] = symbol
        legs = [c for c, leg in self._legs.items() if leg.symbol == symbol and leg.side == side]
        if reduces and legs:
            # The broker holds these shares for the legs and would refuse the
            # order: cancel them, and send it once every cancel is confirmed.
            self._after_legs.setdefault(symbol, []).append(order)
            for c in legs:
                leg = self._legs[c]
                if not leg.cancel_sent:
                    leg.cancel_sent = True
                    self._out.post(CancelOrder(ts_ns=ts_ns, client_order_id=ClientOrderId(c)))
            log.info("closing order waits for bracket legs to be canceled",
                     client_order_id=coid, symbol=symbol, legs=legs)
            return
        self._out.post(order)

    def _leg_gone(self, coid: str) -> None:
        """A bracket leg is done (filled, canceled, expired): once a symbol has none
        left, its stop and take profit are risk's again, and closing orders held back
        for its legs go out, for no more than the position now left."""
        symbol = self._legs.pop(coid).symbol
        if any(leg.symbol == symbol for leg in self._legs.values()):
            return
        self._exits.native(symbol, False)
        for order in self._after_legs.pop(symbol, []):
            tracked = self._open.get(order.client_order_id)
            if tracked is None:
                continue
            held = abs(self._ledger.qty(symbol))
            same_side = (self._ledger.qty(symbol) > 0) == (order.side == "sell")
            qty = min(order.qty or 0.0, held) if same_side else 0.0
            if qty <= 0:
                # A leg closed the position first: nothing is left to close.
                self._forget(ClientOrderId(order.client_order_id))
                self._exits.rearm(symbol)
                log.info("closing order dropped: the position is already closed",
                         client_order_id=order.client_order_id, symbol=symbol)
                continue
            tracked.qty = qty
            self._out.post(msgspec.structs.replace(order, qty=qty))

    def _deny(self, ts_ns: int, strategy: str, symbol: str, side: str, denial: Denial) -> None:
        self._out.post(
            OrderDenied(
                ts_ns=ts_ns,
                client_order_id=client_order_id(strategy, symbol, ts_ns, side),
                symbol=symbol,
                reason_code=denial.code,
                reason=denial.reason,
            )
        )

    # --- fills -------------------------------------------------------------------

    def _on_fill(self, msg: OrderFilled) -> None:
        pos = self._ledger.apply_fill(
            msg.symbol, msg.side, msg.qty, msg.price, msg.commission_cents
        )
        self._exits.on_position(msg.symbol, pos.qty, pos.avg_price)
        order = self._order_filled(msg)
        self._report_position(msg.ts_ns, pos)
        if order is not None and order.flatten_if_filled:
            # An entry we were cancelling for a flatten filled first: close it too.
            self._flatten_symbol(msg.symbol, msg.ts_ns)

    def _on_fill_adopted(self, msg: OrderFilled) -> None:
        """A fill reconciliation found (made while execution was down): the broker's
        account and positions, stated in the same reconciliation, already hold it, so
        it is not booked again; only the order it belongs to moves on."""
        log.info("fill adopted at reconciliation", client_order_id=msg.client_order_id,
                 symbol=msg.symbol, qty=msg.qty, price=msg.price)
        order = self._order_filled(msg)
        if order is not None and order.flatten_if_filled:
            self._flatten_symbol(msg.symbol, msg.ts_ns)  # of the broker's stated position

    def _order_filled(self, msg: OrderFilled) -> _Open | None:
        """The order side of a fill: its bracket, its legs, what it may still buy.
        Returns the order as it was tracked (None if it was not ours or is gone)."""
        coid = msg.client_order_id
        if coid in self._bracket_entries:
            # Its legs are working from this fill on, even before we hear of them.
            self._exits.native(msg.symbol, True)
            if msg.status == "filled":
                del self._bracket_entries[coid]
        leg = self._legs.get(coid)
        if leg is not None:
            if msg.status == "filled":
                self._leg_gone(coid)
            elif leg.qty is not None:
                leg.qty = round(leg.qty - msg.qty, 9)
        order = self._open.get(coid)
        if msg.status == "filled":
            self._forget(coid)
        elif order is not None:
            if msg.side == "buy":
                order.spend -= value_cents(msg.qty, msg.price)
            if order.qty is not None:
                order.qty = round(order.qty - msg.qty, 9)
        return order

    def _reconciled(self, ts_ns: int) -> None:
        """The end of a reconciliation: a position we hold that the broker did not state
        is closed at the broker (it lists open positions only); then the book as the
        broker stated it is reported, so the journal's positions (risk's) are the
        broker's from here on, a position closed while we were away included."""
        stated, self._stated = self._stated or set(), None
        led = self._ledger
        for symbol in led.held():
            if symbol not in stated:
                log.warning("position gone at the broker", symbol=symbol, qty=led.qty(symbol))
                led.set_position(symbol, 0.0, 0, 0.0)
                self._exits.on_position(symbol, 0.0, 0.0)
                stated.add(symbol)
        if not stated:
            return  # nothing held on either side (a replay's start)
        for symbol in sorted(stated):
            self._report_position(ts_ns, led.position(symbol), account=False)
        self._report_account(ts_ns)

    def _on_delisted(self, msg: SymbolDelisted) -> None:
        """The exchange closed a delisted symbol's position at its last close: book it
        like a fill without commission (its open orders were canceled just before)."""
        if not msg.qty:
            return
        side: Side = "sell" if msg.qty > 0 else "buy"
        pos = self._ledger.apply_fill(msg.symbol, side, abs(msg.qty), msg.price, 0)
        self._exits.on_position(msg.symbol, pos.qty, pos.avg_price)
        log.warning("position closed: symbol delisted", symbol=msg.symbol, qty=msg.qty,
                    price=msg.price, realized_pnl_cents=msg.realized_pnl_cents)
        self._report_position(msg.ts_ns, pos)

    def _report_position(self, ts_ns: int, pos: Position, *, account: bool = True) -> None:
        """The position and (unless told not to) the account after a fill (or a
        delisting)."""
        self._out.post(
            PositionChanged(
                ts_ns=ts_ns,
                symbol=pos.symbol,
                qty=pos.qty,
                avg_price=pos.avg_price,
                realized_pnl_cents=pos.realized_cents,
            )
        )
        if account:
            self._report_account(ts_ns)

    def _report_account(self, ts_ns: int) -> None:
        led = self._ledger
        self._out.post(
            AccountUpdated(
                ts_ns=ts_ns,
                cash_cents=led.cash_cents,
                equity_cents=led.equity_cents(),
                buying_power_cents=self._buying_power(),
                gross_exposure_cents=led.gross_exposure_cents(),
                realized_pnl_cents=led.realized_cents(),
                unrealized_pnl_cents=led.unrealized_cents(),
            )
        )

    def _track(self, coid: str, symbol: str, side: str, qty: float | None, spend: int,
               reduces: bool) -> None:
        self._open[coid] = _Open(symbol, side, qty, spend, reduces)
        self._symbols_with_orders[symbol] = self._symbols_with_orders.get(symbol, 0) + 1

    def _forget(self, coid: ClientOrderId) -> None:
        entry = self._open.pop(coid, None)
        if entry is None:
            return
        symbol = entry.symbol
        left = self._symbols_with_orders.get(symbol, 0) - 1
        if left > 0:
            self._symbols_with_orders[symbol] = left
        else:
            self._symbols_with_orders.pop(symbol, None)


def _operator(reason: str) -> str:
    return "operator" if reason in ("", "operator") else f"operator: {reason}"


def _shares(cents: int, price: float) -> float:
    """An estimate of the shares ``cents`` buy at ``price`` (0 without a price)."""
    return cents / 100 / price if price > 0 else 0.0
