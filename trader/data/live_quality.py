"""The data-quality checks of ``trader data check``, bar by bar, for the live feed.

:mod:`trader.data.quality` looks at whole files; a live feed sees one bar at a
time and must not fall behind, so each symbol keeps a few numbers and every
bar costs O(1) (a calendar look-up only when a bar opens a new session). The
thresholds are the batch check's (:class:`~trader.data.quality.Thresholds`),
and so are the split ratios and the robust scale's constant.

Kinds (:data:`LIVE_KINDS`), a fixed set, so a metric label stays small:

=====================  =======================================================
``missing_session``    a session between two bars of the symbol had no bar
``intraday_gap``       at least ``gap_minutes`` of bars missing inside a
                       session: between two bars, before the first bar of a
                       session, or after the last one (reported when the next
                       session's first bar arrives). Not for the first bar
                       ever seen, which may come from a late start.
``zero_volume_run``    ``zero_volume_run`` consecutive bars with volume 0
                       (once per run)
``outlier_return``     a close-to-close log return more than N robust sd from
                       zero, N by timeframe as in the batch check
``suspected_split``    a one-bar jump near a split ratio that no close of the
                       next ``reversal_bars`` bars (the jump bar's own
                       included) takes back halfway; so it is reported
                       ``reversal_bars`` bars late
=====================  =======================================================

Where the batch check differs, because the future is not known yet:

* The robust scale is an exponentially weighted mean of ``|r|`` over about
  :data:`SCALE_BARS` returns (times sqrt(pi/2), the sd of a normal with that
  mean absolute deviation) instead of the whole file's median absolute
  deviation, and the centre is 0 rather than the median (minute and daily
  returns have a median of nearly 0). A return beyond the limit enters the
  scale clipped at the limit, so one bad print does not hide the next.
  Nothing is judged before :data:`WARMUP_RETURNS` returns.
* Intraday returns pair bars of one session only (no overnight gaps), as in
  the batch check; a bar outside every session (extended hours) takes part in
  no calendar or return check.
* A split-sized jump is reported as a split, not also as an outlier; if it is
  taken back it was a bad print, and its return is judged as an outlier then.
  The bar that takes it back starts no split of its own.

Duplicates, out-of-order bars and invalid prices are not here: the feed's
:class:`~trader.feedcheck.Sequencer` and :func:`~trader.feedcheck.bar_problem`
drop those. These checks never drop a bar: they report.

What it is not: a logger or a metric. It returns findings; the live feed
counts and logs them (:mod:`trader.actors.feed`).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Final, Literal

import msgspec

from trader import calendar
from trader.data.quality import (
    MEANAD_TO_SD,
    SMALLEST_SPLIT_LOG,
    Thresholds,
    split_ratio_near,
)
from trader.feedcheck import rfc3339

__all__ = ["LIVE_KINDS", "SCALE_BARS", "WARMUP_RETURNS", "LiveFinding", "LiveKind",
           "LiveQuality"]

LiveKind = Literal[
    "missing_session", "intraday_gap", "zero_volume_run", "outlier_return", "suspected_split"
]
LIVE_KINDS: Final[tuple[LiveKind, ...]] = (
    "missing_session", "intraday_gap", "zero_volume_run", "outlier_return", "suspected_split"
)

SCALE_BARS: Final = 100
"""Span of the exponentially weighted mean of |return| (the robust scale)."""
WARMUP_RETURNS: Final = 20
"""Returns a symbol needs before one of them can be an outlier."""

_NS_PER_S: Final = 1_000_000_000
_DAY_NS: Final = 86_400 * _NS_PER_S
_ALPHA: Final = 2.0 / (SCALE_BARS + 1)


class LiveFinding(msgspec.Struct, frozen=True, kw_only=True):
    """One defect seen in the live stream.

    Attributes:
        kind: One of :data:`LIVE_KINDS`.
        symbol: The ticker.
        ts_ns: Where: the bar (or the first missing bar close) it is about.
        detail: What exactly.
        first_today: The first finding of this symbol and kind in this
            session (the feed logs only those).
    """

    kind: LiveKind
    symbol: str
    ts_ns: int
    detail: str
    first_today: bool = True


class _Pending:
    """A split-sized jump waiting for ``bars_left`` more closes to show it is not taken back."""

    __slots__ = ("bars_left", "half", "name", "prev_close", "r", "ts_ns", "z")

    def __init__(self, ts_ns: int, prev_close: float, name: str, lk: float, r: float,
                 z: float, bars: int) -> None:
        self.ts_ns = ts_ns
        self.prev_close = prev_close
        self.name = name
        self.half = abs(lk) / 2
        self.r = r
        self.z = z
        self.bars_left = bars


class _Symbol:
    """What one symbol's checks remember: a handful of numbers."""

    __slots__ = ("abs_mean", "close", "day", "last_in_session_ns", "last_ts", "pending",
                 "returns", "session_close_ns", "session_open_ns", "zero_run")

    def __init__(self) -> None:
        self.close = 0.0  # the previous bar's close (0: none yet)
        self.last_ts = 0  # the previous bar's close time
        self.day: dt.date | None = None  # the session of the last in-session bar
        self.session_open_ns = 0
        self.session_close_ns = 0
        self.last_in_session_ns = 0
        self.zero_run = 0
        self.returns = 0
        self.abs_mean = 0.0
        self.pending: _Pending | None = None


class LiveQuality:
    """Per-symbol incremental checks over the bars a feed passes on.

    Args:
        timeframe_s: the feed's bar length (86400: daily bars, at session closes).
        thresholds: what counts as a defect (the batch check's defaults if None).

    Attributes:
        counts: findings so far, per kind (every kind present, from 0).
    """

    def __init__(self, timeframe_s: int, thresholds: Thresholds | None = None) -> None:
        self._t = thresholds or Thresholds()
        self._daily = timeframe_s >= 86_400
        self._tf_ns = timeframe_s * _NS_PER_S
        minutes = None if self._daily else max(timeframe_s // 60, 1)
        self._minutes = minutes
        self._limit = self._t.sigmas(minutes)
        # Price ratios this close to 1 are nowhere near any split: the common
        # case skips the split search (this runs for every live bar).
        margin = SMALLEST_SPLIT_LOG - math.log1p(self._t.split_tolerance)
        self._no_split = (math.exp(-margin), math.exp(margin))
        self._symbols: dict[str, _Symbol] = {}
        self._reported: dict[tuple[str, str], dt.date] = {}
        self.counts: dict[LiveKind, int] = dict.fromkeys(LIVE_KINDS, 0)

    def observe(self, symbol: str, ts_ns: int, open_: float, close: float,
                volume: float) -> list[LiveFinding]:
        """Check one bar (the next of ``symbol``, in time order) and return what it shows.

        The caller passes only bars that are valid (finite, positive, not
        crossed) and new for the symbol, as the feed does.
        """
        st = self._symbols.get(symbol)
        if st is None:
            st = self._symbols[symbol] = _Symbol()
        found: list[tuple[LiveKind, int, str]] = []
        # The session of the previous bar, if it closed inside one (-1 if not).
        prev_session = st.session_open_ns if st.last_ts and st.last_ts == st.last_in_session_ns \
            else -1
        in_session = self._calendar(st, ts_ns, found)
        # Intraday returns pair bars of one session; daily ones, consecutive sessions.
        paired = in_session and (self._daily or prev_session == st.session_open_ns)
        self._returns(st, ts_ns, open_, close, paired, found)
        if volume == 0:
            st.zero_run += 1
            if st.zero_run == self._t.zero_volume_run:
                found.append(("zero_volume_run", ts_ns,
                              f"volume 0 on {st.zero_run} bar(s) in a row"))
        else:
            st.zero_run = 0
        st.close = close
        st.last_ts = ts_ns
        if not found:
            return []
        out = []
        for kind, at, detail in found:
            self.counts[kind] += 1
            day = _trading_day(at)
            key = (symbol, kind)
            first = self._reported.get(key) != day
            if first:
                self._reported[key] = day
            out.append(LiveFinding(kind=kind, symbol=symbol, ts_ns=at, detail=detail,
                                   first_today=first))
        return out

    # --- the session grid ---------------------------------------------------------

    def _calendar(self, st: _Symbol, ts: int, found: list[tuple[LiveKind, int, str]]) -> bool:
        """Session checks for a bar closing at ``ts``; whether it lies in a session."""
        if st.session_open_ns < ts <= st.session_close_ns:
            if not self._daily:
                self._hole(st.last_in_session_ns, ts, found)
            st.last_in_session_ns = ts
            return True
        session = calendar.session_for(_trading_day(ts))
        if session is None or not session.open_ns < ts <= session.close_ns:
            return False  # extended hours or a closed day: no grid to check against
        previous = st.day
        if previous is not None:
            if not self._daily:
                # The tail of the previous session, now that it is over.
                last_grid = -(-st.session_close_ns // self._tf_ns) * self._tf_ns
                self._hole(st.last_in_session_ns, last_grid + self._tf_ns, found)
            for missed in calendar.sessions(previous + dt.timedelta(days=1),
                                            session.date - dt.timedelta(days=1)):
                found.append(("missing_session", missed.close_ns,
                              f"no bar in the session of {missed.date.isoformat()}"))
            if not self._daily:
                first_grid = (session.open_ns // self._tf_ns + 1) * self._tf_ns
                self._hole(first_grid - self._tf_ns, ts, found)
        st.day = session.date
        st.session_open_ns, st.session_close_ns = session.open_ns, session.close_ns
        st.last_in_session_ns = ts
        return True

    def _hole(self, before: int, after: int, found: list[tuple[LiveKind, int, str]]) -> None:
        """A gap finding if the bars strictly between closes ``before`` and ``after`` are
        missing for at least ``gap_minutes``."""
        tf = self._tf_ns
        missing = (after - before) // tf - 1
        minutes = self._minutes or 0
        if missing > 0 and missing * minutes >= self._t.gap_minutes:
            found.append(("intraday_gap", before + tf,
                          f"{missing} bar(s) missing, closes {rfc3339(before + tf)} to "
                          f"{rfc3339(after - tf)}"))

    # --- returns and splits --------------------------------------------------------

    def _returns(self, st: _Symbol, ts: int, open_: float, close: float, paired: bool,
                 found: list[tuple[LiveKind, int, str]]) -> None:
        prev = st.close
        if prev <= 0:
            return
        t = self._t
        taken_back = False
        pending = st.pending
        if pending is not None:
            if abs(math.log(close / pending.prev_close)) < pending.half:
                # Back near the old level: a bad print, not a split.
                st.pending = None
                taken_back = True
                if pending.z > self._limit:
                    found.append(self._outlier(pending.ts_ns, pending.r, pending.z))
            else:
                pending.bars_left -= 1
                if pending.bars_left <= 0:
                    st.pending = None
                    found.append(self._split(pending))
        r = math.log(close / prev)
        scale = MEANAD_TO_SD * st.abs_mean
        warm = st.returns >= WARMUP_RETURNS and scale > 0
        z = abs(r) / scale if paired and warm else 0.0
        jump = False
        lo, hi = self._no_split
        if not taken_back and st.pending is None and not (
            lo < prev / open_ < hi and lo < prev / close < hi
        ):
            split = (split_ratio_near(prev / open_, t.split_tolerance)
                     or split_ratio_near(prev / close, t.split_tolerance))
            if split is not None and t.reversal_bars > 0:
                name, lk = split
                pending = _Pending(ts, prev, name, lk, r, z, t.reversal_bars)
                # The jump bar's own close is the first of the bars that may take
                # it back (a bar that opens at the split level and closes at the old one).
                if abs(r) >= pending.half:
                    jump = True
                    pending.bars_left -= 1
                    if pending.bars_left <= 0:
                        found.append(self._split(pending))
                    else:
                        st.pending = pending
        if not jump and z > self._limit:
            found.append(self._outlier(ts, r, z))
        if paired and not jump:
            # Winsorised: one bad print must not widen the scale that judges the next.
            size = min(abs(r), self._limit * scale) if warm else abs(r)
            st.returns += 1
            st.abs_mean += max(_ALPHA, 1.0 / st.returns) * (size - st.abs_mean)

    @staticmethod
    def _split(p: _Pending) -> tuple[LiveKind, int, str]:
        after = p.prev_close * math.exp(p.r)
        return ("suspected_split", p.ts_ns, f"close {p.prev_close:g} then {after:g}: looks like "
                                            f"an unadjusted {p.name} split")

    def _outlier(self, ts: int, r: float, z: float) -> tuple[LiveKind, int, str]:
        return ("outlier_return", ts,
                f"return {math.expm1(r):+.1%} is {z:.1f} robust sd (limit {self._limit:g})")


def _trading_day(ts_ns: int) -> dt.date:
    """The New York date a bar closing at ``ts_ns`` belongs to (midnight: the day before)."""
    return calendar.ny_date(ts_ns - 1)
