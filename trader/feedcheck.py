"""Alpaca market-data shapes, decoded and checked: the pure half of the live feed.

Everything here is synchronous and free of I/O, so it is tested directly:

* the wire Structs for the data stream (``b``, ``success``, ``error``,
  ``subscription``) and the historical bars page;
* :func:`decode_frame`: one websocket frame (always a JSON array) into typed
  messages, one element at a time, so an unknown ``T`` is ignored and a
  malformed element costs only itself;
* :func:`bar_problem` and :func:`to_bar`: a bar is finite, positive, not
  crossed and has a non-negative volume, or it is refused with a reason;
* :class:`Sequencer`: per symbol, only bars closing after the last one passed
  on go through (the strategy sees each bar once, in order), grouped into
  ``BarsClosed`` batches in (ts, symbol) order.

Alpaca stamps a bar with its *start*; our ``ts_ns`` is its *close*: start +
timeframe for intraday bars, and the session close for daily bars (which
Alpaca stamps at midnight New York). The conversion happens in
:func:`close_ns`, nowhere else.

What it is not: a connection, a retry policy or a logger (see
:mod:`trader.actors.feed`).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import operator
from collections.abc import Iterable, Mapping
from typing import Literal, TypeAlias

import msgspec

from trader import calendar
from trader.messages import BarClosed, BarsClosed

NS_PER_SECOND = 1_000_000_000
DAY_NS = 86_400 * NS_PER_SECOND
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Reason = Literal[
    "bad_timestamp", "non_finite", "non_positive_price", "crossed", "negative_volume"
]
"""Why a bar was refused: the label of ``LiveFeed.dropped_invalid``."""


# --- wire shapes ---------------------------------------------------------------------


class RestBar(msgspec.Struct, frozen=True, kw_only=True):
    """A bar as the historical REST API sends it (``t`` is the bar's start)."""

    t: str
    o: float
    h: float
    low: float = msgspec.field(name="l")
    c: float
    v: float
    n: int | None = None
    vw: float | None = None


class WireBar(RestBar, frozen=True, kw_only=True, tag="b", tag_field="T"):
    """A minute bar on the data stream (``S`` is the symbol)."""

    S: str


class WireSuccess(msgspec.Struct, frozen=True, tag="success", tag_field="T"):
    msg: str = ""


class WireError(msgspec.Struct, frozen=True, tag="error", tag_field="T"):
    code: int = 0
    msg: str = ""


class WireSubscription(msgspec.Struct, frozen=True, tag="subscription", tag_field="T"):
    """The complete current subscription; only the channel we use is read."""

    bars: list[str] = msgspec.field(default_factory=list)


StreamMessage: TypeAlias = WireBar | WireSuccess | WireError | WireSubscription


class BarsPage(msgspec.Struct, frozen=True):
    """One page of ``GET /v2/stocks/bars``."""

    bars: dict[str, list[RestBar]] | None = None
    next_page_token: str | None = None


class _Head(msgspec.Struct, frozen=True):
    T: str


_KNOWN_TAGS = frozenset({"b", "success", "error", "subscription"})
_frame_decoder = msgspec.json.Decoder(list[msgspec.Raw])
# The common frame (every element a message we know) in one call; anything
# else goes element by element, to count what is malformed or ignored.
_clean_frame_decoder = msgspec.json.Decoder(list[StreamMessage])
_message_decoder = msgspec.json.Decoder(StreamMessage)
_head_decoder = msgspec.json.Decoder(_Head)
_page_decoder = msgspec.json.Decoder(BarsPage)


class Frame(msgspec.Struct, frozen=True):
    """One decoded frame: the messages we know, and how many elements were bad or unknown."""

    messages: list[StreamMessage]
    malformed: int = 0
    ignored: int = 0


class FrameError(ValueError):
    """The frame is not a JSON array at all (garbage, truncated, wrong shape)."""


def decode_frame(data: bytes | str) -> Frame:
    """Decode one data-stream frame.

    Elements with a ``T`` we do not use (trades, quotes, statuses, updated
    bars...) are counted as ignored; elements that are not objects, lack
    ``T``, or carry a known ``T`` with the wrong fields are counted as
    malformed. Neither stops the rest of the frame.

    Raises:
        FrameError: the frame is not valid JSON or not an array.
    """
    try:
        return Frame(_clean_frame_decoder.decode(data), 0, 0)
    except msgspec.DecodeError:
        pass
    try:
        raws = _frame_decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise FrameError(str(exc)) from None
    messages: list[StreamMessage] = []
    malformed = ignored = 0
    for raw in raws:
        try:
            messages.append(_message_decoder.decode(raw))
            continue
        except msgspec.DecodeError:
            pass
        try:
            tag = _head_decoder.decode(raw).T
        except msgspec.DecodeError:
            malformed += 1
            continue
        if tag in _KNOWN_TAGS:
            malformed += 1
        else:
            ignored += 1
    return Frame(messages, malformed, ignored)


def decode_page(data: bytes) -> BarsPage:
    """Decode one historical bars page.

    Raises:
        msgspec.DecodeError: not a bars page.
    """
    page: BarsPage = _page_decoder.decode(data)
    return page


# --- time ----------------------------------------------------------------------------


def parse_rfc3339_ns(text: str) -> int:
    """RFC 3339 (``Z`` or an offset, 0-9 fraction digits) as UTC nanoseconds.

    ``datetime.fromisoformat`` keeps microseconds only, so the fraction is
    read separately and every digit Alpaca sends survives.

    Raises:
        ValueError: not an RFC 3339 timestamp with a zone.
    """
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    frac_ns = 0
    dot = s.find(".")
    if dot != -1:
        end = dot + 1
        while end < len(s) and s[end].isdigit():
            end += 1
        digits = s[dot + 1 : end]
        if not digits or len(digits) > 9:
            raise ValueError(f"bad fraction in {text!r}")
        frac_ns = int(digits.ljust(9, "0"))
        s = s[:dot] + s[end:]
    when = dt.datetime.fromisoformat(s)
    if when.tzinfo is None:
        raise ValueError(f"not an RFC 3339 timestamp with a zone: {text!r}")
    whole_seconds = (when - _EPOCH) // dt.timedelta(seconds=1)
    return whole_seconds * NS_PER_SECOND + frac_ns


def rfc3339(ts_ns: int) -> str:
    """UTC nanoseconds as RFC 3339 with ``Z`` (fraction digits only when needed)."""
    seconds, frac = divmod(ts_ns, NS_PER_SECOND)
    stamp = (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    if not frac:
        return f"{stamp}Z"
    return f"{stamp}.{f'{frac:09d}'.rstrip('0')}Z"


def timeframe_name(timeframe_s: int) -> str:
    """The Alpaca timeframe string for a bar length: 60 -> ``1Min``, 3600 -> ``1Hour``.

    Raises:
        ValueError: no Alpaca timeframe has this length.
    """
    minutes, rest = divmod(timeframe_s, 60)
    if rest == 0 and 1 <= minutes < 60:
        return f"{minutes}Min"
    hours, rest = divmod(timeframe_s, 3600)
    if rest == 0 and 1 <= hours < 24:
        return f"{hours}Hour"
    if timeframe_s == 86_400:
        return "1Day"
    raise ValueError(f"no Alpaca timeframe lasts {timeframe_s}s")


# --- checks --------------------------------------------------------------------------


def bar_problem(
    o: float, h: float, low: float, c: float, v: float, vw: float | None = None
) -> Reason | None:
    """Why this bar cannot be trusted, or None if it can.

    The order of the checks decides the reason of a bar with several faults:
    non-finite, then non-positive prices, then crossed, then negative volume.
    """
    isfinite = math.isfinite  # once per bar of every frame: no generator here
    if not (isfinite(o) and isfinite(h) and isfinite(low) and isfinite(c) and isfinite(v)) \
            or (vw is not None and not isfinite(vw)):
        return "non_finite"
    if o <= 0 or h <= 0 or low <= 0 or c <= 0:
        return "non_positive_price"
    if h < low or not (low <= o <= h) or not (low <= c <= h):
        return "crossed"
    if v < 0:
        return "negative_volume"
    return None


@functools.lru_cache(maxsize=1024)
def _close_of(stamp: str, timeframe_ns: int) -> int:
    """:func:`close_ns` of a wire time stamp. Every bar of a minute carries the same
    stamp, so a 10,000-symbol frame parses it once, not 10,000 times."""
    return close_ns(parse_rfc3339_ns(stamp), timeframe_ns)


def close_ns(start_ns: int, timeframe_ns: int) -> int:
    """Our ``ts_ns`` for a bar Alpaca stamped ``start_ns``.

    Intraday: start + timeframe. Daily: the close of that New York date's
    session (13:00 on early closes), or start + one day if the exchange did
    not trade that day.
    """
    if timeframe_ns != DAY_NS:
        return start_ns + timeframe_ns
    day = (_EPOCH + dt.timedelta(microseconds=start_ns // 1000)).astimezone(calendar.NEW_YORK)
    session = calendar.session_for(day.date())
    return session.close_ns if session is not None else start_ns + DAY_NS


def to_bar(wire: RestBar, symbol: str, timeframe_ns: int) -> BarClosed | Reason:
    """A checked wire bar as our message (``ts_ns`` per :func:`close_ns`), or why not."""
    try:
        ts_ns = _close_of(wire.t, timeframe_ns)
    except ValueError:
        return "bad_timestamp"
    problem = bar_problem(wire.o, wire.h, wire.low, wire.c, wire.v, wire.vw)
    if problem is not None:
        return problem
    return BarClosed(
        ts_ns=ts_ns,
        symbol=symbol,
        open=wire.o,
        high=wire.h,
        low=wire.low,
        close=wire.c,
        volume=wire.v,
        vwap=wire.vw,
        trades=wire.n,
    )


# --- ordering ------------------------------------------------------------------------


_TIME_THEN_SYMBOL = operator.attrgetter("ts_ns", "symbol")  # in C: a frame is 10,000 bars


class Sequencer:
    """Per-symbol "last close passed on", so each bar goes through once and in order.

    Args:
        last_seen: symbol -> close ts_ns already processed (e.g. from the journal).
    """

    def __init__(self, last_seen: Mapping[str, int] | None = None) -> None:
        self.last: dict[str, int] = dict(last_seen or {})

    def admit(self, bars: Iterable[BarClosed]) -> tuple[list[BarsClosed], int]:
        """The new bars as batches, one per close time in time order, bars sorted by
        symbol; and how many were not new (a repeat, or older than one passed on).

        The bars are taken in (ts, symbol) order, so two copies of one bar in
        the same call count once and a batch never holds a symbol twice.
        Nothing is recorded until :meth:`mark`: a batch that was never
        delivered must not count as passed on.
        """
        last = self.last
        taken: dict[str, int] = {}
        repeats = 0
        batches: list[BarsClosed] = []
        group: list[BarClosed] = []
        for bar in sorted(bars, key=_TIME_THEN_SYMBOL):
            symbol = bar.symbol
            if bar.ts_ns <= taken.get(symbol, last.get(symbol, -1)):
                repeats += 1
                continue
            taken[symbol] = bar.ts_ns
            if group and group[0].ts_ns != bar.ts_ns:
                batches.append(BarsClosed(ts_ns=group[0].ts_ns, bars=tuple(group)))
                group = []
            group.append(bar)
        if group:
            batches.append(BarsClosed(ts_ns=group[0].ts_ns, bars=tuple(group)))
        return batches, repeats

    def mark(self, batch: BarsClosed) -> None:
        """Record that ``batch`` was passed on."""
        for bar in batch.bars:
            self.last[bar.symbol] = bar.ts_ns
