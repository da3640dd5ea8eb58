"""Pre-trade checks and breaker tests: small pure functions, one reason code each.

A check looks at one order (:class:`Intent`), a snapshot of the account
(:class:`Context`) and the limits (``[risk]``, :class:`~trader.config.RiskConfig`)
and returns ``None`` (pass) or a :class:`Denial`. The risk actor runs
:data:`GATES` before it sizes a signal (may this symbol trade at all now?) and
:data:`CHECKS` on the sized order; the first denial becomes an ``OrderDenied``
carrying its code. A limit of 0 means "no limit".

One rule runs through the size and exposure limits: an order is denied only
if, after it, the limit is exceeded *and* the measure is worse than before.
So an order that shrinks exposure always passes them (getting smaller is
always allowed), while the trading state, the rate limits, the duplicate
guard and the collar apply to every order.

Reason codes (journaled in ``OrderDenied.reason_code``): ``order_pending``,
``trading_state``, ``short_selling``, ``price_collar``, ``duplicate_intent``,
``symbol_order_rate``, ``order_rate``, ``max_open_orders``,
``max_order_notional``, ``max_position_shares``, ``max_position_notional``,
``max_gross_exposure``, ``max_net_exposure``, ``insufficient_buying_power``.

This module is *not* sizing (:mod:`trader.sizing`) and not the trading-state
machine (:mod:`trader.actors.risk`): no I/O, no clock (time is the intent's
``ts_ns``), no state of its own.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from functools import lru_cache

import msgspec

from trader import calendar
from trader.config import RiskConfig
from trader.messages import Side, TradingState
from trader.money import to_cents, value_cents

NS_PER_SECOND = 1_000_000_000
MINUTE_NS = 60 * NS_PER_SECOND


class Intent(msgspec.Struct, frozen=True, kw_only=True):
    """An order risk is about to send, as the checks see it.

    Attributes:
        ts_ns: the order's time (its signal's bar close).
        symbol, side: what and which way.
        qty: shares; for a notional buy, the estimate ``notional / price``.
        price: the order's reference price: its limit, else the price the
            signal was made at.
        notional_cents: what the order may spend or release (``qty x price``).
        reduces: the order shrinks the symbol's position without flipping it.
    """

    ts_ns: int
    symbol: str
    side: Side
    qty: float
    price: float
    notional_cents: int
    reduces: bool


class Context(msgspec.Struct, frozen=True, kw_only=True):
    """The account as the checks see it, just before the order.

    Attributes:
        state: the trading state.
        equity_cents, buying_power_cents: the account.
        position_qty: the symbol's position (negative = short).
        mark_price: the symbol's last trade (0 if none seen yet).
        gross_cents, net_cents: sum of |value| and of value over all positions.
        open_orders: orders sent and not final, all symbols.
        symbol_open_orders: those of this symbol.
        orders_ns, symbol_orders_ns: times of recent orders (ascending), all
            symbols and this symbol.
        last_same_intent_ns: time of the last order of this symbol and side.
    """

    state: TradingState = "ACTIVE"
    equity_cents: int = 0
    buying_power_cents: int = 0
    position_qty: float = 0.0
    mark_price: float = 0.0
    gross_cents: int = 0
    net_cents: int = 0
    open_orders: int = 0
    symbol_open_orders: int = 0
    orders_ns: Sequence[int] = ()
    symbol_orders_ns: Sequence[int] = ()
    last_same_intent_ns: int | None = None


class Denial(msgspec.Struct, frozen=True):
    """Why an order may not go: a stable code and a sentence for people."""

    code: str
    reason: str


Check = Callable[[Intent, Context, RiskConfig], Denial | None]


# --- arithmetic shared by the checks (and property-tested) -------------------------


def position_after(position_qty: float, side: Side, qty: float) -> float:
    """The symbol's position once ``qty`` shares of ``side`` have filled."""
    return round(position_qty + (qty if side == "buy" else -qty), 9) + 0.0


def shrinks(position_qty: float, side: Side, qty: float) -> bool:
    """Whether the order makes the position smaller without flipping its sign."""
    after = position_after(position_qty, side, qty)
    return abs(after) < abs(position_qty) and after * position_qty >= 0


def exposure_after(ctx: Context, intent: Intent) -> tuple[int, int]:
    """Gross and net exposure in cents once the order has filled at the mark."""
    mark = ctx.mark_price or intent.price
    before = value_cents(ctx.position_qty, mark)
    after = value_cents(position_after(ctx.position_qty, intent.side, intent.qty), mark)
    return ctx.gross_cents - abs(before) + abs(after), ctx.net_cents - before + after


def count_since(times_ns: Sequence[int], since_ns: int) -> int:
    """How many of the ascending ``times_ns`` are later than ``since_ns``."""
    return len(times_ns) - bisect_right(times_ns, since_ns)


# A limit typed in dollars, in cents: the same few config values every time,
# and to_cents goes through Decimal.
_limit_cents = lru_cache(maxsize=64)(to_cents)


def _pct_of(cents: int, pct: float) -> float:
    return cents * pct / 100.0


# --- gates: before sizing ----------------------------------------------------------


def check_order_pending(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """One order per symbol at a time: the next signal waits for the last order's end."""
    if ctx.symbol_open_orders:
        return Denial("order_pending", "an order for this symbol is still open")
    return None


def check_trading_state(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """HALTED sends nothing; REDUCING only orders that shrink a position."""
    if ctx.state == "HALTED" or (ctx.state == "REDUCING" and not intent.reduces):
        return Denial("trading_state", f"trading state is {ctx.state}")
    return None


# --- checks: on the sized order ------------------------------------------------------


def check_short_selling(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """A sell may take the position below zero only with ``allow_short``."""
    if (
        intent.side == "sell"
        and not cfg.allow_short
        and position_after(ctx.position_qty, "sell", intent.qty) < 0
    ):
        return Denial("short_selling", "short selling is not allowed (risk.allow_short)")
    return None


def check_price_collar(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """The order's price must lie within ``price_collar_pct`` of the last trade."""
    pct = cfg.price_collar_pct
    last = ctx.mark_price
    if pct and last > 0 and abs(intent.price - last) * 100.0 > pct * last:
        return Denial(
            "price_collar",
            f"price {intent.price:g} is more than {pct:g}% from the last trade {last:g}",
        )
    return None


def check_duplicate_intent(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """No second order of the same symbol and side within ``duplicate_window_s``."""
    window = cfg.duplicate_window_s
    last = ctx.last_same_intent_ns
    if window and last is not None and intent.ts_ns - last < window * NS_PER_SECOND:
        return Denial(
            "duplicate_intent",
            f"a {intent.side} of {intent.symbol} was sent {(intent.ts_ns - last) / 1e9:g}s "
            f"ago (window {window:g}s)",
        )
    return None


def check_symbol_order_rate(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """At most ``max_orders_per_minute_per_symbol`` orders of one symbol in 60 s."""
    limit = cfg.max_orders_per_minute_per_symbol
    if limit and count_since(ctx.symbol_orders_ns, intent.ts_ns - MINUTE_NS) >= limit:
        return Denial("symbol_order_rate", f"{limit} orders for {intent.symbol} in the last minute")
    return None


def check_order_rate(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """At most ``max_orders_per_minute`` orders in 60 s, all symbols together."""
    limit = cfg.max_orders_per_minute
    if limit and count_since(ctx.orders_ns, intent.ts_ns - MINUTE_NS) >= limit:
        return Denial("order_rate", f"{limit} orders in the last minute")
    return None


def check_max_open_orders(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """At most ``max_open_orders`` orders open at once."""
    limit = cfg.max_open_orders
    if limit and ctx.open_orders >= limit:
        return Denial("max_open_orders", f"{ctx.open_orders} orders open (limit {limit})")
    return None


def check_max_order_notional(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """An order that does not shrink a position is worth at most ``max_order_notional_usd``."""
    limit = cfg.max_order_notional_usd
    if limit and not intent.reduces and intent.notional_cents > _limit_cents(limit):
        return Denial(
            "max_order_notional",
            f"order worth {intent.notional_cents / 100:.2f} exceeds {limit:.2f}",
        )
    return None


def check_max_position_shares(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """At most ``max_position_shares`` shares of a symbol, long or short."""
    limit = cfg.max_position_shares
    if not limit:
        return None
    after = abs(position_after(ctx.position_qty, intent.side, intent.qty))
    if after > limit and after > abs(ctx.position_qty):
        return Denial("max_position_shares", f"{after:g} shares would exceed {limit}")
    return None


def check_max_position_notional(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """At most ``max_position_notional_usd`` in one symbol, at the last trade."""
    limit = cfg.max_position_notional_usd
    if not limit:
        return None
    mark = ctx.mark_price or intent.price
    before = abs(value_cents(ctx.position_qty, mark))
    after = abs(value_cents(position_after(ctx.position_qty, intent.side, intent.qty), mark))
    if after > _limit_cents(limit) and after > before:
        return Denial("max_position_notional",
                      f"position worth {after / 100:.2f} would exceed {limit:.2f}")
    return None


def check_gross_exposure(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """Sum of |position values| at most ``max_gross_exposure_pct`` of equity."""
    pct = cfg.max_gross_exposure_pct
    if not pct:
        return None
    gross, _ = exposure_after(ctx, intent)
    if gross > _pct_of(ctx.equity_cents, pct) and gross > ctx.gross_cents:
        return Denial("max_gross_exposure",
                      f"gross exposure {gross / 100:.2f} would exceed {pct:g}% of equity "
                      f"{ctx.equity_cents / 100:.2f}")
    return None


def check_net_exposure(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """|Sum of position values| at most ``max_net_exposure_pct`` of equity."""
    pct = cfg.max_net_exposure_pct
    if not pct:
        return None
    _, net = exposure_after(ctx, intent)
    if abs(net) > _pct_of(ctx.equity_cents, pct) and abs(net) > abs(ctx.net_cents):
        return Denial("max_net_exposure",
                      f"net exposure {net / 100:.2f} would exceed {pct:g}% of equity "
                      f"{ctx.equity_cents / 100:.2f}")
    return None


def check_buying_power(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """A buy may spend at most the buying power (cash less what open buys may spend)."""
    if intent.side == "buy" and intent.notional_cents > ctx.buying_power_cents:
        return Denial("insufficient_buying_power",
                      f"order worth {intent.notional_cents / 100:.2f} exceeds buying power "
                      f"{ctx.buying_power_cents / 100:.2f}")
    return None


def in_regular_session(ts_ns: int) -> bool:
    """The bar closing at ``ts_ns`` belongs to a regular NYSE session (open < ts <= close).

    The market calendar decides, not wall time; a daily bar, which closes at
    the session close, belongs to its session.
    """
    session = calendar.session_for(calendar.ny_date(ts_ns))
    return session is not None and session.open_ns < ts_ns <= session.close_ns


def check_regular_hours(intent: Intent, ctx: Context, cfg: RiskConfig) -> Denial | None:
    """No new entries from a bar outside regular hours (unless configured), nor inside
    the flatten-before-close window; exits always pass."""
    if intent.reduces:
        return None
    if not cfg.entries_outside_regular_hours and not in_regular_session(intent.ts_ns):
        return Denial("outside_regular_hours",
                      "the signal's bar closed outside a regular session; no new entries")
    if near_close(intent.ts_ns, cfg.flatten_before_close_min):
        return Denial("near_close", f"within {cfg.flatten_before_close_min:g} min of the "
                      "close, positions are being flattened; no new entries")
    return None


def near_close(ts_ns: int, minutes: float) -> bool:
    """``ts_ns`` is within ``minutes`` of its session's close (or after it, same day)."""
    if minutes <= 0:
        return False
    session = calendar.session_for(calendar.ny_date(ts_ns))
    if session is None:
        return False
    return session.open_ns < ts_ns and ts_ns >= session.close_ns - int(minutes * 60e9)


#: Run before sizing: whether the symbol may trade at all right now.
GATES: tuple[Check, ...] = (check_order_pending, check_trading_state)

#: Run on the sized order, cheapest and most telling first.
CHECKS: tuple[Check, ...] = (
    check_regular_hours,
    check_short_selling,
    check_price_collar,
    check_duplicate_intent,
    check_symbol_order_rate,
    check_order_rate,
    check_max_open_orders,
    check_max_order_notional,
    check_max_position_shares,
    check_max_position_notional,
    check_gross_exposure,
    check_net_exposure,
    check_buying_power,
)


def first_denial(
    checks: Sequence[Check], intent: Intent, ctx: Context, cfg: RiskConfig
) -> Denial | None:
    """The first check that refuses ``intent``, or None when all pass."""
    for check in checks:
        denial = check(intent, ctx, cfg)
        if denial is not None:
            return denial
    return None


# --- circuit breakers on the equity marks ---------------------------------------------


def drawdown_breached(high_water_cents: int, equity_cents: int, max_drawdown_pct: float) -> bool:
    """Equity has fallen ``max_drawdown_pct`` percent or more below its high-water mark."""
    return (
        max_drawdown_pct > 0
        and high_water_cents > 0
        and (high_water_cents - equity_cents) * 100.0 >= max_drawdown_pct * high_water_cents
    )


def daily_loss_breached(day_start_cents: int, equity_cents: int, limit_cents: int) -> bool:
    """Equity has lost ``limit_cents`` or more since the session's starting mark."""
    return limit_cents > 0 and day_start_cents - equity_cents >= limit_cents
