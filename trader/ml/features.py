"""Features for the ML scorer, computed incrementally: O(1) per bar.

This is the *one* feature path. Training (:mod:`trader.ml.train`) pushes the
historical bars through a :class:`FeatureEngine` and reads a row at each
signal; the scorer actor pushes the live bars through another one and reads a
row at each signal it scores. Same code, same floating-point operations in the
same order, so a row is bit-for-bit the same in both
(``tests/test_ml_features.py`` checks it through the actor and a replay).

A row describes the symbol *as of its last bar*, which must be the bar that
produced the signal. Per-symbol features use that symbol's bars up to and
including it; the market-regime features use the universe average up to the
*previous* timestamp, because live the other bars of the current timestamp
may still be arriving, and a row must not depend on arrival order. A late bar
(older than the newest timestamp seen) updates its symbol but not the regime.

Values are scale-free (log returns, ratios to the close), so one model serves
symbols at any price. A feature that has not seen enough bars yet is NaN;
the models take NaN (HistGradientBoosting natively, the logistic baseline
through an imputer).

This module is not a strategy and emits nothing: it only describes bars.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Final

from trader.messages import BarClosed
from trader.strategies.indicators import Atr

#: The order of the columns of every feature row. A model records it in its
#: manifest; loading refuses a model trained on another list.
FEATURE_NAMES: Final = (
    "ret_1",          # log return over 1 bar
    "ret_5",          # ... over 5 bars
    "ret_20",         # ... over 20 bars
    "vol_20",         # realised volatility: std of 1-bar log returns, 20 bars
    "rsi_14",         # Wilder's RSI, 0..100
    "macd",           # (EMA12 - EMA26) / close
    "macd_signal",    # EMA9 of the MACD line / close
    "macd_hist",      # macd - macd_signal
    "atr_14",         # Wilder's ATR / close
    "volume_z_20",    # z-score of log(1 + volume) against its last 20 bars
    "dist_sma_20",    # close / SMA20 - 1
    "dist_sma_50",    # close / SMA50 - 1
    "mkt_ret_20",     # regime trend: sum of the universe's mean 1-bar log return, 20 stamps
    "mkt_vol_20",     # regime volatility: std of that mean return, 20 stamps
)

_NAN: Final = math.nan
_RESUM_EVERY: Final = 4096

Row = tuple[float, ...]


class _Window:
    """Sum and sum of squares of the last ``n`` values.

    The running sums drift by rounding, so they are re-added from scratch every
    4096 pushes (amortised O(1)); that happens at the same pushes in training
    and live, so both see the same bits.
    """

    __slots__ = ("_buf", "_n", "_s", "_s2", "_since")

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf: deque[float] = deque()
        self._s = 0.0
        self._s2 = 0.0
        self._since = 0

    def push(self, x: float) -> None:
        buf = self._buf
        buf.append(x)
        self._s += x
        self._s2 += x * x
        if len(buf) > self._n:
            old = buf.popleft()
            self._s -= old
            self._s2 -= old * old
            self._since += 1
            if self._since >= _RESUM_EVERY:
                self._s = math.fsum(buf)
                self._s2 = math.fsum(v * v for v in buf)
                self._since = 0

    @property
    def full(self) -> bool:
        return len(self._buf) >= self._n

    @property
    def total(self) -> float:
        return self._s

    def mean(self) -> float:
        return self._s / self._n

    def std(self) -> float:
        m = self._s / self._n
        return math.sqrt(max(self._s2 / self._n - m * m, 0.0))


class _Ema:
    __slots__ = ("_alpha", "value")

    def __init__(self, n: int) -> None:
        self._alpha = 2.0 / (n + 1)
        self.value: float | None = None

    def push(self, x: float) -> float:
        v = self.value
        v = x if v is None else v + self._alpha * (x - v)
        self.value = v
        return v


class _Rsi:
    """Wilder's RSI: a simple mean of the first ``n`` changes, then smoothing."""

    __slots__ = ("_count", "_gain", "_loss", "_n")

    def __init__(self, n: int) -> None:
        self._n = n
        self._count = 0
        self._gain = 0.0
        self._loss = 0.0

    def push(self, change: float) -> None:
        n = self._n
        gain = change if change > 0 else 0.0
        loss = -change if change < 0 else 0.0
        self._count += 1
        if self._count <= n:
            self._gain += gain / n
            self._loss += loss / n
        else:
            self._gain = (self._gain * (n - 1) + gain) / n
            self._loss = (self._loss * (n - 1) + loss) / n

    def value(self) -> float:
        if self._count < self._n:
            return _NAN
        total = self._gain + self._loss
        return 50.0 if total == 0.0 else 100.0 * self._gain / total


class _Symbol:
    __slots__ = (
        "atr", "atr_value", "bars", "close", "closes", "ema12", "ema26", "last_ts",
        "log_volume", "macd_sig", "regime", "rets", "rsi", "sma20", "sma50", "volumes",
    )

    def __init__(self) -> None:
        self.closes: deque[float] = deque(maxlen=21)
        self.rets = _Window(20)
        self.rsi = _Rsi(14)
        self.ema12 = _Ema(12)
        self.ema26 = _Ema(26)
        self.macd_sig = _Ema(9)
        self.atr = Atr(14)
        self.atr_value: float | None = None
        self.volumes = _Window(20)
        self.sma20 = _Window(20)
        self.sma50 = _Window(50)
        self.bars = 0
        self.close = _NAN
        self.last_ts = -1
        self.log_volume = _NAN
        self.regime: tuple[float, float] = (_NAN, _NAN)


class _Universe:
    """The cross-section: the mean 1-bar log return of each completed timestamp."""

    __slots__ = ("_count", "_sum", "_ts", "means", "regime")

    def __init__(self) -> None:
        self._ts = -1
        self._sum = 0.0
        self._count = 0
        self.means = _Window(20)
        self.regime: tuple[float, float] = (_NAN, _NAN)

    def add(self, ts_ns: int, ret: float | None) -> None:
        if ts_ns > self._ts:
            if self._count:
                means = self.means
                means.push(self._sum / self._count)
                if means.full:
                    self.regime = (means.total, means.std())
            self._ts, self._sum, self._count = ts_ns, 0.0, 0
        elif ts_ns < self._ts:
            return  # late: the regime of that timestamp is already in use
        if ret is not None:
            self._sum += ret
            self._count += 1


class FeatureEngine:
    """Per-symbol indicators plus the universe regime, one bar at a time.

    Feed it every bar of the universe in (time, symbol) order with
    :meth:`update`; read a symbol's row with :meth:`row`.
    """

    __slots__ = ("_symbols", "_universe")

    def __init__(self) -> None:
        self._symbols: dict[str, _Symbol] = {}
        self._universe = _Universe()

    def update(self, bar: BarClosed) -> None:
        """Add one closed bar (O(1))."""
        st = self._symbols.get(bar.symbol)
        if st is None:
            st = self._symbols[bar.symbol] = _Symbol()
        close = bar.close
        prev = st.close
        ret: float | None = None
        if st.bars:
            ret = math.log(close / prev)
            st.rets.push(ret)
            st.rsi.push(close - prev)
        self._universe.add(bar.ts_ns, ret)
        st.regime = self._universe.regime
        st.closes.append(close)
        st.sma20.push(close)
        st.sma50.push(close)
        macd = st.ema12.push(close) - st.ema26.push(close)
        st.macd_sig.push(macd)
        st.atr_value = st.atr.push(bar.high, bar.low, close)
        st.log_volume = math.log1p(bar.volume)
        st.volumes.push(st.log_volume)
        st.close = close
        st.last_ts = bar.ts_ns
        st.bars += 1

    def update_many(self, bars: Iterable[BarClosed]) -> None:
        update = self.update
        for bar in bars:
            update(bar)

    def last_ts(self, symbol: str) -> int | None:
        """Close time of the last bar seen for ``symbol`` (None: never seen)."""
        st = self._symbols.get(symbol)
        return None if st is None else st.last_ts

    def row(self, symbol: str) -> Row:
        """The features of ``symbol`` as of its last bar, in :data:`FEATURE_NAMES` order.

        A symbol never seen gets a row of NaN.
        """
        st = self._symbols.get(symbol)
        if st is None:
            return (_NAN,) * len(FEATURE_NAMES)
        c = st.close
        closes = st.closes
        k = len(closes)
        n = st.bars
        ret_1 = math.log(c / closes[-2]) if k >= 2 else _NAN
        ret_5 = math.log(c / closes[-6]) if k >= 6 else _NAN
        ret_20 = math.log(c / closes[0]) if k >= 21 else _NAN
        vol_20 = st.rets.std() if st.rets.full else _NAN
        ema12, ema26, sig = st.ema12.value, st.ema26.value, st.macd_sig.value
        macd = macd_signal = macd_hist = _NAN
        if n >= 26 and ema12 is not None and ema26 is not None:
            macd = (ema12 - ema26) / c
            if n >= 34 and sig is not None:
                macd_signal = sig / c
                macd_hist = macd - macd_signal
        atr = st.atr_value
        atr_14 = atr / c if atr is not None else _NAN
        volume_z = _NAN
        if st.volumes.full:
            sd = st.volumes.std()
            volume_z = (st.log_volume - st.volumes.mean()) / sd if sd > 0.0 else 0.0
        dist_20 = c / st.sma20.mean() - 1.0 if st.sma20.full else _NAN
        dist_50 = c / st.sma50.mean() - 1.0 if st.sma50.full else _NAN
        mkt_ret, mkt_vol = st.regime
        return (
            ret_1, ret_5, ret_20, vol_20, st.rsi.value(), macd, macd_signal, macd_hist,
            atr_14, volume_z, dist_20, dist_50, mkt_ret, mkt_vol,
        )
