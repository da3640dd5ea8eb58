"""Circuit breakers on the live path: a stale feed, a silent order stream, a
failing broker and a skewed clock.

Three layers, each tested where its rule lives:

* the broker adapter's measures (:class:`trader.brokers.health.BrokerHealth`),
  on explicit times;
* risk's decisions (``[risk] on_*``, ``auto_resume``) on hand-made
  ``BrokerHealthChanged`` messages;
* the whole daemon against the sandbox, whose fault switches
  (``pause_market_data``, ``pause_trade_updates``, ``rest_error_count``,
  ``clock_skew_s``) are changed at run time through ``POST /admin/faults``.
  The sandbox runs a manual clock, so time in the market moves only when a
  test advances it; breaker thresholds are fractions of a second of wall time,
  and every wait is on journaled rows or the graph's state, with a deadline.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import anyio
import pytest

from tests.test_risk import DAYS, Risk, bars, only, signal
from trader.actors.feed import LiveFeed
from trader.brokers.alpaca import AlpacaBroker
from trader.brokers.health import BrokerHealth
from trader.channels import Channel
from trader.config import AlpacaConfig, Config, decode_config
from trader.data.bars import BarTable
from trader.data.synth import synth_bars
from trader.errors import BrokerUnavailable, ConfigError
from trader.graph import Graph
from trader.messages import (
    BrokerCheck,
    BrokerHealthChanged,
    FeedStatusChanged,
    Message,
    OrderDenied,
    RiskStateChanged,
    SubmitOrder,
    decode,
)
from trader.runner import run_live
from trader.sandbox import Sandbox
from trader.secrets import Credentials

M = TypeVar("M", bound=Message)

SYMBOLS = ["AAPL", "IBM", "MSFT"]
PRE_OPEN = "2024-01-02T14:00:00Z"
"""Half an hour before the first session of the synthetic data: a quiet feed is normal."""
WAIT_S = 20.0


# --- the adapter's measures ----------------------------------------------------------


def test_an_order_waiting_past_the_limit_on_a_connected_stream_is_silence() -> None:
    """An order the broker took has had no update for ``order_stream_silence_s``:
    unhealthy, once; the next trade update makes the stream healthy again."""
    h = BrokerHealth(silence_s=2.0)
    h.sending("a")
    h.answered("a", 10.0, landed=True)
    assert h.check_silence(11.9, stream_up=True) is None
    change = h.check_silence(12.0, stream_up=True)
    assert change is not None
    assert (change.check, change.healthy, change.measured) == ("order_stream", False, 2.0)
    assert change.reason == "no trade update for 2.0s while 1 order(s) awaited one (limit 2s)"
    assert h.check_silence(30.0, stream_up=True) is None  # that evidence is spent
    back = h.heard("a")
    assert back is not None
    assert (back.check, back.healthy) == ("order_stream", True)
    assert h.heard("b") is None  # healthy already: nothing new to say


def test_an_update_that_overtakes_the_rest_answer_is_not_awaited() -> None:
    """The stream is often faster than the REST answer: its update still counts."""
    h = BrokerHealth(silence_s=1.0)
    h.sending("a")
    assert h.heard("a") is None
    h.answered("a", 5.0, landed=True)
    assert h.check_silence(60.0, stream_up=True) is None


def test_a_refused_submit_and_a_resting_order_are_not_awaited() -> None:
    """Only orders the broker took are owed an update; a down stream is not silent."""
    h = BrokerHealth(silence_s=1.0)
    h.sending("refused")
    h.answered("refused", 0.0, landed=False)
    assert h.check_silence(60.0, stream_up=True) is None
    h.sending("a")
    h.answered("a", 0.0, landed=True)
    assert h.check_silence(5.0, stream_up=False) is None
    # A reconnect gives the new connection the whole limit again.
    h.stream_restarted(5.0)
    assert h.check_silence(5.9, stream_up=True) is None
    assert h.check_silence(6.0, stream_up=True) is not None


def test_new_overdue_orders_report_silence_again() -> None:
    """Each batch of overdue orders is new evidence, so a breaker an operator
    resumed trips again while the stream stays silent."""
    h = BrokerHealth(silence_s=1.0)
    for coid, at in (("a", 0.0), ("b", 10.0)):
        h.sending(coid)
        h.answered(coid, at, landed=True)
    first = h.check_silence(1.0, stream_up=True)
    second = h.check_silence(11.0, stream_up=True)
    assert first is not None
    assert second is not None
    assert (first.healthy, second.healthy) == (False, False)


def test_the_error_rate_counts_only_a_full_enough_window_and_ages_out() -> None:
    """Failures above ``error_rate_max`` of at least ``error_min_requests`` requests
    in the window are unhealthy; healthy again once old failures leave the window."""
    h = BrokerHealth(error_rate_max=0.5, error_window_s=10.0, error_min_requests=4)
    assert [h.request(t, failed=True) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    change = h.request(3.0, failed=False)  # 3 of 4 = 75% > 50%
    assert change is not None
    assert (change.check, change.healthy, change.measured) == ("error_rate", False, 0.75)
    assert change.reason == "3 of 4 requests failed in 10s (75%, limit 50%)"
    assert h.request(4.0, failed=False) is None  # 3 of 5 still above
    back = h.check_errors(11.5)  # the failures at 0 and 1 have aged out: 1 of 3
    assert back is not None
    assert (back.healthy, back.measured) == (True, round(1 / 3, 4))


def test_a_clock_beyond_the_skew_limit_either_way_is_unhealthy() -> None:
    """|broker - ours| above ``clock_skew_max_ms`` flips the check; within, it flips back."""
    h = BrokerHealth(clock_skew_max_ms=250.0)
    assert h.clock(200_000_000) is None
    ahead = h.clock(-1_500_000_000)
    assert ahead is not None
    assert (ahead.check, ahead.healthy, ahead.measured) == ("clock_skew", False, -1500.0)
    assert ahead.reason == "the broker's clock is -1500 ms from ours (limit 250 ms)"
    assert h.clock(-900_000_000) is None
    back = h.clock(10_000_000)
    assert back is not None
    assert back.healthy


def test_every_check_is_off_at_zero() -> None:
    """The defaults measure nothing, so nothing is ever reported."""
    h = BrokerHealth()
    assert not h.enabled
    h.sending("a")
    h.answered("a", 0.0, landed=True)
    assert h.check_silence(1e9, stream_up=True) is None
    assert all(h.request(float(t), failed=True) is None for t in range(100))
    assert h.clock(10**12) is None


# --- risk's decisions ----------------------------------------------------------------


def health(check: BrokerCheck, healthy: bool, ts: int, reason: str = "x") -> BrokerHealthChanged:
    return BrokerHealthChanged(ts_ns=ts, check=check, healthy=healthy, reason=reason)


def test_a_silent_order_stream_reduces_by_default_and_names_the_breaker() -> None:
    """REDUCING: entries are denied, exits still go out; the change names its breaker."""
    r = Risk()
    t0, t1, t2 = DAYS[:3]
    r.send(bars(t0, X=50.0))
    change = only(r.get(RiskStateChanged, health("order_stream", False, t0, "no update")))
    assert (change.state, change.breaker, change.reason) == (
        "REDUCING", "order_stream_silence", "order_stream_silence: no update")
    assert only(r.get(OrderDenied, signal(t1, "X", 0.1, 50.0))).reason_code == "trading_state"
    # Healthy again, without auto_resume: an operator resumes.
    assert not r.get(RiskStateChanged, health("order_stream", True, t2))
    assert r.state == "REDUCING"


@pytest.mark.parametrize(("check", "field", "breaker"), [
    ("order_stream", "on_order_stream_silence", "order_stream_silence"),
    ("error_rate", "on_broker_errors", "broker_errors"),
    ("clock_skew", "on_clock_skew", "clock_skew"),
])
def test_each_broker_breaker_forces_its_configured_state_and_auto_resumes(
    check: BrokerCheck, field: str, breaker: str,
) -> None:
    """``on_* = "HALTED"`` halts; with auto_resume a healthy report returns to ACTIVE."""
    limits: dict[str, Any] = {field: "HALTED"}
    r = Risk(auto_resume=True, **limits)
    r.send(health(check, False, DAYS[0]))
    assert r.state == "HALTED"
    change = only(r.get(RiskStateChanged, health(check, True, DAYS[1], "fine again")))
    assert (change.state, change.breaker, change.reason) == (
        "ACTIVE", breaker, f"{breaker} cleared: fine again")


def test_a_broker_breaker_set_to_active_only_journals() -> None:
    """``on_broker_errors = "ACTIVE"``: the health report is journaled, trading goes on."""
    r = Risk(on_broker_errors="ACTIVE")
    r.send(health("error_rate", False, DAYS[0]))
    assert r.state == "ACTIVE"
    assert not r.of(RiskStateChanged)


def test_the_most_severe_breaker_holds_the_state_until_it_clears() -> None:
    """A skewed clock (HALTED by default) outranks broker errors (REDUCING); when the
    clock recovers, the errors still hold REDUCING and the change says so."""
    r = Risk(auto_resume=True)
    r.send(health("error_rate", False, DAYS[0], "3 of 4 failed"),
           health("clock_skew", False, DAYS[1], "2 s off"))
    assert r.state == "HALTED"
    change = only(r.get(RiskStateChanged, health("clock_skew", True, DAYS[2])))
    assert (change.state, change.breaker, change.reason) == (
        "REDUCING", "broker_errors", "broker_errors: 3 of 4 failed")


def test_an_operator_resume_names_the_operator() -> None:
    """The journal says who moved the state: here the operator, over a breaker."""
    from trader.messages import ResumeTrading

    r = Risk()
    r.send(health("clock_skew", False, DAYS[0]))
    change = only(r.get(RiskStateChanged, ResumeTrading(ts_ns=DAYS[1])))
    assert (change.state, change.breaker) == ("ACTIVE", "operator")
    assert r.get(SubmitOrder, signal(DAYS[2], "X", 0.1, 50.0))


def test_breaker_settings_are_validated_at_load_naming_the_field() -> None:
    """A bad action or an out-of-range limit is a config error that names the field."""
    with pytest.raises(ConfigError, match=r"\$\.risk\.on_clock_skew"):
        decode_config({"risk": {"on_clock_skew": "PAUSED"}})
    with pytest.raises(ConfigError, match=r"\$\.alpaca\.error_rate_max"):
        decode_config({"alpaca": {"error_rate_max": 1.5}})
    with pytest.raises(ConfigError, match=r"\$\.alpaca\.order_stream_silence_s"):
        decode_config({"alpaca": {"order_stream_silence_s": -1}})
    with pytest.raises(ConfigError, match=r"\$\.alpaca\.error_min_requests"):
        decode_config({"alpaca": {"error_min_requests": 0}})


# --- the adapter against the sandbox ---------------------------------------------------


@cache
def _tables() -> dict[str, BarTable]:
    return synth_bars(SYMBOLS, days=2, freq="1min", seed=21)


async def set_faults(sb: Sandbox, **switches: Any) -> None:
    """Flip fault switches the way an operator of the exchange would: ``POST /admin/faults``."""
    async with aiohttp.ClientSession() as http, http.post(
        f"{sb.base_url}/admin/faults", json=switches
    ) as resp:
        assert resp.status == 200, await resp.text()


class Reports:
    """An adapter streaming from the sandbox, and the health reports it sends."""

    def __init__(self, sb: Sandbox, **config: Any) -> None:
        self.updates: Channel[Message] = Channel("updates", 10_000)
        self.broker = AlpacaBroker(
            updates=self.updates,
            config=AlpacaConfig(request_timeout_s=2.0, max_requests_per_minute=200, **config),
            credentials=Credentials(key_id=sb.credentials.key_id,
                                    secret_key=sb.credentials.secret),
            trading_url=sb.base_url, trade_stream_url=sb.trade_ws_url,
            now_ns=sb.market.now_ns, attempts=3, backoff_s=0.01, backoff_max_s=0.02,
        )
        self.seen: list[BrokerHealthChanged] = []

    async def next(self) -> BrokerHealthChanged:
        """The next health report (waiting for it)."""
        n = len(self.seen)
        with anyio.fail_after(WAIT_S):
            while len(self.seen) == n:
                for msg in await self.updates.receive_batch():
                    if isinstance(msg, BrokerHealthChanged):
                        self.seen.append(msg)
        return self.seen[n]


@contextlib.asynccontextmanager
async def reports(**config: Any) -> AsyncIterator[tuple[Sandbox, Reports]]:
    async with Sandbox(_tables(), speed="max", start=PRE_OPEN) as sb:
        await sb.market.advance(bars=1)
        r = Reports(sb, **config)
        async with anyio.create_task_group() as tg:
            await tg.start(r.broker.stream)
            yield sb, r
            tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_a_burst_of_broker_errors_is_reported_and_its_end_too() -> None:
    """Five 500s in a row: the error rate is reported unhealthy; enough good answers
    later, healthy again (requests counted one by one, retries included)."""
    async with reports(error_rate_max=0.5, error_min_requests=3) as (sb, r):
        # Before: one good answer (the stream's read of the open orders).
        await set_faults(sb, rest_error_count=5, rest_error_status=500)
        with pytest.raises(BrokerUnavailable):
            await r.broker.account()  # three attempts, three 500s
        bad = await r.next()
        assert (bad.check, bad.healthy) == ("error_rate", False)
        # Tripped at the second failure: 2 of 3 requests.
        assert bad.reason == "2 of 3 requests failed in 60s (67%, limit 50%)"
        await r.broker.account()  # the last two 500s, then an answer: 5 of 7 failed
        for _ in range(2):
            await r.broker.account()  # 5 of 9
        assert len(r.seen) == 1
        await r.broker.account()  # 5 of 10: back at the limit
        good = await r.next()
        assert (good.check, good.healthy, good.measured) == ("error_rate", True, 0.5)


@pytest.mark.asyncio
async def test_a_skewed_broker_clock_is_reported_at_the_next_check_and_its_repair_too() -> None:
    """The clock is read at start (in step: no report) and every interval; a skew beyond
    the limit is reported with its size, and its end too."""
    async with reports(clock_skew_max_ms=500.0, clock_check_interval_s=0.05) as (sb, r):
        await set_faults(sb, clock_skew_s=-3.0)
        bad = await r.next()
        assert (bad.check, bad.healthy) == ("clock_skew", False)
        assert bad.measured == pytest.approx(-3000.0, abs=100.0)
        await set_faults(sb, clock_skew_s=0.0)
        good = await r.next()
        assert (good.check, good.healthy) == ("clock_skew", True)


# --- the daemon against the sandbox ---------------------------------------------------


def _config(db: Path, **sections: dict[str, Any]) -> Config:
    raw: dict[str, dict[str, Any]] = {
        "run": {"db": str(db), "shutdown_deadline_s": 10.0, "control_socket": ""},
        "http": {"enabled": False},
        "feed": {"kind": "alpaca", "symbols": SYMBOLS, "timeframe_s": 60,
                 "stale_after_s": 3600.0, "reconnect_initial_s": 0.05, "reconnect_max_s": 0.2},
        "alpaca": {"update_timeout_s": 1.0, "request_timeout_s": 5.0},
        "strategy": {"name": "sma_cross", "instance": "brk", "params": {"fast": 2, "slow": 4}},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.3},
    }
    for name, fields in sections.items():
        raw[name] = raw.get(name, {}) | fields
    return decode_config(raw)


def journaled(db: Path, kind: type[M]) -> list[M]:
    """Every committed message of ``kind``, in journal time order."""
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT body FROM journal WHERE type = ? "
                                "ORDER BY ts_ns, source, seq", (kind.__name__,)).fetchall()
    except sqlite3.OperationalError:
        return []  # the recorder has not created the schema yet
    return [m for (body,) in rows if isinstance(m := decode(body), kind)]


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for state other tasks own (SQLite, the sandbox), bounded; ``what`` names it."""
    with anyio.fail_after(WAIT_S):
        # Polling on purpose: the journal is a file and signals nothing to us.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def journaled_until(db: Path, kind: type[M], match: Callable[[M], bool], what: str
                          ) -> M:
    """The first journaled ``kind`` matching ``match`` (waiting for it)."""
    await until(lambda: any(match(m) for m in journaled(db, kind)), what)
    return next(m for m in journaled(db, kind) if match(m))


@contextlib.asynccontextmanager
async def daemon(sb: Sandbox, config: Config) -> AsyncIterator[Graph]:
    """``trader run`` in process against ``sb``, ready; drained on exit."""
    graphs: list[Graph] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(run_live, config, sandbox=sb, on_graph=graphs.append))
        await until(lambda: bool(graphs) and graphs[0].ready, "the daemon is ready")
        yield graphs[0]
        graphs[0].request_stop()


def _feed(graph: Graph) -> LiveFeed | None:
    return next((a for a in graph.supervisor.actors() if isinstance(a, LiveFeed)), None)


async def advance_and_settle(sb: Sandbox, graph: Graph) -> None:
    """One more bar: the feed has passed it on and the graph has handled what it caused."""
    await sb.market.advance(bars=1)
    published = sb.market.watermark_ns

    def settled() -> bool:
        f = _feed(graph)
        return (f is not None and len(f.last_emitted) == len(SYMBOLS)
                and all(ts >= published for ts in f.last_emitted.values())
                and graph.inflight.count == 0)

    await until(settled, "the daemon has handled the bar")


@pytest.mark.asyncio
@pytest.mark.parametrize("auto_resume", [True, False], ids=["auto_resume", "operator_resumes"])
async def test_a_stale_feed_trips_the_breaker_and_recovers_only_where_configured(
    tmp_path: Path, auto_resume: bool,
) -> None:
    """The exchange stops publishing bars in an open market: after ``stale_after_s`` risk
    is REDUCING (``stale_feed``), through the feed's reconnects. When live bars flow
    again, auto_resume returns to ACTIVE; otherwise it stays REDUCING for an operator."""
    db = tmp_path / "journal.db"
    config = _config(db, feed={"stale_after_s": 0.5},
                     risk={"on_stale_feed": "REDUCING", "auto_resume": auto_resume})
    async with Sandbox(_tables(), speed="max", start=PRE_OPEN) as sb, daemon(sb, config) as g:
        await set_faults(sb, pause_market_data=True)
        t_fault = time.monotonic()
        await sb.market.advance(bars=1)  # the session opens; its first bar is withheld
        trip = await journaled_until(db, RiskStateChanged, lambda m: m.state != "ACTIVE",
                                     "the stale-feed breaker trips")
        assert time.monotonic() - t_fault >= 0.5
        assert (trip.state, trip.breaker) == ("REDUCING", "stale_feed")
        assert trip.reason == "stale_feed: no data for 0.5s while the market is open"
        # Reconnecting and backfilling the withheld bar is not recovery.
        await until(lambda: (f := _feed(g)) is not None and f.reconnects >= 2,
                    "the feed reconnects twice")
        assert g.trading_state.state == "REDUCING"
        assert [m.status for m in journaled(db, FeedStatusChanged)][-1] == "stale"

        await set_faults(sb, pause_market_data=False)
        # A bar published while the feed reconnects arrives by backfill; publish
        # until one arrives live.
        with anyio.fail_after(WAIT_S):
            while not any(m.reason == "live data flows again"
                          for m in journaled(db, FeedStatusChanged)):
                await sb.hub.wait_until(lambda hub: hub.subscribed("bars", SYMBOLS[0]) > 0)
                await sb.market.advance(bars=1)
                with anyio.move_on_after(1.0):
                    await until(lambda: any(m.reason == "live data flows again"
                                            for m in journaled(db, FeedStatusChanged)),
                                "live data again")
        if auto_resume:
            back = await journaled_until(db, RiskStateChanged, lambda m: m.state == "ACTIVE",
                                         "auto resume")
            assert (back.breaker, back.reason) == (
                "stale_feed", "stale_feed cleared: live data flows again")
        else:
            await g.inflight.wait_quiet()  # risk has handled the feed's "connected"
            assert g.trading_state.state == "REDUCING"
            assert [m.state for m in journaled(db, RiskStateChanged)] == ["REDUCING"]


@pytest.mark.asyncio
@pytest.mark.parametrize("auto_resume", [True, False], ids=["auto_resume", "operator_resumes"])
async def test_a_silent_order_stream_trips_the_breaker_and_recovers_only_where_configured(
    tmp_path: Path, auto_resume: bool,
) -> None:
    """The exchange takes orders but sends no trade updates: once an order has waited
    ``order_stream_silence_s``, risk is REDUCING (``order_stream_silence``). When updates
    flow again, auto_resume returns to ACTIVE; otherwise it stays REDUCING."""
    db = tmp_path / "journal.db"
    config = _config(db, alpaca={"order_stream_silence_s": 0.5},
                     risk={"auto_resume": auto_resume})
    async with Sandbox(_tables(), speed="max", start=PRE_OPEN) as sb, daemon(sb, config) as g:
        await set_faults(sb, pause_trade_updates=True)
        with anyio.fail_after(WAIT_S):
            while not sb.exchange.orders:  # trade until the strategy sends an order
                await advance_and_settle(sb, g)
        sent = time.monotonic()
        trip = await journaled_until(db, RiskStateChanged, lambda m: m.state != "ACTIVE",
                                     "the silence breaker trips")
        assert time.monotonic() - sent >= 0.4  # measured from the submit's answer
        assert (trip.state, trip.breaker) == ("REDUCING", "order_stream_silence")
        assert trip.reason.startswith("order_stream_silence: no trade update for ")
        silent = only(journaled(db, BrokerHealthChanged))
        assert (silent.check, silent.healthy) == ("order_stream", False)
        assert silent.measured >= 0.5

        await set_faults(sb, pause_trade_updates=False)
        await sb.market.advance(bars=1)  # the open market order fills: an update is sent
        await journaled_until(db, BrokerHealthChanged, lambda m: m.healthy,
                              "the stream speaks again")
        if auto_resume:
            back = await journaled_until(db, RiskStateChanged, lambda m: m.state == "ACTIVE",
                                         "auto resume")
            assert (back.breaker, back.reason) == (
                "order_stream_silence",
                "order_stream_silence cleared: trade updates arrive again")
        else:
            await g.inflight.wait_quiet()  # risk has handled the healthy report
            assert g.trading_state.state == "REDUCING"
            assert [m.state for m in journaled(db, RiskStateChanged)] == ["REDUCING"]
