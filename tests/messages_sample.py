"""One instance of every message type, with fixed values.

``tests/data/journal_v1.msgpack`` was written from this list by
``python -m tests.messages_sample`` when the schema was at version 1 and is
checked in: a later change that breaks decoding of old journals fails
``test_messages.py``. Do not regenerate it to make that test pass; add fields
with defaults instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from trader.messages import (
    AccountUpdated,
    AnyMessage,
    BarClosed,
    BarsClosed,
    BatchCut,
    BrokerHealthChanged,
    CancelOrder,
    ClientOrderId,
    DriftDetected,
    DriftMeasured,
    EquitySampled,
    ExitTriggered,
    FeedStatusChanged,
    FlattenAll,
    HaltTrading,
    ModelSwapped,
    ModelSwapRefused,
    OrderAccepted,
    OrderCanceled,
    OrderDenied,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderReplaced,
    PositionChanged,
    ReconciliationDone,
    ResumeTrading,
    RiskStateChanged,
    ScorerStateChanged,
    SignalEmitted,
    SignalScored,
    SubmitOrder,
    SymbolDelisted,
    encode,
)

T0 = 1_704_230_400_000_000_000  # 2024-01-02T21:20:00Z
COID = ClientOrderId("sma-daily:AAPL:1704230400000000000:buy")
BAR = BarClosed(ts_ns=T0, symbol="AAPL", open=185.5, high=188.44, low=183.89, close=185.64,
                volume=82488700.0, vwap=185.9, trades=1009074)
SIGNAL = SignalEmitted(ts_ns=T0, strategy="sma-daily", symbol="AAPL", target_weight=1.0,
                       strength=0.75, price=185.64)

SAMPLE_V1: list[AnyMessage] = [
    BAR,
    BarsClosed(ts_ns=T0, bars=(BAR,)),
    BatchCut(ts_ns=T0),
    SIGNAL,
    SignalScored(ts_ns=T0, signal=SIGNAL, probability=0.61, model_id="gbm-0001", passed=True),
    SubmitOrder(ts_ns=T0, client_order_id=COID, strategy="sma-daily", symbol="AAPL", side="buy",
                notional_cents=3_300_000, signal_ts_ns=T0),
    CancelOrder(ts_ns=T0, client_order_id=COID),
    OrderDenied(ts_ns=T0, client_order_id=COID, symbol="AAPL", reason_code="max_position",
                reason="position limit reached"),
    OrderAccepted(ts_ns=T0, client_order_id=COID, symbol="AAPL", broker_order_id="b-1",
                  side="buy", notional_cents=3_300_000),
    OrderFilled(ts_ns=T0 + 1, client_order_id=COID, symbol="AAPL", broker_order_id="b-1",
                execution_id="e-1", side="buy", qty=177.0, price=186.09, commission_cents=100,
                cum_qty=177.0, avg_price=186.09, status="filled"),
    OrderCanceled(ts_ns=T0, client_order_id=COID, symbol="AAPL", filled_qty=3.0, reason="user"),
    OrderRejected(ts_ns=T0, client_order_id=COID, symbol="AAPL", reason="insufficient buying power",
                  code="40310000"),
    OrderExpired(ts_ns=T0, client_order_id=COID, symbol="AAPL", filled_qty=0.0),
    OrderReplaced(ts_ns=T0, client_order_id=COID, symbol="AAPL", replaced_by="b-2"),
    PositionChanged(ts_ns=T0, symbol="AAPL", qty=177.0, avg_price=186.09, realized_pnl_cents=-250),
    AccountUpdated(ts_ns=T0, cash_cents=6_700_000, equity_cents=9_999_900,
                   buying_power_cents=6_700_000, gross_exposure_cents=3_299_900,
                   realized_pnl_cents=0, unrealized_pnl_cents=-100),
    EquitySampled(ts_ns=T0, ts=(T0 - 1, T0), equity_cents=(10_000_000, 9_999_900),
                  exposure_cents=(0, 3_299_900)),
    RiskStateChanged(ts_ns=T0, state="HALTED", previous="ACTIVE", reason="max drawdown"),
    HaltTrading(ts_ns=T0, reason="operator"),
    ResumeTrading(ts_ns=T0, reason="operator"),
    FlattenAll(ts_ns=T0, reason="operator"),
    ReconciliationDone(ts_ns=T0, differences=2),
]
"""Exactly what journal_v1.msgpack holds. Never edit: it is the v1 schema."""

SAMPLE: list[AnyMessage] = [
    *SAMPLE_V1,
    # Types added after v1 go here (they cannot be in the v1 file).
    FeedStatusChanged(ts_ns=T0, status="stale", reason="no data for 120s", dropped_invalid=3),
    ScorerStateChanged(ts_ns=T0, state="rule_only", reason="no model configured"),
    DriftMeasured(ts_ns=T0, model_id="sma-daily-v2", window_signals=200, threshold=0.25,
                  features=("ret_1", "vol_20"), feature_psi=(0.03, 0.12), score_psi=0.05),
    DriftDetected(ts_ns=T0, model_id="sma-daily-v2", window_signals=200, threshold=0.25,
                  features=("ret_1", "vol_20"), feature_psi=(0.03, 0.41), score_psi=0.3,
                  breached=("vol_20", "score"), retraining=True),
    ModelSwapped(ts_ns=T0, model_id="sma-daily-v3", previous_model_id="sma-daily-v2",
                 reason="champion promoted"),
    ModelSwapRefused(ts_ns=T0, model_id="sma-daily-v4", reason="sha256 does not match",
                     current_model_id="sma-daily-v3"),
    BrokerHealthChanged(ts_ns=T0, check="order_stream", healthy=False,
                        reason="no trade update for 2.0s while 1 order(s) awaited one "
                               "(limit 2s)", measured=2.0),
    ExitTriggered(ts_ns=T0, client_order_id=ClientOrderId(f"sma-daily:AAPL:{T0}:stop_loss"),
                  symbol="AAPL", reason="stop_loss", qty=100.0, entry_price=190.0, level=180.5,
                  price=179.9),
    SymbolDelisted(ts_ns=T0, symbol="LEH", qty=-120.0, price=0.21, realized_pnl_cents=48_675,
                   last_bar_ns=T0 - 86_400_000_000_000),
    # Fields added after v1 (bracket orders): a bracket entry and one of its legs.
    SubmitOrder(ts_ns=T0, client_order_id=COID, strategy="sma-daily", symbol="AAPL", side="buy",
                qty=177.0, time_in_force="gtc", signal_ts_ns=T0, take_profit_price=204.2,
                stop_loss_price=176.36),
    OrderAccepted(ts_ns=T0 + 1, client_order_id=ClientOrderId(f"{COID}-sl"), symbol="AAPL",
                  broker_order_id="b-3", side="sell", qty=177.0, order_type="stop",
                  stop_price=176.36, time_in_force="gtc", parent_client_order_id=COID),
]


def write(path: Path) -> None:
    """Write the sample as length-prefixed msgpack records."""
    with path.open("wb") as f:
        for msg in SAMPLE_V1:
            body = encode(msg)
            f.write(len(body).to_bytes(4, "big"))
            f.write(body)


def read(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/journal_v1.msgpack")
    write(target)
    print(f"wrote {len(SAMPLE)} records to {target} ({msgspec.__version__=})")
