"""A request-rate limiter with one priority lane: cancels go first.

Alpaca allows 200 trading requests per minute per key and answers 429 past
that. :class:`RateLimiter` keeps us under a configured ``per_minute``:

* It is a token bucket whose tokens each come back exactly one minute after
  they were spent (a sliding-window log). So no 60-second window ever holds
  more than ``per_minute`` grants. A classic bucket with continuous refill
  would let a full bucket plus a minute of refill through, up to twice the
  limit in the first minute.
* Waiters are served in two FIFO lanes: a waiting ``"cancel"`` is granted
  before any waiting ``"normal"`` request, however long that one has waited.
  When the budget is spent, taking risk off must not queue behind new risk.

Time comes from ``clock`` and waiting from ``sleep`` (``anyio.current_time``
and ``anyio.sleep`` by default), so tests drive it with a fake clock and never
really wait.

What it is not: a scheduler. It grants permission; the caller makes the
request. It does not read Alpaca's ``X-Ratelimit-*`` headers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio

Priority = Literal["cancel", "normal"]

WINDOW_S = 60.0


class _Ticket:
    """One waiting :meth:`RateLimiter.acquire` call (identity is what matters)."""

    __slots__ = ()


class RateLimiter:
    """At most ``per_minute`` grants in any 60 s window; cancels before new orders.

    Args:
        per_minute: the budget (>= 1).
        clock: monotonic seconds (``anyio.current_time`` by default).
        sleep: how to wait that many seconds (``anyio.sleep`` by default).

    Raises:
        ValueError: ``per_minute`` < 1.
    """

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be at least 1, got {per_minute}")
        self.per_minute = per_minute
        self._clock = clock
        self._sleep = sleep
        self._spent: deque[float] = deque()  # grant times within the last window
        self._lanes: dict[Priority, deque[_Ticket]] = {"cancel": deque(), "normal": deque()}
        self._parked: set[anyio.CancelScope] = set()
        self.granted = 0

    @property
    def waiting(self) -> int:
        """How many acquire calls are queued."""
        return len(self._lanes["cancel"]) + len(self._lanes["normal"])

    async def acquire(self, priority: Priority = "normal") -> None:
        """Wait for a token and take it.

        Args:
            priority: ``"cancel"`` is served before every waiting ``"normal"``.

        Raises:
            ValueError: an unknown priority.
        """
        if priority not in self._lanes:
            raise ValueError(f"unknown priority {priority!r}")
        # Cancellation point first, then take the token with no await in between,
        # so a cancelled caller never spends a token it will not use.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not self.waiting and self._delay() <= 0:
            self._grant()
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return
        ticket = _Ticket()
        lane = self._lanes[priority]
        lane.append(ticket)
        try:
            while True:
                head = self._head() is ticket
                delay = self._delay() if head else 0.0
                if head and delay <= 0:
                    lane.popleft()
                    self._grant()
                    self._wake()  # the next head starts its own wait
                    return
                # Park until our token is due (head) or the queue changes (a
                # cancel overtook us, or the head left): _wake cancels the scope.
                with anyio.CancelScope() as scope:
                    self._parked.add(scope)
                    try:
                        if head:
                            await self._sleep(delay)
                        else:
                            await anyio.sleep_forever()
                    finally:
                        self._parked.discard(scope)
        except BaseException:
            if ticket in lane:
                lane.remove(ticket)
                self._wake()
            raise

    def _head(self) -> _Ticket | None:
        for lane in (self._lanes["cancel"], self._lanes["normal"]):
            if lane:
                return lane[0]
        return None

    def _delay(self) -> float:
        """Seconds until a token is free (0 if one is free now)."""
        now = self._clock()
        spent = self._spent
        while spent and spent[0] + WINDOW_S <= now:
            spent.popleft()
        if len(spent) < self.per_minute:
            return 0.0
        return spent[0] + WINDOW_S - now

    def _grant(self) -> None:
        self._spent.append(self._clock())
        self.granted += 1

    def _wake(self) -> None:
        for scope in self._parked:
            scope.cancel()
