"""O(1) rolling indicators used by the strategies."""

from __future__ import annotations

from collections import deque


class RollingMean:
    """Simple moving average over the last ``n`` values."""

    __slots__ = ("_buf", "_n", "_since_resum", "_sum")

    def __init__(self, n: int) -> None:
        self._n = n
        self._buf: deque[float] = deque()
        self._sum = 0.0
        self._since_resum = 0

    def push(self, x: float) -> float | None:
        """Add a value; return the mean once ``n`` values are in, else None."""
        buf = self._buf
        buf.append(x)
        self._sum += x
        if len(buf) > self._n:
            self._sum -= buf.popleft()
            self._since_resum += 1
            # A running sum drifts by rounding; re-add from scratch now and then
            # (amortised O(1)) so a long replay compares means exactly enough.
            if self._since_resum >= 4096:
                self._sum = sum(buf)
                self._since_resum = 0
        if len(buf) < self._n:
            return None
        return self._sum / self._n


class RollingSums:
    """Exact sums of the last ``short`` and the last ``long`` prices, in integer millionths.

    Comparing two moving averages of prices on a cent grid, float running
    sums leave ~1e-15 of noise where the averages are exactly equal, and a
    strict "crosses above" rule then fires on noise. Summing integers keeps
    every comparison exact (prices are taken to 6 decimals, which every data
    source here has at most). Both windows share one buffer, so a price is
    converted and stored once.
    """

    __slots__ = ("_buf", "_long", "_long_sum", "_short", "_short_sum")

    def __init__(self, short: int, long: int) -> None:
        if not 1 <= short < long:
            raise ValueError(f"need 1 <= short < long, got {short} and {long}")
        self._short = short
        self._long = long
        self._buf: deque[int] = deque()
        self._short_sum = 0
        self._long_sum = 0

    def push(self, x: float) -> tuple[int, int] | None:
        """Add a price; return ``(short sum, long sum)`` once ``long`` prices are in."""
        v = round(x * 1_000_000)
        buf = self._buf
        buf.append(v)
        self._short_sum += v
        self._long_sum += v
        n = len(buf)
        if n > self._short:
            self._short_sum -= buf[-1 - self._short]
        if n > self._long:
            self._long_sum -= buf.popleft()
        elif n < self._long:
            return None
        return self._short_sum, self._long_sum


class RollingExtreme:
    """Highest (or lowest) of the last ``n`` values, with a monotonic deque."""

    __slots__ = ("_i", "_n", "_q", "_sign")

    def __init__(self, n: int, *, highest: bool) -> None:
        self._n = n
        self._sign = 1.0 if highest else -1.0
        self._q: deque[tuple[int, float]] = deque()
        self._i = 0

    def push(self, x: float) -> None:
        v = self._sign * x
        q = self._q
        while q and q[-1][1] <= v:
            q.pop()
        q.append((self._i, v))
        self._i += 1
        while q[0][0] <= self._i - 1 - self._n:
            q.popleft()

    def value(self) -> float | None:
        """The extreme of the last ``n`` pushed values, once ``n`` are in."""
        if self._i < self._n:
            return None
        return self._sign * self._q[0][1]


class Atr:
    """Average true range with Wilder's smoothing."""

    __slots__ = ("_count", "_n", "_prev_close", "_value")

    def __init__(self, n: int) -> None:
        self._n = n
        self._prev_close: float | None = None
        self._value = 0.0
        self._count = 0

    def push(self, high: float, low: float, close: float) -> float | None:
        pc = self._prev_close
        tr = high - low if pc is None else max(high - low, abs(high - pc), abs(low - pc))
        self._prev_close = close
        self._count += 1
        if self._count <= self._n:
            self._value += tr / self._n
            return self._value if self._count == self._n else None
        self._value = (self._value * (self._n - 1) + tr) / self._n
        return self._value
