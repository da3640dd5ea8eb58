"""A cash-and-positions ledger in integer cents.

Cash flows are the truth: a buy of value ``v`` cents costs ``v + commission``,
a sell brings ``v - commission``. Each position keeps its open cost in cents
(signed: negative for a short). Reducing a position releases a pro-rata share
of that cost, rounded once, so when a position closes its cost is exactly zero
and, for every state of the ledger::

    equity = cash + sum(value(qty, last price))
           = initial cash + realized + unrealized - commissions

holds to the cent (``tests/test_ledger.py`` checks it on random fill streams).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from trader.money import value_cents


class Position(msgspec.Struct, kw_only=True):
    """One symbol's open quantity (negative = short) and its open cost in cents."""

    symbol: str
    qty: float = 0.0
    cost_cents: int = 0
    realized_cents: int = 0

    @property
    def avg_price(self) -> float:
        return abs(self.cost_cents) / 100 / abs(self.qty) if self.qty else 0.0


class Ledger:
    """Cash, positions and realised P&L, all exact."""

    def __init__(self, cash_cents: int) -> None:
        self.initial_cash_cents = cash_cents
        self.cash_cents = cash_cents
        self.commissions_cents = 0
        self.positions: dict[str, Position] = {}
        self.last_price: dict[str, float] = {}

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol=symbol)
        return pos

    def qty(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return pos.qty if pos is not None else 0.0

    def apply_fill(
        self, symbol: str, side: str, qty: float, price: float, commission_cents: int
    ) -> Position:
        """Book one execution and return the position after it."""
        if qty <= 0:
            raise ValueError(f"fill qty must be positive, got {qty!r}")
        pos = self.position(symbol)
        sign = 1.0 if side == "buy" else -1.0
        total = value_cents(qty, price)
        self.cash_cents -= int(sign) * total + commission_cents
        self.commissions_cents += commission_cents
        closing = 0.0
        if pos.qty and (pos.qty > 0) != (sign > 0):
            closing = min(qty, abs(pos.qty))
        if closing:
            v_close = value_cents(closing, price) if closing < qty else total
            fraction = Decimal(repr(closing)) / Decimal(repr(abs(pos.qty)))
            released = int(
                (Decimal(pos.cost_cents) * fraction).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
            )
            pos.cost_cents -= released
            # proceeds of the closing part, signed as cash received
            pos.realized_cents += -int(sign) * v_close - released
            pos.qty = _tidy(pos.qty + sign * closing)
            if pos.qty == 0:
                pos.cost_cents = 0  # exact by construction; guards float dust in qty
            opening = qty - closing
            if opening > 0:
                pos.cost_cents += int(sign) * (total - v_close)
                pos.qty = _tidy(pos.qty + sign * opening)
        else:
            pos.cost_cents += int(sign) * total
            pos.qty = _tidy(pos.qty + sign * qty)
        self.last_price.setdefault(symbol, price)
        return pos

    def mark(self, symbol: str, price: float) -> None:
        self.last_price[symbol] = price

    def market_value_cents(self) -> int:
        return sum(
            value_cents(p.qty, self.last_price[s]) for s, p in self.positions.items() if p.qty
        )

    def gross_exposure_cents(self) -> int:
        return sum(
            abs(value_cents(p.qty, self.last_price[s])) for s, p in self.positions.items() if p.qty
        )

    def equity_cents(self) -> int:
        return self.cash_cents + self.market_value_cents()

    def realized_cents(self) -> int:
        return sum(p.realized_cents for p in self.positions.values())

    def unrealized_cents(self) -> int:
        return sum(
            value_cents(p.qty, self.last_price[s]) - p.cost_cents
            for s, p in self.positions.items()
            if p.qty
        )


def _tidy(qty: float) -> float:
    # Fractional fills accumulate binary dust (0.1 + 0.2); Alpaca's increment
    # is 1e-9 shares, so anything finer is noise.
    return round(qty, 9) + 0.0
