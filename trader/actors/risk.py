"""The risk actor: the one thing between a strategy's idea and money.

It keeps a mirror of the account (cash, positions, last prices) from the
broker's reconciliation and from fills, turns scored signals into sized orders
or denials, and marks equity at every bar timestamp.

Sizing turns a target weight into an order (see DESIGN.md, "Life of an order"):

* ``target_weight``: hold ``weight x equity`` dollars of the symbol;
* ``fixed_notional``: hold ``sign(weight) x fixed_notional_usd``;
* ``fixed_fraction``: hold ``weight x fixed_fraction x equity``.

An increase is a notional market buy (whole shares at the next open, as the
broker rounds them); a decrease or a close is a share-quantity sell. Buys are
capped by buying power (cash less what open buy orders may spend) and by the
per-symbol limits. Every refusal is an ``OrderDenied`` with a reason code.
"""

from __future__ import annotations

import math

from trader.actors.base import InboxActor, Outbox
from trader.brokers.ledger import Ledger, Position
from trader.channels import Channel
from trader.config import RiskConfig
from trader.messages import (
    AccountUpdated,
    BarsClosed,
    ClientOrderId,
    EquitySampled,
    HaltTrading,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionChanged,
    ResumeTrading,
    RiskStateChanged,
    SignalScored,
    SubmitOrder,
    TradingState,
)
from trader.money import to_cents, value_cents
from trader.orders import client_order_id


class RiskActor(InboxActor):
    """Pre-trade checks, sizing and the account mirror."""

    name = "risk"

    def __init__(self, inbox: Channel[Message], outbox: Outbox, *, config: RiskConfig) -> None:
        super().__init__(inbox, outbox)
        self._cfg = config
        self._ledger = Ledger(0)
        self._state: TradingState = "ACTIVE"
        # client order id -> (symbol, side, cents it may still spend)
        self._open: dict[str, tuple[str, str, int]] = {}
        self._symbols_with_orders: dict[str, int] = {}

    def handle(self, msg: Message) -> None:
        match msg:
            case BarsClosed():
                self._on_bars(msg)
            case SignalScored():
                self._on_signal(msg)
            case OrderFilled():
                self._on_fill(msg)
            case OrderAccepted():
                if msg.client_order_id not in self._open:
                    # An order open at the broker when we (re)started.
                    self._track(msg.client_order_id, msg.symbol, msg.side, 0)
            case OrderCanceled() | OrderRejected() | OrderExpired():
                self._forget(msg.client_order_id)
            case AccountUpdated():
                # The broker's truth at reconciliation.
                self._ledger.cash_cents = msg.cash_cents
                self._ledger.initial_cash_cents = msg.cash_cents
            case PositionChanged():
                pos = self._ledger.position(msg.symbol)
                pos.qty = msg.qty
                pos.cost_cents = value_cents(msg.qty, msg.avg_price)
                self._ledger.last_price.setdefault(msg.symbol, msg.avg_price)
            case HaltTrading():
                self._set_state("HALTED", msg.reason, msg.ts_ns)
            case ResumeTrading():
                self._set_state("ACTIVE", msg.reason, msg.ts_ns)
            case _:
                pass

    # --- marking -----------------------------------------------------------------

    def _on_bars(self, msg: BarsClosed) -> None:
        led = self._ledger
        last = led.last_price
        held = {s: p for s, p in led.positions.items() if p.qty}
        ts_list: list[int] = []
        equity_list: list[int] = []
        exposure_list: list[int] = []
        bars = msg.bars
        n = len(bars)
        cash = led.cash_cents
        for i, bar in enumerate(bars):
            last[bar.symbol] = bar.close
            if i + 1 < n and bars[i + 1].ts_ns == bar.ts_ns:
                continue  # mark equity once per timestamp, after all its bars
            ts_list.append(bar.ts_ns)
            if held:
                values = [value_cents(p.qty, last[s]) for s, p in held.items()]
                equity_list.append(cash + sum(values))
                exposure_list.append(sum(abs(v) for v in values))
            else:
                equity_list.append(cash)
                exposure_list.append(0)
        self._out.post(
            EquitySampled(
                ts_ns=msg.ts_ns,
                ts=tuple(ts_list),
                equity_cents=tuple(equity_list),
                exposure_cents=tuple(exposure_list),
            )
        )

    # --- sizing and checks -----------------------------------------------------------

    def _on_signal(self, msg: SignalScored) -> None:
        sig = msg.signal
        if not msg.passed:
            return
        led = self._ledger
        price = led.last_price.get(sig.symbol) or sig.price
        pos = led.positions.get(sig.symbol) or Position(symbol=sig.symbol)
        target_cents = self._target_cents(sig.target_weight, sig.strength)
        if target_cents < 0 and not self._cfg.allow_short:
            target_cents = 0
        current_cents = value_cents(pos.qty, price)
        delta = target_cents - current_cents
        side = "buy" if delta > 0 else "sell"
        if target_cents == 0 and pos.qty == 0:
            return  # already flat: nothing to do, nothing to deny
        if sig.symbol in self._symbols_with_orders:
            self._deny(sig.ts_ns, sig.strategy, sig.symbol, side,
                             "order_pending", "an order for this symbol is still open")
            return
        reduces = abs(target_cents) < abs(current_cents) and target_cents * current_cents >= 0
        if self._state == "HALTED" or (self._state == "REDUCING" and not reduces):
            self._deny(sig.ts_ns, sig.strategy, sig.symbol, side, "trading_state",
                             f"trading state is {self._state}")
            return
        if target_cents == 0:
            close_side = "sell" if pos.qty > 0 else "buy"
            self._submit(sig.ts_ns, sig.strategy, sig.symbol, close_side, qty=abs(pos.qty))
            return
        if delta > 0:
            delta = self._cap_position(delta, current_cents, price)
            if delta <= 0:
                self._deny(sig.ts_ns, sig.strategy, sig.symbol, "buy", "max_position",
                                 "position limit reached")
                return
            if delta > self._buying_power():
                delta = self._buying_power()
            if delta < to_cents(price):
                self._deny(sig.ts_ns, sig.strategy, sig.symbol, "buy",
                                 "insufficient_buying_power",
                                 f"buying power {self._buying_power() / 100:.2f} buys no share")
                return
            if pos.qty < 0:  # covering a short: in shares, the remainder as notional later
                self._submit(sig.ts_ns, sig.strategy, sig.symbol, "buy",
                                   qty=float(math.floor(delta / 100 / price)))
            else:
                self._submit(sig.ts_ns, sig.strategy, sig.symbol, "buy", notional=delta)
        elif delta < 0:
            shares = float(math.floor(-delta / 100 / price))
            if shares <= 0:
                return
            self._submit(sig.ts_ns, sig.strategy, sig.symbol, "sell", qty=shares)

    def _target_cents(self, weight: float, strength: float) -> int:
        cfg = self._cfg
        equity = self._ledger.equity_cents()
        if cfg.sizing == "fixed_notional":
            if weight == 0:
                return 0
            return int(math.copysign(to_cents(cfg.fixed_notional_usd), weight))
        if cfg.sizing == "fixed_fraction":
            return round(weight * cfg.fixed_fraction * equity)
        return round(weight * equity)

    def _cap_position(self, delta: int, current: int, price: float) -> int:
        cfg = self._cfg
        cap = delta
        if cfg.max_position_notional_usd:
            cap = min(cap, to_cents(cfg.max_position_notional_usd) - current)
        if cfg.max_position_shares:
            cap = min(cap, value_cents(float(cfg.max_position_shares), price) - current)
        return cap

    def _buying_power(self) -> int:
        reserved = sum(c for _, side, c in self._open.values() if side == "buy")
        return max(self._ledger.cash_cents - reserved, 0)

    def _submit(
        self,
        ts_ns: int,
        strategy: str,
        symbol: str,
        side: str,
        *,
        qty: float | None = None,
        notional: int | None = None,
    ) -> None:
        coid = client_order_id(strategy, symbol, ts_ns, side)
        price = self._ledger.last_price.get(symbol, 0.0)
        spend = notional if notional is not None else value_cents(qty or 0.0, price)
        self._track(coid, symbol, side, spend if side == "buy" else 0)
        self._out.post(
            SubmitOrder(
                ts_ns=ts_ns,
                client_order_id=coid,
                strategy=strategy,
                symbol=symbol,
                side="buy" if side == "buy" else "sell",
                qty=qty,
                notional_cents=notional,
                signal_ts_ns=ts_ns,
            )
        )

    def _deny(
        self, ts_ns: int, strategy: str, symbol: str, side: str, code: str, reason: str
    ) -> None:
        self._out.post(
            OrderDenied(
                ts_ns=ts_ns,
                client_order_id=client_order_id(strategy, symbol, ts_ns, side),
                symbol=symbol,
                reason_code=code,
                reason=reason,
            )
        )

    # --- fills -------------------------------------------------------------------

    def _on_fill(self, msg: OrderFilled) -> None:
        pos = self._ledger.apply_fill(
            msg.symbol, msg.side, msg.qty, msg.price, msg.commission_cents
        )
        if msg.status == "filled":
            self._forget(msg.client_order_id)
        elif msg.client_order_id in self._open and msg.side == "buy":
            sym, side, spend = self._open[msg.client_order_id]
            self._open[msg.client_order_id] = (sym, side, spend - value_cents(msg.qty, msg.price))
        self._out.post(
            PositionChanged(
                ts_ns=msg.ts_ns,
                symbol=msg.symbol,
                qty=pos.qty,
                avg_price=pos.avg_price,
                realized_pnl_cents=pos.realized_cents,
            )
        )
        led = self._ledger
        self._out.post(
            AccountUpdated(
                ts_ns=msg.ts_ns,
                cash_cents=led.cash_cents,
                equity_cents=led.equity_cents(),
                buying_power_cents=self._buying_power(),
                gross_exposure_cents=led.gross_exposure_cents(),
                realized_pnl_cents=led.realized_cents(),
                unrealized_pnl_cents=led.unrealized_cents(),
            )
        )

    def _track(self, coid: str, symbol: str, side: str, spend: int) -> None:
        self._open[coid] = (symbol, side, spend)
        self._symbols_with_orders[symbol] = self._symbols_with_orders.get(symbol, 0) + 1

    def _forget(self, coid: ClientOrderId) -> None:
        entry = self._open.pop(coid, None)
        if entry is None:
            return
        symbol = entry[0]
        left = self._symbols_with_orders.get(symbol, 0) - 1
        if left > 0:
            self._symbols_with_orders[symbol] = left
        else:
            self._symbols_with_orders.pop(symbol, None)

    def _set_state(self, state: TradingState, reason: str, ts_ns: int) -> None:
        if state == self._state:
            return
        previous, self._state = self._state, state
        self._out.post(
            RiskStateChanged(ts_ns=ts_ns, state=state, previous=previous, reason=reason)
        )
