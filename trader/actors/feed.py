"""The live feed: Alpaca's bar websocket -> checked, ordered ``BarsClosed``.

One connection at a time, over ``websockets`` (JSON frames, no proxy)::

    connect ──▶ "connected" ──▶ auth ──▶ "authenticated" ──▶ subscribe bars ──▶ subscription
                                                                                  │ started(),
                                                                                  ▼ "connected"
      ┌──── backoff (full jitter) ◀── disconnect / error / auth failed ◀── backfill gap (REST)
      │                                 / no data while open ("stale")          │
      └──▶ connect                                                              ▼
                                                                   read frames ─▶ BarsClosed

Every bar is checked (:mod:`trader.feedcheck`): a non-finite, non-positive,
crossed or negative-volume bar is counted by reason, logged and dropped. The
bars passed on then go through the data-quality checks of ``trader data
check``, incrementally (:mod:`trader.data.live_quality`: gaps against the
calendar, zero-volume runs, outlier returns, suspected splits): findings are
counted by kind and logged at most once per symbol, kind and session, and
never stop a bar. Per
symbol, a bar closing at or before the last one passed on is a duplicate and
is dropped. The valid bars of one frame go out as one ``BarsClosed`` per close
time, bars sorted by symbol, in time order.

After a reconnect (and at start when ``last_seen`` is given) the gap is filled
from the historical bars REST API *before* any live frame is handled: live
frames wait in the socket meanwhile, and those the backfill already covered
are dropped as duplicates. A frame that cannot be decoded (garbage,
truncated) is counted and logged, and the same REST backfill repairs whatever
it may have carried. So the strategy sees every bar once and, per symbol, in
order. Batches from different frames are in time order as long as Alpaca
sends each minute's bars before the next minute's (it pushes them just after
the minute closes); a late bar of another symbol is still passed on.

Faults: disconnects, refused logins (402), connection limits (406), failed
backfills and staleness are transient: logged, then a reconnect after
``uniform(0, min(reconnect_max_s, reconnect_initial_s * 2**attempt))``. A
stale feed stays "stale" through its reconnects until a live frame carries
bars again; only then is it "connected" (risk's stale_feed breaker clears on
that with ``auto_resume``). A
refused subscription (409 "insufficient subscription") is not: the feed
raises :class:`FeedSubscriptionRefused` and the supervisor decides.

``BarsClosed`` is not journaled here: the strategy journals the bars it
consumed, as with the replay feed. ``FeedStatusChanged`` is.

What it is not: a quote or trade feed, or an order-update stream.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Literal

import aiohttp
import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidURI, WebSocketException

from trader import calendar
from trader.actors.base import Outbox
from trader.clock import NS_PER_SECOND, Clock
from trader.config import LiveFeedConfig
from trader.data.live_quality import LiveQuality
from trader.errors import TraderError
from trader.feedcheck import (
    BarsPage,
    FrameError,
    Reason,
    RestBar,
    Sequencer,
    StreamMessage,
    WireBar,
    WireError,
    WireSubscription,
    WireSuccess,
    close_ns,
    decode_frame,
    decode_page,
    parse_rfc3339_ns,
    rfc3339,
    timeframe_name,
    to_bar,
)
from trader.latency import TickToOrder
from trader.messages import BarClosed, BarsClosed, FeedStatusChanged
from trader.secrets import Credentials

log = structlog.get_logger("trader.feed")

Status = Literal["connected", "disconnected", "stale"]

_OPEN_TIMEOUT_S = 10.0
_HANDSHAKE_TIMEOUT_S = 15.0  # Alpaca closes an unauthenticated socket after ~10 s
_CLOSE_TIMEOUT_S = 2.0
_PING_INTERVAL_S = 20.0
# A minute boundary for a large universe batches many bars into one frame;
# 1 MiB (the library default) would cut such a frame as an error.
_MAX_FRAME_BYTES = 16 * 1024 * 1024
_PAGE_LIMIT = 10_000  # Alpaca's largest page; the count is a total across symbols
_MAX_PAGES = 1_000  # a server that never ends its pagination is a fault, not a backfill
_FATAL_CODES = frozenset({409})  # insufficient subscription: retrying cannot help


class FeedUnavailable(TraderError):
    """A transient feed fault (disconnect, refused login, stale, failed backfill).

    Handled inside :meth:`LiveFeed.run` with backoff; it never escapes.
    """


class FeedSubscriptionRefused(TraderError):
    """The account may not use this feed (Alpaca 409 "insufficient subscription")."""


class LiveFeed:
    """The Alpaca bar feed; see the module docstring.

    Args:
        outbox: routes ``BarsClosed`` and ``FeedStatusChanged``.
        config: ``[feed]``: timeframe, staleness and backoff bounds.
        stream_url: the data websocket, full URL (``.../v2/iex``).
        data_url: the market-data REST base (``https://data.alpaca.markets``).
        credentials: the API key pair (stream auth and REST headers).
        clock: stamps status messages; ``now`` bounds a backfill and decides
            whether the market is open.
        symbols: the universe to subscribe to.
        rng: jitter source (seed it for repeatable tests).
        last_seen: symbol -> close ts_ns of the last bar already processed;
            seeds de-duplication and the first backfill.
        market_open: ``ts_ns -> bool`` (default :func:`trader.calendar.is_open`).
        request_timeout_s: the bound on each backfill request.
        before_emit: awaited before each batch goes out (market first).
        tick_to_order: told when each streamed bar's frame was read (the
            start of the tick-to-order latency; backfilled bars are not).

    Raises:
        ValueError: no symbols, or a ``timeframe_s`` Alpaca has no bars for.

    Attributes (metrics): ``received`` bar messages read (stream, and
    backfill beyond what was already passed on), ``emitted`` bars passed on,
    ``backfilled`` of which came from REST, ``dropped_invalid`` per reason,
    ``duplicates``, ``malformed_frames``, ``ignored_messages`` (unknown types or
    symbols), ``reconnects``, ``last_bar_ns`` and ``quality_findings`` (per kind of
    :mod:`trader.data.live_quality`).
    """

    name = "feed"

    def __init__(
        self,
        outbox: Outbox,
        *,
        config: LiveFeedConfig,
        stream_url: str,
        data_url: str,
        credentials: Credentials,
        clock: Clock,
        symbols: Sequence[str],
        rng: random.Random | None = None,
        last_seen: Mapping[str, int] | None = None,
        market_open: Callable[[int], bool] | None = None,
        request_timeout_s: float = 10.0,
        before_emit: Callable[[BarsClosed], Awaitable[None]] | None = None,
        tick_to_order: TickToOrder | None = None,
    ) -> None:
        self._before_emit = before_emit
        self._tick_to_order = tick_to_order
        if not symbols:
            raise ValueError("the live feed needs at least one symbol")
        self._out = outbox
        self._config = config
        self._stream_url = stream_url
        self._data_url = data_url.rstrip("/")
        self._credentials = credentials
        self._clock = clock
        self._symbols = tuple(sorted(set(symbols)))
        # Membership is asked once per bar: a tuple would make a 10,000-symbol
        # minute boundary quadratic (seconds instead of milliseconds).
        self._symbol_set = frozenset(self._symbols)
        self._rng = rng or random.Random()
        self._market_open = market_open or calendar.is_open
        self._request_timeout_s = request_timeout_s
        self._tf_ns = config.timeframe_s * NS_PER_SECOND
        self._timeframe = timeframe_name(config.timeframe_s)
        # The historical API wants the feed the stream uses (.../v2/iex -> iex).
        tail = stream_url.rstrip("/").rsplit("/", 1)[-1]
        self._rest_feed = tail if tail in ("iex", "sip", "delayed_sip") else None
        self._seq = Sequencer(last_seen)
        self._need_backfill = bool(last_seen)
        self._since_ns: int | None = None  # first subscription: floor for unseen symbols
        self._status: Status | None = None
        # Stale until live data flows again: reconnecting (and backfilling)
        # is not proof that the exchange is publishing, so "stale" holds
        # across reconnects, and risk's stale_feed breaker with it.
        self._stale = False
        self._subscribed = False
        self._started = False

        self.received = 0
        self.emitted = 0
        self.backfilled = 0
        self.dropped_invalid: dict[str, int] = {}
        self.duplicates = 0
        self.malformed_frames = 0
        self.ignored_messages = 0
        self.reconnects = 0
        self.last_bar_ns = max(self._seq.last.values(), default=0)
        # The batch data check's rules, bar by bar; they report and never drop.
        self._quality = LiveQuality(config.timeframe_s)
        self.quality_findings = self._quality.counts

    @property
    def last_emitted(self) -> dict[str, int]:
        """Symbol -> close ts_ns of the last bar passed on (hand it to a successor)."""
        return dict(self._seq.last)

    # --- lifecycle -----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Stream until cancelled; ``started()`` once the first subscription is confirmed.

        Raises:
            FeedSubscriptionRefused: the account may not use this feed.
            websockets.exceptions.InvalidURI: ``stream_url`` is not a websocket URL.
        """
        creds = self._credentials
        http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._request_timeout_s),
            headers={"APCA-API-KEY-ID": creds.key_id, "APCA-API-SECRET-KEY": creds.secret_key},
        )
        try:
            attempt = 0
            while True:
                self._subscribed = False
                try:
                    await self._session(http, task_status)
                    reason = "the server closed the stream"  # pragma: no cover
                except FeedUnavailable as exc:
                    reason = str(exc)
                except InvalidURI:
                    raise
                except (WebSocketException, OSError) as exc:  # OSError covers TimeoutError
                    reason = f"{type(exc).__name__}: {exc}"
                if self._subscribed:
                    attempt = 0
                if not self._stale:
                    await self._set_status("disconnected", reason)
                ceiling = self._config.reconnect_initial_s * 2 ** min(attempt, 32)
                delay = self._rng.uniform(0.0, min(self._config.reconnect_max_s, ceiling))
                attempt += 1
                self.reconnects += 1
                log.warning("feed disconnected; reconnecting", reason=reason,
                            attempt=attempt, retry_in_s=round(delay, 3))
                await anyio.sleep(delay)
        finally:
            # Shielded and bounded: a cancelled shutdown must still release the
            # connector, or aiohttp warns about an unclosed session.
            with anyio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await http.close()

    async def _session(self, http: aiohttp.ClientSession, task_status: TaskStatus[None]) -> None:
        ws = await connect(
            self._stream_url,
            proxy=None,
            open_timeout=_OPEN_TIMEOUT_S,
            close_timeout=_CLOSE_TIMEOUT_S,
            ping_interval=_PING_INTERVAL_S,
            ping_timeout=_PING_INTERVAL_S,
            max_size=_MAX_FRAME_BYTES,
        )
        try:
            early = await self._handshake(ws)
            self._subscribed = True
            if self._since_ns is None:
                self._since_ns = self._clock.now_ns()
            if not self._started:
                self._started = True
                task_status.started()
            if not self._stale:
                await self._set_status("connected", "subscribed")
            if self._need_backfill:
                await self._backfill(http)
                self._need_backfill = False
            await self._handle(early)
            await self._stream(ws, http)
        finally:
            if self._subscribed:
                self._need_backfill = True  # whatever closes while we are away is a gap
            with anyio.move_on_after(_CLOSE_TIMEOUT_S, shield=True):
                await ws.close()

    async def _handshake(self, ws: ClientConnection) -> list[StreamMessage]:
        """Log in and subscribe; returns any data that came before the confirmation."""
        creds = self._credentials
        early: list[StreamMessage] = []
        with anyio.fail_after(_HANDSHAKE_TIMEOUT_S):
            await self._expect_success(ws, "connected")
            auth = {"action": "auth", "key": creds.key_id, "secret": creds.secret_key}
            await ws.send(msgspec.json.encode(auth).decode())
            await self._expect_success(ws, "authenticated")
            subscribe = {"action": "subscribe", "bars": list(self._symbols)}
            await ws.send(msgspec.json.encode(subscribe).decode())
            while True:
                for m in await self._receive(ws):
                    if isinstance(m, WireSubscription):
                        missing = set(self._symbols) - set(m.bars)
                        if missing and "*" not in m.bars:
                            raise FeedUnavailable(f"subscription lacks {sorted(missing)}")
                        return early
                    if isinstance(m, WireError):
                        raise self._error(m)
                    early.append(m)

    async def _expect_success(self, ws: ClientConnection, what: str) -> None:
        while True:
            for m in await self._receive(ws):
                if isinstance(m, WireError):
                    raise self._error(m)
                if isinstance(m, WireSuccess):
                    if m.msg == what:
                        return
                    raise FeedUnavailable(f"expected {what!r}, got {m.msg!r}")

    async def _receive(self, ws: ClientConnection) -> list[StreamMessage]:
        """The next frame's messages ([] for a malformed frame, which is counted)."""
        return self._decode(await ws.recv(decode=False))[0]

    # --- streaming -----------------------------------------------------------------

    async def _stream(self, ws: ClientConnection, http: aiohttp.ClientSession) -> None:
        stale_after = self._config.stale_after_s
        deadline = anyio.current_time() + stale_after
        while True:
            data: str | bytes | None = None
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0.0)):
                data = await ws.recv(decode=False)
            # The tick-to-order clock starts when the frame is in our hands.
            read_ns = time.perf_counter_ns()
            if data is None:
                if self._market_open(self._clock.now_ns()):
                    reason = f"no data for {stale_after:g}s while the market is open"
                    self._stale = True
                    await self._set_status("stale", reason)
                    raise FeedUnavailable(reason)
                deadline = anyio.current_time() + stale_after  # closed: quiet is normal
                continue
            messages, damaged = self._decode(data)
            if self._stale and any(isinstance(m, WireBar) for m in messages):
                # Before the bars: risk must see the feed live before it
                # sees a signal those bars cause.
                self._stale = False
                await self._set_status("connected", "live data flows again")
            if damaged:
                # The frame may have carried bars: repair the gap from REST
                # before anything later goes out, or they would be out of order.
                await self._backfill(http)
            await self._handle(messages, read_ns=read_ns)
            if damaged or any(isinstance(m, WireBar) for m in messages):
                # Measured from here, so time spent waiting for a full strategy
                # inbox never reads as a silent exchange.
                deadline = anyio.current_time() + stale_after

    def _decode(self, data: str | bytes) -> tuple[list[StreamMessage], bool]:
        """A frame's usable messages, and whether some of it was lost (counted, logged)."""
        try:
            frame = decode_frame(data)
        except FrameError as exc:
            self.malformed_frames += 1
            log.warning("malformed frame dropped", error=str(exc), size=len(data),
                        head=repr(data[:64]))
            return [], True
        self.ignored_messages += frame.ignored
        if frame.malformed:
            self.malformed_frames += 1
            log.warning("malformed messages dropped", count=frame.malformed,
                        kept=len(frame.messages))
        return frame.messages, frame.malformed > 0

    async def _handle(self, messages: Iterable[StreamMessage], *, read_ns: int = 0) -> None:
        bars: list[BarClosed] = []
        for m in messages:
            if isinstance(m, WireBar):
                bar = self._check(m, m.S)
                if bar is not None:
                    bars.append(bar)
            elif isinstance(m, WireError):
                error = self._error(m)
                if isinstance(error, FeedSubscriptionRefused):
                    raise error
                log.warning("data stream error", code=m.code, msg=m.msg)
            else:
                log.debug("data stream control message", message=repr(m))
        if bars:
            await self._pass_on(bars, read_ns=read_ns)

    def _check(self, wire: RestBar, symbol: str) -> BarClosed | None:
        """The bar as our message, or None if it is for another symbol or invalid."""
        if symbol not in self._symbol_set:
            self.ignored_messages += 1
            return None
        self.received += 1
        got = to_bar(wire, symbol, self._tf_ns)
        if isinstance(got, str):
            self._reject(symbol, got, wire)
            return None
        return got

    def _reject(self, symbol: str, reason: Reason, wire: RestBar) -> None:
        self.dropped_invalid[reason] = self.dropped_invalid.get(reason, 0) + 1
        log.warning("invalid bar dropped", symbol=symbol, reason=reason, t=wire.t, o=wire.o,
                    h=wire.h, l=wire.low, c=wire.c, v=wire.v)

    async def _pass_on(
        self, bars: Iterable[BarClosed], *, backfill: bool = False, read_ns: int = 0
    ) -> None:
        batches, repeats = self._seq.admit(bars)
        if repeats:
            self.duplicates += repeats
            log.info("duplicate or out-of-order bars dropped", count=repeats, backfill=backfill)
        for batch in batches:
            if read_ns and self._tick_to_order is not None:
                self._tick_to_order.arrived(batch.bars, read_ns)
            if self._before_emit is not None:
                # Market first, as in replay: the broker's events up to this
                # bar are in and handled before the strategy sees the bar.
                await self._before_emit(batch)
            # Not journaled: the strategy journals the bars it consumed.
            await self._out.emit(batch, journal=False)
            self._seq.mark(batch)
            n = len(batch.bars)
            self.emitted += n
            if backfill:
                self.backfilled += n
            self.last_bar_ns = max(self.last_bar_ns, batch.ts_ns)
            self._check_quality(batch)

    def _check_quality(self, batch: BarsClosed) -> None:
        """Run the data-quality checks over bars already passed on (counted; logged once
        per symbol, kind and session, so a bad symbol cannot flood the log)."""
        observe = self._quality.observe
        for bar in batch.bars:
            for f in observe(bar.symbol, bar.ts_ns, bar.open, bar.close, bar.volume):
                if f.first_today:
                    log.warning("data quality finding", symbol=f.symbol, kind=f.kind,
                                at=rfc3339(f.ts_ns), detail=f.detail)

    # --- backfill ------------------------------------------------------------------

    async def _backfill(self, http: aiohttp.ClientSession) -> None:
        """Fetch every bar closed since the last one passed on, and pass the new ones on.

        Raises:
            FeedUnavailable: a request failed; the reconnect will try again.
        """
        floors = {s: self._seq.last.get(s, self._since_ns) for s in self._symbols}
        known = {s: f for s, f in floors.items() if f is not None}
        if not known:
            return
        # From the start of the last bar passed on, so a bar closing after it is
        # included even if the bars are not aligned to the timeframe.
        start_ns = min(known.values()) - self._tf_ns
        end_ns = self._clock.now_ns()
        params = {
            "symbols": ",".join(self._symbols),
            "timeframe": self._timeframe,
            "start": rfc3339(start_ns),
            "end": rfc3339(end_ns),
            "limit": str(_PAGE_LIMIT),
            "adjustment": "raw",
            "sort": "asc",
        }
        if self._rest_feed is not None:
            params["feed"] = self._rest_feed
        bars: list[BarClosed] = []
        pages = 0
        token: str | None = None
        while pages == 0 or token is not None:
            if token is not None:
                params["page_token"] = token
            page = await self._get_page(http, params)
            pages += 1
            if pages > _MAX_PAGES or (token is not None and page.next_page_token == token):
                raise FeedUnavailable("backfill: the server does not end its pagination")
            token = page.next_page_token
            for symbol, rows in (page.bars or {}).items():
                floor = known.get(symbol, -1)
                for row in rows:
                    # The deliberate overlap (the bar we asked to start from)
                    # is neither news nor a duplicate: skip it uncounted.
                    bar = self._check(row, symbol) if _close_after(row, floor, self._tf_ns) \
                        else None
                    if bar is not None:
                        bars.append(bar)
        log.info("backfill fetched", bars=len(bars), pages=pages, start=params["start"],
                 end=params["end"])
        await self._pass_on(bars, backfill=True)

    async def _get_page(
        self, http: aiohttp.ClientSession, params: Mapping[str, str]
    ) -> BarsPage:
        url = f"{self._data_url}/v2/stocks/bars"
        try:
            async with http.get(url, params=dict(params)) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FeedUnavailable(f"backfill: {type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise FeedUnavailable(f"backfill: HTTP {status}: {body[:200]!r}")
        try:
            return decode_page(body)
        except msgspec.DecodeError as exc:
            raise FeedUnavailable(f"backfill: bad page: {exc}") from exc

    # --- status --------------------------------------------------------------------

    async def _set_status(self, status: Status, reason: str) -> None:
        previous, self._status = self._status, status
        if status == previous or (previous is None and status == "disconnected"):
            return  # no change, or nothing to report before the first connection
        log.info("feed status changed", status=status, previous=previous, reason=reason)
        await self._out.emit(
            FeedStatusChanged(
                ts_ns=self._clock.now_ns(),
                status=status,
                reason=reason,
                dropped_invalid=sum(self.dropped_invalid.values()),
            )
        )

    @staticmethod
    def _error(m: WireError) -> TraderError:
        text = f"data stream error {m.code}: {m.msg}"
        if m.code in _FATAL_CODES or "insufficient subscription" in m.msg.lower():
            return FeedSubscriptionRefused(text)
        return FeedUnavailable(text)


def _close_after(row: RestBar, floor_ns: int, timeframe_ns: int) -> bool:
    """Whether a REST bar closes after ``floor_ns`` (unparseable: let the check count it)."""
    try:
        return close_ns(parse_rfc3339_ns(row.t), timeframe_ns) > floor_ns
    except ValueError:
        return True
