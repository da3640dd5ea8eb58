"""Every message that travels between actors, and the one journal codec.

Messages are frozen, keyword-only, tagged ``msgspec.Struct`` s. Each carries
``ts_ns``: UTC nanoseconds read from the graph's :class:`~trader.clock.Clock`
(never wall time directly). Events are named in the past tense
(``BarClosed``, ``OrderFilled``), commands in the imperative (``SubmitOrder``,
``HaltTrading``).

Money follows the rule in :mod:`trader.money`: prices are ``float`` (as the
market quotes them, rounded to the tick at the broker boundary); cash,
commissions, equity and P&L are integer cents (fields end in ``_cents``).

The journal is append-only and outlives the code that wrote it, so the schema
only grows: a new field gets a default, no field is ever retyped or renamed,
and a tag is never reused. ``tests/data/journal_v1.msgpack`` is a sample of
this schema that must keep decoding.

This module is *not* a bus: it holds declarations only.
"""

from __future__ import annotations

from typing import Literal, NewType, TypeAlias

import msgspec

ClientOrderId = NewType("ClientOrderId", str)

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit"]
TimeInForce = Literal["day", "gtc"]
TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]


class Message(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="type"):
    """Base of every message: the tag is the class name, ``ts_ns`` is when it happened."""

    ts_ns: int


# --- market data -------------------------------------------------------------


class BarClosed(Message, frozen=True, kw_only=True):
    """A bar that has closed. ``ts_ns`` is the bar's close time: a bar is known only then."""

    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float | None = None
    trades: int | None = None


class BarsClosed(Message, frozen=True, kw_only=True):
    """A batch of closed bars in (ts, symbol) order.

    Live, a batch is every bar of one minute; in replay it may span many
    timestamps while nothing is in flight (see DESIGN.md, "Quiescence").
    ``ts_ns`` is the close time of the last bar in the batch.
    """

    bars: tuple[BarClosed, ...]


class BatchCut(Message, frozen=True, kw_only=True):
    """The strategy stopped inside a replay batch after the bars closing at ``ts_ns``.

    It emitted a signal there, so later bars of the batch must wait until the
    graph has reacted (the broker first sees the next bar, as it would live).
    """


class FeedStatusChanged(Message, frozen=True, kw_only=True):
    """The market-data feed connected, disconnected or went stale (no data while open)."""

    status: Literal["connected", "disconnected", "stale"]
    reason: str = ""
    dropped_invalid: int = 0


# --- strategy and scorer -------------------------------------------------------


class SignalEmitted(Message, frozen=True, kw_only=True):
    """A strategy wants ``symbol`` at ``target_weight`` of equity (1 long, 0 flat, -1 short)."""

    strategy: str
    symbol: str
    target_weight: float
    strength: float = 1.0
    price: float = 0.0
    """The close that produced the signal, for sizing."""


class SignalScored(Message, frozen=True, kw_only=True):
    """A signal with the ML scorer's verdict; ``probability`` is None when unscored."""

    signal: SignalEmitted
    probability: float | None = None
    model_id: str | None = None
    passed: bool = True


ScorerState = Literal["scoring", "rule_only", "no_trade"]


class ScorerStateChanged(Message, frozen=True, kw_only=True):
    """The scorer started or stopped gating signals with a model, and why.

    ``scoring``: the model scores signals. ``rule_only``: no usable model,
    signals pass unscored. ``no_trade``: no usable model, signals that open or
    change exposure are refused (exits pass). See DESIGN.md, the scorer.
    """

    state: ScorerState
    reason: str
    model_id: str | None = None


class DriftReport(Message, frozen=True, kw_only=True):
    """Base of the drift messages: every PSI of the scorer's window (trader.ml.drift).

    ``features`` and ``feature_psi`` are parallel; ``breached`` names those above
    ``threshold`` (``score`` for the score's PSI).
    """

    model_id: str
    window_signals: int
    threshold: float
    features: tuple[str, ...]
    feature_psi: tuple[float, ...]
    score_psi: float
    breached: tuple[str, ...] = ()


class DriftMeasured(DriftReport, frozen=True, kw_only=True):
    """The PSIs now: every quarter window of scored signals, and when a breach ends."""

    in_breach: bool = False


class DriftDetected(DriftReport, frozen=True, kw_only=True):
    """A drift breach began: a PSI passed the threshold (once per episode, not per bar)."""

    retraining: bool = False
    """A retrain was started because of it (``[scorer] retrain_on_drift``)."""


class ModelSwapped(Message, frozen=True, kw_only=True):
    """The scorer scores with another model from the next message on."""

    model_id: str
    previous_model_id: str | None = None
    reason: str = ""


class ModelSwapRefused(Message, frozen=True, kw_only=True):
    """A new champion failed its integrity check; the current model keeps scoring."""

    model_id: str
    reason: str
    current_model_id: str | None = None


# --- orders --------------------------------------------------------------------


class SubmitOrder(Message, frozen=True, kw_only=True):
    """Send one order to the broker. ``client_order_id`` is deterministic (see orders.py)."""

    client_order_id: ClientOrderId
    strategy: str
    symbol: str
    side: Side
    qty: float | None = None
    notional_cents: int | None = None
    order_type: OrderType = "market"
    limit_price: float | None = None
    stop_price: float | None = None
    time_in_force: TimeInForce = "day"
    signal_ts_ns: int = 0
    take_profit_price: float | None = None
    """With ``stop_loss_price``: a broker-native bracket (Alpaca ``order_class``
    ``bracket``; ``oto`` with only one of the two). Once this entry fills, the
    broker holds a limit order closing it at this price."""
    stop_loss_price: float | None = None
    """The bracket's stop order closing the entry at this price. The two legs are
    one-cancels-other; both are rounded to the tick at the broker boundary."""


class CancelOrder(Message, frozen=True, kw_only=True):
    """Cancel an open order."""

    client_order_id: ClientOrderId


class OrderDenied(Message, frozen=True, kw_only=True):
    """Risk refused an order; it never reached the broker."""

    client_order_id: ClientOrderId
    symbol: str
    reason_code: str
    reason: str


class OrderEvent(Message, frozen=True, kw_only=True):
    """Base of broker-reported order status changes."""

    client_order_id: ClientOrderId
    symbol: str
    broker_order_id: str = ""


class OrderAccepted(OrderEvent, frozen=True, kw_only=True):
    """The broker acknowledged the order (Alpaca ``new``)."""

    side: Side = "buy"
    qty: float | None = None
    notional_cents: int | None = None
    order_type: OrderType = "market"
    limit_price: float | None = None
    stop_price: float | None = None
    time_in_force: TimeInForce = "day"
    parent_client_order_id: str = ""
    """For a leg of a bracket (its take profit or stop loss): the client order id
    of the entry it closes. The broker placed the leg, not us."""


class OrderFilled(OrderEvent, frozen=True, kw_only=True):
    """One execution. ``status`` is ``filled`` when nothing is left, else ``partially_filled``."""

    execution_id: str
    side: Side
    qty: float
    price: float
    commission_cents: int
    cum_qty: float
    avg_price: float
    status: Literal["partially_filled", "filled"]


class OrderCanceled(OrderEvent, frozen=True, kw_only=True):
    """The order was canceled; ``filled_qty`` had filled before."""

    filled_qty: float = 0.0
    reason: str = ""


class OrderRejected(OrderEvent, frozen=True, kw_only=True):
    """The broker refused the order, with its reason."""

    reason: str
    code: str = ""


class OrderExpired(OrderEvent, frozen=True, kw_only=True):
    """A day order reached the end of its session unfilled (or partly filled)."""

    filled_qty: float = 0.0


class OrderReplaced(OrderEvent, frozen=True, kw_only=True):
    """The order was replaced by ``replaced_by``."""

    replaced_by: str


# --- portfolio -----------------------------------------------------------------


class PositionChanged(Message, frozen=True, kw_only=True):
    """A position after a fill or a reconciliation."""

    symbol: str
    qty: float
    avg_price: float
    realized_pnl_cents: int


class SymbolDelisted(Message, frozen=True, kw_only=True):
    """``symbol`` left the universe: its data ended while the market went on.

    The simulated exchange canceled its open orders and closed the position
    at ``price``, the symbol's last close, with no commission and no slippage
    (DESIGN.md, "Universe changes"). ``qty`` is the position it closed
    (negative: a short covered; 0: nothing was held), ``realized_pnl_cents``
    what that close realized. Risk books it like a fill; the recorder writes
    it as a fill with the execution id ``delist:<symbol>:<ts_ns>``.
    """

    symbol: str
    qty: float
    price: float
    realized_pnl_cents: int
    last_bar_ns: int = 0
    """The close time of the symbol's last bar."""


class AccountUpdated(Message, frozen=True, kw_only=True):
    """Account and equity at ``ts_ns`` (marked to the last close of each symbol)."""

    cash_cents: int
    equity_cents: int
    buying_power_cents: int
    gross_exposure_cents: int
    realized_pnl_cents: int
    unrealized_pnl_cents: int


class EquitySampled(Message, frozen=True, kw_only=True):
    """Equity and gross exposure marked at each bar timestamp of one batch.

    One message per batch rather than per timestamp keeps a million-bar replay
    from paying for a million messages; the recorder stores one row per point.
    """

    ts: tuple[int, ...]
    equity_cents: tuple[int, ...]
    exposure_cents: tuple[int, ...]


# --- risk and control ----------------------------------------------------------


class RiskStateChanged(Message, frozen=True, kw_only=True):
    """The trading state moved, and why.

    ``breaker`` names the condition that explains the new state
    (``stale_feed``, ``order_stream_silence``, ``broker_errors``,
    ``clock_skew``, ``drawdown``, ``daily_loss``, ``kill_switch``,
    ``operator``, ``restored``), or the one whose clearing moved it; "" when
    none does (journals written before the field existed).
    """

    state: TradingState
    previous: TradingState
    reason: str
    breaker: str = ""


BrokerCheck = Literal["order_stream", "error_rate", "clock_skew"]


class BrokerHealthChanged(Message, frozen=True, kw_only=True):
    """The broker adapter's measure of one aspect of the broker crossed its threshold.

    ``order_stream``: orders have waited ``[alpaca] order_stream_silence_s``
    for a trade update while the stream was connected (healthy again at the
    next update). ``error_rate``: the share of failed REST requests over the
    rolling window. ``clock_skew``: the broker's clock against ours.
    ``measured`` is the observation in the check's unit (seconds, a
    fraction, milliseconds). The adapter measures; risk decides
    (``[risk] on_order_stream_silence`` ...).
    """

    check: BrokerCheck
    healthy: bool
    reason: str
    measured: float = 0.0


ExitReason = Literal["stop_loss", "take_profit", "trailing_stop"]


class ExitTriggered(Message, frozen=True, kw_only=True):
    """A bar breached a position's stop loss, take profit or trailing stop.

    Risk closes the position with the market order ``client_order_id`` (its
    intent is ``reason``); ``ts_ns`` is the breaching bar's close.
    ``entry_price`` is the position's average price, ``level`` the price that
    was breached, ``price`` the bar's low (long) or high (short) that
    breached it (for a take profit, the other extreme). See trader/exits.py.
    """

    client_order_id: ClientOrderId
    symbol: str
    reason: ExitReason
    qty: float
    entry_price: float
    level: float
    price: float


class HaltTrading(Message, frozen=True, kw_only=True):
    """Operator or breaker: no new orders."""

    reason: str = "operator"


class ResumeTrading(Message, frozen=True, kw_only=True):
    """Operator: back to ACTIVE."""

    reason: str = "operator"


class FlattenAll(Message, frozen=True, kw_only=True):
    """Close every position at market."""

    reason: str = "operator"


class ReconciliationDone(Message, frozen=True, kw_only=True):
    """Execution has adopted the broker's truth; strategies may trade."""

    differences: int = 0


AnyMessage: TypeAlias = (
    BarClosed
    | BarsClosed
    | BatchCut
    | SignalEmitted
    | SignalScored
    | SubmitOrder
    | CancelOrder
    | OrderDenied
    | OrderAccepted
    | OrderFilled
    | OrderCanceled
    | OrderRejected
    | OrderExpired
    | OrderReplaced
    | PositionChanged
    | AccountUpdated
    | EquitySampled
    | RiskStateChanged
    | ExitTriggered
    | HaltTrading
    | ResumeTrading
    | FlattenAll
    | ReconciliationDone
    | FeedStatusChanged
    | ScorerStateChanged
    | BrokerHealthChanged
    | DriftMeasured
    | DriftDetected
    | ModelSwapped
    | ModelSwapRefused
    | SymbolDelisted
)

# One codec for the journal; msgpack is compact and msgspec decodes it straight
# into the tagged structs.
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMessage)


def encode(msg: Message) -> bytes:
    """Encode one message for the journal."""
    return _encoder.encode(msg)


def decode(data: bytes) -> AnyMessage:
    """Decode one journal record.

    Raises:
        msgspec.DecodeError: the bytes are not a message of this schema.
    """
    msg: AnyMessage = _decoder.decode(data)
    return msg
