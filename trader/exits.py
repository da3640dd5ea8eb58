"""Per-position exits: stop loss, take profit and trailing stop, as risk emulates them.

One small state per open position (its side, entry price, and the best price
since entry), updated in O(1) per bar. For a long position of entry ``e``::

    stop loss      e x (1 - stop_loss_pct / 100)      breached when bar.low  <= it
    take profit    e x (1 + take_profit_pct / 100)    breached when bar.high >= it
    trailing stop  hwm x (1 - trailing_stop_pct / 100) breached when bar.low  <= it

``hwm`` is the high-water mark: the entry price, then the highest bar high
since. A short position mirrors all three (the stop above the entry, the
take profit below it, the trail above the low-water mark). Each percentage
is off at 0. Levels are rounded to the tick (:func:`trader.money.round_price`),
as a broker would hold them, so a bar that trades exactly at a level breaches it.

A bar is checked against the levels in force when it opened, and only then
does its own high (low, for a short) move the trailing mark: the order of a
bar's high and low is unknown, so its high must not raise a trail that its
low is then checked against. When one bar breaches several levels, the
reason is the stop (the trailing stop if it lies nearer the price than the
stop loss), before the take profit: the pessimistic reading of a bar whose
path is unknown. The order sent is the same whatever the reason.

With ``[risk] exits = "native"`` the stop loss and take profit of an entry
travel with it to the broker as a bracket (:meth:`Exits.bracket` computes
the two levels, from the signal's price: the fill price is not known when
the order is sent). While a position has live bracket legs
(:meth:`Exits.native`), only its trailing stop is checked here; the broker
holds the other two.

This module decides *that* a position should close and why. It is not an
order: :class:`~trader.actors.risk.RiskActor` turns a :class:`Trigger` into a
reducing market order, which fills under the broker's ordinary market-order
rules (in replay: at the next bar's open, gaps included).
"""

from __future__ import annotations

from trader.messages import BarClosed, ExitReason
from trader.money import round_price


class Trigger:
    """A bar breached one of a position's exit levels.

    ``price`` is the bar's extreme that breached ``level`` (its low for a
    long's stop, its high for a long's take profit; mirrored for a short).
    """

    __slots__ = ("entry_price", "level", "price", "reason")

    def __init__(self, reason: ExitReason, level: float, price: float, entry_price: float
                 ) -> None:
        self.reason: ExitReason = reason
        self.level = level
        self.price = price
        self.entry_price = entry_price


class _Levels:
    """The exit state of one open position."""

    __slots__ = ("entry", "extreme", "long", "pending", "stop", "take", "trail")

    def __init__(self, long: bool, entry: float) -> None:
        self.long = long
        self.entry = entry
        self.extreme = entry  # high-water mark (long) or low-water mark (short)
        self.stop = 0.0  # 0.0: that exit is off
        self.take = 0.0
        self.trail = 0.0
        self.pending = ""  # the client order id of the exit sent for this position


class Exits:
    """The exit levels of every open position, one :class:`_Levels` per symbol.

    Args:
        stop_loss_pct, take_profit_pct, trailing_stop_pct: percent of the
            entry price (of the high/low-water mark for the trail); 0 = off.
    """

    def __init__(self, stop_loss_pct: float = 0.0, take_profit_pct: float = 0.0,
                 trailing_stop_pct: float = 0.0) -> None:
        self._sl = stop_loss_pct / 100.0
        self._tp = take_profit_pct / 100.0
        self._tr = trailing_stop_pct / 100.0
        self._levels: dict[str, _Levels] = {}
        self._native: set[str] = set()  # symbols whose stop and take profit the broker holds

    @property
    def enabled(self) -> bool:
        return bool(self._sl or self._tp or self._tr)

    def bracket(self, long: bool, price: float) -> tuple[float | None, float | None]:
        """The (take profit, stop loss) of a new position entered at ``price``, each
        rounded to the tick; None where that exit is off."""
        if long:
            take = round_price(price * (1.0 + self._tp)) if self._tp else None
            stop = round_price(price * (1.0 - self._sl)) if self._sl else None
        else:
            take = round_price(price * (1.0 - self._tp)) if self._tp else None
            stop = round_price(price * (1.0 + self._sl)) if self._sl else None
        return take, stop

    def native(self, symbol: str, held: bool) -> None:
        """Whether the broker holds ``symbol``'s stop loss and take profit (live
        bracket legs): if so, only its trailing stop is checked here."""
        if held:
            self._native.add(symbol)
        else:
            self._native.discard(symbol)

    def on_position(self, symbol: str, qty: float, avg_price: float) -> None:
        """The position in ``symbol`` is now ``qty`` shares at ``avg_price``.

        A new position, or one that changed side, starts from its average
        price; a larger one of the same side moves its entry to the new average
        and keeps its mark; a smaller one keeps both; a closed one is forgotten.
        """
        if not self.enabled:
            return
        if not qty or avg_price <= 0:
            self._levels.pop(symbol, None)
            return
        long = qty > 0
        lv = self._levels.get(symbol)
        if lv is None or lv.long != long:
            lv = self._levels[symbol] = _Levels(long, avg_price)
        elif avg_price == lv.entry:
            return
        else:
            lv.entry = avg_price
            lv.extreme = max(lv.extreme, avg_price) if long else min(lv.extreme, avg_price)
        e = avg_price
        if long:
            lv.stop = round_price(e * (1.0 - self._sl)) if self._sl else 0.0
            lv.take = round_price(e * (1.0 + self._tp)) if self._tp else 0.0
        else:
            lv.stop = round_price(e * (1.0 + self._sl)) if self._sl else 0.0
            lv.take = round_price(e * (1.0 - self._tp)) if self._tp else 0.0
        self._set_trail(lv)

    def on_bar(self, bar: BarClosed) -> Trigger | None:
        """Check ``bar`` against its symbol's levels, then let it move the trailing mark.

        Returns:
            the breach, or None (also for a symbol with no position, and for a
            position whose exit was already sent: see :meth:`sent`).
        """
        lv = self._levels.get(bar.symbol)
        if lv is None:
            return None
        trigger: Trigger | None = None
        if not lv.pending:
            trigger = _breach(lv, bar, bar.symbol in self._native)
        if lv.trail:
            if lv.long and bar.high > lv.extreme:
                lv.extreme = bar.high
                self._set_trail(lv)
            elif not lv.long and bar.low < lv.extreme:
                lv.extreme = bar.low
                self._set_trail(lv)
        return trigger

    def sent(self, symbol: str, client_order_id: str) -> None:
        """The exit order ``client_order_id`` closes ``symbol``'s position: check no more."""
        lv = self._levels.get(symbol)
        if lv is not None:
            lv.pending = client_order_id

    def pending(self, symbol: str) -> str:
        """The client order id of the exit sent for ``symbol``'s position, or ""."""
        lv = self._levels.get(symbol)
        return lv.pending if lv is not None else ""

    def rearm(self, symbol: str) -> None:
        """The exit sent for ``symbol`` ended without closing it: check its bars again."""
        lv = self._levels.get(symbol)
        if lv is not None:
            lv.pending = ""

    def _set_trail(self, lv: _Levels) -> None:
        if self._tr:
            m = lv.extreme
            lv.trail = round_price(m * (1.0 - self._tr) if lv.long else m * (1.0 + self._tr))


def _breach(lv: _Levels, bar: BarClosed, native: bool) -> Trigger | None:
    stop, trail, take, entry = lv.stop, lv.trail, lv.take, lv.entry
    if native:  # the broker's bracket legs hold these two
        stop = take = 0.0
    if lv.long:
        low = bar.low
        # Of the two stops, the higher is the one a falling price meets first.
        if trail and low <= trail and (not stop or trail > stop):
            return Trigger("trailing_stop", trail, low, entry)
        if stop and low <= stop:
            return Trigger("stop_loss", stop, low, entry)
        if take and bar.high >= take:
            return Trigger("take_profit", take, bar.high, entry)
        return None
    high = bar.high
    if trail and high >= trail and (not stop or trail < stop):
        return Trigger("trailing_stop", trail, high, entry)
    if stop and high >= stop:
        return Trigger("stop_loss", stop, high, entry)
    if take and bar.low <= take:
        return Trigger("take_profit", take, bar.low, entry)
    return None
