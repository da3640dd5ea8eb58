"""Every live websocket, and the fan-out from the market to them.

The market calls the hub synchronously for each bar timestamp and each batch
of exchange reports; the hub renders once per connection (data) or once per
report (trade updates) and drops the frames into the outboxes. The
``pause_trade_updates`` and ``pause_market_data`` faults are applied here:
fills still happen and bars still close, the events are simply not sent (and
not replayed later).

What it is not: a general pub/sub. Bars and reports come only from
:class:`trader.sandbox.market.Market`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import anyio
import msgspec

from trader.brokers.simulated import ExecReport
from trader.messages import BarClosed
from trader.sandbox.connection import Close, Connection, Credentials
from trader.sandbox.data_stream import DataConnection
from trader.sandbox.faults import Faults
from trader.sandbox.market import Market
from trader.sandbox.trade_stream import TradeConnection

_json_encoder = msgspec.json.Encoder()


@dataclass(eq=False)
class Hub:
    """Every live websocket, and the fan-out from the market to them."""

    market: Market
    faults: Faults
    credentials: Credentials
    auth_timeout_s: float = 10.0
    trade_binary: bool = True
    data_conns: set[DataConnection] = field(default_factory=set)
    trade_conns: set[TradeConnection] = field(default_factory=set)
    _slots: dict[tuple[str, str], DataConnection] = field(default_factory=dict)
    _changed: anyio.Event | None = None

    def __post_init__(self) -> None:
        self.market.bar_listeners.append(self._on_bars)
        self.market.report_listeners.append(self._on_reports)

    def notify(self) -> None:
        """Wake :meth:`wait_until` callers: a connection came, went, or changed state."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_until(self, predicate: Callable[[Hub], bool]) -> None:
        """Return once ``predicate(hub)`` holds (bound it with a timeout)."""
        while not predicate(self):
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def subscribed(self, channel: str, symbol: str) -> int:
        """How many authenticated data connections get ``symbol`` on ``channel``."""
        return sum(
            1
            for c in self.data_conns
            if c.key_id is not None and ({symbol, "*"} & c.subs[channel])
        )

    def take_slot(self, key_id: str, conn: DataConnection) -> bool:
        slot = (key_id, conn.path)
        holder = self._slots.get(slot)
        if holder is not None and holder is not conn:
            return False
        self._slots[slot] = conn
        return True

    def release(self, conn: DataConnection) -> None:
        if conn.key_id is not None and self._slots.get((conn.key_id, conn.path)) is conn:
            del self._slots[(conn.key_id, conn.path)]

    def all_connections(self) -> Iterable[Connection]:
        return [*self.data_conns, *self.trade_conns]

    def drop_all(self) -> int:
        """Cut every websocket now; returns how many."""
        conns = list(self.all_connections())
        for c in conns:
            c.drop()
        return len(conns)

    async def close_all(self) -> None:
        """Close every websocket gracefully (server shutdown)."""
        for c in list(self.all_connections()):
            c.put(Close())
            c.close_outbox()

    def _on_bars(self, ts_ns: int, bars: Sequence[BarClosed]) -> None:
        if self.faults.config.pause_market_data:
            return
        for conn in self.data_conns:
            conn.offer_bars(self.market.tape, bars)

    def _on_reports(self, reports: Sequence[ExecReport]) -> None:
        if self.faults.config.pause_trade_updates or not self.trade_conns:
            return
        for report in reports:
            payload = _json_encoder.encode(self.market.update_json(report))
            for conn in self.trade_conns:
                conn.offer(payload)
