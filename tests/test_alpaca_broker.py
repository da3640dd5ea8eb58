"""AlpacaBroker against the embedded sandbox: real sockets on 127.0.0.1, alpaca-py REST.

Every test drives the sandbox clock by hand (``speed="max"``) and waits on the
``updates`` channel or on sandbox events, bounded by ``fail_after``; nothing
sleeps to let a race settle.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import anyio
import pytest
import requests
from alpaca.common.exceptions import APIError
from structlog.testing import capture_logs

from trader.brokers.alpaca import AlpacaBroker
from trader.brokers.alpaca_orders import Orders
from trader.brokers.alpaca_wire import WireOrder, WireUpdate, parse_ts
from trader.brokers.base import Broker
from trader.brokers.simulated import ExecReport
from trader.channels import Channel
from trader.config import AlpacaConfig
from trader.data.bars import BarTable
from trader.data.synth import synth_bars
from trader.errors import BrokerRejected, BrokerUnavailable
from trader.messages import (
    ClientOrderId,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    SubmitOrder,
)
from trader.sandbox import FaultConfig, Sandbox
from trader.secrets import Credentials

KEY = "test-key"
SECRET = "test-secret"
START = "2024-01-02T14:30:00Z"  # 09:30 New York, the first session of the data
WAIT_S = 10.0
"""Upper bound for any wait on the network; tests normally finish far sooner."""



@cache
def _tables() -> dict[str, BarTable]:
    return synth_bars(["AAPL", "MSFT"], days=1, freq="1min", seed=11)


class Harness:
    """A sandbox, a broker streaming from it, and what the broker emitted so far."""

    def __init__(self, sb: Sandbox, broker: AlpacaBroker, updates: Channel[Message]) -> None:
        self.sb = sb
        self.broker = broker
        self.updates = updates
        self.seen: list[OrderEvent] = []

    async def take(self, n: int) -> list[OrderEvent]:
        """The next ``n`` events (waiting for them)."""
        with anyio.fail_after(WAIT_S):
            while len(self.seen) < n:
                for msg in await self.updates.receive_batch():
                    assert isinstance(msg, OrderEvent)
                    self.seen.append(msg)
                self.updates.done(0)
        return self.seen[:n]

    async def until(self, done: Callable[[list[OrderEvent]], bool]) -> list[OrderEvent]:
        """Collect events until ``done(events)`` holds."""
        with anyio.fail_after(WAIT_S):
            while not done(self.seen):
                for msg in await self.updates.receive_batch():
                    assert isinstance(msg, OrderEvent)
                    self.seen.append(msg)
        return self.seen

    def drain(self) -> list[OrderEvent]:
        """Everything emitted so far, without waiting."""
        while True:
            try:
                msg = self.updates.receive_nowait()
            except anyio.WouldBlock:
                return self.seen
            assert isinstance(msg, OrderEvent)
            self.seen.append(msg)

    async def fill_next_bar(self) -> None:
        await self.sb.market.advance(bars=1)

    def at_broker(self, coid: str) -> int:
        """How many orders the sandbox holds with this client order id."""
        return sum(o.client_order_id == coid for o in self.sb.exchange.orders.values())


def make_broker(
    sb: Sandbox,
    *,
    update_timeout_s: float = 5.0,
    request_timeout_s: float = 2.0,
    attempts: int = 5,
) -> Harness:
    """A broker on the sandbox with fast retries and reconnects (not yet streaming)."""
    updates: Channel[Message] = Channel("updates", 10_000)
    broker = AlpacaBroker(
        updates=updates,
        config=AlpacaConfig(
            request_timeout_s=request_timeout_s,
            update_timeout_s=update_timeout_s,
            max_requests_per_minute=200,
        ),
        credentials=Credentials(key_id=KEY, secret_key=SECRET),
        trading_url=sb.base_url,
        trade_stream_url=sb.trade_ws_url,
        now_ns=time.time_ns,
        attempts=attempts,
        backoff_s=0.01,
        backoff_max_s=0.05,
        reconnect_initial_s=0.01,
        reconnect_max_s=0.05,
    )
    port: Broker = broker  # mypy checks that the adapter satisfies the port
    assert port.durable_updates
    return Harness(sb, broker, updates)


def sandbox(faults: FaultConfig | None = None) -> Sandbox:
    return Sandbox(_tables(), key_id=KEY, secret=SECRET, start=START, faults=faults)


@asynccontextmanager
async def harness(faults: FaultConfig | None = None, **kw: Any) -> AsyncIterator[Harness]:
    """A sandbox one bar in (so prices are known) and a broker listening to it."""
    async with sandbox(faults) as sb:
        await sb.market.advance(bars=1)
        h = make_broker(sb, **kw)
        async with anyio.create_task_group() as tg:
            await tg.start(h.broker.stream)
            yield h
            tg.cancel_scope.cancel()


def buy(coid: str, qty: float = 10, symbol: str = "AAPL", **kw: Any) -> SubmitOrder:
    return SubmitOrder(
        ts_ns=0, client_order_id=ClientOrderId(coid), strategy="test", symbol=symbol,
        side="buy", qty=qty, **kw,
    )


def fills_of(events: Sequence[OrderEvent], coid: str) -> list[OrderFilled]:
    return [e for e in events if isinstance(e, OrderFilled) and e.client_order_id == coid]


def filled(coid: str) -> Callable[[list[OrderEvent]], bool]:
    return lambda events: any(f.status == "filled" for f in fills_of(events, coid))


def assert_once_each(events: Sequence[OrderEvent]) -> None:
    """No execution twice, one acceptance per order, fills adding up to each order's cum qty."""
    exec_ids = Counter(e.execution_id for e in events if isinstance(e, OrderFilled))
    assert all(n == 1 for n in exec_ids.values()), exec_ids
    accepted = Counter(e.client_order_id for e in events if isinstance(e, OrderAccepted))
    assert all(n == 1 for n in accepted.values()), accepted
    for coid in {e.client_order_id for e in events}:
        fills = fills_of(events, coid)
        total = 0.0
        for f in fills:
            total += f.qty
            assert f.cum_qty == pytest.approx(total)
        assert sum(f.status == "filled" for f in fills) <= 1


# --- the happy path ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_market_order_is_accepted_then_filled_and_shows_in_account() -> None:
    """A market buy yields OrderAccepted then OrderFilled at the sandbox's price, and the
    account and positions agree with the sandbox's ledger to the cent."""
    async with harness() as h:
        await h.broker.submit(buy("mkt-1", qty=10))
        accepted = (await h.take(1))[0]
        assert isinstance(accepted, OrderAccepted)
        assert (accepted.client_order_id, accepted.symbol, accepted.qty) == ("mkt-1", "AAPL", 10)
        await h.fill_next_bar()
        fill = (await h.take(2))[1]
        sim = h.sb.exchange.order_by_client_id("mkt-1")
        assert sim is not None
        assert isinstance(fill, OrderFilled)
        assert (fill.qty, fill.cum_qty, fill.status) == (10, 10, "filled")
        assert fill.price == sim.filled_avg_price == fill.avg_price
        assert fill.commission_cents == 0
        assert fill.broker_order_id == accepted.broker_order_id == sim.id
        assert fill.ts_ns == sim.filled_ns

        ledger = h.sb.exchange.ledger
        account = await h.broker.account()
        assert account.cash_cents == ledger.cash_cents
        assert account.equity_cents == ledger.equity_cents()
        assert account.buying_power_cents == h.sb.exchange.buying_power_cents()
        [position] = await h.broker.positions()
        assert (position.symbol, position.qty) == ("AAPL", 10)
        assert position.avg_price == fill.price
        assert position.cost_cents == ledger.positions["AAPL"].cost_cents

        state = await h.broker.order("mkt-1")
        assert state is not None
        assert (state.status, state.filled_qty, state.filled_avg_price) == (
            "filled", 10, fill.price)
        assert await h.broker.order("no-such-order") is None
        assert await h.broker.open_orders() == []


@pytest.mark.asyncio
async def test_duplicate_client_order_id_is_rejected_and_the_original_still_reports() -> None:
    """A second submit with a used client order id raises BrokerRejected 40010001 (the
    execution actor adopts on that), ``order()`` finds the original, and the original's
    events still arrive once."""
    async with harness() as h:
        await h.broker.submit(buy("dup-1", qty=5))
        with pytest.raises(BrokerRejected) as err:
            await h.broker.submit(buy("dup-1", qty=5))
        assert err.value.code == "40010001"
        assert "client_order_id" in err.value.reason
        assert err.value.status == 422
        sim = h.sb.exchange.order_by_client_id("dup-1")
        assert sim is not None
        state = await h.broker.order("dup-1")
        assert state is not None
        assert (state.broker_order_id, state.qty) == (sim.id, 5)
        assert h.at_broker("dup-1") == 1
        await h.fill_next_bar()
        events = await h.until(filled("dup-1"))
        assert [type(e) for e in events] == [OrderAccepted, OrderFilled]


@pytest.mark.asyncio
async def test_insufficient_buying_power_is_a_definite_rejection() -> None:
    """A buy the account cannot pay for raises BrokerRejected with the broker's reason,
    code and status, creates nothing, and leaves the broker working."""
    async with harness() as h:
        with pytest.raises(BrokerRejected) as err:
            await h.broker.submit(buy("too-big", qty=10_000_000))
        assert (err.value.reason, err.value.code, err.value.status) == (
            "insufficient buying power", "40310000", 403)
        assert await h.broker.order("too-big") is None
        await h.broker.submit(buy("fine-1", qty=1))
        assert [type(e) for e in await h.take(1)] == [OrderAccepted]


@pytest.mark.asyncio
async def test_cancel_reports_canceled_and_refusals_are_rejections() -> None:
    """Canceling a resting limit order yields OrderCanceled; canceling it again or an
    unknown order raises BrokerRejected (422, 404)."""
    async with harness() as h:
        await h.broker.submit(buy("rest-1", qty=3, order_type="limit", limit_price=1.0))
        assert [o.client_order_id for o in await h.broker.open_orders()] == ["rest-1"]
        await h.broker.cancel("rest-1")
        events = await h.take(2)
        assert [type(e) for e in events] == [OrderAccepted, OrderCanceled]
        with pytest.raises(BrokerRejected) as err:
            await h.broker.cancel("rest-1")
        assert err.value.status == 422
        with pytest.raises(BrokerRejected) as err:
            await h.broker.cancel("never-sent")
        assert err.value.status == 404
        assert await h.broker.open_orders() == []


# --- transient faults: each intended order lands exactly once ----------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [429, 500, 504])
async def test_error_bursts_are_retried_and_the_order_lands_once(status: int) -> None:
    """Three 429/500/504 answers in a row are retried; the order exists once."""
    async with harness() as h:
        h.sb.faults.update({"rest_error_status": status, "rest_error_count": 3})
        await h.broker.submit(buy(f"burst-{status}"))
        assert h.sb.faults.snapshot()["rest_errors_left"] == 0
        assert h.at_broker(f"burst-{status}") == 1
        await h.fill_next_bar()
        assert_once_each(await h.until(filled(f"burst-{status}")))


@pytest.mark.asyncio
async def test_a_burst_longer_than_the_attempts_is_broker_unavailable() -> None:
    """Errors on every attempt end in BrokerUnavailable, and no order was created."""
    async with harness(attempts=3) as h:
        h.sb.faults.update({"rest_error_status": 500, "rest_error_count": 50})
        with pytest.raises(BrokerUnavailable):
            await h.broker.submit(buy("down-1"))
        assert h.at_broker("down-1") == 0


@pytest.mark.asyncio
async def test_slow_answers_within_the_deadline_are_just_slow() -> None:
    """A delay below the request timeout costs time, not correctness."""
    async with harness(request_timeout_s=1.0) as h:
        h.sb.faults.update({"delay_s": 0.1})
        await h.broker.submit(buy("slow-ok"))
        assert h.at_broker("slow-ok") == 1
        h.sb.faults.update({"delay_s": 0.0})
        await h.fill_next_bar()
        assert_once_each(await h.until(filled("slow-ok")))


@pytest.mark.asyncio
async def test_a_submit_that_timed_out_but_landed_is_not_sent_again() -> None:
    """With answers slower than the deadline, the first POST times out yet lands; the
    retry looks the order up instead of resending, so the broker holds it once."""
    async with harness(request_timeout_s=0.3, attempts=8) as h:
        landed = anyio.Event()

        def on_reports(reports: Sequence[ExecReport]) -> None:
            if any(r.order.client_order_id == "late-1" for r in reports):
                landed.set()

        h.sb.market.report_listeners.append(on_reports)
        h.sb.faults.update({"delay_s": 0.6})

        async def heal() -> None:
            await landed.wait()  # the slow POST has been handled: answer promptly again
            h.sb.faults.update({"delay_s": 0.0})

        async with anyio.create_task_group() as tg:
            tg.start_soon(heal)
            with anyio.fail_after(WAIT_S):
                await h.broker.submit(buy("late-1"))
        assert h.at_broker("late-1") == 1
        await h.fill_next_bar()
        assert_once_each(await h.until(filled("late-1")))


# --- the update stream: pauses, drops and races --------------------------------------------


@pytest.mark.asyncio
async def test_a_fill_missed_by_a_paused_stream_is_recovered_by_polling_once() -> None:
    """With trade updates paused, the fill is read by polling within the update timeout;
    after updates resume nothing is reported twice."""
    async with harness(update_timeout_s=0.5) as h:
        h.sb.faults.update({"pause_trade_updates": True})
        await h.broker.submit(buy("quiet-1", qty=7))
        await h.fill_next_bar()
        started = anyio.current_time()
        events = await h.until(filled("quiet-1"))
        assert anyio.current_time() - started < 0.5 + 0.5
        assert [type(e) for e in events] == [OrderAccepted, OrderFilled]
        sim = h.sb.exchange.order_by_client_id("quiet-1")
        assert sim is not None
        fill = fills_of(events, "quiet-1")[0]
        assert (fill.qty, fill.price, fill.status) == (7, sim.filled_avg_price, "filled")

        h.sb.faults.update({"pause_trade_updates": False})
        await h.broker.submit(buy("loud-1", qty=2))
        await h.fill_next_bar()
        events = await h.until(filled("loud-1"))
        assert_once_each(h.drain())
        assert len(fills_of(events, "quiet-1")) == 1


def count_reads(h: Harness) -> dict[str, int]:
    """Count the adapter's order reads by alpaca-py method (lists and lookups by id)."""
    calls = {"get_orders": 0, "get_order_by_client_id": 0}
    client: Any = h.broker._client
    for name in calls:
        method = getattr(client, name)

        def counted(*a: Any, _m: Any = method, _n: str = name, **k: Any) -> Any:
            calls[_n] += 1
            return _m(*a, **k)

        setattr(client, name, counted)
    return calls


@pytest.mark.asyncio
async def test_the_polls_before_a_bar_read_every_order_with_one_request() -> None:
    """Four market orders the stream has not reported: ``sync`` (the feed's market-first
    step) reads them with one list request, so the bar waits one slow answer, not four,
    and the rate budget pays one request."""
    delay = 0.4
    async with harness(update_timeout_s=WAIT_S) as h:
        h.sb.faults.update({"pause_trade_updates": True})
        coids = [f"sync-{i}" for i in range(4)]
        for i, coid in enumerate(coids):
            await h.broker.submit(buy(coid, qty=1, symbol=("AAPL", "MSFT")[i % 2]))
        await h.fill_next_bar()
        h.sb.faults.update({"delay_s": delay})
        reads = count_reads(h)
        started = anyio.current_time()
        await h.broker.sync({"AAPL", "MSFT"})
        took = anyio.current_time() - started
        assert delay <= took < 2.5 * delay, took  # one after another: at least 4 x delay
        assert reads == {"get_orders": 1, "get_order_by_client_id": 0}
        events = h.drain()
        assert all(fills_of(events, coid) for coid in coids)
        assert_once_each(events)


@pytest.mark.asyncio
async def test_when_the_list_fails_the_polls_before_a_bar_read_each_order_by_itself() -> None:
    """The list request is answered 500: each order is then looked up by its id (together,
    not one after another), and every fill still arrives once."""
    async with harness(update_timeout_s=WAIT_S) as h:
        h.sb.faults.update({"pause_trade_updates": True})
        coids = [f"fallback-{i}" for i in range(3)]
        for i, coid in enumerate(coids):
            await h.broker.submit(buy(coid, qty=1, symbol=("AAPL", "MSFT")[i % 2]))
        await h.fill_next_bar()
        h.sb.faults.update({"rest_error_status": 500, "rest_error_count": 1})
        reads = count_reads(h)
        await h.broker.sync({"AAPL", "MSFT"})
        assert reads == {"get_orders": 1, "get_order_by_client_id": 3}
        events = h.drain()
        assert all(fills_of(events, coid) for coid in coids)
        assert_once_each(events)


@pytest.mark.asyncio
async def test_polling_and_the_stream_racing_never_report_an_execution_twice() -> None:
    """With a tiny update timeout, polls and stream events race on every order; each
    execution is still reported exactly once."""
    async with harness(update_timeout_s=0.02) as h:
        coids = [f"race-{i}" for i in range(6)]
        for i, coid in enumerate(coids):
            await h.broker.submit(buy(coid, qty=i + 1, symbol=("AAPL", "MSFT")[i % 2]))
        await h.fill_next_bar()
        events = await h.until(lambda ev: all(filled(c)(ev) for c in coids))
        assert_once_each(events)
        for i, coid in enumerate(coids):
            assert sum(f.qty for f in fills_of(events, coid)) == i + 1


@pytest.mark.asyncio
async def test_a_stream_dropped_after_every_frame_loses_no_execution() -> None:
    """The sandbox cuts the trade stream after each event; the broker reconnects, polls
    what it missed, and every order's fill is reported once."""
    async with harness(FaultConfig(drop_every=3)) as h:
        coids = [f"drop-{i}" for i in range(4)]
        for coid in coids:
            await h.broker.submit(buy(coid, qty=2))
        await h.fill_next_bar()
        events = await h.until(lambda ev: all(filled(c)(ev) for c in coids))
        assert h.broker.reconnects >= 1
        assert_once_each(events)
        for coid in coids:
            assert sum(f.qty for f in fills_of(events, coid)) == 2


@pytest.mark.asyncio
async def test_events_during_a_dropped_connection_are_recovered_after_reconnecting() -> None:
    """Fills that happen while the trade stream is cut arrive once after it reconnects."""
    async with harness() as h:
        await h.broker.submit(buy("cut-1", qty=4))
        await h.take(1)
        assert h.sb.drop_connections() == 1
        await h.fill_next_bar()  # the fill happens while the socket is down (or just back)
        events = await h.until(filled("cut-1"))
        assert h.broker.reconnects >= 1
        assert_once_each(events)
        assert [f.qty for f in fills_of(events, "cut-1")] == [4]


# --- submit retries, step by step (a scripted client instead of the sandbox) -------------


def _api_error(status: int, body: str) -> APIError:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    make: Callable[..., APIError] = APIError  # alpaca-py leaves __init__ unannotated
    return make(body, requests.HTTPError(response=response))


_DUPLICATE = '{"code": 40010001, "message": "client_order_id must be unique"}'
_NOT_FOUND = '{"code": 40410000, "message": "order not found"}'
_ORDER = {"id": "0c6f4a9e-0000-4000-8000-000000000001", "client_order_id": "s-1", "status": "new"}


class ScriptedClient:
    """The two TradingClient calls submit makes, answered from a script in order."""

    def __init__(self, *script: tuple[str, object]) -> None:
        self.script = deque(script)
        self.calls: list[str] = []

    def _answer(self, call: str) -> object:
        self.calls.append(call)
        expected, outcome = self.script.popleft()
        assert call == expected, (call, expected)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def submit_order(self, request: object) -> object:
        return self._answer("submit")

    def get_order_by_client_id(self, client_order_id: str) -> object:
        return self._answer("lookup")


def scripted(monkeypatch: pytest.MonkeyPatch, *script: tuple[str, object]) -> tuple[
        AlpacaBroker, ScriptedClient]:
    broker = AlpacaBroker(
        updates=Channel("updates", 100),
        config=AlpacaConfig(request_timeout_s=1.0),
        credentials=Credentials(key_id=KEY, secret_key=SECRET),
        trading_url="http://127.0.0.1:9",
        trade_stream_url="ws://127.0.0.1:9/stream",
        now_ns=time.time_ns,
        backoff_s=0.001,
        backoff_max_s=0.001,
    )
    client = ScriptedClient(*script)
    monkeypatch.setattr(broker, "_client", client)
    return broker, client


@pytest.mark.asyncio
async def test_a_resend_answered_duplicate_means_the_first_submit_landed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timeout, lookup 404 (not visible yet), resend refused as a duplicate: the order
    exists once, so submit succeeds without a third POST."""
    broker, client = scripted(
        monkeypatch,
        ("submit", requests.ReadTimeout("read timed out")),
        ("lookup", _api_error(404, _NOT_FOUND)),
        ("submit", _api_error(422, _DUPLICATE)),
    )
    with capture_logs() as logs:
        await broker.submit(buy("s-1"))
    assert client.calls == ["submit", "lookup", "submit"]
    assert "alpaca.submit_landed" in [entry["event"] for entry in logs]


@pytest.mark.asyncio
async def test_a_5xx_submit_is_looked_up_and_a_429_is_simply_resent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a 503 (perhaps processed) the order is looked up and found, not resent;
    after a 429 (refused unread) it is resent without a lookup. A non-JSON error body
    does not break the error mapping."""
    broker, client = scripted(
        monkeypatch,
        ("submit", _api_error(503, "<html>Service Unavailable</html>")),
        ("lookup", _ORDER),
    )
    await broker.submit(buy("s-1"))
    assert client.calls == ["submit", "lookup"]

    broker, client = scripted(
        monkeypatch,
        ("submit", _api_error(429, '{"code": 42910000, "message": "rate limit exceeded"}')),
        ("submit", _ORDER),
    )
    await broker.submit(buy("s-1"))
    assert client.calls == ["submit", "submit"]


@pytest.mark.asyncio
async def test_definite_errors_are_rejections_even_with_odd_bodies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A first-attempt duplicate is a BrokerRejected 40010001 (the actor adopts); a 4xx
    whose body is not Alpaca's JSON still becomes a BrokerRejected with that text."""
    broker, _ = scripted(monkeypatch, ("submit", _api_error(422, _DUPLICATE)))
    with pytest.raises(BrokerRejected) as err:
        await broker.submit(buy("s-1"))
    assert (err.value.code, err.value.status) == ("40010001", 422)

    broker, _ = scripted(monkeypatch, ("submit", _api_error(400, "<html>bad request</html>")))
    with pytest.raises(BrokerRejected) as err:
        await broker.submit(buy("s-1"))
    assert (err.value.reason, err.value.code, err.value.status) == (
        "<html>bad request</html>", "", 400)


# --- the per-order ledger: each fact once, whichever path brings it ---------------------


def _order(status: str, filled: float = 0.0, avg: float | None = None) -> WireOrder:
    return WireOrder(
        id="0c6f4a9e-0000-4000-8000-000000000002", client_order_id="c-1", status=status,
        symbol="AAPL", side="buy", qty=10, filled_qty=filled, filled_avg_price=avg,
        updated_at="2024-01-02T14:35:00Z",
    )


def _event(event: str, order: WireOrder, exec_id: str | None = None, qty: float | None = None,
           price: float | None = None) -> WireUpdate:
    return WireUpdate(event=event, order=order, timestamp="2024-01-02T14:31:00.000000001Z",
                   execution_id=exec_id, qty=qty, price=price)


def test_stream_fills_already_covered_by_a_poll_are_dropped() -> None:
    """A poll reports 4 filled; the stream's own event for those 4 is dropped, the next
    execution is reported with its own id, price and the order's average."""
    orders = Orders(5.0, lambda: 0)
    assert [type(m) for m in orders.on_update(_event("new", _order("new")), 0.0)] == [
        OrderAccepted]
    [polled] = orders.on_state(_order("partially_filled", 4, 100.0), 1.0)
    assert isinstance(polled, OrderFilled)
    assert (polled.qty, polled.price, polled.cum_qty, polled.status) == (
        4, 100.0, 4, "partially_filled")
    assert polled.ts_ns == parse_ts("2024-01-02T14:35:00Z")
    late = _event("partial_fill", _order("partially_filled", 4, 100.0), "e-1", 4, 100.0)
    assert orders.on_update(late, 2.0) == []
    [last] = orders.on_update(_event("fill", _order("filled", 10, 100.6), "e-2", 6, 101.0), 3.0)
    assert isinstance(last, OrderFilled)
    assert (last.execution_id, last.qty, last.price, last.cum_qty, last.avg_price,
            last.status) == ("e-2", 6, 101.0, 10, 100.6, "filled")
    assert orders.on_state(_order("filled", 10, 100.6), 4.0) == []
    assert orders.on_update(_event("fill", _order("filled", 10, 100.6), "e-2", 6, 101.0),
                            5.0) == []


def test_missed_executions_are_filled_in_before_the_next_one() -> None:
    """A fill event whose order shows more filled than we reported first reports the gap
    (synthetic id, price from the averages), then the execution itself."""
    orders = Orders(5.0, lambda: 0)
    gap, fill = orders.on_update(
        _event("fill", _order("filled", 10, 100.6), "e-2", 6, 101.0), 0.0)[1:]
    assert isinstance(gap, OrderFilled)
    assert isinstance(fill, OrderFilled)
    assert (gap.qty, gap.price, gap.cum_qty, gap.status) == (4, 100.0, 4, "partially_filled")
    assert (fill.execution_id, fill.qty, fill.price, fill.status) == ("e-2", 6, 101.0, "filled")
    assert fill.ts_ns == gap.ts_ns == parse_ts("2024-01-02T14:31:00.000000001Z")
    # The synthetic id depends only on the order and the cumulative quantity.
    again = Orders(5.0, lambda: 0).on_state(_order("partially_filled", 4, 100.0), 0.0)[1]
    assert isinstance(again, OrderFilled)
    assert again.execution_id == gap.execution_id


def test_a_terminal_state_found_by_polling_reports_its_fills_first() -> None:
    """A polled canceled order with an unseen partial fill reports accepted, the fill,
    then the cancel; the stream's late events for it are then ignored."""
    orders = Orders(5.0, lambda: 0)
    events = orders.on_state(_order("canceled", 3, 50.0), 0.0)
    assert [type(m) for m in events] == [OrderAccepted, OrderFilled, OrderCanceled]
    assert isinstance(events[2], OrderCanceled)
    assert events[2].filled_qty == 3
    assert orders.on_update(_event("canceled", _order("canceled", 3, 50.0)), 1.0) == []
    assert orders.on_state(_order("expired"), 1.0) == []
    assert [type(m) for m in Orders(5.0, lambda: 0).on_state(_order("expired"), 0.0)] == [
        OrderAccepted, OrderExpired]


def test_event_timestamps_keep_nanoseconds() -> None:
    """Alpaca's RFC 3339 times become UTC ns without losing the last three digits."""
    assert parse_ts("2024-01-02T14:31:00.123456789Z") == 1_704_205_860_123_456_789
    assert parse_ts("2024-01-02T09:31:00.5-05:00") == 1_704_205_860_500_000_000
    assert parse_ts("not a time") is None
    assert parse_ts(None) is None


@pytest.mark.asyncio
async def test_orders_are_polled_while_the_stream_cannot_reconnect() -> None:
    """While every reconnection fails, a submitted order's events still arrive by
    polling within the update timeout."""
    async with harness(update_timeout_s=0.3) as h:
        h.sb.faults.update({"drop_every": 1})  # any new socket dies after one frame
        assert h.sb.drop_connections() == 1
        await h.broker.submit(buy("down-poll", qty=3))
        await h.fill_next_bar()
        events = await h.until(filled("down-poll"))
        assert [type(e) for e in events] == [OrderAccepted, OrderFilled]
        assert h.broker.reconnects == 0
        assert_once_each(events)


@pytest.mark.asyncio
async def test_a_restarted_stream_does_not_repeat_what_happened_before_it() -> None:
    """A fill that happened while no stream ran is the broker's state the execution
    actor reconciles to, not an event; orders after the restart report normally."""
    async with sandbox() as sb:
        await sb.market.advance(bars=1)
        h = make_broker(sb)
        async with anyio.create_task_group() as tg:
            await tg.start(h.broker.stream)
            await h.broker.submit(buy("before", qty=3))
            assert [type(e) for e in await h.take(1)] == [OrderAccepted]
            tg.cancel_scope.cancel()
        await sb.market.advance(bars=1)  # "before" fills with nobody listening
        async with anyio.create_task_group() as tg:
            await tg.start(h.broker.stream)
            await h.broker.submit(buy("after", qty=1))
            await sb.market.advance(bars=1)
            events = await h.until(filled("after"))
            tg.cancel_scope.cancel()
        assert [e.client_order_id for e in events] == ["before", "after", "after"]


@pytest.mark.asyncio
async def test_refused_keys_fail_the_stream_start() -> None:
    """Keys the trade stream refuses are a definite error at start, not a retry loop."""
    async with sandbox(FaultConfig(refuse_auth=True)) as sb:
        h = make_broker(sb)
        with anyio.fail_after(WAIT_S), pytest.raises(BrokerRejected):
            await h.broker.stream()


@pytest.mark.asyncio
async def test_a_restarted_adapter_still_knows_which_open_orders_are_bracket_legs() -> None:
    """Alpaca links a leg to its entry only from the entry. A new adapter (a restarted
    daemon) that never saw the submit still reports each open leg with its entry, so
    reconciliation tells risk they are legs, not orders of its own."""
    async with harness() as h:
        entry = buy("br-1", qty=10, time_in_force="gtc", take_profit_price=500.0,
                    stop_loss_price=1.0)
        await h.broker.submit(entry)
        await h.fill_next_bar()
        await h.until(filled("br-1"))
        before = {o.client_order_id: o.parent_client_order_id
                  for o in await h.broker.open_orders()}
        restarted = make_broker(h.sb)  # a fresh process: nothing seen yet
        after = {o.client_order_id: o.parent_client_order_id
                 for o in await restarted.broker.open_orders()}
    assert before == after == {"br-1-sl": "br-1", "br-1-tp": "br-1"}
