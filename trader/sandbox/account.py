"""Alpaca's account-side REST API: account, clock, calendar, assets, positions.

Every number comes from the exchange's ledger (:mod:`trader.brokers.ledger`),
rendered by :mod:`trader.sandbox.wire` as decimal strings, so ``cash +
sum(position market_value) == equity`` holds to the cent in what a client
reads. Closing a position submits a market order for the opposite quantity
through the market, exactly like any other order.

What it is not: order handling (:mod:`trader.sandbox.orders`).
"""

from __future__ import annotations

import datetime as dt
import uuid

from aiohttp import web

from trader import calendar
from trader.brokers.simulated import ExecReport
from trader.errors import BrokerRejected
from trader.money import cents_str, value_cents
from trader.sandbox import wire
from trader.sandbox.faults import Faults
from trader.sandbox.market import Market
from trader.sandbox.params import (
    RequestError,
    invalid,
    json_response,
    number,
    query_bool,
    rejected,
)
from trader.sandbox.wire import Json


class AccountApi:
    """The account, clock, calendar, asset and position endpoints over one market.

    Args:
        market: the clock and the exchange.
        faults: for the clock skew switch.
        key_id: the account's key (the account id derives from it).
    """

    def __init__(self, market: Market, faults: Faults, key_id: str) -> None:
        self.market = market
        self.faults = faults
        self.key_id = key_id
        self._asset_ids = {wire.asset_id(s): s for s in market.tape.symbols}

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v2/account", self.account),
            web.get("/v2/clock", self.clock),
            web.get("/v2/calendar", self.calendar),
            web.get("/v2/assets", self.assets),
            web.get("/v2/assets/{symbol_or_id:.+}", self.asset),
            web.get("/v2/positions", self.positions),
            web.delete("/v2/positions", self.close_all),
            web.get("/v2/positions/{symbol_or_id:.+}", self.position),
            web.delete("/v2/positions/{symbol_or_id:.+}", self.close_position),
        ]

    async def account(self, request: web.Request) -> web.Response:
        ex = self.market.exchange
        led = ex.ledger
        long_cents = short_cents = 0
        for s, p in led.positions.items():
            if p.qty:
                v = value_cents(p.qty, led.last_price[s])
                if v > 0:
                    long_cents += v
                else:
                    short_cents += v
        bp = cents_str(ex.buying_power_cents())
        zero = "0"
        equity = cents_str(led.equity_cents())
        body: Json = {
            "id": wire.account_id(self.key_id),
            "account_number": "PA" + str(uuid.UUID(wire.account_id(self.key_id)).int)[:10],
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": bp,
            "regt_buying_power": bp,
            "non_marginable_buying_power": bp,
            "options_buying_power": bp,
            "cash": cents_str(led.cash_cents),
            "accrued_fees": zero,
            "pending_transfer_in": None,
            "pending_transfer_out": None,
            "portfolio_value": equity,
            "equity": equity,
            "last_equity": cents_str(self.market.last_equity_cents),
            "long_market_value": cents_str(long_cents),
            "short_market_value": cents_str(short_cents),
            "position_market_value": cents_str(long_cents - short_cents),
            "initial_margin": zero,
            "maintenance_margin": zero,
            "last_maintenance_margin": zero,
            "sma": zero,
            "multiplier": "1",
            "shorting_enabled": True,
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "trade_suspended_by_user": False,
            "daytrade_count": 0,
            "options_approved_level": 0,
            "options_trading_level": 0,
            "created_at": wire.rfc3339(self.market.start_ns),
            "balance_asof": _ny_date(self.market.now_ns()).isoformat(),
        }
        return json_response(body)

    async def clock(self, request: web.Request) -> web.Response:
        now = self.market.now_ns() + self.faults.clock_skew_ns
        return json_response(
            wire.clock(
                now,
                is_open=calendar.is_open(now),
                next_open_ns=calendar.next_open_ns(now),
                next_close_ns=calendar.next_close_ns(now),
            )
        )

    async def calendar(self, request: web.Request) -> web.Response:
        tape = self.market.tape
        first = tape.first_start_ns()
        default_start = _ny_date(first if first is not None else self.market.now_ns())
        last = int(tape.times[-1]) if len(tape.times) else self.market.now_ns()
        start = _query_date(request, "start") or default_start
        end = _query_date(request, "end") or _ny_date(last)
        return json_response([wire.calendar_day(s) for s in calendar.sessions(start, end)])

    async def assets(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        klass = request.query.get("asset_class")
        exchange = request.query.get("exchange")
        out = []
        for s in self.market.tape.symbols:
            a = wire.asset(s)
            if status and a["status"] != status.lower():
                continue
            if klass and a["class"] != klass.lower():
                continue
            if exchange and a["exchange"] != exchange.upper():
                continue
            out.append(a)
        return json_response(out)

    async def asset(self, request: web.Request) -> web.Response:
        symbol = self._symbol(request.match_info["symbol_or_id"])
        if symbol is None:
            raise RequestError(404, 40410000, "asset not found")
        return json_response(wire.asset(symbol))

    # --- positions ---------------------------------------------------------------

    async def positions(self, request: web.Request) -> web.Response:
        led = self.market.exchange.ledger
        return json_response(
            [self._position_json(s) for s in sorted(led.positions) if led.positions[s].qty]
        )

    async def position(self, request: web.Request) -> web.Response:
        symbol = self._held_symbol(request)
        return json_response(self._position_json(symbol))

    async def close_position(self, request: web.Request) -> web.Response:
        symbol = self._held_symbol(request)
        held = self.market.exchange.ledger.positions[symbol].qty
        qty = abs(held)
        raw_qty, raw_pct = request.query.get("qty"), request.query.get("percentage")
        if raw_qty and raw_pct:
            raise invalid("qty and percentage are mutually exclusive")
        if raw_qty:
            qty = _positive(raw_qty, "qty")
            if qty > abs(held):
                raise RequestError(403, 40310000, "insufficient qty available for order")
        elif raw_pct:
            pct = _positive(raw_pct, "percentage")
            if pct > 100:
                raise invalid("percentage must be <= 100")
            qty = round(abs(held) * pct / 100, 9)
            if not self.market.exchange.config.fractional:
                qty = float(int(qty))
            if qty <= 0:
                raise invalid("percentage leaves nothing to close")
        try:
            report = self._close(symbol, held, qty)
        except BrokerRejected as exc:
            raise rejected(exc) from None
        return json_response(self.market.order_json(report.order, status="accepted"))

    async def close_all(self, request: web.Request) -> web.Response:
        if query_bool(request, "cancel_orders"):
            for o in self.market.exchange.open_orders():
                self.market.cancel(o.id)
        led = self.market.exchange.ledger
        results: list[Json] = []
        for symbol in sorted(led.positions):
            held = led.positions[symbol].qty
            if not held:
                continue
            try:
                report = self._close(symbol, held, abs(held))
            except BrokerRejected as exc:
                err = rejected(exc)
                results.append(
                    {
                        "symbol": symbol,
                        "status": err.status,
                        "body": wire.error(err.code, err.message, symbol=symbol),
                    }
                )
                continue
            results.append(
                {
                    "symbol": symbol,
                    "order_id": report.order.id,
                    "status": 200,
                    "body": self.market.order_json(report.order, status="accepted"),
                }
            )
        return json_response(results, status=207)

    # --- helpers -----------------------------------------------------------------

    def _close(self, symbol: str, held: float, qty: float) -> ExecReport:
        return self.market.submit(
            client_order_id=self.market.next_client_order_id(),
            symbol=symbol,
            side="sell" if held > 0 else "buy",
            qty=qty,
            notional_cents=None,
            order_type="market",
            limit_price=None,
            stop_price=None,
            time_in_force="day",
        )

    def _position_json(self, symbol: str) -> Json:
        ex = self.market.exchange
        pos = ex.ledger.positions[symbol]
        held = 0.0
        for o in ex.open_orders():
            if o.symbol == symbol and (o.side == "sell") == (pos.qty > 0) and o.qty is not None:
                held += o.qty - o.filled_qty
        available = pos.qty - held if pos.qty > 0 else pos.qty + held
        return wire.position(
            pos,
            last_price=ex.ledger.last_price[symbol],
            lastday_price=self.market.lastday_price.get(symbol),
            available=round(available, 9),
        )

    def _symbol(self, symbol_or_id: str) -> str | None:
        if symbol_or_id in self._asset_ids:
            return self._asset_ids[symbol_or_id]
        tape = self.market.tape
        for candidate in (symbol_or_id, symbol_or_id.replace("/", "")):
            if candidate in tape.tables:
                return candidate
        return None

    def _held_symbol(self, request: web.Request) -> str:
        raw = request.match_info["symbol_or_id"]
        symbol = self._symbol(raw) or raw
        pos = self.market.exchange.ledger.positions.get(symbol)
        if pos is None or not pos.qty:
            raise RequestError(404, 40410000, "position does not exist")
        return symbol


def _positive(raw: str, name: str) -> float:
    return number({name: raw}, name) or 0.0


def _ny_date(ts_ns: int) -> dt.date:
    return wire.to_datetime(ts_ns).astimezone(calendar.NEW_YORK).date()


def _query_date(request: web.Request, name: str) -> dt.date | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return dt.date.fromisoformat(raw[:10])
    except ValueError:
        raise invalid(f"invalid {name}: {raw!r}") from None
