"""Parity: the sandbox fills orders exactly as replay's SimulatedBroker does on the same data."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from tests.sandbox.sandbox_support import KEY, SECRET, Rest, minute_tables, trade_session
from trader.brokers.simulated import Exchange, SimulatedBroker
from trader.channels import Channel
from trader.clock import ReplayClock
from trader.config import BrokerConfig, CommissionConfig
from trader.errors import BrokerRejected
from trader.messages import ClientOrderId, Message, OrderFilled, SubmitOrder
from trader.sandbox import Sandbox
from trader.sandbox.tape import Tape
from trader.sandbox.wire import parse_time

START = "2024-01-02T14:30:00Z"
BROKER = BrokerConfig(
    cash_usd=5_000_000,
    commission=CommissionConfig(model="per_share", per_share_usd=0.005, minimum_usd=1.0),
    slippage_bps=2.5,
    fractional=True,
    max_participation=0.05,
)
SENTINEL = "sentinel"

Plan = list[tuple[int, dict[str, Any]]]
Fill = tuple[str, int, float, float, str]


def _plan(tape: Tape, start_ns: int) -> Plan:
    """Orders to submit after waiting ``gap`` bar timestamps, priced off the last close."""
    rng = random.Random(11)
    times = [int(t) for t in tape.times if t > start_ns]
    plan: Plan = [(0, {"client_order_id": SENTINEL, "symbol": "AAPL", "side": "buy",
                       "qty": 1.0, "type": "limit", "limit_price": 0.01,
                       "time_in_force": "gtc"})]
    k = 0
    for i in range(70):
        gap = rng.choice([0, 1, 2, 5, 15])
        k += gap
        now = times[k - 1] if k else start_ns
        symbol = rng.choice(["AAPL", "MSFT"])
        row = tape.last_row_at_or_before(symbol, now)
        last = float(tape.tables[symbol].close[max(row, 0)])
        kind = rng.choice(["market", "market", "limit", "stop", "stop_limit", "notional"])
        side = rng.choice(["buy", "sell"])
        order: dict[str, Any] = {"client_order_id": f"o{i}", "symbol": symbol, "side": side,
                                 "type": kind, "time_in_force": rng.choice(["day", "gtc"]),
                                 "qty": float(rng.randint(1, 3000))}
        if kind == "notional":
            order.update(type="market", time_in_force="day", side="buy", qty=None,
                         notional=float(rng.randint(100, 20_000)))
        away = rng.choice([0.997, 0.999, 1.001, 1.003])
        if kind in ("limit", "stop_limit"):
            order["limit_price"] = round(last * away, 2)
        if kind in ("stop", "stop_limit"):
            order["stop_price"] = round(last * (2 - away), 2)
        plan.append((gap, order))
    return plan


async def _run_sandbox(plan: Plan) -> tuple[list[Fill], dict[str, str], int]:
    async with (
        Sandbox(minute_tables(), key_id=KEY, secret=SECRET, start=START, broker=BROKER) as sb,
        aiohttp.ClientSession() as http,
    ):
        rest = Rest(http, sb)
        updates = await trade_session(http, sb)
        outcome: dict[str, str] = {}
        ids: dict[str, str] = {}
        for gap, order in plan:
            await sb.market.advance(bars=gap)
            body = {k: v for k, v in order.items() if v is not None}
            status, reply = await rest.call("POST", "/v2/orders", json=body)
            if status == 200:
                ids[order["client_order_id"]] = reply["id"]
            else:
                outcome[order["client_order_id"]] = "rejected"
        await sb.market.advance(bars=120)
        await rest.ok("DELETE", f"/v2/orders/{ids[SENTINEL]}")
        fills: list[Fill] = []
        while True:
            data = (await updates.recv())["data"]
            coid = data["order"]["client_order_id"]
            if data["event"] in ("fill", "partial_fill"):
                fills.append((coid, parse_time(data["timestamp"]), float(data["price"]),
                              float(data["qty"]), data["execution_id"]))
            if coid == SENTINEL and data["event"] == "canceled":
                break
        for coid, order_id in ids.items():
            outcome[coid] = (await rest.ok("GET", f"/v2/orders/{order_id}"))["status"]
        cash = Decimal((await rest.ok("GET", "/v2/account"))["cash"])
        await updates.close()
        return fills, outcome, int(cash * 100)


async def _run_replay(
    plan: Plan, tape: Tape, start_ns: int
) -> tuple[list[Fill], dict[str, str], int]:
    exchange = Exchange(BROKER)
    clock = ReplayClock(start_ns)
    updates: Channel[Message] = Channel("updates", 1_000_000)
    broker = SimulatedBroker(exchange, updates, clock)
    times = iter(int(t) for t in tape.times if t > start_ns)
    cursor = tape.cursor_after(start_ns)
    outcome: dict[str, str] = {}

    async def step(n: int) -> None:
        nonlocal cursor
        for _ in range(n):
            t = next(times)
            bars = []
            while cursor < tape.merged_len() and tape.merged_ts(cursor) == t:
                bars.append(tape.merged_bar(cursor))
                cursor += 1
            clock.advance_to(t)
            await broker.on_bars(bars)

    for gap, order in plan:
        await step(gap)
        notional = order.get("notional")
        try:
            await broker.submit(SubmitOrder(
                ts_ns=clock.now_ns(), client_order_id=ClientOrderId(order["client_order_id"]),
                strategy="parity", symbol=order["symbol"], side=order["side"],
                qty=order["qty"], notional_cents=None if notional is None else int(notional * 100),
                order_type=order["type"], limit_price=order.get("limit_price"),
                stop_price=order.get("stop_price"), time_in_force=order["time_in_force"],
            ))
        except BrokerRejected:
            outcome[order["client_order_id"]] = "rejected"
    await step(120)
    await broker.cancel(SENTINEL)
    fills: list[Fill] = []
    while len(updates):
        msg = updates.receive_nowait()
        if isinstance(msg, OrderFilled):
            fills.append((msg.client_order_id, msg.ts_ns, msg.price, msg.qty, msg.execution_id))
    for o in exchange.orders.values():
        outcome[o.client_order_id] = o.status
    return fills, outcome, exchange.ledger.cash_cents


@pytest.mark.asyncio
async def test_sandbox_fills_match_replay_on_the_same_orders_and_data() -> None:
    """Every execution (time, price, qty, id), final order status and the cash balance are
    identical whether the orders go through the sandbox's REST API or replay's broker."""
    tape = Tape(minute_tables())
    start_ns = parse_time(START)
    plan = _plan(tape, start_ns)
    sandbox_fills, sandbox_outcome, sandbox_cash = await _run_sandbox(plan)
    replay_fills, replay_outcome, replay_cash = await _run_replay(plan, tape, start_ns)
    # The plan really trades: partial fills, expiries and a cancel are all in it.
    assert len(replay_fills) > 2 * len(plan)
    assert {"filled", "expired", "canceled"} <= set(replay_outcome.values())
    assert sandbox_fills == replay_fills
    assert sandbox_outcome == replay_outcome
    assert sandbox_cash == replay_cash
