"""Alpaca's historical bars API (``/v2/stocks/bars`` and friends) over the tape.

Only bars that have closed on the sandbox clock are served (close time <= the
market's watermark): a client can never read the future. Pagination follows
alpaca-py's helper: ``limit`` is a total across symbols, items are ordered by
symbol then time, and ``next_page_token`` is opaque. The token also freezes
the watermark of the first page, so pages stay consistent while the clock
moves on.

The timeframe must be the data's own (``1Day`` for daily data, ``1Min`` for
minute data...); the sandbox does not aggregate, and says so with a 422.

What it is not: trades, quotes, snapshots or crypto history.
"""

from __future__ import annotations

import base64
import binascii

import msgspec
import numpy as np
from aiohttp import web

from trader import calendar
from trader.sandbox import wire
from trader.sandbox.market import Market
from trader.sandbox.params import (
    RequestError,
    invalid,
    json_response,
    query_choice,
    query_int,
    query_list,
    query_time,
)
from trader.sandbox.tape import Tape, timeframe_minutes
from trader.sandbox.wire import Json

_ADJUSTMENTS = ("raw", "split", "dividend", "all")
_FEEDS = ("iex", "sip", "delayed_sip", "otc", "boats", "overnight")
_MINUTE_NS = 60_000_000_000


class _Token(msgspec.Struct, frozen=True):
    s: str  # symbol of the next item
    k: int  # its offset within that symbol's selection
    w: int  # watermark frozen at the first page


class HistoryApi:
    """The market-data REST endpoints over one market.

    Args:
        market: the clock and the tape.
        page_limit: the most bars one page holds whatever ``limit`` asks
            (Alpaca's is 10000; tests lower it to exercise pagination).
    """

    def __init__(self, market: Market, page_limit: int = 10_000) -> None:
        self.market = market
        self.page_limit = page_limit

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v2/stocks/bars/latest", self.latest_bars),
            web.get("/v2/stocks/bars", self.bars),
            web.get("/v2/stocks/{symbol}/bars", self.symbol_bars),
        ]

    async def bars(self, request: web.Request) -> web.Response:
        symbols = query_list(request, "symbols")
        if not symbols:
            raise invalid("symbols is required")
        per_symbol, token = self._page(request, symbols)
        return json_response({"bars": per_symbol, "next_page_token": token, "currency": "USD"})

    async def symbol_bars(self, request: web.Request) -> web.Response:
        symbol = request.match_info["symbol"]
        per_symbol, token = self._page(request, [symbol])
        return json_response(
            {"bars": per_symbol.get(symbol, []), "symbol": symbol, "next_page_token": token}
        )

    async def latest_bars(self, request: web.Request) -> web.Response:
        symbols = query_list(request, "symbols")
        if not symbols:
            raise invalid("symbols is required")
        query_choice(request, "feed", _FEEDS, "iex")
        tape = self.market.tape
        out: dict[str, Json] = {}
        for symbol in sorted(set(symbols)):
            if symbol not in tape.tables:
                continue
            row = tape.last_row_at_or_before(symbol, self.market.watermark_ns)
            if row >= 0:
                out[symbol] = _bar_json(tape, symbol, row)
        return json_response({"bars": out})

    def _page(
        self, request: web.Request, symbols: list[str]
    ) -> tuple[dict[str, list[Json]], str | None]:
        tape = self.market.tape
        self._check_timeframe(tape, request.query.get("timeframe", ""))
        query_choice(request, "adjustment", _ADJUSTMENTS, "raw")
        query_choice(request, "feed", _FEEDS, "iex")
        sort = query_choice(request, "sort", ("asc", "desc"), "asc")
        limit = min(query_int(request, "limit", 1000, 1, 10_000), self.page_limit)
        token = _decode_token(request.query.get("page_token"))
        watermark = token.w if token is not None else self.market.watermark_ns
        start = query_time(request, "start")
        if start is None:
            start = _ny_midnight(self.market.now_ns())
        end = query_time(request, "end")
        if end is None:
            end = watermark
        if end < start:
            raise invalid("end should not be before start")
        out: dict[str, list[Json]] = {}
        left = limit
        for symbol in sorted(set(symbols)):
            if symbol not in tape.tables or (token is not None and symbol < token.s):
                continue
            lo, hi = tape.rows_between(symbol, start, end, watermark)
            offset = token.k if token is not None and symbol == token.s else 0
            count = hi - lo - offset
            if count <= 0:
                continue
            if left == 0:
                return out, _encode_token(_Token(symbol, offset, watermark))
            take = min(count, left)
            if sort == "asc":
                rows = range(lo + offset, lo + offset + take)
            else:
                rows = range(hi - 1 - offset, hi - 1 - offset - take, -1)
            out[symbol] = [_bar_json(tape, symbol, r) for r in rows]
            left -= take
            if take < count:
                return out, _encode_token(_Token(symbol, offset + take, watermark))
        return out, None

    @staticmethod
    def _check_timeframe(tape: Tape, timeframe: str) -> None:
        if not timeframe:
            raise invalid("timeframe is required")
        try:
            minutes = timeframe_minutes(timeframe)
        except ValueError:
            raise invalid(f"invalid timeframe {timeframe!r}") from None
        wanted = None if minutes is None else minutes * _MINUTE_NS
        if wanted != tape.period_ns:
            raise RequestError(
                422,
                42210000,
                f"the sandbox serves {tape.timeframe} bars only (asked for {timeframe})",
            )


def _bar_json(tape: Tape, symbol: str, row: int) -> Json:
    t = tape.tables[symbol]
    vwap = float(t.vwap[row])
    trades = int(t.trades[row])
    return wire.bar(
        wire.rfc3339(tape.start_ns(symbol, row)),
        o=float(t.open[row]),
        h=float(t.high[row]),
        low=float(t.low[row]),
        c=float(t.close[row]),
        volume=float(t.volume[row]),
        trades=None if trades < 0 else trades,
        vwap=None if np.isnan(vwap) else vwap,
    )


def _encode_token(token: _Token) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(token)).decode().rstrip("=")


def _decode_token(raw: str | None) -> _Token | None:
    if not raw:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        return msgspec.json.decode(base64.urlsafe_b64decode(padded), type=_Token)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise RequestError(400, 40010001, "invalid page_token") from None


def _ny_midnight(ts_ns: int) -> int:
    day = wire.to_datetime(ts_ns).astimezone(calendar.NEW_YORK).date()
    return wire.parse_time(day.isoformat())

