"""A cash-and-positions ledger in integer cents.

Cash flows are the truth: a buy of value ``v`` cents costs ``v + commission``,
a sell brings ``v - commission``. Each position keeps its open cost in cents
(signed: negative for a short). Reducing a position releases a pro-rata share
of that cost, rounded once, so when a position closes its cost is exactly zero
and, for every state of the ledger::

    equity = cash + sum(value(qty, last price))
           = initial cash + realized + unrealized - commissions

holds to the cent (``tests/test_ledger.py`` checks it on random fill streams).

The totals (market value, gross exposure, open cost, realised P&L) are kept
as running sums of integer cents, not summed over every position on each
question: a book of 500 symbols is asked for its equity after every fill and
before every signal. Each open position's value is remembered as of its last
mark; a mark only notes the position as stale, and the next question
revalues the stale ones. Sums of ints are exact, so the running totals equal
the sums they replace, to the cent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from trader.messages import BarClosed
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
    """Cash, positions and realised P&L, all exact.

    ``positions`` and ``last_price`` are for reading: a position changes through
    :meth:`apply_fill` or :meth:`set_position`, a price through :meth:`mark`,
    :meth:`mark_bars` or :meth:`mark_curve`, which keep the running totals true.
    """

    def __init__(self, cash_cents: int) -> None:
        self.initial_cash_cents = cash_cents
        self.cash_cents = cash_cents
        self.commissions_cents = 0
        self.positions: dict[str, Position] = {}
        self.last_price: dict[str, float] = {}
        # Open positions' values in cents as of their last revaluation, and
        # their sums: _value_cents == sum(_values), _gross_cents == sum(|v|).
        self._values: dict[str, int] = {}
        self._stale: set[str] = set()
        self._value_cents = 0
        self._gross_cents = 0
        self._cost_cents = 0  # open cost of the open positions
        self._realized_cents = 0

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
        self._take_out(pos)
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
        self._put_back(pos)
        return pos

    def set_position(self, symbol: str, qty: float, cost_cents: int, price: float) -> Position:
        """Adopt a position as the broker states it (``price`` marks it if it has no mark)."""
        pos = self.position(symbol)
        self._take_out(pos)
        pos.qty = qty
        pos.cost_cents = cost_cents
        self.last_price.setdefault(symbol, price)
        self._put_back(pos)
        return pos

    def held(self) -> list[str]:
        """The symbols with an open position, in the order they were first traded."""
        return [s for s, p in self.positions.items() if p.qty]

    def mark(self, symbol: str, price: float) -> None:
        self.last_price[symbol] = price
        if symbol in self._values:
            self._stale.add(symbol)

    def mark_bars(self, bars: Iterable[BarClosed]) -> None:
        """Mark each bar's symbol to its close, in order."""
        last = self.last_price
        for bar in bars:
            last[bar.symbol] = bar.close
        if self._values:
            self._stale.update(self._values)

    def mark_curve(self, bars: Sequence[BarClosed]) -> tuple[list[int], list[int], list[int]]:
        """Mark ``bars`` (in time order) and value the book after each timestamp's last bar.

        Returns the timestamps, and the equity and gross exposure in cents at
        each: what :meth:`equity_cents` and :meth:`gross_exposure_cents` would
        say there, computed by revaluing only the positions each bar moves.
        """
        self._revalue()
        last = self.last_price
        values = self._values
        positions = self.positions
        cash = self.cash_cents
        ts_list: list[int] = []
        if not values:
            # Flat: equity is cash at every timestamp; only the marks move.
            prev = None
            for bar in bars:
                last[bar.symbol] = bar.close
                if bar.ts_ns != prev:
                    prev = bar.ts_ns
                    ts_list.append(prev)
            return ts_list, [cash] * len(ts_list), [0] * len(ts_list)
        total, gross = self._value_cents, self._gross_cents
        equity_list: list[int] = []
        gross_list: list[int] = []
        n = len(bars)
        for i, bar in enumerate(bars):
            s = bar.symbol
            last[s] = price = bar.close
            old = values.get(s)
            if old is not None:
                new = round(positions[s].qty * price * 100.0)  # value_cents, inlined: per bar
                values[s] = new
                total += new - old
                gross += abs(new) - abs(old)
            if i + 1 < n and bars[i + 1].ts_ns == bar.ts_ns:
                continue  # value once per timestamp, after all its bars
            ts_list.append(bar.ts_ns)
            equity_list.append(cash + total)
            gross_list.append(gross)
        self._value_cents, self._gross_cents = total, gross
        return ts_list, equity_list, gross_list

    def market_value_cents(self) -> int:
        self._revalue()
        return self._value_cents

    def gross_exposure_cents(self) -> int:
        self._revalue()
        return self._gross_cents

    def equity_cents(self) -> int:
        return self.cash_cents + self.market_value_cents()

    def realized_cents(self) -> int:
        return self._realized_cents

    def unrealized_cents(self) -> int:
        return self.market_value_cents() - self._cost_cents

    # --- the running totals --------------------------------------------------------

    def _take_out(self, pos: Position) -> None:
        """Remove ``pos`` from the totals, before it changes."""
        self._realized_cents -= pos.realized_cents
        old = self._values.pop(pos.symbol, None)
        if old is not None:
            self._stale.discard(pos.symbol)
            self._value_cents -= old
            self._gross_cents -= abs(old)
            self._cost_cents -= pos.cost_cents

    def _put_back(self, pos: Position) -> None:
        """Add ``pos`` to the totals, after it changed."""
        self._realized_cents += pos.realized_cents
        if pos.qty:
            v = value_cents(pos.qty, self.last_price[pos.symbol])
            self._values[pos.symbol] = v
            self._value_cents += v
            self._gross_cents += abs(v)
            self._cost_cents += pos.cost_cents

    def _revalue(self) -> None:
        stale = self._stale
        if not stale:
            return
        values, last, positions = self._values, self.last_price, self.positions
        total = gross = 0
        for s in stale:
            old = values[s]
            new = values[s] = value_cents(positions[s].qty, last[s])
            total += new - old
            gross += abs(new) - abs(old)
        stale.clear()
        self._value_cents += total
        self._gross_cents += gross


def _tidy(qty: float) -> float:
    # Fractional fills accumulate binary dust (0.1 + 0.2); Alpaca's increment
    # is 1e-9 shares, so anything finer is noise.
    return round(qty, 9) + 0.0
