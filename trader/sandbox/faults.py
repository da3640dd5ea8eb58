"""Fault switches: the ways the sandbox misbehaves on purpose.

A :class:`FaultConfig` is plain data: pass one to the sandbox's constructor, or
change it at run time with ``POST /admin/faults`` (a JSON object with the
fields to change; the rest stay). :class:`Faults` holds the live counters and
the seeded RNG, and answers the questions the server asks ("fail this REST
request?", "corrupt this frame?").

=======================  =====================================================
switch                   effect
=======================  =====================================================
``drop_every``           close each websocket (data and trade) abruptly after
                         it has sent this many frames (0 = never)
``rest_error_status``    the status injected errors use: 429, 500 or 504
``rest_error_count``     answer the next N REST requests with that error
``rest_error_rate``      ...or each REST request with probability p
                         (``seed`` makes the sequence repeatable)
``delay_s``              hold every REST response this long
``corrupt``              ``malformed`` (bytes that do not decode) or
                         ``truncated`` (the first half of the frame) ...
``corrupt_count``        ... for the next N data-stream data frames
``refuse_auth``          fail every authentication: REST 401, data stream
                         402, trade stream ``unauthorized``
``pause_trade_updates``  send no trade updates (fills still happen; the
                         missed events are not replayed later)
``pause_market_data``    send no bars on the data stream (the market still
                         moves and the history REST still has them: a
                         stale feed)
``clock_skew_s``         add this to the time ``/v2/clock`` reports
=======================  =====================================================

"Drop now" is an action, not a state: ``POST /admin/faults`` with
``{"drop_now": true}`` (or :meth:`trader.sandbox.app.Sandbox.drop_connections`).

REST faults apply to ``/v2`` and ``/v1beta3`` HTTP requests, never to
``/admin`` (the test harness must keep control) nor to websocket upgrades.

What it is not: a chaos monkey. Nothing here is random unless a rate is set,
and then it is seeded.
"""

from __future__ import annotations

import random
from typing import Any, Literal

import msgspec

RestErrorStatus = Literal[429, 500, 504]
Corruption = Literal["none", "malformed", "truncated"]


class FaultConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every fault switch; the defaults are a well-behaved exchange (see module docstring)."""

    drop_every: int = 0
    rest_error_status: RestErrorStatus = 500
    rest_error_count: int = 0
    rest_error_rate: float = 0.0
    seed: int = 0
    delay_s: float = 0.0
    corrupt: Corruption = "none"
    corrupt_count: int = 0
    refuse_auth: bool = False
    pause_trade_updates: bool = False
    pause_market_data: bool = False
    clock_skew_s: float = 0.0

    def __post_init__(self) -> None:
        if self.drop_every < 0 or self.rest_error_count < 0 or self.corrupt_count < 0:
            raise ValueError("counts must be >= 0")
        if not 0.0 <= self.rest_error_rate <= 1.0:
            raise ValueError("rest_error_rate must be within [0, 1]")
        if self.delay_s < 0:
            raise ValueError("delay_s must be >= 0")


class Faults:
    """The live fault state: the config plus what is left of its counters.

    Args:
        config: the starting switches.
    """

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.config = FaultConfig()
        self._rest_left = 0
        self._corrupt_left = 0
        self._rng = random.Random(0)
        self.set(config or FaultConfig())

    def set(self, config: FaultConfig) -> None:
        """Replace every switch; counters restart from the new values."""
        self.config = config
        self._rest_left = config.rest_error_count
        self._corrupt_left = config.corrupt_count
        self._rng = random.Random(config.seed)

    def update(self, changes: dict[str, Any]) -> FaultConfig:
        """Change some switches (the admin API's partial update); a counter or the RNG
        restarts only when its own field is among the changes.

        Raises:
            msgspec.ValidationError: an unknown field or a bad value.
        """
        merged = msgspec.structs.asdict(self.config) | changes
        try:
            config = msgspec.convert(merged, FaultConfig)
        except ValueError as exc:  # __post_init__ checks
            raise msgspec.ValidationError(str(exc)) from exc
        # Re-arm only what the caller touched: pausing trade updates must not
        # restart a half-spent error budget.
        self.config = config
        if "rest_error_count" in changes:
            self._rest_left = config.rest_error_count
        if "corrupt_count" in changes:
            self._corrupt_left = config.corrupt_count
        if "seed" in changes or "rest_error_rate" in changes:
            self._rng = random.Random(config.seed)
        return config

    def reset(self) -> None:
        self.set(FaultConfig())

    def snapshot(self) -> dict[str, Any]:
        """The switches and the counters left, for ``GET /admin/faults``."""
        return msgspec.structs.asdict(self.config) | {
            "rest_errors_left": self._rest_left,
            "corrupt_left": self._corrupt_left,
        }

    # --- questions the server asks ---------------------------------------------------

    def rest_error(self) -> int | None:
        """The status to fail this REST request with, or None to serve it."""
        c = self.config
        if self._rest_left > 0:
            self._rest_left -= 1
            return c.rest_error_status
        if c.rest_error_rate > 0 and self._rng.random() < c.rest_error_rate:
            return c.rest_error_status
        return None

    def corrupt_frame(self, frame: bytes) -> bytes | None:
        """The corrupted form of a data frame, or None to send it as is."""
        mode = self.config.corrupt
        if mode == "none" or self._corrupt_left <= 0:
            return None
        self._corrupt_left -= 1
        if mode == "truncated":
            return frame[: max(1, len(frame) // 2)]
        # 0xc1 is the one byte msgpack never uses, and it is not JSON either.
        return b"\xc1\xc1 not a frame \xc1"

    @property
    def clock_skew_ns(self) -> int:
        return round(self.config.clock_skew_s * 1_000_000_000)


REST_ERROR_BODIES: dict[int, tuple[int, str]] = {
    429: (42910000, "rate limit exceeded"),
    500: (50010000, "internal server error occurred"),
    504: (50410000, "gateway timeout"),
}
