"""Bracket orders in the simulated exchange: an entry and the legs that close it.

Alpaca's ``order_class = "bracket"`` (``"oto"`` with one leg) is an entry
order carrying a take profit (a limit order) and a stop loss (a stop order)
that close it. :class:`~trader.brokers.simulated.Exchange` models it so, for
replay and the sandbox alike:

* At submission the legs exist, ``held``: not working, not reported on the
  stream (the submit response lists them under ``legs``). Their client order
  ids derive from the entry's, ``<entry>-sl`` and ``<entry>-tp``, so a replay
  stays deterministic (Alpaca gives legs ids of its own).
* The entry's first fill makes the legs working orders for the shares filled
  (a ``new`` event each, naming the entry as parent); each later fill of the
  entry adds its shares to them. They trade under the ordinary fill rules from
  the **next** bar on: they were placed during the fill's bar, and an order
  fills only on a bar that closes after it was placed
  (:mod:`trader.brokers.fills`). So a stop is filled at the stop, or at the
  open of a bar that gaps through it; a take profit at its limit, or at a
  better open.
* The legs are one-cancels-other: a fill of one takes the same shares off the
  other, which is canceled once nothing is left (also after a partial fill).
  When one bar reaches both, the stop leg trades first (it was placed first):
  the pessimistic reading of a bar whose path is unknown.
* Legs have the entry's time in force (Alpaca: day or gtc): a gtc bracket's
  legs stay for the life of the position; a day bracket's expire at the close.
* While legs work, the shares they would close are **held**: a sell (a buy,
  for a short) for more than the position less the held shares is refused,
  403 "insufficient qty available for order", as Alpaca refuses it. So a
  flatten must cancel the legs first.
* An entry canceled before any fill cancels its held legs silently (they
  never worked).

What it is not: Alpaca's ``oco`` class on its own, stop-limit legs, or
replacing a leg's price.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from trader.errors import BrokerRejected
from trader.messages import Side
from trader.money import round_price

if TYPE_CHECKING:
    from trader.brokers.simulated import Exchange, ExecReport, SimOrder

_EPS = 1e-9


def validate(
    exchange: Exchange,
    *,
    symbol: str,
    side: Side,
    qty: float | None,
    take_profit_price: float | None,
    stop_loss_price: float | None,
) -> tuple[float | None, float | None]:
    """Check a bracket's levels against Alpaca's rules; return them rounded to the tick.

    Raises:
        BrokerRejected: a notional or fractional entry (brackets are whole-share
            orders), or levels on the wrong side of each other or of the last
            price (422).
    """
    tp = round_price(take_profit_price) if take_profit_price is not None else None
    sl = round_price(stop_loss_price) if stop_loss_price is not None else None
    if qty is None or not float(qty).is_integer():
        raise BrokerRejected("bracket orders must be whole-share qty orders (not notional "
                             "or fractional)", code="42210000", status=422)
    for name, level in (("take_profit.limit_price", tp), ("stop_loss.stop_price", sl)):
        if level is not None and level <= 0:
            raise BrokerRejected(f"{name} must be > 0", code="42210000", status=422)
    buy = side == "buy"
    base = exchange.ledger.last_price.get(symbol)
    if tp is not None and sl is not None and (tp <= sl if buy else tp >= sl):
        raise BrokerRejected("take_profit.limit_price must be on the profit side of "
                             "stop_loss.stop_price", code="42210000", status=422)
    if base is not None:
        if tp is not None and (tp < base + 0.01 if buy else tp > base - 0.01):
            raise BrokerRejected(f"take_profit.limit_price must be {'>=' if buy else '<='} "
                                 f"base_price {'+' if buy else '-'} 0.01 (base {base})",
                                 code="42210000", status=422)
        if sl is not None and (sl > base - 0.01 if buy else sl < base + 0.01):
            raise BrokerRejected(f"stop_loss.stop_price must be {'<=' if buy else '>='} "
                                 f"base_price {'-' if buy else '+'} 0.01 (base {base})",
                                 code="42210000", status=422)
    return tp, sl


def held_legs(parent: SimOrder, new_id: Callable[[], str]) -> list[SimOrder]:
    """The legs of a just-accepted bracket entry, ``held`` (stop loss first); ``new_id``
    gives each its broker order id."""
    from trader.brokers.simulated import SimOrder

    close: Side = "sell" if parent.side == "buy" else "buy"
    legs: list[SimOrder] = []
    for suffix, kind, limit, stop in (
        ("sl", "stop", None, parent.stop_loss_price),
        ("tp", "limit", parent.take_profit_price, None),
    ):
        if (stop if kind == "stop" else limit) is None:
            continue
        legs.append(SimOrder(
            id=new_id(), client_order_id=f"{parent.client_order_id}-{suffix}",
            symbol=parent.symbol, side=close, qty=parent.qty, notional_cents=None,
            order_type="stop" if kind == "stop" else "limit", limit_price=limit,
            stop_price=stop, time_in_force=parent.time_in_force, status="held",
            created_ns=parent.created_ns, updated_ns=parent.created_ns,
            order_class=parent.order_class, parent_client_order_id=parent.client_order_id,
        ))
    return legs


def available(exchange: Exchange, symbol: str, side: Side) -> float | None:
    """Shares of ``symbol``'s position an order of ``side`` may close while bracket legs
    hold some; None when no working leg holds any (no limit applies then)."""
    held: dict[str, float] = {}
    for o in exchange.open_orders():
        if o.symbol == symbol and o.side == side and o.parent_client_order_id:
            left = (o.qty or 0.0) - o.filled_qty
            # The two legs of one bracket hold the same shares (one cancels the other).
            held[o.parent_client_order_id] = max(held.get(o.parent_client_order_id, 0.0), left)
    if not held:
        return None
    position = exchange.ledger.qty(symbol)
    shares = position if side == "sell" else -position
    return max(round(shares - sum(held.values()), 9), 0.0)


def after_fill(exchange: Exchange, order: SimOrder, qty: float, ts_ns: int) -> list[ExecReport]:
    """What a fill of ``qty`` shares of ``order`` does to brackets: an entry's legs start
    working (or grow); a leg's sibling shrinks, and is canceled once nothing is left."""
    out: list[ExecReport] = []
    if order.legs:
        for leg_id in order.legs:
            leg = exchange.orders[leg_id]
            if leg.status == "held":
                leg.status = "new"
                leg.qty = qty
                leg.created_ns = leg.updated_ns = ts_ns
                out.append(exchange.activate(leg))
            elif leg.is_open:
                leg.qty = round((leg.qty or 0.0) + qty, 9)
        return out
    if not order.parent_client_order_id:
        return out
    parent = exchange.order_by_client_id(order.parent_client_order_id)
    if parent is None:
        return out
    for sibling_id in parent.legs:
        sibling = exchange.orders[sibling_id]
        if sibling is order or not sibling.is_open:
            continue
        sibling.qty = round((sibling.qty or 0.0) - qty, 9)
        if sibling.qty - sibling.filled_qty <= _EPS:
            out.append(exchange.cancel(sibling.id, ts_ns, reason="oco: the other leg filled"))
    return out


def drop_held(exchange: Exchange, parent: SimOrder) -> None:
    """An entry ended: legs that never started working are canceled, unreported."""
    for leg_id in parent.legs:
        leg = exchange.orders[leg_id]
        if leg.status == "held":
            leg.status = "canceled"
            leg.canceled_ns = leg.updated_ns = parent.updated_ns
            leg.reason = "the entry ended unfilled"
