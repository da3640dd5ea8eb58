"""Broker health: what the broker adapter measures for risk's circuit breakers.

Three checks, each with a threshold in ``[alpaca]`` (0 turns it off)::

    order_stream   orders wait for a trade update longer than
                   order_stream_silence_s while the stream is connected
                   ──▶ unhealthy; any trade update ──▶ healthy
    error_rate     failed REST requests / all requests in the last
                   error_window_s > error_rate_max (over at least
                   error_min_requests) ──▶ unhealthy; <= ──▶ healthy
    clock_skew     |broker clock - our clock| > clock_skew_max_ms
                   ──▶ unhealthy; within ──▶ healthy

An order "waits for an update" from the moment a submit or cancel is sent
until the stream says anything about it, so an update that overtakes the REST
answer (the stream is often faster) never counts as missing; the wait is
measured from the REST answer. A resting order the broker has nothing to say
about is not waiting. A stream that is down is the reconnect's business, not
silence: the waits restart when it is back.

Every method is synchronous and takes the time (``anyio.current_time()``
seconds, a monotonic clock: these are durations on the wall, not market
time), so the rules are tested without sockets. Each returns a
:class:`HealthChange` when there is something to tell risk, else None: the
error rate and the clock on a flip only; the order stream at every new batch
of overdue orders too, so a breaker an operator resumed trips again on new
evidence.

What it is not: policy. Risk decides what an unhealthy broker means
(``[risk] on_order_stream_silence``, ``on_broker_errors``, ``on_clock_skew``).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from trader.config import AlpacaConfig
from trader.messages import BrokerCheck


class HealthChange(NamedTuple):
    """One observation to journal as a ``BrokerHealthChanged``."""

    check: BrokerCheck
    healthy: bool
    reason: str
    measured: float


class BrokerHealth:
    """The three checks' state.

    Args:
        silence_s: ``order_stream_silence_s`` (0 = off).
        error_rate_max: ``error_rate_max`` (0 = off).
        error_window_s: the error rate's window.
        error_min_requests: requests the window needs before its rate counts.
        clock_skew_max_ms: ``clock_skew_max_ms`` (0 = off).
    """

    def __init__(
        self,
        *,
        silence_s: float = 0.0,
        error_rate_max: float = 0.0,
        error_window_s: float = 60.0,
        error_min_requests: int = 5,
        clock_skew_max_ms: float = 0.0,
    ) -> None:
        self._silence_s = silence_s
        self._rate_max = error_rate_max
        self._window_s = error_window_s
        self._min_requests = max(error_min_requests, 1)
        self._skew_max_ms = clock_skew_max_ms
        # coid -> when it began waiting (None: sent, no REST answer yet).
        self._waiting: dict[str, float | None] = {}
        self._requests: deque[tuple[float, bool]] = deque()
        self._failed = 0
        self.unhealthy: set[BrokerCheck] = set()

    @classmethod
    def from_config(cls, config: AlpacaConfig) -> BrokerHealth:
        return cls(
            silence_s=config.order_stream_silence_s,
            error_rate_max=config.error_rate_max,
            error_window_s=config.error_window_s,
            error_min_requests=config.error_min_requests,
            clock_skew_max_ms=config.clock_skew_max_ms,
        )

    @property
    def enabled(self) -> bool:
        return bool(self._silence_s or self._rate_max or self._skew_max_ms)

    @property
    def clock_enabled(self) -> bool:
        return bool(self._skew_max_ms)

    @property
    def tick_s(self) -> float:
        """How often the time-driven checks should run: a quarter of the shortest
        window, so a breach is seen within 25% of its threshold (at most 1 s)."""
        spans = [s / 4 for s in (self._silence_s, self._rate_max and self._window_s) if s]
        return max(min([*spans, 1.0]), 0.01)

    # --- the order-update stream ---------------------------------------------------

    def sending(self, coid: str) -> None:
        """A submit or cancel for ``coid`` is about to go out: an update will be due."""
        if self._silence_s:
            self._waiting.setdefault(coid, None)

    def answered(self, coid: str, now: float, *, landed: bool) -> None:
        """The REST call for ``coid`` finished: wait from now if it landed, else not at all."""
        if coid not in self._waiting:
            return  # the stream already spoke about it (or the check is off)
        if landed:
            if self._waiting[coid] is None:
                self._waiting[coid] = now
        else:
            del self._waiting[coid]

    def heard(self, coid: str | None) -> HealthChange | None:
        """A trade update arrived (``coid`` None: one we could not read)."""
        if coid is not None:
            self._waiting.pop(coid, None)
        if "order_stream" in self.unhealthy:
            self.unhealthy.discard("order_stream")
            return HealthChange("order_stream", True, "trade updates arrive again", 0.0)
        return None

    def stream_restarted(self, now: float) -> None:
        """The stream reconnected: every wait starts over on the new connection."""
        for coid, since in self._waiting.items():
            if since is not None:
                self._waiting[coid] = now

    def check_silence(self, now: float, *, stream_up: bool) -> HealthChange | None:
        """Unhealthy if an order has waited past the limit while the stream was up."""
        if not self._silence_s or not stream_up:
            return None
        overdue = [since for since in self._waiting.values()
                   if since is not None and now - since >= self._silence_s]
        if not overdue:
            return None
        waited = now - min(overdue)
        # The evidence is spent: these orders are reported once. The polling
        # path books what happened to them.
        for coid in [c for c, since in self._waiting.items()
                     if since is not None and now - since >= self._silence_s]:
            del self._waiting[coid]
        self.unhealthy.add("order_stream")
        return HealthChange(
            "order_stream", False,
            f"no trade update for {waited:.1f}s while {len(overdue)} order(s) awaited one "
            f"(limit {self._silence_s:g}s)", round(waited, 3))

    # --- REST errors -----------------------------------------------------------------

    def request(self, now: float, *, failed: bool) -> HealthChange | None:
        """One REST request finished."""
        if not self._rate_max:
            return None
        self._requests.append((now, failed))
        self._failed += failed
        return self.check_errors(now)

    def check_errors(self, now: float) -> HealthChange | None:
        """Age the window and flip if the rate crossed ``error_rate_max``."""
        if not self._rate_max:
            return None
        requests = self._requests
        cutoff = now - self._window_s
        while requests and requests[0][0] <= cutoff:
            self._failed -= requests.popleft()[1]
        total = len(requests)
        rate = self._failed / total if total else 0.0
        text = (f"{self._failed} of {total} requests failed in {self._window_s:g}s "
                f"({rate:.0%}, limit {self._rate_max:.0%})")
        if "error_rate" not in self.unhealthy:
            if total >= self._min_requests and rate > self._rate_max:
                self.unhealthy.add("error_rate")
                return HealthChange("error_rate", False, text, round(rate, 4))
        elif rate <= self._rate_max:
            self.unhealthy.discard("error_rate")
            return HealthChange("error_rate", True, text, round(rate, 4))
        return None

    # --- the clock -------------------------------------------------------------------

    def clock(self, skew_ns: int) -> HealthChange | None:
        """A clock reading: ``skew_ns`` = the broker's time minus ours."""
        if not self._skew_max_ms:
            return None
        skew_ms = skew_ns / 1e6
        text = (f"the broker's clock is {skew_ms:+.0f} ms from ours "
                f"(limit {self._skew_max_ms:g} ms)")
        bad = abs(skew_ms) > self._skew_max_ms
        if bad and "clock_skew" not in self.unhealthy:
            self.unhealthy.add("clock_skew")
            return HealthChange("clock_skew", False, text, round(skew_ms, 3))
        if not bad and "clock_skew" in self.unhealthy:
            self.unhealthy.discard("clock_skew")
            return HealthChange("clock_skew", True, text, round(skew_ms, 3))
        return None
