"""Replay: the feed, the clock and the broker that ``trader replay`` swaps in.

Nothing else changes: graph.py builds the same actors for live and replay.

:class:`ReplayFeed` releases bars in (time, symbol) order and moves the
:class:`~trader.clock.ReplayClock` only when the graph is quiescent (every
message caused so far has been handled; see :mod:`trader.channels`). It steps
in one of two ways:

* **Orders open at the simulated broker**: one timestamp at a time. The
  broker trades the bars first (fills flow to risk and the strategy), the graph
  settles, then the strategy sees the same bars. That is the live order of
  events: an order fills during the next bar, before that bar closes.
* **Nothing open**: a batch of up to ``batch_bars`` bars (whole timestamps) in
  one message (64 after a signal, doubling while none comes). Nothing can
  fill while no order is open, so this is exactly equivalent, and it is what
  makes replay fast. If the strategy signals inside
  the batch it stops after that timestamp and says so (``BatchCut``); the feed
  resumes from the next timestamp in single steps.

With ``speed`` set, timestamps are released at that multiple of real time
(wall-clock pacing for demos), one timestamp at a time.

A symbol whose data ends before the replay does is delisted at the first
timestamp of a later day (:mod:`trader.universe`): the feed has the broker
close it there, and lets the graph settle, before it releases that timestamp.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import anyio
import numpy as np
import structlog
from anyio.abc import TaskStatus

from trader.actors.base import Outbox
from trader.brokers.simulated import SimulatedBroker
from trader.channels import Channel, InFlight
from trader.clock import NS_PER_SECOND, ReplayClock
from trader.data.bars import BarTable
from trader.messages import BarClosed, BarsClosed, BatchCut, Message
from trader.universe import Delistings

log = structlog.get_logger("trader.replay")


#: Bars in a batch after a signal (and at the start); they double up to batch_bars.
_FIRST_BATCH = 64


class MergedBars:
    """Every bar of a universe, merged into (ts, symbol) order, as columns."""

    def __init__(
        self,
        tables: Mapping[str, BarTable],
        start_ns: int = 0,
        end_ns: int = 0,
        *,
        block_size: int = 16384,
    ) -> None:
        self._block_size = block_size
        self._block_start = 0
        self._block: tuple[BarClosed, ...] = ()
        symbols = sorted(tables)
        self.symbols = symbols
        parts = [tables[s] for s in symbols]
        if not parts:
            self.ts = np.empty(0, dtype=np.int64)
            self.sym = np.empty(0, dtype=np.int32)
            self.cols = np.empty((7, 0))
            self._group_ends = np.empty(0, dtype=np.int64)
            self.delistings = Delistings(self.ts, self.sym, symbols)
            return
        ts = np.concatenate([t.ts_ns for t in parts])
        sym = np.concatenate(
            [np.full(len(t), i, dtype=np.int32) for i, t in enumerate(parts)]
        )
        # One index does the merge and the date window; columns are then
        # gathered one at a time, so a million-bar replay never holds more
        # than one extra column in flight.
        index = np.lexsort((sym, ts))
        if start_ns or end_ns:
            sorted_ts = ts[index]
            lo = int(np.searchsorted(sorted_ts, start_ns, side="left")) if start_ns else 0
            hi = (int(np.searchsorted(sorted_ts, end_ns, side="right")) if end_ns
                  else len(sorted_ts))
            index = index[lo:hi]
        self.ts, self.sym = ts[index], sym[index]
        self._group_ends = _group_ends(self.ts)
        cols = np.empty((7, len(index)))
        for row, c in enumerate(("open", "high", "low", "close", "volume", "vwap", "trades")):
            cols[row] = np.concatenate([getattr(t, c) for t in parts])[index]
        self.cols = cols
        # Symbols whose data ends before the replay does (trader.universe).
        self.delistings = Delistings(self.ts, self.sym, symbols)

    def __len__(self) -> int:
        return len(self.ts)

    def group_end(self, i: int) -> int:
        """Index just past the bars sharing timestamp ``ts[i]``."""
        return int(self._group_ends[i])

    def chunk_end(self, i: int, max_bars: int) -> int:
        """Index past up to ``max_bars`` bars from ``i``, rounded up to a whole timestamp."""
        j = min(i + max_bars, len(self.ts))
        if j < len(self.ts):
            j = int(self._group_ends[j - 1])
        return j

    def bars(self, i: int, j: int) -> tuple[BarClosed, ...]:
        """Bars ``i`` to ``j`` as messages.

        Built a block at a time and kept: after a cut the feed asks again for
        bars it already built, and building them twice would cost more than
        everything else the replay does.
        """
        bs, block = self._block_start, self._block
        if bs <= i and j <= bs + len(block):
            return block[i - bs : j - bs]
        end = min(max(j, i + self._block_size), len(self.ts))
        self._block_start, self._block = i, self._build(i, end)
        return self._block[: j - i]

    def _build(self, i: int, j: int) -> tuple[BarClosed, ...]:
        ts = self.ts[i:j].tolist()
        sym = self.sym[i:j].tolist()
        o, h, lo, c, v, vw, n = (col.tolist() for col in self.cols[:, i:j])
        names = self.symbols
        return tuple(
            BarClosed(
                ts_ns=t, symbol=names[s], open=op, high=hi, low=low, close=cl, volume=vol,
                vwap=None if vwp != vwp else vwp,  # NaN: not in the data
                trades=None if tr < 0 else int(tr),
            )
            for t, s, op, hi, low, cl, vol, vwp, tr in zip(
                ts, sym, o, h, lo, c, v, vw, n, strict=True
            )
        )


def _group_ends(ts: np.ndarray) -> np.ndarray:
    """For each bar, the index just past the bars sharing its timestamp (``ts`` sorted).

    Looked up at every replay step; a search per step costs more than the step."""
    n = len(ts)
    starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]]) if n else np.empty(0, np.int64)
    bounds = np.r_[starts, n]
    return np.repeat(bounds[1:], np.diff(bounds)).astype(np.int32 if n < 2**31 else np.int64)


class Cursor:
    """Where the replay stands: outlives feed restarts, as a market outlives a
    reconnect (a restarted feed goes on from the first bar not yet released)."""

    __slots__ = ("batch", "position")

    def __init__(self) -> None:
        self.position = 0
        #: Bars in the next batch (see ReplayFeed.run); 0 until the feed starts.
        self.batch = 0


class ReplayFeed:
    """Releases bars as the graph becomes quiet. See the module docstring."""

    name = "feed"

    def __init__(
        self,
        data: MergedBars,
        cursor: Cursor,
        outbox: Outbox,
        control: Channel[Message],
        *,
        inflight: InFlight,
        broker: SimulatedBroker,
        clock: ReplayClock,
        batch_bars: int = 4096,
        speed: float | None = None,
        on_finished: Callable[[], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        settle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._data = data
        # Graph.settle under inline delivery: the feed's task does the handling.
        self._settle = settle or inflight.wait_quiet
        self._out = outbox
        self._control = control
        self._inflight = inflight
        self._broker = broker
        self._clock = clock
        self._batch = batch_bars
        self._speed = speed
        self._on_finished = on_finished
        self._on_progress = on_progress
        self._cursor = cursor

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        data, broker, settle = self._data, self._broker, self._settle
        n = len(data)
        wall_start: float | None = None
        first_ts = int(data.ts[0]) if n else 0
        cursor = self._cursor
        first = min(self._batch, _FIRST_BATCH)
        if not cursor.batch:
            cursor.batch = first
        while cursor.position < n:
            i = cursor.position
            await settle()
            stepping = self._speed is not None or broker.exchange.has_open_orders()
            j = data.group_end(i) if stepping else data.chunk_end(i, cursor.batch)
            # A batch never spans a delisting, so it happens between the same
            # two bars whatever batch_bars is.
            j = min(j, data.delistings.next_after(i, j))
            if self._speed is not None:
                if wall_start is None:
                    wall_start = anyio.current_time()
                due = wall_start + (int(data.ts[i]) - first_ts) / NS_PER_SECOND / self._speed
                await anyio.sleep_until(due)
            delisted = data.delistings.at(i)
            if delisted:
                # The market opened a later day without these symbols: their
                # positions close at their last close before anyone sees the new bars.
                self._clock.advance_to(int(data.ts[i]))
                if await broker.delist(int(data.ts[i]), delisted):
                    await settle()
            bars = data.bars(i, j)
            if stepping:
                # The market trades the bar before it closes for the strategy.
                self._clock.advance_to(bars[0].ts_ns)
                if await broker.on_bars(bars):
                    await settle()
            await self._out.emit(BarsClosed(ts_ns=bars[-1].ts_ns, bars=bars), journal=False)
            await settle()
            cut = self._apply_cut(i, j)
            if not stepping:
                # Batches start small after a signal and double while none
                # comes: a strategy that signals every few dozen bars would
                # otherwise have thousands of bars copied into every batch
                # that it cuts after a few. Only the bars' grouping into
                # messages depends on this, and that on the data alone.
                cursor.batch = first if cut < j else min(self._batch, 2 * cursor.batch)
                # Nothing was open before these bars closed (an order the
                # strategy sent meanwhile is stamped with the last of them), so
                # the market has nothing to trade; it only needs their prices.
                broker.mark(bars[: cut - i])
            j = cut
            self._clock.advance_to(int(data.ts[j - 1]))
            cursor.position = j
            if self._on_progress is not None:
                self._on_progress(j, n)
        if self._on_finished is not None:
            self._on_finished()

    def _apply_cut(self, i: int, j: int) -> int:
        control = self._control
        while len(control):
            try:
                msg = control.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return j
            if isinstance(msg, BatchCut):
                j = min(j, int(np.searchsorted(self._data.ts, msg.ts_ns, side="right")))
                j = max(j, i + 1)
        return j
