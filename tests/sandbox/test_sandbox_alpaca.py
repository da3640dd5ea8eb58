"""The real alpaca-py clients against the sandbox, over sockets on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import anyio
import pytest

from tests.sandbox.sandbox_support import (
    KEY,
    SECRET,
    Mailbox,
    StreamThread,
    alpaca,
    data_client,
    minute_tables,
    trading_client,
)
from trader.sandbox import Sandbox

START = "2024-01-02T14:30:00Z"  # 09:30 New York, the first session of the data
UTC = dt.UTC


def _sandbox(**kw: Any) -> Sandbox:
    return Sandbox(minute_tables(), key_id=KEY, secret=SECRET, start=START, **kw)


def _next_bar(sb: Sandbox, symbol: str) -> tuple[int, float]:
    """Close time and open price of ``symbol``'s first bar after the sandbox clock."""
    row = sb.tape.last_row_at_or_before(symbol, sb.market.now_ns()) + 1
    table = sb.tape.tables[symbol]
    return int(table.ts_ns[row]), float(table.open[row])


@pytest.mark.asyncio
async def test_trading_client_account_clock_calendar_and_assets() -> None:
    """TradingClient parses the account, clock, calendar and assets the sandbox sends."""
    async with _sandbox() as sb:
        await sb.market.advance(bars=5)
        tc = trading_client(sb)
        account = await anyio.to_thread.run_sync(tc.get_account)
        assert account.status.value == "ACTIVE"
        assert account.cash == account.equity == account.buying_power == "100000.00"

        clock = await anyio.to_thread.run_sync(tc.get_clock)
        assert clock.is_open
        assert clock.timestamp == dt.datetime(2024, 1, 2, 14, 35, tzinfo=UTC)
        assert clock.next_close == dt.datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
        assert clock.next_open == dt.datetime(2024, 1, 3, 14, 30, tzinfo=UTC)

        req = alpaca()["requests"].GetCalendarRequest(
            start=dt.date(2023, 12, 29), end=dt.date(2024, 1, 3)
        )
        days = await anyio.to_thread.run_sync(tc.get_calendar, req)
        assert [d.date for d in days] == [
            dt.date(2023, 12, 29), dt.date(2024, 1, 2), dt.date(2024, 1, 3)
        ]
        assert days[1].open == dt.datetime(2024, 1, 2, 9, 30)
        assert days[1].close == dt.datetime(2024, 1, 2, 16, 0)

        assets = await anyio.to_thread.run_sync(tc.get_all_assets)
        assert sorted(a.symbol for a in assets) == ["AAPL", "MSFT"]
        aapl = await anyio.to_thread.run_sync(tc.get_asset, "AAPL")
        assert aapl.exchange.value == "NASDAQ"
        assert aapl.asset_class.value == "us_equity"
        by_id = await anyio.to_thread.run_sync(tc.get_asset, str(aapl.id))
        assert by_id.symbol == "AAPL"


@pytest.mark.asyncio
async def test_trading_client_orders_fill_cancel_and_close_position() -> None:
    """Submit, look up, list, fill, cancel and close a position with TradingClient."""
    a = alpaca()
    req, enums = a["requests"], a["enums"]
    async with _sandbox() as sb:
        await sb.market.advance(bars=5)
        tc = trading_client(sb)
        buy = await anyio.to_thread.run_sync(
            tc.submit_order,
            req.MarketOrderRequest(
                symbol="AAPL", qty=10, side="buy", time_in_force="day", client_order_id="buy-1"
            ),
        )
        assert buy.status == enums.OrderStatus.ACCEPTED
        limit = await anyio.to_thread.run_sync(
            tc.submit_order,
            req.LimitOrderRequest(
                symbol="MSFT", qty=3, side="buy", time_in_force="gtc", limit_price="1.50"
            ),
        )
        assert float(limit.limit_price) == 1.5

        found = await anyio.to_thread.run_sync(tc.get_order_by_client_id, "buy-1")
        assert found.id == buy.id
        assert found.status == enums.OrderStatus.NEW
        open_orders = await anyio.to_thread.run_sync(
            tc.get_orders, req.GetOrdersRequest(status="open", direction="asc")
        )
        assert [o.id for o in open_orders] == [buy.id, limit.id]
        only_msft = await anyio.to_thread.run_sync(
            tc.get_orders, req.GetOrdersRequest(status="open", symbols=["MSFT"])
        )
        assert [o.id for o in only_msft] == [limit.id]

        fill_ts, fill_price = _next_bar(sb, "AAPL")
        await sb.market.advance(until_ns=fill_ts)
        filled = await anyio.to_thread.run_sync(tc.get_order_by_id, buy.id)
        assert filled.status == enums.OrderStatus.FILLED
        assert float(filled.filled_qty) == 10
        assert float(filled.filled_avg_price) == pytest.approx(fill_price, abs=0.005)
        assert filled.filled_at == dt.datetime.fromtimestamp(fill_ts / 1e9, UTC)

        positions = await anyio.to_thread.run_sync(tc.get_all_positions)
        assert [(p.symbol, p.qty, p.side.value) for p in positions] == [("AAPL", "10", "long")]
        position = await anyio.to_thread.run_sync(tc.get_open_position, "AAPL")
        assert position.cost_basis == f"{round(fill_price * 10, 2):.2f}"

        assert await anyio.to_thread.run_sync(tc.cancel_order_by_id, limit.id) is None
        canceled = await anyio.to_thread.run_sync(tc.get_order_by_id, limit.id)
        assert canceled.status == enums.OrderStatus.CANCELED
        assert canceled.canceled_at is not None
        closed = await anyio.to_thread.run_sync(
            tc.get_orders, req.GetOrdersRequest(status="closed")
        )
        assert {o.id for o in closed} == {buy.id, limit.id}

        closing = await anyio.to_thread.run_sync(tc.close_position, "AAPL")
        assert closing.side == enums.OrderSide.SELL
        assert closing.qty == "10"
        await sb.market.advance(until_ns=_next_bar(sb, "AAPL")[0])
        assert await anyio.to_thread.run_sync(tc.get_all_positions) == []
        account = await anyio.to_thread.run_sync(tc.get_account)
        assert account.equity == account.cash


@pytest.mark.asyncio
async def test_trading_client_errors_carry_alpaca_codes() -> None:
    """Duplicate client order ids, unknown orders and unknown positions raise APIError
    with Alpaca's status and code."""
    a = alpaca()
    req, APIError = a["requests"], a["exceptions"].APIError
    async with _sandbox() as sb:
        tc = trading_client(sb)
        order = req.MarketOrderRequest(
            symbol="AAPL", qty=1, side="buy", time_in_force="day", client_order_id="dup"
        )
        await anyio.to_thread.run_sync(tc.submit_order, order)
        with pytest.raises(APIError) as dup:
            await anyio.to_thread.run_sync(tc.submit_order, order)
        assert dup.value.status_code == 422
        assert dup.value.code == 40010001
        with pytest.raises(APIError) as missing:
            await anyio.to_thread.run_sync(tc.get_order_by_id, str(uuid.uuid4()))
        assert missing.value.status_code == 404
        assert missing.value.code == 40410000
        with pytest.raises(APIError) as no_position:
            await anyio.to_thread.run_sync(tc.get_open_position, "MSFT")
        assert no_position.value.status_code == 404
        with pytest.raises(APIError) as poor:
            await anyio.to_thread.run_sync(
                tc.submit_order,
                req.LimitOrderRequest(
                    symbol="AAPL", qty=100_000, side="buy", time_in_force="day", limit_price=50
                ),
            )
        assert poor.value.status_code == 403
        assert poor.value.code == 40310000


@pytest.mark.asyncio
async def test_trading_client_cancel_all_and_close_all_answer_207() -> None:
    """cancel_orders and close_all_positions parse the sandbox's 207 arrays."""
    req = alpaca()["requests"]
    async with _sandbox() as sb:
        await sb.market.advance(bars=2)
        tc = trading_client(sb)
        for symbol in ("AAPL", "MSFT"):
            await anyio.to_thread.run_sync(
                tc.submit_order,
                req.MarketOrderRequest(symbol=symbol, qty=5, side="buy", time_in_force="day"),
            )
        await sb.market.advance(bars=3)
        resting = await anyio.to_thread.run_sync(
            tc.submit_order,
            req.LimitOrderRequest(
                symbol="AAPL", qty=1, side="buy", time_in_force="gtc", limit_price=1
            ),
        )
        canceled = await anyio.to_thread.run_sync(tc.cancel_orders)
        assert [(c.id, c.status) for c in canceled] == [(resting.id, 200)]
        closed = await anyio.to_thread.run_sync(tc.close_all_positions)
        assert sorted((c.symbol, c.status) for c in closed) == [("AAPL", 200), ("MSFT", 200)]
        await sb.market.advance(bars=3)
        assert await anyio.to_thread.run_sync(tc.get_all_positions) == []


@pytest.mark.asyncio
async def test_historical_client_paginates_bars_across_symbols() -> None:
    """StockHistoricalDataClient follows next_page_token; limit is a total across symbols,
    ordered by symbol then time, with bar start times."""
    a = alpaca()
    dreq, tf = a["data_requests"], a["timeframe"]
    async with _sandbox(bars_page_limit=7) as sb:
        await sb.market.advance(bars=30)
        dc = data_client(sb)
        start = dt.datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
        end = dt.datetime(2024, 1, 2, 14, 49, tzinfo=UTC)  # 20 bar starts per symbol
        request = dreq.StockBarsRequest(
            symbol_or_symbols=["MSFT", "AAPL"], timeframe=tf.TimeFrame.Minute,
            start=start, end=end, limit=30,
        )
        got = await anyio.to_thread.run_sync(dc.get_stock_bars, request)
        aapl, msft = got.data["AAPL"], got.data["MSFT"]
        table = sb.tape.tables["AAPL"]
        expected = [
            (dt.datetime.fromtimestamp(int(t) / 1e9 - 60, UTC), float(c))
            for t, c in zip(table.ts_ns, table.close, strict=True)
            if start.timestamp() <= t / 1e9 - 60 <= end.timestamp()
        ]
        assert [(b.timestamp, b.close) for b in aapl] == expected
        assert len(aapl) + len(msft) == 30  # the total limit cut MSFT short
        assert all(b.vwap is not None and b.trade_count is not None for b in aapl)

        everything = dreq.StockBarsRequest(
            symbol_or_symbols="MSFT", timeframe=tf.TimeFrame.Minute, start=start, end=end
        )
        all_msft = await anyio.to_thread.run_sync(dc.get_stock_bars, everything)
        assert len(all_msft.data["MSFT"]) == len(
            [t for t in sb.tape.tables["MSFT"].ts_ns if start.timestamp() <= t / 1e9 - 60
             <= end.timestamp()]
        )


@pytest.mark.asyncio
async def test_stock_data_stream_receives_bars_and_resubscribes_after_a_drop() -> None:
    """StockDataStream (msgpack, fragmented subscribe) gets each bar as it closes, and after
    the sandbox cuts the socket it reconnects into the freed slot and resubscribes."""
    live = alpaca()["live"]
    async with _sandbox() as sb:
        mailbox = Mailbox()
        stream = live.StockDataStream(KEY, SECRET, url_override=sb.data_ws_url)

        async def on_bar(bar: Any) -> None:
            mailbox.put_threadsafe(bar)

        stream.subscribe_bars(on_bar, "AAPL")
        runner = StreamThread(stream, sb).start()
        try:
            with anyio.fail_after(15):
                await sb.hub.wait_until(lambda h: h.subscribed("bars", "AAPL") == 1)
            await sb.market.advance(bars=2)
            first = [await mailbox.get(), await mailbox.get()]
            assert [b.symbol for b in first] == ["AAPL", "AAPL"]
            assert first[0].timestamp == dt.datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
            assert first[0].close == float(sb.tape.tables["AAPL"].close[0])

            sb.drop_connections()
            with anyio.fail_after(15):
                await sb.hub.wait_until(lambda h: not h.data_conns)
                await sb.hub.wait_until(lambda h: h.subscribed("bars", "AAPL") == 1)
            await sb.market.advance(bars=1)
            again = await mailbox.get()
            assert again.timestamp == dt.datetime(2024, 1, 2, 14, 32, tzinfo=UTC)
        finally:
            await runner.stop()


@pytest.mark.asyncio
async def test_trading_stream_reports_new_and_fill_for_a_filled_order() -> None:
    """TradingStream parses the sandbox's binary trade-update frames for an order that fills."""
    a = alpaca()
    async with _sandbox() as sb:
        mailbox = Mailbox()
        stream = a["trading_stream"].TradingStream(KEY, SECRET, url_override=sb.trade_ws_url)

        async def on_update(update: Any) -> None:
            mailbox.put_threadsafe(update)

        stream.subscribe_trade_updates(on_update)
        runner = StreamThread(stream, sb).start()
        try:
            with anyio.fail_after(15):
                await sb.hub.wait_until(lambda h: any(c.listening for c in h.trade_conns))
            tc = trading_client(sb)
            order = await anyio.to_thread.run_sync(
                tc.submit_order,
                a["requests"].MarketOrderRequest(
                    symbol="MSFT", qty=4, side="buy", time_in_force="day"
                ),
            )
            fill_ts, fill_price = _next_bar(sb, "MSFT")
            await sb.market.advance(until_ns=fill_ts)
            new, fill = await mailbox.get(), await mailbox.get()
            assert new.event == "new"
            assert new.order.id == order.id
            assert new.order.status.value == "new"
            assert fill.event == "fill"
            assert fill.order.status.value == "filled"
            assert fill.qty == 4
            assert fill.position_qty == 4
            assert fill.price == pytest.approx(fill_price, abs=0.005)
            assert isinstance(fill.execution_id, uuid.UUID)
            assert fill.timestamp == dt.datetime.fromtimestamp(fill_ts / 1e9, UTC)
        finally:
            await runner.stop()
