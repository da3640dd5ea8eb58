"""Bounded inboxes, and the in-flight counter that makes quiescence cheap.

A :class:`Channel` is a bounded FIFO with one consuming actor. It is written
for the hot path: a send is a deque append and two integer increments, and a
consumer takes *everything available* in one call (:meth:`Channel.receive_batch`)
so scheduling cost is paid per batch, not per message.

Channels belong to the graph, not to actors, so they outlive restarts: a
restarted actor finds its backlog where its predecessor left it.

Quiescence: every tracked channel shares one :class:`InFlight` counter. A send
adds one; the consumer calls :meth:`Channel.done` only *after* it has handled
the message, including every message the handling sent on. So the counter can
only reach zero when every message caused so far has been handled. Waiting for
that is :meth:`InFlight.wait_quiet`; it costs nothing while messages flow.

This module is not a bus: it does not route. Routing is declared in graph.py.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import msgspec

if TYPE_CHECKING:
    from trader.inline import InlineDriver

T = TypeVar("T")


class ChannelStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters for metrics: depth now, and totals since the graph was built."""

    name: str
    capacity: int
    depth: int
    sent: int
    received: int


class InFlight:
    """Counts messages sent on tracked channels and not yet fully handled."""

    __slots__ = ("_count", "_quiet")

    def __init__(self) -> None:
        self._count = 0
        self._quiet: anyio.Event | None = None

    @property
    def count(self) -> int:
        return self._count

    def add(self, n: int = 1) -> None:
        self._count += n

    def done(self, n: int = 1) -> None:
        self._count -= n
        if self._count < 0:  # a double done() would make quiescence lie
            raise RuntimeError("InFlight.done() called more often than add()")
        if self._count == 0 and self._quiet is not None:
            self._quiet.set()
            self._quiet = None

    async def wait_quiet(self) -> None:
        """Return once nothing is in flight (at once if nothing is)."""
        if self._count == 0:
            await anyio.lowlevel.checkpoint()
            return
        while self._count:
            # Re-checked: the inline driver shares this event as a wake-up.
            if self._quiet is None or self._quiet.is_set():
                self._quiet = anyio.Event()
            await self._quiet.wait()


class Channel(Generic[T]):
    """A bounded FIFO inbox with a single consumer.

    Args:
        name: for logs and metrics.
        capacity: the most messages it holds; senders wait beyond that
            (backpressure, never silent growth).
        inflight: the graph's quiescence counter, or None for channels whose
            consumers the graph need not wait for.
    """

    def __init__(self, name: str, capacity: int, inflight: InFlight | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self._inflight = inflight
        self._items: deque[T] = deque()
        self._closed = False
        #: Set by an :class:`~trader.inline.InlineDriver`: the consumer runs in
        #: the sender's task, so there is no backpressure (it could never drain).
        self.driver: InlineDriver | None = None
        self._sent = 0
        self._received = 0
        self._readable: anyio.Event | None = None
        # FIFO of senders waiting for room, so a late sender cannot overtake an
        # early one (that would reorder messages under load).
        self._writable: deque[anyio.Event] = deque()

    # --- sending ---------------------------------------------------------------

    def send_nowait(self, item: T) -> None:
        """Append ``item``.

        Raises:
            anyio.ClosedResourceError: the channel was closed.
            anyio.WouldBlock: it is full (or senders are already waiting).
        """
        if self._closed:
            raise anyio.ClosedResourceError(f"channel {self.name!r} is closed")
        if (len(self._items) >= self.capacity and self.driver is None) or self._writable:
            raise anyio.WouldBlock
        self._push(item)

    def try_send(self, item: T) -> bool:
        """Append ``item`` if there is room now; the hot path, no exceptions.

        Returns:
            False when full (or senders are queued) or closed: use :meth:`send`.
        """
        items = self._items
        if (len(items) >= self.capacity and self.driver is None) or self._closed \
                or self._writable:
            return False
        # _push, inlined: this runs once per message per hop.
        items.append(item)
        self._sent += 1
        inflight = self._inflight
        if inflight is not None:
            inflight._count += 1
        readable = self._readable
        if readable is not None:
            readable.set()
            self._readable = None
        driver = self.driver
        if driver is not None and (driver._waiters or driver._pump is not None):
            driver.pushed()
        return True

    async def send(self, item: T) -> None:
        """Append ``item``, waiting for room if full."""
        if self._closed:
            raise anyio.ClosedResourceError(f"channel {self.name!r} is closed")
        if (len(self._items) < self.capacity or self.driver is not None) \
                and not self._writable:
            self._push(item)
            return
        room = anyio.Event()
        self._writable.append(room)
        try:
            await room.wait()
        except BaseException:
            # Cancelled while waiting: leave the queue, and if our turn had
            # come, hand it to the next sender.
            self._writable.remove(room)
            self._wake_next_writer()
            raise
        # Our event stayed queued until now, so a sender arriving between our
        # wake-up and our push could not overtake us (send_nowait and the fast
        # path above both yield to queued senders).
        self._writable.remove(room)
        if self._closed:
            raise anyio.ClosedResourceError(f"channel {self.name!r} is closed")
        self._push(item)
        self._wake_next_writer()

    async def send_all(self, items: Iterable[T]) -> None:
        for item in items:
            await self.send(item)

    def _push(self, item: T) -> None:
        self._items.append(item)
        self._sent += 1
        inflight = self._inflight
        if inflight is not None:
            inflight._count += 1  # InFlight.add, inlined: this is the hot path
        if self._readable is not None:
            self._readable.set()
            self._readable = None
        driver = self.driver
        if driver is not None and (driver._waiters or driver._pump is not None):
            driver.pushed()

    def _wake_next_writer(self) -> None:
        # Wake only the first waiting sender, and only if there is room: it
        # leaves the queue once it has pushed and then wakes the next one. Waking
        # every waiter at once would let them all push past the capacity.
        if self._writable and len(self._items) < self.capacity:
            self._writable[0].set()

    # --- receiving -------------------------------------------------------------

    async def receive_batch(self, limit: int = 0) -> list[T]:
        """Take every message available (at most ``limit`` if given), waiting for one.

        The caller must call :meth:`done` with the batch's length once it has
        handled it.

        Raises:
            anyio.EndOfStream: the channel is closed and empty.
        """
        while not self._items:
            if self._closed:
                raise anyio.EndOfStream
            if self._readable is None:
                self._readable = anyio.Event()
            await self._readable.wait()
        else:
            # Data was waiting: still yield once per batch so a busy actor
            # cannot starve the rest of the loop.
            await anyio.lowlevel.checkpoint()
        items = self._items
        if limit and len(items) > limit:
            batch = [items.popleft() for _ in range(limit)]
        else:
            batch = list(items)
            items.clear()
        self._received += len(batch)
        self._wake_next_writer()
        return batch

    def take_all(self) -> list[T]:
        """Take every message queued now, without waiting (inline delivery).

        As with :meth:`receive_batch`, the caller calls :meth:`done` after handling.
        """
        items = self._items
        batch = list(items)
        items.clear()
        self._received += len(batch)
        return batch

    def receive_nowait(self) -> T:
        """Take one message.

        Raises:
            anyio.WouldBlock: nothing is waiting.
            anyio.EndOfStream: closed and empty.
        """
        if not self._items:
            if self._closed:
                raise anyio.EndOfStream
            raise anyio.WouldBlock
        item = self._items.popleft()
        self._received += 1
        self._wake_next_writer()
        return item

    def requeue_front(self, items: list[T]) -> None:
        """Put taken-but-unhandled messages back at the head, in order.

        Used when an actor crashes mid-batch: the rest of its batch must wait
        for the next incarnation, not vanish. They stay counted in flight.
        """
        self._items.extendleft(reversed(items))
        self._received -= len(items)

    def done(self, n: int = 1) -> None:
        """Mark ``n`` received messages as fully handled."""
        if self._inflight is not None and n:
            self._inflight.done(n)

    # --- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """No more sends. The consumer drains what is queued, then sees EndOfStream."""
        self._closed = True
        if self._readable is not None:
            self._readable.set()
            self._readable = None
        if self.driver is not None:
            self.driver.closed()
        for room in self._writable:  # each raises ClosedResourceError
            room.set()

    @property
    def sent(self) -> int:
        """Messages ever sent (the FIFO position of the last one)."""
        return self._sent

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)

    def statistics(self) -> ChannelStats:
        return ChannelStats(
            name=self.name,
            capacity=self.capacity,
            depth=len(self._items),
            sent=self._sent,
            received=self._received,
        )
