"""The live feed over real sockets: the sandbox exchange, or a scripted websocket server.

The sandbox runs with ``speed="max"``, so its clock moves only when a test
calls ``market.advance``: which bars exist, and when, is decided by the test.
The feed's clock reads the sandbox clock, as a live feed's reads the wall.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import anyio
import msgspec
import pytest
from structlog.testing import capture_logs
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from trader.actors.base import Outbox
from trader.actors.feed import FeedSubscriptionRefused, LiveFeed
from trader.channels import Channel
from trader.config import LiveFeedConfig
from trader.data.bars import BarTable
from trader.data.synth import synth_bars
from trader.feedcheck import (
    RestBar,
    Sequencer,
    WireBar,
    WireError,
    WireSubscription,
    bar_problem,
    decode_frame,
    parse_rfc3339_ns,
    rfc3339,
    to_bar,
)
from trader.messages import BarClosed, BarsClosed, FeedStatusChanged, Message
from trader.sandbox import FaultConfig, Sandbox
from trader.secrets import Credentials

KEY = "feed-key"
SECRET = "feed-secret"
SYMBOLS = ("AAPL", "MSFT")
START = "2024-01-02T14:30:00Z"
MINUTE_NS = 60_000_000_000
WAIT_S = 10.0
"""Upper bound for any wait; the tests normally finish far sooner."""


@cache
def _tables() -> dict[str, BarTable]:
    return synth_bars(list(SYMBOLS), days=1, freq="1min", seed=11)


@cache
def _daily_tables() -> dict[str, BarTable]:
    return synth_bars(list(SYMBOLS), days=10, freq="1d", seed=3)


class SandboxClock:
    """The sandbox's clock, read the way a live feed reads the wall clock."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def now_ns(self) -> int:
        return self._sandbox.market.now_ns()

    async def sleep_until(self, ts_ns: int) -> None:  # the feed never sleeps on it
        raise NotImplementedError


class Harness:
    """An outbox routed into two channels, and what has come out of them so far."""

    def __init__(self) -> None:
        self.bar_inbox: Channel[Message] = Channel("strategy", 100_000)
        self.status_inbox: Channel[Message] = Channel("risk", 1_000)
        self.outbox = Outbox(
            "feed", {BarsClosed: [self.bar_inbox], FeedStatusChanged: [self.status_inbox]}, None
        )
        self.batches: list[BarsClosed] = []
        self.statuses: list[FeedStatusChanged] = []

    @property
    def bars(self) -> list[BarClosed]:
        return [b for batch in self.batches for b in batch.bars]

    async def bars_until(self, n: int) -> list[BarClosed]:
        """Wait until at least ``n`` bars have come out."""
        with anyio.fail_after(WAIT_S):
            while len(self.bars) < n:
                batch = await self.bar_inbox.receive_batch()
                self.bar_inbox.done(len(batch))
                self.batches.extend(m for m in batch if isinstance(m, BarsClosed))
        return self.bars

    async def status_until(self, *wanted: str) -> list[str]:
        """Wait until the statuses seen so far hold ``wanted`` in a row."""
        with anyio.fail_after(WAIT_S):
            while not _holds(self.status_names(), list(wanted)):
                batch = await self.status_inbox.receive_batch()
                self.status_inbox.done(len(batch))
                self.statuses.extend(m for m in batch if isinstance(m, FeedStatusChanged))
        return self.status_names()

    def status_names(self) -> list[str]:
        return [s.status for s in self.statuses]


def _holds(names: list[str], wanted: list[str]) -> bool:
    n = len(wanted)
    return any(names[i : i + n] == wanted for i in range(len(names) - n + 1))


def make_feed(
    harness: Harness,
    *,
    stream_url: str,
    data_url: str,
    clock: Any,
    last_seen: dict[str, int] | None = None,
    market_open: bool = False,
    stale_after_s: float = 60.0,
    reconnect_initial_s: float = 0.005,
    reconnect_max_s: float = 0.04,
    timeframe_s: int = 60,
) -> LiveFeed:
    config = LiveFeedConfig(
        kind="alpaca",
        symbols=SYMBOLS,
        timeframe_s=timeframe_s,
        stale_after_s=stale_after_s,
        reconnect_initial_s=reconnect_initial_s,
        reconnect_max_s=reconnect_max_s,
    )
    return LiveFeed(
        harness.outbox,
        config=config,
        stream_url=stream_url,
        data_url=data_url,
        credentials=Credentials(key_id=KEY, secret_key=SECRET),
        clock=clock,
        symbols=SYMBOLS,
        rng=random.Random(7),
        last_seen=last_seen,
        market_open=lambda _: market_open,
        request_timeout_s=5.0,
    )


def sandbox_feed(sb: Sandbox, harness: Harness, **kw: Any) -> LiveFeed:
    return make_feed(
        harness, stream_url=sb.data_ws_url, data_url=sb.base_url, clock=SandboxClock(sb), **kw
    )


def _sandbox(faults: FaultConfig | None = None, *, daily: bool = False) -> Sandbox:
    if daily:
        return Sandbox(_daily_tables(), key_id=KEY, secret=SECRET, start="2024-01-02")
    return Sandbox(_tables(), key_id=KEY, secret=SECRET, start=START, faults=faults)


def published(sb: Sandbox, after_ns: int | None = None) -> list[BarClosed]:
    """Every bar the sandbox has published (closing after ``after_ns``), in (ts, symbol)."""
    tape = sb.tape
    first = tape.cursor_after(after_ns if after_ns is not None else sb.market.start_ns)
    return [tape.merged_bar(k) for k in range(first, tape.cursor_after(sb.market.now_ns()))]


def assert_batches_ordered(batches: Sequence[BarsClosed]) -> None:
    for batch in batches:
        assert batch.bars, batch
        assert {b.ts_ns for b in batch.bars} == {batch.ts_ns}
        assert [b.symbol for b in batch.bars] == sorted(b.symbol for b in batch.bars)
    assert [b.ts_ns for b in batches] == sorted(b.ts_ns for b in batches)


# --- the sandbox exchange ------------------------------------------------------------


@pytest.mark.asyncio
async def test_streamed_bars_arrive_with_close_times_and_values_in_order() -> None:
    """Each published minute arrives as one BarsClosed stamped with the bar's close time,
    with the sandbox's exact values, in (ts, symbol) order; the feed reports connected."""
    h = Harness()
    async with _sandbox() as sb, anyio.create_task_group() as tg:
        feed = sandbox_feed(sb, h)
        await tg.start(feed.run)
        await sb.market.advance(bars=12)
        expected = published(sb)
        assert len(expected) == 24
        assert await h.bars_until(len(expected)) == expected
        tg.cancel_scope.cancel()
    assert_batches_ordered(h.batches)
    assert len(h.batches) == 12
    first = expected[0]
    assert first.ts_ns == parse_rfc3339_ns(START) + MINUTE_NS  # the 14:30 bar closes at 14:31
    await h.status_until("connected")
    assert (feed.received, feed.emitted, feed.duplicates, feed.reconnects) == (24, 24, 0, 0)
    assert feed.last_bar_ns == expected[-1].ts_ns
    assert feed.last_emitted == {"AAPL": expected[-1].ts_ns, "MSFT": expected[-1].ts_ns}


@pytest.mark.asyncio
async def test_dropped_connections_lose_no_bar_and_repeat_none() -> None:
    """With the socket cut every 5 frames, gaps are backfilled over REST: every bar comes
    out exactly once and in order, and each cut is reported as a status change."""
    h = Harness()
    # Frames 1-3 of each connection are control frames, so each carries two minutes.
    async with _sandbox(FaultConfig(drop_every=5)) as sb, anyio.create_task_group() as tg:
        feed = sandbox_feed(sb, h)
        await tg.start(feed.run)
        for _ in range(30):
            await sb.market.advance(bars=1)
            await h.bars_until(len(published(sb)))
        tg.cancel_scope.cancel()
    expected = published(sb)
    assert h.bars == expected
    assert_batches_ordered(h.batches)
    assert feed.reconnects >= 8
    assert feed.backfilled > 0
    assert feed.emitted == len(expected) == 60
    assert feed.received == feed.emitted + feed.duplicates
    names = await h.status_until("connected")
    assert names.count("disconnected") >= 8
    assert all(a != b for a, b in itertools.pairwise(names))  # transitions only


@pytest.mark.asyncio
async def test_restart_backfills_from_last_seen_then_streams() -> None:
    """Given ``last_seen``, a starting feed first fetches what closed after it over REST,
    then streams; nothing at or before ``last_seen`` is passed on again."""
    h = Harness()
    async with _sandbox() as sb:
        await sb.market.advance(bars=10)
        seen = published(sb)[5].ts_ns  # three minutes processed by a predecessor
        async with anyio.create_task_group() as tg:
            feed = sandbox_feed(sb, h, last_seen={"AAPL": seen, "MSFT": seen})
            await tg.start(feed.run)
            await h.bars_until(14)
            assert feed.backfilled == 14
            await sb.market.advance(bars=3)
            await h.bars_until(20)
            tg.cancel_scope.cancel()
        assert h.bars == published(sb, after_ns=seen)
    assert_batches_ordered(h.batches)


@pytest.mark.asyncio
async def test_daily_bars_close_at_the_session_close_streamed_or_backfilled() -> None:
    """With ``timeframe_s = 86400`` a bar Alpaca stamps at midnight New York closes at the
    session close, whether it arrives on the stream or from a backfill."""
    h = Harness()
    async with _sandbox(daily=True) as sb:
        await sb.market.advance(bars=3)
        seen = published(sb)[1].ts_ns  # the first session, already processed
        async with anyio.create_task_group() as tg:
            feed = sandbox_feed(sb, h, timeframe_s=86_400, last_seen={s: seen for s in SYMBOLS})
            await tg.start(feed.run)
            await h.bars_until(4)
            assert feed.backfilled == 4
            await sb.market.advance(bars=2)
            await h.bars_until(8)
            tg.cancel_scope.cancel()
        assert h.bars == published(sb, after_ns=seen)
    assert h.bars[0].ts_ns == parse_rfc3339_ns("2024-01-03T21:00:00Z")  # 16:00 New York
    assert_batches_ordered(h.batches)


@pytest.mark.asyncio
async def test_garbage_frames_are_counted_and_logged_and_the_feed_keeps_running() -> None:
    """Malformed and truncated frames are counted and logged; the feed stays connected and
    repairs the lost minutes from REST, so no bar is missing."""
    h = Harness()
    faults = FaultConfig(corrupt="malformed", corrupt_count=2)
    with capture_logs() as logs:
        async with _sandbox(faults) as sb, anyio.create_task_group() as tg:
            feed = sandbox_feed(sb, h)
            await tg.start(feed.run)
            for i in range(8):
                if i == 4:
                    sb.faults.update({"corrupt": "truncated", "corrupt_count": 2})
                await sb.market.advance(bars=1)
                await h.bars_until(len(published(sb)))
            tg.cancel_scope.cancel()
    assert h.bars == published(sb)
    assert feed.malformed_frames == 4
    assert feed.reconnects == 0
    dropped = [e for e in logs if e["event"] == "malformed frame dropped"]
    assert len(dropped) == 4
    assert all(e["log_level"] == "warning" for e in dropped)


@pytest.mark.asyncio
async def test_refused_logins_are_retried_with_backoff_until_accepted() -> None:
    """While logins are refused (402) the feed retries with growing, jittered delays and
    is not ready; once accepted it reports ready and streams."""
    h = Harness()
    ready = anyio.Event()
    with capture_logs() as logs:
        async with _sandbox(FaultConfig(refuse_auth=True)) as sb, anyio.create_task_group() as tg:
            feed = sandbox_feed(sb, h, reconnect_initial_s=0.002, reconnect_max_s=0.016)

            async def start() -> None:
                await tg.start(feed.run)
                ready.set()

            tg.start_soon(start)
            # Each retry opens a new connection, which wakes the hub's waiters.
            with anyio.fail_after(WAIT_S):
                await sb.hub.wait_until(lambda _: feed.reconnects >= 6)
            assert not ready.is_set()
            sb.faults.update({"refuse_auth": False})
            with anyio.fail_after(WAIT_S):
                await ready.wait()
            await sb.market.advance(bars=2)
            assert await h.bars_until(4) == published(sb)
            tg.cancel_scope.cancel()
    retries = [e for e in logs if e["event"] == "feed disconnected; reconnecting"]
    assert "402" in retries[0]["reason"]
    for e in retries[:6]:
        assert 0.0 <= e["retry_in_s"] <= min(0.016, 0.002 * 2 ** (e["attempt"] - 1)) + 1e-3
    # Never connected before, so the failed logins are not status changes.
    assert await h.status_until("connected") == ["connected"]


@pytest.mark.asyncio
async def test_connection_limit_is_retried_until_the_slot_is_free() -> None:
    """A second session on the same key gets 406; the feed retries until the first ends."""
    h = Harness()
    ready = anyio.Event()
    async with _sandbox() as sb, anyio.create_task_group() as tg:
        feed = sandbox_feed(sb, h)

        async def start() -> None:
            await tg.start(feed.run)
            ready.set()

        with capture_logs() as logs:
            async with ws_connect(sb.data_ws_url, proxy=None) as holder:
                await holder.recv()
                await holder.send(_json({"action": "auth", "key": KEY, "secret": SECRET}))
                assert "authenticated" in str(await holder.recv())
                tg.start_soon(start)
                with anyio.fail_after(WAIT_S):
                    await sb.hub.wait_until(lambda _: feed.reconnects >= 2)
                assert not ready.is_set()
            with anyio.fail_after(WAIT_S):
                await ready.wait()
        tg.cancel_scope.cancel()
    retries = [e for e in logs if e["event"] == "feed disconnected; reconnecting"]
    assert "406" in retries[0]["reason"]


@pytest.mark.asyncio
async def test_no_data_while_the_market_is_open_is_stale_until_live_bars_flow_again() -> None:
    """With the market open and no bars for ``stale_after_s``, the feed reports stale and
    reconnects; it stays stale through reconnects and backfills, and reports connected
    only when a live frame carries bars again."""
    h = Harness()
    async with _sandbox() as sb, anyio.create_task_group() as tg:
        feed = sandbox_feed(sb, h, market_open=True, stale_after_s=0.2)
        await tg.start(feed.run)
        await h.status_until("connected", "stale")
        assert "no data for 0.2s" in h.statuses[1].reason
        # A bar published while the feed reconnects reaches it by backfill,
        # which proves nothing about the live stream; publish until one
        # arrives on a live connection.
        with anyio.fail_after(WAIT_S):
            while len(h.statuses) < 3:
                await sb.hub.wait_until(lambda hub: hub.subscribed("bars", SYMBOLS[0]) > 0)
                await sb.market.advance(bars=1)
                with anyio.move_on_after(0.5):
                    await h.status_until("connected", "stale", "connected")
        assert h.status_names()[:3] == ["connected", "stale", "connected"]
        assert h.statuses[2].reason == "live data flows again"
        assert feed.reconnects >= 1
        tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_quiet_while_the_market_is_closed_is_not_stale() -> None:
    """With the market closed, silence is normal: no stale event, no reconnect."""
    h = Harness()
    async with _sandbox() as sb, anyio.create_task_group() as tg:
        feed = sandbox_feed(sb, h, market_open=False, stale_after_s=0.05)
        await tg.start(feed.run)
        await h.status_until("connected")
        with anyio.move_on_after(0.3):  # six staleness windows pass in silence
            await h.status_until("stale")
        tg.cancel_scope.cancel()
    assert h.status_names() == ["connected"]
    assert feed.reconnects == 0


# --- a scripted server: what the sandbox never sends ---------------------------------


def _bar(symbol: str, minute: int, **fields: Any) -> dict[str, Any]:
    body = {"T": "b", "S": symbol, "t": f"2024-01-02T14:{30 + minute:02d}:00Z",
            "o": 10.0, "h": 11.0, "l": 9.0, "c": 10.5, "v": 100.0, "n": 5, "vw": 10.2}
    return body | fields


def _json(messages: Any) -> str:
    return msgspec.json.encode(messages).decode()


@asynccontextmanager
async def scripted_server(
    frames: Sequence[str], *, auth_reply: str = '[{"T":"success","msg":"authenticated"}]'
) -> AsyncIterator[str]:
    """A data-stream server that logs in anyone, then sends ``frames`` and waits."""

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.send('[{"T":"success","msg":"connected"}]')
            await ws.recv()
            await ws.send(auth_reply)
            await ws.recv()
            await ws.send(_json([{"T": "subscription", "bars": list(SYMBOLS)}]))
            for frame in frames:
                await ws.send(frame)
            await ws.wait_closed()
        except ConnectionClosed:
            pass

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/v2/iex"


class FixedClock:
    def now_ns(self) -> int:
        return parse_rfc3339_ns("2024-01-02T15:00:00Z")

    async def sleep_until(self, ts_ns: int) -> None:
        raise NotImplementedError


@pytest.mark.asyncio
async def test_invalid_duplicate_and_out_of_order_bars_are_counted_and_never_passed_on() -> None:
    """Bars with bad prices, volumes or timestamps are counted by reason and logged; repeats
    and older bars are dropped; unknown messages are ignored; garbage shapes are counted."""
    frames = [
        _json([_bar("AAPL", 0), _bar("MSFT", 0), {"T": "q", "S": "AAPL"}]),
        _json([_bar("AAPL", 1, h=8.0), _bar("MSFT", 1, l=-1.0), _bar("AAPL", 1, c=12.0)]),
        _json([_bar("MSFT", 1, v=-5.0), _bar("AAPL", 1, t="yesterday"), _bar("IBM", 1)]),
        _json([_bar("AAPL", 0), _bar("MSFT", 0, c=9.5)]),  # repeats of minute 0
        _json({"T": "b"}),  # an object, not an array
        _json([_bar("AAPL", 2), {"T": "b", "S": "MSFT"}, 7]),  # two bad elements, one good
        _json([_bar("MSFT", 2), _bar("AAPL", 1)]),  # AAPL minute 1 is older than minute 2
    ]
    h = Harness()
    with capture_logs() as logs:
        # The sandbox only answers the gap repairs after the garbage frames (its
        # clock never moves, so it has no bars to give).
        async with _sandbox() as sb, scripted_server(frames) as url, \
                anyio.create_task_group() as tg:
            feed = make_feed(h, stream_url=url, data_url=sb.base_url, clock=FixedClock())
            await tg.start(feed.run)
            await h.bars_until(4)  # the last frame's repeat is counted before its bar goes out
            tg.cancel_scope.cancel()
    assert [(b.symbol, b.ts_ns) for b in h.bars] == [
        ("AAPL", parse_rfc3339_ns("2024-01-02T14:31:00Z")),
        ("MSFT", parse_rfc3339_ns("2024-01-02T14:31:00Z")),
        ("AAPL", parse_rfc3339_ns("2024-01-02T14:33:00Z")),
        ("MSFT", parse_rfc3339_ns("2024-01-02T14:33:00Z")),
    ]
    assert feed.dropped_invalid == {
        "crossed": 2, "non_positive_price": 1, "negative_volume": 1, "bad_timestamp": 1,
    }
    assert (feed.duplicates, feed.malformed_frames, feed.ignored_messages) == (3, 2, 2)
    assert feed.received == feed.emitted + sum(feed.dropped_invalid.values()) + feed.duplicates
    invalid = [e for e in logs if e["event"] == "invalid bar dropped"]
    assert {(e["symbol"], e["reason"]) for e in invalid} == {
        ("AAPL", "crossed"), ("MSFT", "non_positive_price"), ("MSFT", "negative_volume"),
        ("AAPL", "bad_timestamp"),
    }
    assert all(e["log_level"] == "warning" for e in invalid)
    assert len([e for e in logs if e["event"] == "backfill fetched"]) == 2
    assert feed.reconnects == 0


@pytest.mark.asyncio
async def test_insufficient_subscription_is_fatal() -> None:
    """Alpaca's 409 "insufficient subscription" cannot be fixed by retrying: run() raises."""
    refusal = _json([{"T": "error", "code": 409, "msg": "insufficient subscription"}])
    h = Harness()
    async with scripted_server([], auth_reply=refusal) as url:
        feed = make_feed(h, stream_url=url, data_url="http://127.0.0.1:9", clock=FixedClock())
        with anyio.fail_after(WAIT_S), pytest.raises(FeedSubscriptionRefused, match="409"):
            await feed.run()
    assert feed.reconnects == 0


# --- the pure checks -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({}, None),
        ({"o": math.nan}, "non_finite"),
        ({"c": math.inf}, "non_finite"),
        ({"v": -math.inf}, "non_finite"),
        ({"vw": math.nan}, "non_finite"),
        ({"o": 0.0}, "non_positive_price"),
        ({"low": -1.0}, "non_positive_price"),
        ({"h": 8.0}, "crossed"),
        ({"o": 11.5}, "crossed"),
        ({"c": 8.5}, "crossed"),
        ({"v": -1.0}, "negative_volume"),
        ({"v": 0.0}, None),
        ({"o": 9.0, "h": 9.0, "low": 9.0, "c": 9.0}, None),
    ],
)
def test_bar_problem_names_the_first_fault(fields: dict[str, float], reason: str | None) -> None:
    """A bar is finite, positive, not crossed and has a non-negative volume."""
    bar = {"o": 10.0, "h": 11.0, "low": 9.0, "c": 10.5, "v": 100.0, "vw": 10.2} | fields
    assert bar_problem(**bar) == reason


def test_to_bar_stamps_the_close_time_and_keeps_every_field() -> None:
    """Alpaca's ``t`` is the bar start; our ``ts_ns`` is start plus the timeframe."""
    wire = RestBar(t="2024-01-02T14:30:00Z", o=10.0, h=11.0, low=9.0, c=10.5, v=100.0, n=None,
                   vw=None)
    assert to_bar(wire, "AAPL", 5 * MINUTE_NS) == BarClosed(
        ts_ns=parse_rfc3339_ns("2024-01-02T14:35:00Z"), symbol="AAPL", open=10.0, high=11.0,
        low=9.0, close=10.5, volume=100.0, vwap=None, trades=None,
    )
    early_close = RestBar(t="2024-07-03T04:00:00Z", o=1.0, h=1.0, low=1.0, c=1.0, v=0.0)
    daily = to_bar(early_close, "AAPL", 86_400 * 1_000_000_000)
    assert isinstance(daily, BarClosed)
    assert daily.ts_ns == parse_rfc3339_ns("2024-07-03T13:00:00-04:00")
    nan = RestBar(t="2024-01-02T14:30:00Z", o=math.nan, h=11.0, low=9.0, c=10.5, v=1.0)
    assert to_bar(nan, "AAPL", MINUTE_NS) == "non_finite"


def test_rfc3339_round_trips_nanoseconds_and_offsets() -> None:
    """Every fraction digit survives, and offsets are read as such."""
    ts = parse_rfc3339_ns("2021-02-22T15:51:45.335689322Z")
    assert ts % 1_000_000_000 == 335_689_322
    assert rfc3339(ts) == "2021-02-22T15:51:45.335689322Z"
    assert parse_rfc3339_ns("2024-01-02T09:30:00-05:00") == parse_rfc3339_ns(
        "2024-01-02T14:30:00Z"
    )
    for bad in ("2024-01-02", "2024-01-02T14:30:00", "soon", "2024-01-02T14:30:00.Z"):
        with pytest.raises(ValueError, match=r".+"):
            parse_rfc3339_ns(bad)


def test_decode_frame_keeps_good_messages_and_counts_the_rest() -> None:
    """Unknown types are ignored, bad elements counted; neither spoils the frame."""
    frame = decode_frame(_json([
        _bar("AAPL", 0), {"T": "t", "S": "AAPL", "p": 1.0}, {"T": "b", "S": "AAPL"}, "x",
        {"T": "error", "code": 406, "msg": "connection limit exceeded"},
        {"T": "subscription", "bars": ["AAPL"], "trades": []},
    ]))
    assert [type(m) for m in frame.messages] == [WireBar, WireError, WireSubscription]
    assert (frame.malformed, frame.ignored) == (2, 1)


def test_sequencer_passes_each_bar_once_in_ts_then_symbol_order() -> None:
    """Repeats and older bars are refused until marked batches move the floor."""
    def bar(symbol: str, minute: int) -> BarClosed:
        return BarClosed(ts_ns=minute * MINUTE_NS, symbol=symbol, open=1.0, high=1.0, low=1.0,
                         close=1.0, volume=0.0)

    seq = Sequencer({"AAPL": 1 * MINUTE_NS})
    batches, repeats = seq.admit(
        [bar("MSFT", 2), bar("AAPL", 2), bar("AAPL", 1), bar("MSFT", 1), bar("MSFT", 2)]
    )
    assert repeats == 2
    assert [[(b.symbol, b.ts_ns // MINUTE_NS) for b in x.bars] for x in batches] == [
        [("MSFT", 1)], [("AAPL", 2), ("MSFT", 2)],
    ]
    assert seq.last == {"AAPL": MINUTE_NS}  # nothing recorded until delivered
    for batch in batches:
        seq.mark(batch)
    assert seq.admit([bar("AAPL", 2), bar("MSFT", 3)])[1] == 1
