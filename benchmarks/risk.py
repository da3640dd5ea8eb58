"""Microseconds per order command spent on pre-trade risk.

    python -m benchmarks.risk [--orders N] [--positions P]

Two figures, best of 3, with every limit of ``[risk]`` switched on (so every
check runs to the end and none short-circuits):

* ``checks``: the pure functions alone, ``GATES + CHECKS`` on one order
  (trader/risk_checks.py);
* ``actor``: the risk actor's whole path from a ``SignalScored`` to a posted
  ``SubmitOrder``: the account snapshot over ``P`` positions, sizing, the
  checks, bookkeeping and the post.

A figure, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import time

import anyio

from trader.actors.base import Outbox
from trader.actors.risk import RiskActor
from trader.channels import Channel
from trader.config import RiskConfig
from trader.graph import ROUTES
from trader.messages import (
    AccountUpdated,
    BarClosed,
    BarsClosed,
    Message,
    OrderCanceled,
    PositionChanged,
    SignalEmitted,
    SignalScored,
    SubmitOrder,
)
from trader.risk_checks import CHECKS, GATES, Context, Intent, first_denial

LIMITS = RiskConfig(
    max_position_shares=1_000_000, max_position_notional_usd=1e9, max_order_notional_usd=1e9,
    max_gross_exposure_pct=10_000.0, max_net_exposure_pct=10_000.0, max_open_orders=1_000_000,
    max_orders_per_minute=1_000_000, max_orders_per_minute_per_symbol=1_000_000,
    price_collar_pct=50.0, duplicate_window_s=0.001, allow_short=True,
)
# 10:00 New York on Tue 2023-11-14: inside a session (risk denies entries outside one).
T0 = 1_699_974_000_000_000_000


def bench_checks(n: int) -> float:
    intent = Intent(ts_ns=T0, symbol="S0", side="buy", qty=10.0, price=100.0,
                    notional_cents=100_000, reduces=False)
    ctx = Context(equity_cents=10**9, buying_power_cents=10**9, position_qty=5.0,
                  mark_price=100.0, gross_cents=10**8, net_cents=5 * 10**7, open_orders=3,
                  orders_ns=[T0 - 10**9 * i for i in range(30, 0, -1)],
                  symbol_orders_ns=[T0 - 10**10], last_same_intent_ns=T0 - 10**12)
    checks = GATES + CHECKS
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            if first_denial(checks, intent, ctx, LIMITS) is not None:
                raise AssertionError("the benchmark order must pass every check")
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def bench_actor(n: int, positions: int) -> float:
    journal: Channel[object] = Channel("recorder", 10 * n + 10_000)
    execution: Channel[Message] = Channel("execution", 10 * n + 10_000)
    strategy: Channel[Message] = Channel("strategy", 10 * n + 10_000)
    dests = {"execution": execution, "strategy": strategy}
    routes = {t: [dests[d] for d in ds] for t, ds in ROUTES["risk"].items()}
    risk = RiskActor(Channel("risk", 1), Outbox("risk", routes, journal),  # type: ignore[arg-type]
                     config=LIMITS, instance="bench")
    risk.handle(AccountUpdated(ts_ns=0, cash_cents=10**10, equity_cents=10**10,
                               buying_power_cents=10**10, gross_exposure_cents=0,
                               realized_pnl_cents=0, unrealized_pnl_cents=0))
    symbols = [f"S{i}" for i in range(positions)]
    for s in symbols:
        risk.handle(PositionChanged(ts_ns=0, symbol=s, qty=100.0, avg_price=100.0,
                                    realized_pnl_cents=0))
    risk.handle(BarsClosed(ts_ns=T0, bars=tuple(
        BarClosed(ts_ns=T0, symbol=s, open=100.0, high=101.0, low=99.0, close=100.0,
                  volume=1e6) for s in symbols)))
    signals = [
        SignalScored(ts_ns=T0 + i * 10**9, signal=SignalEmitted(
            ts_ns=T0 + i * 10**9, strategy="bench", symbol=symbols[i % positions],
            target_weight=0.5 if i % 2 else 0.01, price=100.0))
        for i in range(n)
    ]
    best = float("inf")
    for _ in range(3):
        elapsed = 0.0
        for sig in signals:
            start = time.perf_counter()
            risk.handle(sig)
            elapsed += time.perf_counter() - start
            # Close the order again (untimed) so the next signal is not "order_pending".
            while True:
                try:
                    cmd = execution.receive_nowait()
                except anyio.WouldBlock:
                    break
                if isinstance(cmd, SubmitOrder):
                    risk.handle(OrderCanceled(ts_ns=cmd.ts_ns, symbol=cmd.symbol,
                                              client_order_id=cmd.client_order_id))
        while True:
            try:
                journal.receive_nowait()
            except anyio.WouldBlock:
                break
        best = min(best, elapsed)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--positions", type=int, default=50)
    args = parser.parse_args()
    print(f"risk: {args.orders:,} order commands, every limit on (best of 3)")
    print(f"  checks  {bench_checks(args.orders):7.2f} µs per order "
          f"({len(GATES) + len(CHECKS)} pure checks)")
    print(f"  actor   {bench_actor(args.orders, args.positions):7.2f} µs per order "
          f"(signal to SubmitOrder, {args.positions} positions)")


if __name__ == "__main__":
    main()
