"""The strategy contract.

A strategy sees closed bars one at a time, in (time, symbol) order, and may
answer with a new target weight for that bar's symbol (1.0 = all equity long,
0.0 = flat, -1.0 = all equity short). It is told its actual position after
every fill, so exits can depend on it. Updates must be O(1) per bar.

It is pure and synchronous: no I/O, no clock, no randomness. That is what lets
replay and live produce the same signals from the same bars.

A daemon rebuilds a new strategy instance (after a restart or a crash) by
replaying the journal's recent bars to it, then telling it the positions the
journal last recorded. A strategy whose indicators need more than
:data:`DEFAULT_WARMUP_BARS` bars per symbol says so with a ``warmup_bars``
attribute; the daemon then reads that many.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import msgspec

from trader.messages import BarClosed

#: Bars per symbol a daemon replays to a new strategy instance, at least.
DEFAULT_WARMUP_BARS = 512


def warmup_bars(strategy: object) -> int:
    """Bars per symbol ``strategy`` needs to be warm (its optional ``warmup_bars``)."""
    return max(DEFAULT_WARMUP_BARS, int(getattr(strategy, "warmup_bars", 0)))


class Strategy(Protocol):
    """What the strategy actor drives."""

    Params: ClassVar[type[msgspec.Struct]]

    def __init__(self, params: Any) -> None:
        ...

    def on_bar(self, bar: BarClosed) -> float | None:
        """Return a new target weight for ``bar.symbol``, or None to hold."""
        ...

    def on_position(self, symbol: str, qty: float) -> None:
        """The position in ``symbol`` is now ``qty`` shares."""
        ...
