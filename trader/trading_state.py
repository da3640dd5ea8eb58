"""The trading state and the conditions that set it: ACTIVE, REDUCING, HALTED.

::

                 operator halt, kill switch, drawdown, daily loss
        ┌──────────────────────────────────────────────────────────┐
        │                                                          ▼
     ACTIVE ◀──── operator resume (or auto_resume) ──────────── HALTED
        │  ▲                                                       ▲
        ▼  │ operator resume (or auto_resume)                       │
     REDUCING (stale feed, by default) ─────────────────────────────┘

The state is the most severe of the *conditions* now tripped, each named and
each forcing a state: ``operator``, ``kill_switch``, ``drawdown``,
``daily_loss`` (HALTED), ``stale_feed`` (``[risk] on_stale_feed``),
``order_stream_silence``, ``broker_errors``, ``clock_skew`` (``[risk]
on_order_stream_silence``, ``on_broker_errors``, ``on_clock_skew``: the
broker adapter's ``BrokerHealthChanged``) and ``restored`` (the state the
journal last recorded, at start). An operator resume clears every condition
and re-bases the breakers' marks, so they measure from the equity at the
resume instead of tripping again at the next bar; it cannot clear the kill
switch while its file exists. With ``auto_resume`` a condition clears itself
when its cause goes: live data flows again, the broker is healthy again, a
new session starts, the kill-switch file is removed. The drawdown breaker
never clears itself, and neither does ``restored``. Each change names the
condition behind it (``RiskStateChanged.breaker``).

Breakers run on the equity marks risk makes at every bar timestamp: the
drawdown from the high-water mark, and the loss since the last mark before
the current NYSE session.

This module decides and keeps the marks; it sends nothing. The risk actor
journals each change (a ``RiskStateChanged``), logs it, cancels open entries
on HALTED and flattens where configured. The graph owns the machine, so the
state outlives a risk actor's restart.
"""

from __future__ import annotations

from typing import NamedTuple

from trader.calendar import next_close_ns
from trader.config import RiskConfig
from trader.messages import BrokerCheck, RiskStateChanged, TradingState
from trader.money import to_cents
from trader.risk_checks import daily_loss_breached, drawdown_breached

SEVERITY: dict[TradingState, int] = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}

#: The condition each broker health check trips.
BROKER_BREAKERS: dict[BrokerCheck, str] = {
    "order_stream": "order_stream_silence",
    "error_rate": "broker_errors",
    "clock_skew": "clock_skew",
}


class StateEvent(NamedTuple):
    """What a condition changing means for the risk actor.

    Attributes:
        change: the state moved: journal this (None if the state stayed).
        breaker: an equity breaker tripped (``flatten_on_halt`` applies).
        ts_ns, reason: when and why.
    """

    change: RiskStateChanged | None
    breaker: bool
    ts_ns: int
    reason: str


class TradingStateMachine:
    """Named conditions, the state they force, and the breakers' equity marks."""

    __slots__ = ("_day_close_ns", "_day_start_cents", "_high_water_cents", "_last_equity_cents",
                 "_last_ts_ns", "_state", "tripped")

    def __init__(self, restored: str = "ACTIVE") -> None:
        """
        Args:
            restored: the state the journal last recorded (``ACTIVE`` for a
                fresh start); anything else holds until an operator resumes.
        """
        self.tripped: dict[str, tuple[TradingState, str]] = {}
        reason = f"restored: {restored} when the daemon last ran; an operator resumes"
        if restored == "HALTED":
            self.tripped["restored"] = ("HALTED", reason)
        elif restored == "REDUCING":
            self.tripped["restored"] = ("REDUCING", reason)
        self._state: TradingState = "ACTIVE"  # the state last journaled
        self._high_water_cents = 0
        self._day_close_ns = 0
        self._day_start_cents = 0
        self._last_equity_cents: int | None = None
        self._last_ts_ns = 0

    @property
    def state(self) -> TradingState:
        return self._state

    # --- conditions ------------------------------------------------------------------

    def trip(self, name: str, state: TradingState, reason: str, ts_ns: int, *,
             breaker: bool = False) -> StateEvent:
        """Condition ``name`` now forces ``state``."""
        self.tripped[name] = (state, reason)
        return StateEvent(self.settle(ts_ns, reason, name), breaker, ts_ns, reason)

    def clear(self, name: str, reason: str, ts_ns: int) -> StateEvent | None:
        """Condition ``name`` no longer holds (None if it was not tripped)."""
        if self.tripped.pop(name, None) is None:
            return None
        return StateEvent(self.settle(ts_ns, reason, name), False, ts_ns, reason)

    def resume(self, reason: str, ts_ns: int, *, kill_switch: str = "") -> StateEvent:
        """The operator clears every condition but a kill-switch file that still exists.

        Args:
            kill_switch: the kill-switch file's path if it exists now, else "".
        """
        self.tripped.clear()
        # Measure drawdown and the day's loss from here, or the breakers would
        # trip again at the next bar.
        if self._last_equity_cents is not None:
            self._high_water_cents = self._day_start_cents = self._last_equity_cents
        if kill_switch:
            self.tripped["kill_switch"] = ("HALTED", f"kill_switch: {kill_switch} exists")
        return StateEvent(self.settle(ts_ns, reason, "operator"), False, ts_ns, reason)

    def settle(self, ts_ns: int, reason: str = "", name: str = "") -> RiskStateChanged | None:
        """The change to journal if the tripped conditions moved the state, else None.

        ``reason`` is what just happened; ``name`` the condition it tripped
        or cleared, if any. The change is stamped no earlier than the previous
        one, so the journal orders state changes as they happened.
        """
        state: TradingState = "ACTIVE"
        why, breaker = reason, name
        for cond, (forced, text) in self.tripped.items():
            if SEVERITY[forced] > SEVERITY[state]:
                state, why, breaker = forced, text, cond
        if name in self.tripped and self.tripped[name][0] == state:
            why, breaker = reason, name  # the condition just tripped explains it best
        previous = self._state
        if state == previous:
            return None
        self._state = state
        self._last_ts_ns = ts = max(ts_ns, self._last_ts_ns)
        return RiskStateChanged(ts_ns=ts, state=state, previous=previous, reason=why,
                                breaker=breaker)

    # --- what trips them ---------------------------------------------------------------

    def check_equity(self, ts_list: list[int], equity_list: list[int], cfg: RiskConfig
                     ) -> list[StateEvent]:
        """Run the drawdown and daily-loss breakers over one batch's equity marks."""
        events: list[StateEvent] = []
        loss_limit = to_cents(cfg.daily_loss_limit_usd)
        for ts, equity in zip(ts_list, equity_list, strict=True):
            if loss_limit:
                if ts > self._day_close_ns:
                    # A new session: its loss is measured from the last mark before it.
                    self._day_close_ns = next_close_ns(ts - 1)
                    start = self._last_equity_cents
                    self._day_start_cents = equity if start is None else start
                    if cfg.auto_resume:
                        cleared = self.clear("daily_loss", "daily_loss cleared: a new session",
                                             ts)
                        if cleared is not None:
                            events.append(cleared)
                start = self._day_start_cents
                if "daily_loss" not in self.tripped and daily_loss_breached(
                    start, equity, loss_limit
                ):
                    events.append(self.trip(
                        "daily_loss", "HALTED",
                        f"daily_loss: equity {equity / 100:.2f} is {(start - equity) / 100:.2f} "
                        f"below the session's start {start / 100:.2f} "
                        f"(limit {cfg.daily_loss_limit_usd:.2f})",
                        ts, breaker=True,
                    ))
            if cfg.max_drawdown_pct:
                if equity > self._high_water_cents:
                    self._high_water_cents = equity
                hwm = self._high_water_cents
                if "drawdown" not in self.tripped and drawdown_breached(
                    hwm, equity, cfg.max_drawdown_pct
                ):
                    events.append(self.trip(
                        "drawdown", "HALTED",
                        f"drawdown: equity {equity / 100:.2f} is "
                        f"{(hwm - equity) * 100 / hwm:.2f}% below the high-water mark "
                        f"{hwm / 100:.2f} (limit {cfg.max_drawdown_pct:g}%)",
                        ts, breaker=True,
                    ))
            self._last_equity_cents = equity
        return events

    def check_kill_switch(self, path: str, exists: bool, ts_ns: int, cfg: RiskConfig
                          ) -> StateEvent | None:
        """HALT while the kill-switch file exists; its removal clears only with auto_resume."""
        if exists:
            if "kill_switch" in self.tripped:
                return None
            return self.trip("kill_switch", "HALTED", f"kill_switch: {path} exists", ts_ns)
        if cfg.auto_resume:
            return self.clear("kill_switch", f"kill_switch cleared: {path} removed", ts_ns)
        return None

    def on_feed_status(self, status: str, reason: str, ts_ns: int, cfg: RiskConfig
                       ) -> StateEvent | None:
        """A stale feed forces ``on_stale_feed``; a reconnect clears it with auto_resume."""
        forced = cfg.on_stale_feed
        if status == "stale" and forced != "ACTIVE":
            return self.trip("stale_feed", forced, f"stale_feed: {reason or 'no data'}", ts_ns)
        if status == "connected" and cfg.auto_resume:
            # After a stale spell the feed says "connected" only once live
            # data flows again, not at a bare reconnect (trader.actors.feed).
            return self.clear("stale_feed",
                              f"stale_feed cleared: {reason or 'the feed reconnected'}", ts_ns)
        return None

    def on_broker_health(self, check: BrokerCheck, healthy: bool, reason: str, ts_ns: int,
                         cfg: RiskConfig) -> StateEvent | None:
        """An unhealthy broker forces the state its check is configured to; a healthy
        one clears the condition with auto_resume (else an operator resumes)."""
        name = BROKER_BREAKERS[check]
        forced = {"order_stream": cfg.on_order_stream_silence,
                  "error_rate": cfg.on_broker_errors,
                  "clock_skew": cfg.on_clock_skew}[check]
        if not healthy:
            if forced == "ACTIVE":
                return None
            return self.trip(name, forced, f"{name}: {reason}", ts_ns)
        if cfg.auto_resume:
            return self.clear(name, f"{name} cleared: {reason}", ts_ns)
        return None
