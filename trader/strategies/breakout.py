"""``breakout``: buy a close above the previous N bars' highest high.

Exit on an ATR trailing stop (the highest close since entry minus
``atr_mult`` x ATR) or on a close below the previous M bars' lowest low,
whichever comes first. Long only.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from trader.messages import BarClosed
from trader.strategies.indicators import Atr, RollingExtreme


class BreakoutParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Attributes:
    entry_lookback: N, bars of highs to break (default 20).
    exit_lookback: M, bars of lows for the channel exit (default 10).
    atr_period: ATR window (default 14).
    atr_mult: trailing stop distance in ATRs (default 3.0).
    weight: target weight when in the market (default 1.0).
    """

    entry_lookback: Annotated[int, Meta(ge=1)] = 20
    exit_lookback: Annotated[int, Meta(ge=1)] = 10
    atr_period: Annotated[int, Meta(ge=1)] = 14
    atr_mult: Annotated[float, Meta(gt=0.0)] = 3.0
    weight: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0


class _State:
    __slots__ = ("atr", "highs", "in_market", "lows", "peak_close")

    def __init__(self, p: BreakoutParams) -> None:
        self.highs = RollingExtreme(p.entry_lookback, highest=True)
        self.lows = RollingExtreme(p.exit_lookback, highest=False)
        self.atr = Atr(p.atr_period)
        self.in_market = False
        self.peak_close = 0.0


class Breakout:
    """Channel breakout with an ATR trailing stop; one state per symbol."""

    Params = BreakoutParams

    def __init__(self, params: BreakoutParams) -> None:
        self.params = params
        self._states: dict[str, _State] = {}

    @property
    def warmup_bars(self) -> int:
        # The channels are exact after their lookback; Wilder's ATR forgets its
        # start by a factor (1 - 1/n) per bar, so 40 periods leave a truncated
        # history's ATR within e^-40 (~4e-18) of the uninterrupted one.
        p = self.params
        return max(p.entry_lookback, p.exit_lookback) + 1 + 40 * p.atr_period

    def _state(self, symbol: str) -> _State:
        st = self._states.get(symbol)
        if st is None:
            st = self._states[symbol] = _State(self.params)
        return st

    def on_bar(self, bar: BarClosed) -> float | None:
        st = self._state(bar.symbol)
        # Compare with the channel of the *previous* bars, then add this one.
        upper = st.highs.value()
        lower = st.lows.value()
        atr = st.atr.push(bar.high, bar.low, bar.close)
        st.highs.push(bar.high)
        st.lows.push(bar.low)
        close = bar.close
        if not st.in_market:
            if upper is not None and atr is not None and close > upper:
                st.in_market = True
                st.peak_close = close
                return self.params.weight
            return None
        st.peak_close = max(st.peak_close, close)
        stop = st.peak_close - self.params.atr_mult * (atr or 0.0)
        if close < stop or (lower is not None and close < lower):
            st.in_market = False
            return 0.0
        return None

    def on_position(self, symbol: str, qty: float) -> None:
        # The broker's truth wins: an entry that never filled is not a position
        # to trail, and a position adopted at start-up is one.
        st = self._state(symbol)
        if qty > 0 and not st.in_market:
            st.in_market = True
            st.peak_close = 0.0
        elif qty <= 0 and st.in_market:
            st.in_market = False
