"""Clocks: the only place trader reads time.

Inside the graph time is UTC nanoseconds as ``int``. Live, that is the wall
clock; in replay it is the close time of the last bar released by the feed, so
an actor asking "what time is it" gets the same answer in both worlds.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

NS_PER_SECOND = 1_000_000_000


class Clock(Protocol):
    """What actors may ask of time."""

    def now_ns(self) -> int:
        """UTC nanoseconds now."""
        ...

    async def sleep_until(self, ts_ns: int) -> None:
        """Wait until the clock reads at least ``ts_ns``."""
        ...


class LiveClock:
    """Wall clock, UTC."""

    def __init__(self, skew_ns: int = 0) -> None:
        # skew is for tests of clock-skew breakers; production leaves it 0.
        self._skew_ns = skew_ns

    def now_ns(self) -> int:
        return time.time_ns() + self._skew_ns

    async def sleep_until(self, ts_ns: int) -> None:
        delay = (ts_ns - self.now_ns()) / NS_PER_SECOND
        if delay > 0:
            await anyio.sleep(delay)


class ReplayClock:
    """Data-driven clock: only the replay feed moves it, and only forward."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now_ns = start_ns
        # Made only when somebody sleeps: the feed advances the clock at every
        # step, and a new Event per step cost ~3% of a replay.
        self._changed: anyio.Event | None = None

    def now_ns(self) -> int:
        return self._now_ns

    def advance_to(self, ts_ns: int) -> None:
        """Move time forward (never back: replayed data is in order)."""
        if ts_ns > self._now_ns:
            self._now_ns = ts_ns
            if self._changed is not None:
                self._changed.set()
                self._changed = None

    async def sleep_until(self, ts_ns: int) -> None:
        while self._now_ns < ts_ns:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
