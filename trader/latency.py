"""Tick-to-order latency: from a bar's frame arriving to its order reaching the broker.

Definition (``trader_tick_to_order_seconds``, DESIGN.md "Operations"): for
each order that execution hands to the broker, the time from the moment the
live feed read the websocket frame carrying the bar that caused it, to the
moment execution calls ``Broker.submit`` with it (after the journal barrier:
the wait for the order to be on disk is part of the latency). The bar that
caused an order is identified by the order's symbol and time stamp: an order
carries its signal's time, which is its bar's close time (DESIGN.md, Time).

Both ends read :func:`time.perf_counter_ns`, a monotonic clock of this
process, never the graph's clock: the data clock says when the market closed
the bar, not how long we took, and in a backtest it jumps.

What it is not: a replay figure. Only the live feed records arrivals, so a
backtest, a REST backfill after a reconnect, and orders no bar caused (an
operator's flatten) observe nothing rather than a number that means nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from trader.messages import BarClosed

NS_PER_S = 1_000_000_000

KEEP_PER_SYMBOL = 8
"""Arrivals remembered per symbol: an order follows its bar within a few bars
(risk and execution work in order), and memory must not grow with uptime."""


class TickToOrder:
    """Bar arrival times from the feed, matched to orders at the broker boundary.

    Args:
        now_ns: the monotonic clock (tests pass a fake one).
        keep_per_symbol: arrivals remembered per symbol (the oldest is forgotten first).

    Set :attr:`observe` (``trader.metrics`` does, with its histogram) to
    receive each measured latency in seconds.
    """

    def __init__(
        self,
        *,
        now_ns: Callable[[], int] = time.perf_counter_ns,
        keep_per_symbol: int = KEEP_PER_SYMBOL,
    ) -> None:
        self.now_ns = now_ns
        self.observe: Callable[[float], None] | None = None
        self._keep = keep_per_symbol
        self._arrived: dict[str, deque[tuple[int, int]]] = {}

    def arrived(self, bars: Iterable[BarClosed], at_ns: int) -> None:
        """The feed read the frame carrying ``bars`` at ``at_ns`` (``now_ns`` time)."""
        for bar in bars:
            times = self._arrived.get(bar.symbol)
            if times is None:
                times = self._arrived[bar.symbol] = deque(maxlen=self._keep)
            times.append((bar.ts_ns, at_ns))

    def submitting(self, symbol: str, bar_ts_ns: int) -> float | None:
        """An order for ``symbol`` stamped ``bar_ts_ns`` goes to the broker now.

        Returns:
            the latency in seconds (also passed to :attr:`observe`), or None
            when no bar of that symbol and time came over the live stream.
        """
        times = self._arrived.get(symbol)
        if not times:
            return None
        for ts_ns, at_ns in reversed(times):
            if ts_ns == bar_ts_ns:
                seconds = (self.now_ns() - at_ns) / NS_PER_S
                if self.observe is not None:
                    self.observe(seconds)
                return seconds
        return None
