"""The sandbox market: a clock driven by the data, and the exchange it drives.

Life of a bar timestamp ``T`` (every bar closing at ``T``, in symbol order)::

    exchange.on_bar(bar) for each bar     fills happen *during* the bar
      -> trade updates published          (new/partial_fill/fill/...)
    bars published to data subscribers    the bar is now public history
    watermark = T                         REST history serves bars <= T
    exchange.expire_until(T)              day orders whose session closed

Session closes are events too: when the clock passes one, day orders expire,
``last_equity`` and the previous-close prices (for ``lastday_price``) are
snapshotted.

Two ways to move the clock:

* ``speed`` a number: the sandbox clock runs at ``speed`` x wall time from
  ``start`` (1 = real time, 60 = an hour of market per wall minute), and
  :meth:`Market.run` wakes at each bar close and each session close;
* ``speed="max"``: the clock moves only when asked, :meth:`Market.advance`
  (or ``POST /admin/advance``), and each step runs as fast as the CPU allows.
  That is the deterministic mode for tests.

The fill logic is :class:`trader.brokers.simulated.Exchange`, the very class
replay drives; this module only decides *when* it sees each bar.

What it is not: a network server (see :mod:`trader.sandbox.app`).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Literal

import anyio
from anyio.abc import TaskStatus

from trader import calendar
from trader.brokers.simulated import Exchange, ExecReport, SimOrder
from trader.errors import BrokerRejected
from trader.messages import BarClosed, OrderType, Side, TimeInForce
from trader.sandbox import wire
from trader.sandbox.tape import Tape
from trader.sandbox.wire import Json

Speed = float | Literal["max"]
_COIDS = uuid.UUID("5e1d9a3c-7b8f-4e2a-9c6d-0f1e2d3c4b5a")
BarListener = Callable[[int, Sequence[BarClosed]], None]
ReportListener = Callable[[Sequence[ExecReport]], None]


class ClockNotManual(RuntimeError):
    """``advance`` was called while the clock follows wall time (speed is a number)."""


class Market:
    """The sandbox clock, the tape and the exchange, moved together.

    Args:
        tape: the bars.
        exchange: the simulated exchange (fills, ledger).
        speed: wall-time multiplier, or ``"max"`` for a clock moved by :meth:`advance`.
        start_ns: where the clock starts; bars closing at or before it are
            history (served by REST, never traded). Default: the start of the
            first bar.
    """

    def __init__(
        self,
        tape: Tape,
        exchange: Exchange,
        *,
        speed: Speed = "max",
        start_ns: int | None = None,
    ) -> None:
        if speed != "max" and not speed > 0:
            raise ValueError(f"speed must be positive or 'max', not {speed!r}")
        self.tape = tape
        self.exchange = exchange
        self.speed: Speed = speed
        if start_ns is None:
            start_ns = tape.first_start_ns() or time.time_ns()
        self.start_ns = start_ns
        self._now_ns = start_ns
        self._anchor_wall_ns: int | None = None
        self._anchor_ns = start_ns
        self._cursor = tape.cursor_after(start_ns)
        self.watermark_ns = start_ns
        self._next_close_ns = calendar.next_close_ns(start_ns)
        self._lock = anyio.Lock()
        self._coid_seq = 0
        self.bar_listeners: list[BarListener] = []
        self.report_listeners: list[ReportListener] = []
        # A replace is a cancel plus a new order; the exchange knows neither
        # link, so the sandbox keeps them to render ``replaced_by``/``replaces``.
        self.replaced_by: dict[str, str] = {}
        self.replaces: dict[str, str] = {}
        ledger = exchange.ledger
        prev_close = _last_close_at_or_before(start_ns)
        self.lastday_price: dict[str, float] = {}
        for s in tape.symbols:
            i = tape.last_row_at_or_before(s, start_ns)
            if i >= 0:
                ledger.mark(s, float(tape.tables[s].close[i]))
            j = tape.last_row_at_or_before(s, prev_close)
            if j >= 0:
                self.lastday_price[s] = float(tape.tables[s].close[j])
        self.last_equity_cents = ledger.equity_cents()

    # --- the clock -------------------------------------------------------------------

    def now_ns(self) -> int:
        """The sandbox time, UTC ns (what orders are stamped with)."""
        if self._anchor_wall_ns is None or self.speed == "max":
            return self._now_ns
        elapsed = time.monotonic_ns() - self._anchor_wall_ns
        return self._anchor_ns + int(elapsed * self.speed)

    def next_bar_ns(self) -> int | None:
        """Close time of the next bar not yet published, or None at the end of the data."""
        if self._cursor >= self.tape.merged_len():
            return None
        return self.tape.merged_ts(self._cursor)

    async def advance(self, bars: int | None = None, until_ns: int | None = None) -> int:
        """Move a ``"max"`` clock: through the next ``bars`` bar timestamps, or to ``until_ns``.

        Each bar timestamp is traded and published before the next one. The
        clock ends at the last bar close reached (``bars``) or at ``until_ns``.

        Returns:
            How many bar timestamps were published.

        Raises:
            ClockNotManual: the clock follows wall time.
            ValueError: neither or both of ``bars`` and ``until_ns`` given.
        """
        if self.speed != "max":
            raise ClockNotManual("advance() needs speed='max'")
        if (bars is None) == (until_ns is None):
            raise ValueError("give exactly one of bars and until_ns")
        async with self._lock:
            done = 0
            if bars is not None:
                while done < bars:
                    t = self.next_bar_ns()
                    if t is None:
                        break
                    done += await self._run_until(t)
                return done
            assert until_ns is not None
            return await self._run_until(until_ns)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow wall time at ``speed`` until cancelled (with ``"max"``: just wait)."""
        if self.speed == "max":
            task_status.started()
            await anyio.sleep_forever()
        speed = float(self.speed)
        self._anchor_ns = self._now_ns
        self._anchor_wall_ns = time.monotonic_ns()
        task_status.started()
        while True:
            await self._run_until(self.now_ns())
            nxt = self._next_close_ns
            bar = self.next_bar_ns()
            if bar is not None:
                nxt = min(nxt, bar)
            await anyio.sleep(max(nxt - self.now_ns(), 0) / speed / 1e9)

    async def _run_until(self, until_ns: int) -> int:
        published = 0
        while True:
            bar_t = self.next_bar_ns()
            close_t = self._next_close_ns
            if bar_t is not None and bar_t <= until_ns and bar_t <= close_t:
                self._publish_bars(bar_t)
                published += 1
            elif close_t <= until_ns:
                self._close_session(close_t)
            else:
                break
            await anyio.lowlevel.checkpoint()
        if until_ns > self._now_ns:
            self._now_ns = until_ns
        self._emit(self.exchange.expire_until(until_ns))
        return published

    def _publish_bars(self, t: int) -> None:
        tape = self.tape
        bars: list[BarClosed] = []
        while self._cursor < tape.merged_len() and tape.merged_ts(self._cursor) == t:
            bars.append(tape.merged_bar(self._cursor))
            self._cursor += 1
        self._now_ns = max(self._now_ns, t)
        reports: list[ExecReport] = []
        for bar in bars:
            reports.extend(self.exchange.on_bar(bar))
        self._emit(reports)
        self.watermark_ns = t
        for listener in self.bar_listeners:
            listener(t, bars)
        self._emit(self.exchange.expire_until(t))

    def _close_session(self, close_ns: int) -> None:
        self._now_ns = max(self._now_ns, close_ns)
        self._emit(self.exchange.expire_until(close_ns))
        self.last_equity_cents = self.exchange.ledger.equity_cents()
        self.lastday_price = dict(self.exchange.ledger.last_price)
        self._next_close_ns = calendar.next_close_ns(close_ns)

    def _emit(self, reports: Sequence[ExecReport]) -> None:
        if reports:
            for listener in self.report_listeners:
                listener(reports)

    # --- orders (the exchange, stamped with the sandbox clock) ----------------------

    def submit(
        self,
        *,
        client_order_id: str,
        symbol: str,
        side: Side,
        qty: float | None,
        notional_cents: int | None,
        order_type: OrderType,
        limit_price: float | None,
        stop_price: float | None,
        time_in_force: TimeInForce,
        take_profit_price: float | None = None,
        stop_loss_price: float | None = None,
    ) -> ExecReport:
        """Submit at the sandbox time and publish the ``new`` event.

        Raises:
            trader.errors.BrokerRejected: as :meth:`Exchange.submit`.
        """
        report = self.exchange.submit(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            qty=qty,
            notional_cents=notional_cents,
            order_type=order_type,
            limit_price=limit_price,
            stop_price=stop_price,
            time_in_force=time_in_force,
            now_ns=self.now_ns(),
            take_profit_price=take_profit_price,
            stop_loss_price=stop_loss_price,
        )
        self._emit([report])
        return report

    def cancel(self, order_id: str) -> ExecReport:
        """Cancel at the sandbox time and publish the ``canceled`` event.

        Raises:
            trader.errors.BrokerRejected: unknown (404) or not cancelable (422).
        """
        report = self.exchange.cancel(order_id, self.now_ns())
        self._emit([report])
        return report

    def next_client_order_id(self) -> str:
        """A client order id for an order that came without one (deterministic, so two
        runs of a test see the same ids)."""
        self._coid_seq += 1
        return str(uuid.uuid5(_COIDS, f"coid:{self._coid_seq}"))

    def replace(
        self,
        order_id: str,
        *,
        client_order_id: str,
        qty: float | None,
        limit_price: float | None,
        stop_price: float | None,
        time_in_force: TimeInForce | None,
    ) -> ExecReport:
        """Replace an open order: a new order with the changes, then the old one
        canceled (reported as ``replaced``). The new order is booked first, so
        a refused replacement leaves the old order untouched.

        Raises:
            trader.errors.BrokerRejected: unknown order (404), not open or a
                notional order (422), or the new order is refused.
        """
        old = self.exchange.orders.get(order_id)
        if old is None:
            raise BrokerRejected("order not found", code="40410000", status=404)
        if not old.is_open or old.qty is None:
            raise BrokerRejected(
                f"order is not replaceable (status {old.status})", code="42210000", status=422
            )
        new = self.exchange.submit(
            client_order_id=client_order_id,
            symbol=old.symbol,
            side=old.side,
            qty=qty if qty is not None else round(old.qty - old.filled_qty, 9),
            notional_cents=None,
            order_type=old.order_type,
            limit_price=limit_price if limit_price is not None else old.limit_price,
            stop_price=stop_price if stop_price is not None else old.stop_price,
            time_in_force=time_in_force or old.time_in_force,
            now_ns=self.now_ns(),
        )
        self.replaced_by[old.id] = new.order.id
        self.replaces[new.order.id] = old.id
        canceled = self.exchange.cancel(old.id, self.now_ns(), reason="replaced")
        self._emit([canceled, new])
        return new

    # --- rendering (the replace links live here, not in the exchange) ---------------

    def order_json(self, o: SimOrder, status: str | None = None) -> Json:
        """The Alpaca Order for ``o`` (``replaced`` if a replace canceled it)."""
        replaced_by = self.replaced_by.get(o.id)
        if replaced_by is not None and o.status == "canceled":
            status = "replaced"
        legs = [self.order_json(self.exchange.orders[i]) for i in o.legs] if o.legs else None
        return wire.order(
            o, status=status, replaced_by=replaced_by, replaces=self.replaces.get(o.id),
            legs=legs,
        )

    def update_json(self, report: ExecReport) -> Json:
        """The trade-updates message for one exchange report."""
        event: str = report.event
        if event == "canceled" and report.order.id in self.replaced_by:
            event = "replaced"
        return wire.trade_update(report, self.order_json(report.order), event)


def _last_close_at_or_before(ts_ns: int) -> int:
    day = (
        dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ts_ns // 1000)
    ).date()
    for s in reversed(calendar.sessions(day - dt.timedelta(days=15), day + dt.timedelta(days=1))):
        if s.close_ns <= ts_ns:
            return s.close_ns
    return ts_ns - 15 * 86_400 * 1_000_000_000
