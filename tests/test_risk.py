"""The risk actor: trading states, breakers, flatten, sizing, and a crash replayed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, TypeVar

import anyio
import msgspec
import pytest

from tests.builders import bar, daily_closes, minute_closes, write_bars_csv
from trader.actors.base import JournalRecord, Outbox
from trader.actors.risk import RiskActor
from trader.channels import Channel
from trader.config import RiskConfig, decode_config
from trader.graph import ROUTES
from trader.journal import last_risk_state
from trader.messages import (
    AccountUpdated,
    BarClosed,
    BarsClosed,
    CancelOrder,
    ClientOrderId,
    FeedStatusChanged,
    FlattenAll,
    HaltTrading,
    Message,
    OrderCanceled,
    OrderDenied,
    OrderFilled,
    PositionChanged,
    ReconciliationDone,
    ResumeTrading,
    RiskStateChanged,
    SignalEmitted,
    SignalScored,
    SubmitOrder,
    decode,
)
from trader.money import to_cents
from trader.runner import ReplayOutcome, run_replay
from trader.trading_state import TradingStateMachine

M = TypeVar("M", bound=Message)
DAYS = daily_closes("2024-03-04", 10)


class Risk:
    """A RiskActor driven message by message, with everything it emits recorded."""

    def __init__(self, *, cash: float = 100_000.0, machine: TradingStateMachine | None = None,
                 **limits: Any) -> None:
        self.journal: Channel[JournalRecord] = Channel("recorder", 1_000_000)
        dests: dict[str, Channel[Message]] = {
            "execution": Channel("execution", 1_000_000),
            "strategy": Channel("strategy", 1_000_000),
        }
        routes = {t: [dests[d] for d in ds] for t, ds in ROUTES["risk"].items()}
        self.machine = machine or TradingStateMachine()
        self.actor = RiskActor(Channel("risk", 1), Outbox("risk", routes, self.journal),
                               config=RiskConfig(**limits), instance="t",
                               trading_state=self.machine)
        self.out: list[Message] = []
        # Execution's reconciliation at start: the account, then done.
        self.send(account(cash), ReconciliationDone(ts_ns=0, differences=0))

    def send(self, *msgs: Message) -> list[Message]:
        """Handle ``msgs``; return what risk emitted meanwhile."""
        before = len(self.out)
        for msg in msgs:
            self.actor.handle(msg)
            while True:
                try:
                    self.out.append(self.journal.receive_nowait()[1])
                except anyio.WouldBlock:
                    break
        return self.out[before:]

    def of(self, kind: type[M], since: int = 0) -> list[M]:
        return [m for m in self.out[since:] if isinstance(m, kind)]

    def get(self, kind: type[M], *msgs: Message) -> list[M]:
        """Handle ``msgs``; return what risk emitted of type ``kind`` meanwhile."""
        return [m for m in self.send(*msgs) if isinstance(m, kind)]

    @property
    def state(self) -> str:
        return self.actor.state


def bars(ts: int, **closes: float) -> BarsClosed:
    return BarsClosed(ts_ns=ts, bars=tuple(
        bar(s, ts, c, c + 1.0, c - 1.0, c) for s, c in sorted(closes.items())))


def signal(ts: int, symbol: str, weight: float, price: float,
           probability: float | None = None) -> SignalScored:
    return SignalScored(ts_ns=ts, probability=probability, signal=SignalEmitted(
        ts_ns=ts, strategy="t", symbol=symbol, target_weight=weight, price=price))


def filled(order: SubmitOrder, qty: float, price: float, ts: int, *,
           partial: bool = False) -> OrderFilled:
    return OrderFilled(ts_ns=ts, client_order_id=order.client_order_id, symbol=order.symbol,
                       execution_id=f"{order.client_order_id}:{ts}", side=order.side, qty=qty,
                       price=price, commission_cents=0, cum_qty=qty, avg_price=price,
                       status="partially_filled" if partial else "filled")


def account(cash: float) -> AccountUpdated:
    """The account as reconciliation reports it (the start of a reconciliation)."""
    return AccountUpdated(ts_ns=0, cash_cents=to_cents(cash), equity_cents=to_cents(cash),
                          buying_power_cents=to_cents(cash), gross_exposure_cents=0,
                          realized_pnl_cents=0, unrealized_pnl_cents=0)


def holding(symbol: str, qty: float, price: float) -> PositionChanged:
    """A position as reconciliation reports it."""
    return PositionChanged(ts_ns=0, symbol=symbol, qty=qty, avg_price=price,
                           realized_pnl_cents=0)


def only(items: list[M]) -> M:
    assert len(items) == 1, items
    return items[0]


# --- reconciliation -----------------------------------------------------------------


def test_a_fill_found_at_reconciliation_is_not_booked_on_top_of_the_brokers_positions() -> None:
    """Risk holds 100 X. Execution restarts: the broker says 50,000.00 cash and 40 X (a sale
    of 60 filled while it was down), then reports that sale as an adopted fill. Risk keeps
    the broker's 40, not 40 - 60 = -20, and its cash stays the broker's."""
    risk = Risk()
    buy = SubmitOrder(ts_ns=DAYS[0], client_order_id=ClientOrderId("t:X:1:buy"), strategy="t",
                      symbol="X", side="buy", qty=100.0)
    risk.send(filled(buy, 100.0, 10.0, DAYS[0]))
    sell = SubmitOrder(ts_ns=DAYS[1], client_order_id=ClientOrderId("t:X:2:sell"),
                       strategy="t", symbol="X", side="sell", qty=60.0)

    out = risk.send(account(50_000.0), holding("X", 40.0, 10.0), filled(sell, 60.0, 11.0, DAYS[2]),
                    ReconciliationDone(ts_ns=DAYS[2], differences=1))

    assert [(m.symbol, m.qty) for m in out if isinstance(m, PositionChanged)] == [("X", 40.0)]
    assert only([m for m in out if isinstance(m, AccountUpdated)]).cash_cents == 5_000_000
    # And the next fill books normally again.
    assert only(risk.get(PositionChanged, filled(sell, 40.0, 11.0, DAYS[3]))).qty == 0.0


def test_an_adopted_partial_fill_releases_the_buying_power_it_spent() -> None:
    """10,000.00 cash; a 5,000.00 entry in X is open (reserved). While execution was down
    20 X filled at 100: the broker states 8,000.00 cash and 20 X, and the fill is adopted.
    The entry still reserves only its unfilled 3,000.00, so a 5,000.00 entry in Y fits
    whole (8,000 - 3,000); reserving the whole 5,000 again would cut Y to 3,000."""
    r = Risk(cash=10_000.0)
    t0, t1, t2 = DAYS[:3]
    r.send(bars(t0, X=100.0, Y=100.0))
    entry = only(r.get(SubmitOrder, signal(t0, "X", 0.5, 100.0)))
    assert entry.notional_cents == 500_000

    r.send(account(8_000.0), holding("X", 20.0, 100.0),
           filled(entry, 20.0, 100.0, t1, partial=True),
           ReconciliationDone(ts_ns=t1, differences=1))

    y = only(r.get(SubmitOrder, bars(t2, X=100.0, Y=100.0), signal(t2, "Y", 0.5, 100.0)))
    assert (y.symbol, y.side, y.notional_cents) == ("Y", "buy", 500_000)


def test_a_position_the_broker_no_longer_states_is_closed_at_reconciliation() -> None:
    """Risk holds 100 X and 5 Y; reconciliation states only Y (X closed by hand at the
    broker): X is reported at 0 and Y at 5, so the strategy and the journal agree with
    the broker."""
    risk = Risk()
    for symbol, qty in (("X", 100.0), ("Y", 5.0)):
        order = SubmitOrder(ts_ns=DAYS[0], client_order_id=ClientOrderId(f"t:{symbol}:1:buy"),
                            strategy="t", symbol=symbol, side="buy", qty=qty)
        risk.send(filled(order, qty, 10.0, DAYS[0]))

    out = risk.send(account(99_000.0), holding("Y", 5.0, 10.0),
                    ReconciliationDone(ts_ns=DAYS[1], differences=1))

    assert [(m.symbol, m.qty) for m in out if isinstance(m, PositionChanged)] == [
        ("X", 0.0), ("Y", 5.0)]


# --- operator halt and resume --------------------------------------------------------


def test_an_operator_halt_denies_new_orders_and_cancels_open_entries_but_not_exits() -> None:
    """HALTED: a journaled change, CancelOrder for open entries only, every signal denied."""
    r = Risk()
    t0, t1, t2, t3 = DAYS[:4]
    r.send(bars(t0, X=100.0, Y=50.0, Z=20.0))
    buy_x = only(r.get(SubmitOrder, signal(t0, "X", 0.5, 100.0)))
    r.send(filled(buy_x, 500.0, 100.0, t1), bars(t1, X=100.0, Y=50.0, Z=20.0))
    entry_y = only(r.get(SubmitOrder, signal(t1, "Y", 0.2, 50.0)))
    exit_x = only(r.get(SubmitOrder, signal(t1, "X", 0.0, 100.0)))
    assert exit_x.side == "sell"
    assert exit_x.qty == 500.0

    out = r.send(HaltTrading(ts_ns=t2, reason="desk says stop"))
    change = only([m for m in out if isinstance(m, RiskStateChanged)])
    assert (change.state, change.previous) == ("HALTED", "ACTIVE")
    assert change.reason == "operator: desk says stop"
    assert [m.client_order_id for m in out if isinstance(m, CancelOrder)] == [
        entry_y.client_order_id]
    out = r.send(signal(t2, "Z", 0.1, 20.0))
    assert [(type(m).__name__, getattr(m, "reason_code", "")) for m in out] == [
        ("OrderDenied", "trading_state")]

    out = r.send(ResumeTrading(ts_ns=t3, reason="all clear"))
    change = only([m for m in out if isinstance(m, RiskStateChanged)])
    assert (change.state, change.previous, change.reason) == ("ACTIVE", "HALTED",
                                                                "operator: all clear")
    assert [m.symbol for m in r.get(SubmitOrder, signal(t3, "Z", 0.1, 20.0))] == ["Z"]


def test_a_second_halt_changes_nothing_and_journals_no_second_change() -> None:
    """State changes are journaled only when the state moves."""
    r = Risk()
    r.send(HaltTrading(ts_ns=DAYS[0]), HaltTrading(ts_ns=DAYS[1]))
    assert len(r.of(RiskStateChanged)) == 1


# --- stale feed ----------------------------------------------------------------------


def test_a_stale_feed_moves_to_reducing_where_only_exits_pass() -> None:
    """REDUCING by default: a new entry is denied, a position may still be closed."""
    r = Risk(cash=95_000.0)  # + 100 X at 50: equity 100,000
    t0, t1 = DAYS[:2]
    r.send(holding("X", 100.0, 50.0), bars(t0, X=50.0, Y=10.0))
    change = only(r.get(RiskStateChanged, FeedStatusChanged(
        ts_ns=t0, status="stale", reason="no data for 120s")))
    assert (change.state, change.reason) == ("REDUCING", "stale_feed: no data for 120s")
    assert only(r.get(OrderDenied, signal(t1, "Y", 0.1, 10.0))).reason_code == "trading_state"
    half = only(r.get(SubmitOrder, signal(t1, "X", 0.025, 50.0)))
    assert (half.side, half.qty) == ("sell", 50.0)
    # Without auto_resume a reconnect does not resume: an operator does.
    assert not r.get(RiskStateChanged, FeedStatusChanged(ts_ns=t1, status="connected"))
    assert r.state == "REDUCING"


def test_auto_resume_returns_to_active_when_the_feed_reconnects() -> None:
    """With auto_resume, the stale condition clears itself on reconnect."""
    r = Risk(auto_resume=True, on_stale_feed="HALTED")
    r.send(FeedStatusChanged(ts_ns=DAYS[0], status="stale"))
    assert r.state == "HALTED"
    r.send(FeedStatusChanged(ts_ns=DAYS[1], status="connected"))
    assert r.state == "ACTIVE"
    assert [m.reason for m in r.of(RiskStateChanged)][-1] == (
        "stale_feed cleared: the feed reconnected")


def test_on_stale_feed_active_ignores_staleness() -> None:
    """``on_stale_feed = "ACTIVE"`` keeps trading through a stale feed."""
    r = Risk(on_stale_feed="ACTIVE")
    r.send(FeedStatusChanged(ts_ns=DAYS[0], status="stale"))
    assert r.state == "ACTIVE"
    assert not r.of(RiskStateChanged)


# --- kill switch ---------------------------------------------------------------------


def test_the_kill_switch_file_halts_at_the_next_bar_batch_and_blocks_resume(
    tmp_path: Path,
) -> None:
    """The file's existence halts; resume is refused while it exists; removing it is not a
    resume without auto_resume."""
    kill = tmp_path / "KILL"
    r = Risk(kill_switch_file=str(kill))
    t0, t1, t2, t3 = DAYS[:4]
    r.send(bars(t0, X=10.0))
    assert r.state == "ACTIVE"
    kill.touch()
    r.send(bars(t1, X=10.0))
    change = only(r.of(RiskStateChanged))
    assert (change.state, change.ts_ns) == ("HALTED", t1)
    assert change.reason == f"kill_switch: {kill} exists"
    r.send(ResumeTrading(ts_ns=t1))
    assert r.state == "HALTED"
    kill.unlink()
    r.send(bars(t2, X=10.0))
    assert r.state == "HALTED"
    r.send(ResumeTrading(ts_ns=t3))
    assert r.state == "ACTIVE"


def test_with_auto_resume_removing_the_kill_switch_file_resumes(tmp_path: Path) -> None:
    """auto_resume: the batch after the file is gone is ACTIVE again."""
    kill = tmp_path / "KILL"
    kill.touch()
    r = Risk(kill_switch_file=str(kill), auto_resume=True)
    r.send(bars(DAYS[0], X=10.0))
    assert r.state == "HALTED"
    kill.unlink()
    r.send(bars(DAYS[1], X=10.0))
    assert r.state == "ACTIVE"


# --- flatten -------------------------------------------------------------------------


def test_flatten_closes_every_position_net_of_open_exits_and_cancels_entries() -> None:
    """Long X with 200 already being sold, short Y, an open entry in Z: sell 300 X, buy 100 Y,
    cancel Z; when Z's entry fills before the cancel lands, that is closed too."""
    r = Risk(allow_short=True, cash=55_000.0)  # equity 100,000 with the positions below
    t0, t1, t2 = DAYS[:3]
    r.send(holding("X", 500.0, 100.0), holding("Y", -100.0, 50.0),
           bars(t0, X=100.0, Y=50.0, Z=20.0))
    exit_x = only(r.get(SubmitOrder, signal(t0, "X", 0.3, 100.0)))
    assert (exit_x.side, exit_x.qty) == ("sell", 200.0)
    entry_z = only(r.get(SubmitOrder, signal(t0, "Z", 0.1, 20.0)))

    out = r.send(FlattenAll(ts_ns=t1, reason="end of test"))
    assert [m.client_order_id for m in out if isinstance(m, CancelOrder)] == [
        entry_z.client_order_id]
    orders = {m.symbol: m for m in out if isinstance(m, SubmitOrder)}
    assert (orders["X"].side, orders["X"].qty, orders["X"].order_type) == ("sell", 300.0, "market")
    assert (orders["Y"].side, orders["Y"].qty) == ("buy", 100.0)
    assert orders["X"].client_order_id == f"t:X:{t1}:flatten"
    assert r.state == "ACTIVE"  # flatten alone does not halt

    again = only(r.get(SubmitOrder, filled(entry_z, 10.0, 20.0, t2, partial=True),
                       OrderCanceled(ts_ns=t2, client_order_id=entry_z.client_order_id,
                                     symbol="Z")))
    assert (again.symbol, again.side, again.qty) == ("Z", "sell", 10.0)


# --- breakers ------------------------------------------------------------------------


def test_the_daily_loss_limit_halts_at_its_bar_and_auto_resumes_next_session() -> None:
    """$1,000 a day on 1,000 shares: -$500 holds, -$1,100 halts; the next session resumes."""
    first = minute_closes("2024-03-05", 3)
    nxt = minute_closes("2024-03-06", 1)[0]
    r = Risk(daily_loss_limit_usd=1000.0, auto_resume=True, cash=0.0)
    r.send(holding("X", 1000.0, 100.0))
    r.send(bars(first[0], X=100.0), bars(first[1], X=99.5))
    assert r.state == "ACTIVE"
    r.send(bars(first[2], X=98.9))
    change = only(r.of(RiskStateChanged))
    assert (change.state, change.ts_ns) == ("HALTED", first[2])
    assert change.reason.startswith("daily_loss: equity 98900.00 is 1100.00 below")
    r.send(bars(nxt, X=98.9))
    assert r.state == "ACTIVE"
    assert r.of(RiskStateChanged)[-1].ts_ns == nxt


def test_the_drawdown_breaker_measures_from_the_high_water_mark_and_flattens() -> None:
    """10% below the best mark halts and, with flatten_on_halt, sells the position."""
    r = Risk(max_drawdown_pct=10.0, flatten_on_halt=True)
    t = DAYS
    r.send(holding("X", 1000.0, 100.0))
    r.send(bars(t[0], X=100.0), bars(t[1], X=150.0), bars(t[2], X=140.0))
    assert r.state == "ACTIVE"
    # High-water mark 250,000; 10% below is 225,000: X at 125.
    out = r.send(bars(t[3], X=125.0))
    change = only([m for m in out if isinstance(m, RiskStateChanged)])
    assert (change.state, change.ts_ns) == ("HALTED", t[3])
    assert "below the high-water mark 250000.00" in change.reason
    sell = only([m for m in out if isinstance(m, SubmitOrder)])
    assert (sell.side, sell.qty, sell.ts_ns) == ("sell", 1000.0, t[3])


def test_resume_rebases_the_breakers_so_they_do_not_trip_again_at_once() -> None:
    """After an operator resume, the drawdown is measured from the equity at the resume."""
    r = Risk(max_drawdown_pct=10.0)
    r.send(holding("X", 1000.0, 100.0), bars(DAYS[0], X=100.0), bars(DAYS[1], X=80.0))
    assert r.state == "HALTED"
    r.send(ResumeTrading(ts_ns=DAYS[2]), bars(DAYS[3], X=79.0))
    assert r.state == "ACTIVE"


def test_the_state_is_the_most_severe_condition_still_tripped() -> None:
    """A stale feed (REDUCING) under a kill switch (HALTED): clearing the switch leaves
    REDUCING, with the stale feed's reason."""
    machine = TradingStateMachine()
    cfg = RiskConfig(auto_resume=True)
    stale = machine.on_feed_status("stale", "quiet", 1, cfg)
    assert stale is not None
    assert stale.change is not None
    assert stale.change.state == "REDUCING"
    kill = machine.check_kill_switch("KILL", True, 2, cfg)
    assert kill is not None
    assert kill.change is not None
    assert (kill.change.state, kill.change.previous) == ("HALTED", "REDUCING")
    cleared = machine.check_kill_switch("KILL", False, 3, cfg)
    assert cleared is not None
    assert cleared.change is not None
    assert (cleared.change.state, cleared.change.reason) == ("REDUCING", "stale_feed: quiet")
    # Stamped in order even when a cause carries an earlier time.
    late = machine.trip("operator", "HALTED", "operator", 0)
    assert late.change is not None
    assert late.change.ts_ns == 3


# --- surviving restarts --------------------------------------------------------------


def test_the_state_outlives_a_risk_actor_restart() -> None:
    """A new incarnation with the graph's state machine is still HALTED and journals nothing."""
    first = Risk()
    first.send(HaltTrading(ts_ns=DAYS[0]))
    second = Risk(machine=first.machine)
    anyio.run(second.actor.setup)
    second.send()
    assert second.state == "HALTED"
    assert not second.of(RiskStateChanged)
    assert only(second.get(OrderDenied, signal(DAYS[1], "X", 0.1, 10.0))).reason_code == (
        "trading_state")


def test_a_restored_state_is_journaled_at_start_and_held_until_an_operator_resumes() -> None:
    """A machine restored to HALTED (the journal's last state): journaled with its reason at
    setup, and a reconnect does not clear it even with auto_resume."""
    r = Risk(machine=TradingStateMachine("HALTED"), auto_resume=True)
    anyio.run(r.actor.setup)
    r.send(FeedStatusChanged(ts_ns=DAYS[0], status="connected"))
    change = only(r.of(RiskStateChanged))
    assert change.state == "HALTED"
    assert change.reason.startswith("restored: HALTED")
    r.send(ResumeTrading(ts_ns=DAYS[1]))
    assert r.state == "ACTIVE"


# --- sizing and checks in the actor ----------------------------------------------------


def test_volatility_targeting_sizes_by_atr_and_scales_by_the_scorers_probability() -> None:
    """$1,000 at risk over 2 ATRs of $2: 250 shares ($12,500 at $50); p = 0.5 halves it."""
    r = Risk(sizing="volatility_target", risk_per_position_usd=1000.0, atr_multiple=2.0,
             atr_period_bars=3)
    t = DAYS
    r.send(bars(t[0], X=50.0, Y=50.0))
    denied = only(r.get(OrderDenied, signal(t[0], "X", 1.0, 50.0)))
    assert denied.reason_code == "volatility_unknown"
    r.send(bars(t[1], X=50.0, Y=50.0), bars(t[2], X=50.0, Y=50.0))  # true ranges of 2
    order = only(r.get(SubmitOrder, signal(t[2], "X", 1.0, 50.0)))
    assert order.notional_cents == 250 * 50 * 100
    scaled = only(r.get(SubmitOrder, signal(t[2], "Y", 1.0, 50.0, probability=0.5)))
    assert scaled.notional_cents == 125 * 50 * 100


@pytest.mark.parametrize(
    ("limits", "code"),
    [({"max_order_notional_usd": 1000.0}, "max_order_notional"),
     ({"max_gross_exposure_pct": 5.0}, "max_gross_exposure"),
     ({"price_collar_pct": 1.0}, "price_collar")],
)
def test_a_failing_check_becomes_an_order_denied_with_its_code(
    limits: dict[str, Any], code: str
) -> None:
    """$10,000 of X at 100 (the signal saw 102): each limit refuses it with its own code."""
    r = Risk(**limits)
    r.send(bars(DAYS[0], X=100.0))
    out = r.send(signal(DAYS[0], "X", 0.1, 102.0))
    assert only([m for m in out if isinstance(m, OrderDenied)]).reason_code == code
    assert not [m for m in out if isinstance(m, SubmitOrder)]


def test_order_rate_and_duplicate_guard_use_message_time() -> None:
    """One order a minute overall: the second symbol waits until a minute of *data* passed."""
    r = Risk(max_orders_per_minute=1, duplicate_window_s=3600.0)
    t = minute_closes("2024-03-05", 3)
    r.send(bars(t[0], X=10.0, Y=10.0))
    assert [type(m).__name__ for m in r.send(signal(t[0], "X", 0.1, 10.0))] == ["SubmitOrder"]
    assert only(r.get(OrderDenied, signal(t[0], "Y", 0.1, 10.0))).reason_code == "order_rate"
    assert [type(m).__name__ for m in r.send(signal(t[1], "Y", 0.1, 10.0))] == ["SubmitOrder"]
    fill = filled(r.of(SubmitOrder)[0], 1000.0, 10.0, t[2])
    r.send(fill, bars(t[2], X=10.0, Y=10.0))
    assert only(r.get(OrderDenied, signal(t[2], "X", 0.2, 10.0))).reason_code == (
        "duplicate_intent")


# --- a crash, replayed ---------------------------------------------------------------


def _crash_data(tmp_path: Path) -> tuple[Path, list[int]]:
    """A slide, a trend, a -30% day, then a recovery (one symbol, daily bars)."""
    closes = [110.0 - i for i in range(10)]  # 110 .. 101
    closes += [101.0 + 2 * (i - 9) for i in range(10, 30)]  # 103 .. 141
    closes.append(round(closes[-1] * 0.7, 2))  # the crash: 98.70
    closes += [round(closes[30] + 1.5 * (i - 30), 2) for i in range(31, 45)]
    return _write_closes(tmp_path, closes)


def _write_closes(tmp_path: Path, closes: list[float]) -> tuple[Path, list[int]]:
    days = daily_closes("2023-01-03", len(closes))
    out: list[BarClosed] = []
    prev = closes[0]
    for ts, c in zip(days, closes, strict=True):
        out.append(bar("CRSH", ts, prev, max(prev, c) + 0.5, min(prev, c) - 0.5, c))
        prev = c
    data = tmp_path / "crash"
    write_bars_csv(data / "CRSH.csv", out)
    return data, days


def _crash_config(data: Path, db: Path, **risk: Any) -> Any:
    return decode_config({
        "run": {"db": str(db)},
        "data": {"dir": str(data)},
        "strategy": {"name": "sma_cross", "instance": "crash",
                     "params": {"fast": 2, "slow": 5}},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.9, "max_drawdown_pct": 10.0,
                 **risk},
    })


def _replay(config: Any, **kw: Any) -> ReplayOutcome:
    async def main() -> ReplayOutcome:
        return await run_replay(config, **kw)

    return anyio.run(main)


def _journal(db: Path, run_id: str | None = None) -> list[Any]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT body FROM journal WHERE (? IS NULL OR run_id = ?) ORDER BY ts_ns, source, seq",
            (run_id, run_id)).fetchall()
    return [decode(body) for (body,) in rows]


@pytest.mark.parametrize("flatten", [True, False])
def test_a_crash_trips_the_drawdown_breaker_at_its_bar_and_no_entry_follows(
    tmp_path: Path, flatten: bool
) -> None:
    """Replay a -30% day: HALTED at the first mark 10% under the high-water mark (the crash
    bar), journaled with why; flattened at the next open if configured; later signals denied."""
    data, days = _crash_data(tmp_path)
    db = tmp_path / "crash.db"
    outcome = _replay(_crash_config(data, db, flatten_on_halt=flatten))
    with sqlite3.connect(db) as conn:
        equity = conn.execute("SELECT ts_ns, equity_cents FROM equity ORDER BY ts_ns").fetchall()
        fills = conn.execute("SELECT client_order_id, ts_ns, side, qty, price FROM fills "
                             "ORDER BY ts_ns").fetchall()
    hwm, expected = 0, None
    for ts, eq in equity:
        hwm = max(hwm, eq)
        if (hwm - eq) * 100 >= 10 * hwm:
            expected = ts
            break
    crash_bar = days[30]
    assert expected == crash_bar

    journal = _journal(db)
    change = only([m for m in journal if isinstance(m, RiskStateChanged)])
    assert (change.state, change.previous, change.ts_ns) == ("HALTED", "ACTIVE", crash_bar)
    assert change.reason.startswith("drawdown: equity")
    assert "limit 10%" in change.reason

    after = [m for m in journal if isinstance(m, SubmitOrder) and m.ts_ns >= crash_bar]
    entries_wanted = [m for m in journal if isinstance(m, SignalEmitted)
                      and m.ts_ns > crash_bar and m.target_weight > 0]
    assert entries_wanted, "the recovery must make the strategy want back in"
    denied = {m.client_order_id: m.reason_code for m in journal if isinstance(m, OrderDenied)}
    for sig in entries_wanted:
        assert denied[ClientOrderId(f"crash:CRSH:{sig.ts_ns}:buy")] == "trading_state"
    held = outcome.exchange.ledger.qty("CRSH")
    if flatten:
        sell = only(after)
        assert (sell.client_order_id, sell.side) == (f"crash:CRSH:{crash_bar}:flatten", "sell")
        last_fill = fills[-1]
        assert last_fill[0] == sell.client_order_id
        assert last_fill[1] == days[31]  # at the next bar
        assert last_fill[4] == pytest.approx(98.70)  # its open: the crash day's close
        assert held == 0
    else:
        assert after == []
        assert held > 0
    assert last_risk_state(db) == "HALTED"


def test_a_flattening_breaker_fills_the_same_whatever_the_replay_batch_size(
    tmp_path: Path,
) -> None:
    """The flatten is sent at the trip bar and fills at the next one, batched or not: here
    slow averages do not cross at the crash, so no signal cuts the replay's batch there."""
    closes = [140.0 - i for i in range(40)]  # 140 .. 101
    closes += [102.0 + i for i in range(45)]  # 102 .. 146
    closes.append(round(closes[-1] * 0.7, 2))  # the crash: 102.20
    closes += [102.2 + i for i in range(1, 15)]  # prices move on after the flatten
    data, days = _write_closes(tmp_path, closes)
    fills = []
    for batch in (1, 4096):
        db = tmp_path / f"b{batch}.db"
        config = _crash_config(data, db, flatten_on_halt=True)
        config = msgspec.structs.replace(
            config, replay=msgspec.structs.replace(config.replay, batch_bars=batch),
            strategy=msgspec.structs.replace(config.strategy, params={"fast": 10, "slow": 30}))
        _replay(config)
        with sqlite3.connect(db) as conn:
            fills.append((
                conn.execute("SELECT client_order_id, ts_ns, side, qty, price FROM fills "
                             "ORDER BY ts_ns").fetchall(),
                # Risk's marks after the trip include the flatten only if it saw the fill
                # before the next bar, as it would live.
                conn.execute("SELECT ts_ns, equity_cents FROM equity ORDER BY ts_ns").fetchall(),
            ))
        assert not [m for m in _journal(db) if isinstance(m, SignalEmitted)
                    and m.ts_ns == days[85]], "no signal at the crash bar"
    assert fills[0] == fills[1]
    flatten = fills[0][0][-1]
    assert flatten[0] == f"crash:CRSH:{days[85]}:flatten"
    assert flatten[1] == days[86]


def test_a_daemon_restarted_after_the_crash_stays_halted_until_resumed(tmp_path: Path) -> None:
    """The journal's last state is the start state of the next daemon run on the same file."""
    data, _ = _crash_data(tmp_path)
    db = tmp_path / "crash.db"
    config = _crash_config(data, db)
    _replay(config)
    again = _replay(config, restore_risk_state=True)
    journal = _journal(db, again.run_id)
    first = next(m for m in journal if isinstance(m, RiskStateChanged))
    assert first.state == "HALTED"
    assert first.reason.startswith("restored: HALTED")
    assert not [m for m in journal if isinstance(m, SubmitOrder)]
    assert [m.reason_code for m in journal if isinstance(m, OrderDenied)][:1] == ["trading_state"]


def test_flatten_before_close_leaves_every_session_flat(tmp_path: Path) -> None:
    """flatten_before_close_min = 10: every position is closed by the session's end,
    and no entry is made inside the last ten minutes."""
    import anyio

    from trader.config import decode_config
    from trader.data.synth import synth_bars, write_csv
    from trader.runner import run_replay

    data = tmp_path / "bars"
    write_csv(synth_bars(2, days=3, seed=4), data)
    db = tmp_path / "flat.db"
    config = decode_config({
        "run": {"db": str(db)},
        "data": {"dir": str(data)},
        "strategy": {"name": "sma_cross", "params": {"fast": 2, "slow": 5}},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.4,
                 "flatten_before_close_min": 10.0},
    })

    async def main() -> None:
        await run_replay(config)

    anyio.run(main)
    import sqlite3

    from trader import calendar

    with sqlite3.connect(db) as conn:
        fills = conn.execute(
            "SELECT f.ts_ns, f.symbol, f.side, f.qty, o.ts_ns FROM fills f "
            "JOIN orders o USING (run_id, client_order_id) ORDER BY f.ts_ns").fetchall()
    assert fills
    net: dict[tuple[object, str], float] = {}
    for ts, symbol, side, qty, signal_ts in fills:
        day = calendar.ny_date(ts)
        session = calendar.session_for(day)
        assert session is not None
        if side == "buy":
            # no entry decided in the last ten minutes of a session
            assert signal_ts < session.close_ns - 10 * 60 * 10**9
        key = (day, symbol)
        net[key] = net.get(key, 0.0) + (qty if side == "buy" else -qty)
    # Positions opened during a day are all closed the same day.
    assert all(abs(q) < 1e-9 for q in net.values()), net


def test_flatten_before_close_holds_when_no_signal_cuts_the_batches(tmp_path: Path) -> None:
    """A slow strategy (few signals, so the feed would release thousands of bars per
    batch): every position opened during a session is still closed the same day."""
    import sqlite3

    import anyio

    from trader import calendar
    from trader.config import decode_config
    from trader.data.synth import synth_bars, write_csv
    from trader.runner import run_replay

    data = tmp_path / "bars"
    write_csv(synth_bars(1, days=6, seed=4), data)
    db = tmp_path / "slow.db"
    config = decode_config({
        "run": {"db": str(db)},
        "data": {"dir": str(data)},
        "strategy": {"name": "sma_cross", "params": {"fast": 30, "slow": 200}},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.4,
                 "flatten_before_close_min": 10.0},
    })
    anyio.run(lambda: run_replay(config))
    with sqlite3.connect(db) as conn:
        fills = conn.execute("SELECT ts_ns, side, qty FROM fills ORDER BY ts_ns").fetchall()
    buys = [ts for ts, side, _ in fills if side == "buy"]
    assert len(buys) >= 2, "the data must give the strategy entries on several days"
    net: dict[object, float] = {}
    for ts, side, qty in fills:
        day = calendar.ny_date(ts)
        net[day] = net.get(day, 0.0) + (qty if side == "buy" else -qty)
    assert all(abs(q) < 1e-9 for q in net.values()), net
