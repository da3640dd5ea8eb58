"""Fill rules: how an open order meets a bar. Pure functions, shared by replay and the sandbox.

An order may only fill on a bar that closes *after* the order was submitted,
so a signal can never fill on the bar that produced it (no look-ahead). Then:

=============  ==============================================================
market         the bar's open, moved against the order by ``slippage_bps``.
limit          buy: open if open <= limit (gap through), else the limit if
               low <= limit. Sell mirrors with high. No slippage (a resting
               limit is never filled worse than its price).
stop           buy: triggered if open >= stop (fills at open) or high >= stop
               (fills at stop); sell mirrors with low. Then slippage, as for
               market orders.
stop_limit     triggered like a stop. Triggered at the open, it is a limit from
               there (open if within the limit). Triggered inside the bar, it
               fills at the stop only if the limit allows that price
               (buy: limit >= stop); otherwise it rests as a limit from the
               next bar, because the order of prices inside a bar is unknown.
=============  ==============================================================

Quantities: a notional order becomes whole shares at the fill price, rounded
down so that shares x price + commission <= notional (fractional shares to 1e-9
when allowed). ``max_participation`` < 1 caps each bar's fill at that share of
the bar's volume; the rest waits for later bars (partial fills).

Prices are rounded to the tick (:func:`trader.money.round_price`) after
slippage: that is the broker boundary of the money rule.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal

from trader.config import BrokerConfig
from trader.messages import BarClosed, OrderType, Side
from trader.money import floor_shares, round_price, to_cents, value_cents


def match(
    *,
    side: Side,
    order_type: OrderType,
    limit_price: float | None,
    stop_price: float | None,
    triggered: bool,
    bar: BarClosed,
    slippage_bps: float,
) -> tuple[float | None, bool]:
    """Where (if anywhere) this order trades in ``bar``.

    Returns:
        ``(price or None, triggered)``: the fill price before quantity rules, and
        whether a stop has been triggered (it stays triggered for later bars).
    """
    buy = side == "buy"
    o, h, lo = bar.open, bar.high, bar.low
    if order_type == "market":
        return _slip(o, buy, slippage_bps), triggered
    if order_type == "limit":
        return _limit_price(buy, limit_price, o, h, lo), triggered
    assert stop_price is not None, "stop orders carry a stop price"
    if not triggered:
        at_open = o >= stop_price if buy else o <= stop_price
        inside = h >= stop_price if buy else lo <= stop_price
        if at_open:
            if order_type == "stop":
                return _slip(o, buy, slippage_bps), True
            return _limit_price(buy, limit_price, o, h, lo), True
        if inside:
            if order_type == "stop":
                return _slip(stop_price, buy, slippage_bps), True
            assert limit_price is not None
            allowed = limit_price >= stop_price if buy else limit_price <= stop_price
            return (stop_price if allowed else None), True
        return None, False
    if order_type == "stop":  # triggered on an earlier bar: now a market order
        return _slip(o, buy, slippage_bps), True
    return _limit_price(buy, limit_price, o, h, lo), True


def _limit_price(buy: bool, limit: float | None, o: float, h: float, lo: float) -> float | None:
    assert limit is not None, "limit orders carry a limit price"
    if buy:
        if o <= limit:
            return o
        return limit if lo <= limit else None
    if o >= limit:
        return o
    return limit if h >= limit else None


def _slip(price: float, buy: bool, bps: float) -> float:
    if not bps:
        return price
    return price * (1 + bps / 10_000) if buy else price * (1 - bps / 10_000)


def commission_cents(config: BrokerConfig, qty: float, price: float) -> int:
    """Commission for one execution, in cents."""
    c = config.commission
    if c.model == "bps":
        return to_cents(value_cents(qty, price) / 100 * c.bps / 10_000) if c.bps else 0
    # The exact decimal product, rounded once: in float, 41 x 0.005 is
    # 0.20500000000000002, which would round a half cent up, not to even.
    exact = Decimal(repr(qty)) * Decimal(repr(c.per_share_usd)) * 100
    fee = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return max(fee, to_cents(c.minimum_usd))


def notional_shares(config: BrokerConfig, notional_cents: int, price: float) -> float:
    """The most shares ``notional_cents`` buys at ``price`` with commission included
    (whole shares, or 1e-9 increments when fractional)."""
    if notional_cents <= 0:
        return 0.0
    c = config.commission
    # First guess with the commission rate folded into the price; if that does
    # not fit, bisect for the largest quantity below it that does (value and
    # commission only grow with quantity). Stepping down one increment at a
    # time took ~1e8 steps when a minimum commission dominates a fractional
    # order (1e-9 shares per step).
    per_share = price * c.bps / 10_000 if c.model == "bps" else c.per_share_usd
    qty = floor_shares(notional_cents, price + per_share, fractional=config.fractional)
    scale = 1e9 if config.fractional else 1.0

    def fits(units: int) -> bool:
        q = units / scale
        return value_cents(q, price) + commission_cents(config, q, price) <= notional_cents

    lo, hi = 0, round(qty * scale)
    if hi <= 0 or fits(hi):
        return max(qty, 0.0)
    while hi - lo > 1:  # fits(lo) (no shares at all) and not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo / scale


def participation_cap(config: BrokerConfig, qty: float, bar_volume: float) -> float:
    """``qty`` capped at ``max_participation`` of the bar's volume."""
    if config.max_participation >= 1.0:
        return qty
    cap = bar_volume * config.max_participation
    return min(qty, cap if config.fractional else float(math.floor(cap)))


def tick(price: float) -> float:
    """Round a fill price to the tick (the broker boundary)."""
    return round_price(price)
