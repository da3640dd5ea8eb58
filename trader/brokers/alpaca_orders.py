"""The Alpaca adapter's per-order ledger: what we have told the graph about each
order, and when to poll it.

Stream updates and polled order states both land here, and each fact leaves
once: an execution by its id (stream) or by the growth of the cumulative
filled quantity (polls, with an execution id derived from the order id and
that quantity). Pure and synchronous; the adapter (:mod:`trader.brokers.alpaca`)
does the I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from trader.brokers.alpaca_wire import (
    WireOrder,
    WireUpdate,
    accepted_message,
    parse_ts,
    side_of,
    status_event,
)
from trader.messages import (
    ClientOrderId,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
)
from trader.money import round_price

log = structlog.get_logger("trader.brokers.alpaca")

_EPS = 1e-9
_EXEC_IDS = uuid.UUID("3b0f8f3e-6a51-4f0e-9d1c-7f2b8e5a4c10")
_PRE_NEW = frozenset({"accepted", "pending_new", "accepted_for_bidding", "held", "pending_review"})
_POLL_MAX_S = 60.0  # a quiet resting order is re-read at least this often
_MISSES = 3  # 404s in a row before a never-acknowledged submit is given up
_DONE_KEPT = 10_000  # finished orders remembered, so late stream events are dropped


class Track:
    """What we have told the graph about one order, and its polling schedule."""

    __slots__ = ("accepted", "coid", "cum_qty", "cum_value", "done", "exec_ids", "interval",
                 "market", "misses", "next_poll", "order_id", "symbol")

    def __init__(self, coid: str, symbol: str, next_poll: float, interval: float) -> None:
        self.coid = coid
        self.symbol = symbol
        self.order_id = ""
        self.accepted = False
        self.cum_qty = 0.0  # filled quantity covered by emitted fills
        self.cum_value = 0.0  # sum of qty * price over emitted fills
        self.done = False
        self.exec_ids: set[str] = set()
        self.next_poll = next_poll
        self.interval = interval
        self.misses = 0
        # A market order is due to fill at once; a resting limit or stop order
        # is not, so only market orders are polled before a bar is released.
        self.market = False


class Orders:
    """Turns stream updates and polled order states into messages, each fact once.

    Args:
        timeout_s: ``update_timeout_s``: poll an order after this long without news.
        now_ns: fallback event time when the broker gives none.
    """

    def __init__(self, timeout_s: float, now_ns: Callable[[], int]) -> None:
        self._timeout = timeout_s
        self._now_ns = now_ns
        self._live: dict[str, Track] = {}
        self._done: dict[str, Track] = {}  # insertion order = finishing order
        self.stream_up = False
        # A bracket leg's client order id -> its entry's. Alpaca names legs
        # itself and links them only from the entry (its ``legs``), so we
        # remember every link we see (the submit's answer, updates, polls).
        self.parents: dict[str, str] = {}

    def note_legs(self, o: WireOrder) -> None:
        """Remember which entry ``o``'s legs (if any) belong to."""
        for leg in o.legs or ():
            self.parents[leg.client_order_id] = o.client_order_id

    def get(self, coid: str) -> Track | None:
        return self._live.get(coid) or self._done.get(coid)

    def is_live(self, coid: str) -> bool:
        return coid in self._live

    def live(self) -> list[Track]:
        return list(self._live.values())

    def expect(self, coid: str, symbol: str, now: float) -> bool:
        """Watch an order we are about to submit; True if this created its track."""
        if self.get(coid) is not None:
            return False
        self._live[coid] = Track(coid, symbol, now + self._timeout, self._timeout)
        return True

    def submitted(self, coid: str, symbol: str, now: float) -> None:
        """The submit went through: expect its first update within the timeout."""
        self.expect(coid, symbol, now)
        t = self._live.get(coid)
        if t is not None:
            t.misses = 0
            t.next_poll = max(t.next_poll, now + self._timeout)

    def forget(self, coid: str) -> None:
        self._live.pop(coid, None)

    def rebase(self, open_orders: Sequence[WireOrder], now: float) -> None:
        """Start of a stream: take the broker's open orders as already reported.

        The execution actor reconciles from the broker's state right after the
        stream starts, so what happened before now must not come again as
        events. Orders we were following that are no longer open finished (or
        never landed) while nobody listened: forget them, so a late first event
        for one starts afresh rather than being taken for a repeat.
        """
        self._live.clear()
        for o in open_orders:
            t = Track(o.client_order_id, o.symbol, now + self._timeout, self._timeout)
            t.order_id = o.id
            t.accepted = o.status not in _PRE_NEW
            t.cum_qty = o.filled_qty or 0.0
            t.cum_value = t.cum_qty * (o.filled_avg_price or 0.0)
            self._live[o.client_order_id] = t

    # --- polling schedule ----------------------------------------------------------

    def due(self, now: float) -> list[str]:
        return [t.coid for t in self._live.values() if t.next_poll <= now]

    def next_due(self) -> float | None:
        return min((t.next_poll for t in self._live.values()), default=None)

    def recover(self, now: float) -> None:
        """Poll every live order now (after a reconnect: events may have been missed)."""
        for t in self._live.values():
            t.next_poll = now
            t.interval = self._timeout

    def quiet(self, coid: str, now: float) -> None:
        """A poll brought nothing new (or failed): wait longer next time, unless the
        stream is down, when polling is the only source."""
        t = self._live.get(coid)
        if t is not None:
            if self.stream_up:
                t.interval = min(t.interval * 2, max(_POLL_MAX_S, self._timeout))
            t.next_poll = now + t.interval

    def missing(self, coid: str, now: float) -> None:
        """The broker does not know the order (404)."""
        t = self._live.get(coid)
        if t is None:
            return
        t.misses += 1
        if t.misses >= _MISSES and not t.accepted:
            log.warning("alpaca.order_unknown", client_order_id=coid, symbol=t.symbol)
            del self._live[coid]
        else:
            self.quiet(coid, now)

    # --- facts in, messages out ---------------------------------------------------

    def on_update(self, u: WireUpdate, now: float) -> list[OrderEvent]:
        """A trade-updates event."""
        ts = parse_ts(u.timestamp) or self._now_ns()
        event: str | None = u.event
        fill = None
        if event in ("fill", "partial_fill") and u.execution_id and u.qty and u.price:
            fill = (u.execution_id, u.qty, u.price)
        if event not in ("new", "fill", "partial_fill", "canceled", "expired", "rejected",
                         "replaced"):
            event = status_event(u.order.status)  # done_for_day, pending_cancel, ...
        return self._apply(u.order, event, fill, ts, now, heard=True)

    def on_state(self, o: WireOrder, now: float) -> list[OrderEvent]:
        """A polled order."""
        return self._apply(o, status_event(o.status), None, None, now, heard=False)

    def _apply(
        self,
        o: WireOrder,
        event: str | None,
        fill: tuple[str, float, float] | None,
        ts: int | None,
        now: float,
        *,
        heard: bool,
    ) -> list[OrderEvent]:
        coid = o.client_order_id
        self.note_legs(o)
        t = self.get(coid)
        if t is None:  # not ours, or placed before we started: follow it anyway
            t = self._live[coid] = Track(coid, o.symbol, now, self._timeout)
        if t.done or (fill is not None and fill[0] in t.exec_ids):
            return []
        t.order_id, t.symbol, t.misses = o.id, o.symbol or t.symbol, 0
        out: list[OrderEvent] = []
        common: dict[str, Any] = {
            "client_order_id": ClientOrderId(coid), "symbol": t.symbol, "broker_order_id": o.id,
        }
        if event == "rejected":
            reason = "rejected by the broker"
            out.append(OrderRejected(ts_ns=ts or self._order_ts(o, o.failed_at), reason=reason,
                                     **common))
            self._finish(t)
            return out
        if not t.accepted and (event is not None or o.status not in _PRE_NEW):
            out.append(accepted_message(o, ts or self._order_ts(o, o.submitted_at), common,
                                 parent=self.parents.get(coid, "")))
            t.accepted = True
        filled = o.filled_qty or 0.0
        fill_ts = ts or self._order_ts(o, o.filled_at)
        if fill is not None:
            exec_id, qty, price = fill
            if o.filled_qty is None:
                filled = t.cum_qty + qty
            before = filled - qty
            if before - t.cum_qty > _EPS:  # executions we never saw: fill the gap first
                value = filled * (o.filled_avg_price or price) - qty * price
                out.append(self._fill(t, o, before, value, None, fill_ts, common, last=False))
            if filled - t.cum_qty > _EPS:
                exact = abs(filled - t.cum_qty - qty) <= _EPS
                value = t.cum_value + qty * price if exact else filled * (
                    o.filled_avg_price or price)
                out.append(self._fill(t, o, filled, value, exec_id, fill_ts, common,
                                      last=True, price=price if exact else None,
                                      done=event == "fill"))
            t.exec_ids.add(exec_id)
        elif filled - t.cum_qty > _EPS:
            value = filled * (o.filled_avg_price or 0.0)
            out.append(self._fill(t, o, filled, value, None, fill_ts, common, last=True,
                                  done=event == "fill"))
        if event == "fill":
            self._finish(t)
        elif event == "canceled":
            out.append(OrderCanceled(ts_ns=ts or self._order_ts(o, o.canceled_at),
                                     filled_qty=t.cum_qty, **common))
            self._finish(t)
        elif event == "expired":
            out.append(OrderExpired(ts_ns=ts or self._order_ts(o, o.expired_at),
                                    filled_qty=t.cum_qty, **common))
            self._finish(t)
        elif event == "replaced":
            out.append(OrderReplaced(ts_ns=ts or self._order_ts(o, o.replaced_at),
                                     replaced_by=o.replaced_by or "", **common))
            self._finish(t)
        if not t.done:
            if heard or out:
                t.interval = self._timeout
                t.next_poll = now + self._timeout
            else:
                self.quiet(coid, now)
        return out

    def _order_ts(self, o: WireOrder, stamp: str | None) -> int:
        return parse_ts(stamp) or parse_ts(o.updated_at) or self._now_ns()

    def _fill(
        self,
        t: Track,
        o: WireOrder,
        cum_qty: float,
        cum_value: float,
        exec_id: str | None,
        ts: int,
        common: dict[str, Any],
        *,
        last: bool,
        price: float | None = None,
        done: bool = False,
    ) -> OrderFilled:
        qty = round(cum_qty - t.cum_qty, 9)
        if price is None:  # derived from averages: one delta of cumulative value
            price = round_price((cum_value - t.cum_value) / qty)
        if exec_id is None:
            exec_id = str(uuid.uuid5(_EXEC_IDS, f"{o.id}:{cum_qty:.9f}"))
        avg = o.filled_avg_price if last and o.filled_avg_price else cum_value / cum_qty
        filled = last and (done or o.status == "filled")
        t.cum_qty, t.cum_value = cum_qty, cum_value
        t.exec_ids.add(exec_id)
        return OrderFilled(
            ts_ns=ts, execution_id=exec_id, side=side_of(o.side), qty=qty, price=price,
            commission_cents=0, cum_qty=cum_qty, avg_price=round(avg, 6),
            status="filled" if filled else "partially_filled", **common,
        )

    def _finish(self, t: Track) -> None:
        t.done = True
        self._live.pop(t.coid, None)
        self._done[t.coid] = t
        if len(self._done) > _DONE_KEPT:
            del self._done[next(iter(self._done))]
