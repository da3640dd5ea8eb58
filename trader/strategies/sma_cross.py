"""``sma_cross``: trend following on two simple moving averages of closes.

Enter long when the fast SMA crosses strictly above the slow one (previous
bar fast < slow, this bar fast > slow); exit when it crosses strictly below.
The comparison is exact (integer sums of prices in millionths): equal
averages are equal, not a cross decided by rounding noise.
With ``long_short`` the exit goes short instead of flat. The target weight is
``weight`` (default 1.0: all equity, bought as a notional market order at the
next open in whole shares).
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from trader.messages import BarClosed
from trader.strategies.indicators import RollingSums


class SmaCrossParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Attributes:
    fast: fast window in bars (default 10).
    slow: slow window in bars (default 30; must exceed ``fast``).
    weight: target weight when in the market (default 1.0).
    long_short: go short on a downward cross instead of flat (default false).
    """

    fast: Annotated[int, Meta(ge=1)] = 10
    slow: Annotated[int, Meta(ge=2)] = 30
    weight: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0
    long_short: bool = False

    def __post_init__(self) -> None:
        if self.fast >= self.slow:
            raise ValueError("`fast` must be smaller than `slow`")


class _State:
    __slots__ = ("prev_diff", "sums")

    def __init__(self, p: SmaCrossParams) -> None:
        self.sums = RollingSums(p.fast, p.slow)
        self.prev_diff: int | None = None


class SmaCross:
    """Fast/slow SMA crossover; one state per symbol."""

    Params = SmaCrossParams

    def __init__(self, params: SmaCrossParams) -> None:
        self.params = params
        self._states: dict[str, _State] = {}

    @property
    def warmup_bars(self) -> int:
        # The slow window, and one bar more for the previous difference.
        return self.params.slow + 1

    def on_bar(self, bar: BarClosed) -> float | None:
        st = self._states.get(bar.symbol)
        if st is None:
            st = self._states[bar.symbol] = _State(self.params)
        sums = st.sums.push(bar.close)
        if sums is None:
            return None
        fast, slow = sums
        # sign(fast_sum/fast_n - slow_sum/slow_n), exactly, in integers.
        p = self.params
        diff = fast * p.slow - slow * p.fast
        prev, st.prev_diff = st.prev_diff, diff
        if prev is None:
            return None
        if prev < 0 < diff:
            return self.params.weight
        if prev > 0 > diff:
            return -self.params.weight if self.params.long_short else 0.0
        return None

    def on_position(self, symbol: str, qty: float) -> None:
        # Signals depend on prices only; the position does not change them.
        return None
