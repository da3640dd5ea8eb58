"""The account the sandbox reports adds up to the cent after hundreds of random orders."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sandbox.sandbox_support import KEY, SECRET, Rest, minute_tables
from trader.config import BrokerConfig, CommissionConfig
from trader.money import value_cents
from trader.sandbox import Sandbox

# Each order is one integer whose bit fields pick its features: a few hundred
# orders of many fields each would exceed Hypothesis' entropy budget, and an
# integer shrinks toward 0, i.e. toward the plainest order (market buy, no wait).
_CHOICES: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("type", ("market", "limit", "stop", "stop_limit")),
    ("side", ("buy", "sell", "buy", "sell")),
    ("symbol", ("AAPL", "MSFT")),
    ("tif", ("day", "gtc")),
    ("wait", (0, 1, 2, 3)),
    ("cancel", (False, True)),
    ("fraction", (0.0, 0.25, 0.125, 0.5)),
    ("notional", (None, None, None, None, None, None, 500, 2500)),
    ("offset", (0.0, -0.001, 0.001, -0.003, 0.003, -0.01, 0.01, 0.0)),
)


def _decode(code: int) -> dict[str, Any]:
    order: dict[str, Any] = {"qty": 1 + code % 50}
    code //= 50
    for name, options in _CHOICES:
        code, pick = divmod(code, len(options))
        order[name] = options[pick]
    return order


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
@given(
    codes=st.lists(st.integers(0, 2**32 - 1), min_size=200, max_size=300),
    fractional=st.booleans(),
    per_share=st.booleans(),
)
def test_cash_plus_positions_equals_equity_to_the_cent(
    codes: list[int], fractional: bool, per_share: bool
) -> None:
    """After a few hundred random orders, REST account and positions reconcile exactly:
    cash + sum(qty x current price) == equity, and positions match the filled orders."""
    commission = (
        CommissionConfig(model="per_share", per_share_usd=0.005, minimum_usd=1.0)
        if per_share
        else CommissionConfig(model="bps", bps=1.5)
    )
    broker = BrokerConfig(
        cash_usd=60_000, commission=commission, slippage_bps=3, fractional=fractional,
        max_participation=0.02,
    )
    asyncio.run(_scenario([_decode(c) for c in codes], broker))


async def _scenario(orders: list[dict[str, Any]], broker: BrokerConfig) -> None:
    async with (
        Sandbox(minute_tables(), key_id=KEY, secret=SECRET, start="2024-01-02T14:30:00Z",
                broker=broker) as sb,
        aiohttp.ClientSession() as http,
    ):
        rest = Rest(http, sb)
        await sb.market.advance(bars=1)
        for i, o in enumerate(orders):
            if o["wait"]:
                await sb.market.advance(bars=o["wait"])
            latest = await rest.ok("GET", "/v2/stocks/bars/latest",
                                   params={"symbols": o["symbol"]})
            last = latest["bars"][o["symbol"]]["c"]
            status, body = await rest.call("POST", "/v2/orders", json=_body(o, last, broker))
            assert status in (200, 403), body  # 403: not enough buying power
            if status == 200 and o["cancel"]:
                status, _ = await rest.call("DELETE", f"/v2/orders/{body['id']}")
                assert status in (204, 422)  # 422: already filled
            if i % 40 == 0:
                await _reconcile(rest)
        await sb.market.advance(bars=30)
        await _reconcile(rest)


def _body(o: dict[str, Any], last: float, broker: BrokerConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": o["symbol"], "side": o["side"], "type": o["type"],
        "time_in_force": o["tif"],
    }
    if o["notional"] is not None and o["side"] == "buy":
        return {**body, "type": "market", "time_in_force": "day", "notional": str(o["notional"])}
    qty = o["qty"] + (o["fraction"] if broker.fractional else 0.0)
    body["qty"] = qty if o["side"] == "buy" else str(qty)  # numbers or strings both accepted
    away = 1 + o["offset"]
    if o["type"] in ("limit", "stop_limit"):
        body["limit_price"] = round(last * away, 2)
    if o["type"] in ("stop", "stop_limit"):
        body["stop_price"] = round(last * (2 - away), 2)
    return body


async def _reconcile(rest: Rest) -> None:
    account = await rest.ok("GET", "/v2/account")
    positions = await rest.ok("GET", "/v2/positions")
    cash, equity = Decimal(account["cash"]), Decimal(account["equity"])
    total = cash
    longs = shorts = Decimal(0)
    for p in positions:
        # One rounding per position value, by the project's money rule; the wire's
        # decimal strings round-trip to the very floats the ledger holds.
        value = Decimal(value_cents(float(p["qty"]), float(p["current_price"]))) / 100
        assert Decimal(p["market_value"]) == value, p
        assert Decimal(p["unrealized_pl"]) == value - Decimal(p["cost_basis"]), p
        total += value
        if value > 0:
            longs += value
        else:
            shorts += value
    assert total == equity, (account, positions)
    assert Decimal(account["long_market_value"]) == longs
    assert Decimal(account["short_market_value"]) == shorts
    assert cash >= 0
    assert Decimal(account["buying_power"]) >= 0

    orders = await rest.ok("GET", "/v2/orders", params={"status": "all", "limit": "500"})
    held: dict[str, Decimal] = {}
    for o in orders:
        signed = Decimal(o["filled_qty"]) * (1 if o["side"] == "buy" else -1)
        held[o["symbol"]] = held.get(o["symbol"], Decimal(0)) + signed
    assert {s: q for s, q in held.items() if q} == {
        p["symbol"]: Decimal(p["qty"]) for p in positions
    }
