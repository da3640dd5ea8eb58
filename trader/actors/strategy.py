"""The strategy actor: bars in, signals out.

The decision itself is the strategy's pure ``on_bar`` (see trader.strategies);
this actor only feeds it and turns weights into ``SignalEmitted`` messages.

In replay a ``BarsClosed`` batch may span many timestamps. When the strategy
signals, the actor finishes the bars of that same timestamp and stops there:
it tells the feed where with ``BatchCut``, so the later bars are released only
after the order has reached the simulated market, as it would live.

A new incarnation replays ``warmup`` silently before its first batch: at
start, the journal's recent bars; after a crash in a daemon, the journal's
bars as of the restart (everything its predecessors consumed is committed
first), so the indicators continue the series instead of restarting it. It
is then told the positions the journal last recorded (``positions``), so a
strategy whose exits depend on its position (breakout's trailing stop) keeps
managing one entered before its warm-up window or before a crash. In a
daemon the batch it crashed on is kept (``keep_crashed``): a bar reaches the
journal only once the strategy has consumed it, so dropping it would lose it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from trader.actors.base import InboxActor, Outbox
from trader.channels import Channel
from trader.messages import (
    BarClosed,
    BarsClosed,
    BatchCut,
    Message,
    PositionChanged,
    SignalEmitted,
)
from trader.strategies.base import Strategy


class StrategyActor(InboxActor):
    """Drives one strategy instance."""

    name = "strategy"

    def __init__(
        self,
        inbox: Channel[Message],
        outbox: Outbox,
        *,
        strategy: Strategy,
        instance: str,
        warmup: Sequence[BarClosed] | Callable[[], Awaitable[Sequence[BarClosed]]] = (),
        positions: Callable[[], Awaitable[Mapping[str, float]]] | None = None,
        keep_crashed: bool = False,
    ) -> None:
        """
        Args:
            warmup: the bars to replay first, or an async function returning them.
            positions: an async function returning the quantity held per
                symbol, told to the strategy after the warm-up (a daemon).
            keep_crashed: put a batch it crashed on back for the next
                incarnation (a daemon; the replay feed re-releases it instead).
        """
        super().__init__(inbox, outbox)
        self._strategy = strategy
        self._instance = instance
        self._warmup = warmup
        self._positions = positions
        self.keep_crashed = keep_crashed

    async def setup(self) -> None:
        # Rebuild indicators from bars already journaled; their signals were
        # acted on (or not) by the incarnation that saw them, so none is emitted.
        bars = self._warmup if isinstance(self._warmup, Sequence) else await self._warmup()
        on_bar = self._strategy.on_bar
        for bar in bars:
            on_bar(bar)
        # After the bars: the warm-up's own entries and exits are what the
        # strategy meant, the recorded positions what actually happened.
        if self._positions is not None:
            held = await self._positions()
            for symbol in sorted(held):
                self._strategy.on_position(symbol, held[symbol])

    def handle(self, msg: Message) -> None:
        if isinstance(msg, BarsClosed):
            self._on_bars(msg)
        elif isinstance(msg, PositionChanged):
            self._strategy.on_position(msg.symbol, msg.qty)

    def _on_bars(self, msg: BarsClosed) -> None:
        on_bar = self._strategy.on_bar
        bars = msg.bars
        signals: list[SignalEmitted] = []
        consumed = len(bars)
        for i, bar in enumerate(bars):
            if signals and bar.ts_ns != signals[-1].ts_ns:
                consumed = i
                break
            weight = on_bar(bar)
            if weight is not None:
                signals.append(
                    SignalEmitted(
                        ts_ns=bar.ts_ns,
                        strategy=self._instance,
                        symbol=bar.symbol,
                        target_weight=weight,
                        price=bar.close,
                    )
                )
        # Downstream sees exactly the bars the strategy has seen, before the
        # signals they caused, so risk never sizes on a later price.
        seen = msg if consumed == len(bars) else BarsClosed(
            ts_ns=bars[consumed - 1].ts_ns, bars=bars[:consumed]
        )
        self._out.post(seen)
        for signal in signals:
            self._out.post(signal)
        if consumed < len(bars):
            self._out.post(BatchCut(ts_ns=seen.ts_ns))
