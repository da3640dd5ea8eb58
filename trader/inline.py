"""Inline delivery: the same actors and channels, handled run-to-completion.

In a replay nothing outside the process waits on the graph, so the cost of a
message is what matters: with one task per actor, every hop is an event-loop
wake-up (tens of microseconds), and a signal's round trip through strategy,
scorer, risk, execution and the simulated broker takes a dozen of them.

:class:`InlineDriver` removes the wake-ups without changing who handles what.
Each actor still runs under the supervisor, still consumes its own inbox with
its own handler, in FIFO order, and the graph's routes are the same. What
changes is which task calls the handler: the actor's task hands its handler to
the driver and waits, and whoever needs the graph quiet (the replay feed, or
the driver's own pump task for messages that arrive from outside, such as an
operator's halt) calls :meth:`InlineDriver.drain`, which takes every waiting
batch in data-flow order and handles it in that task until nothing is in
flight. Quiescence means exactly what it means with tasks: every message
caused so far has been handled.

Crashes keep their meaning too. A handler that raises is reported as that
actor's crash: the rest of its batch goes back to the head of its inbox (as
:func:`trader.actors.base.consume` does), and the actor's own task raises the
exception, so the supervisor restarts it (and what its strategy says). Until
the new incarnation attaches, its backlog waits.

Inline channels have no backpressure: producer and consumer are the same task,
so a full inbox could never drain. Their size is bounded by the replay feed
instead (one batch of bars and what it causes is in flight at a time).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from trader.actors.base import put_back_after_cancel, put_back_after_crash
from trader.channels import Channel, InFlight

#: Longest a drain goes without letting other tasks run.
_YIELD_EVERY_S = 0.001

Handler = Callable[[Any], Awaitable[None] | None]


BatchHandler = Callable[[list[Any]], Awaitable[None]]


class _Consumer:
    __slots__ = ("actor", "batches", "ended", "error", "flush", "handle", "inbox", "is_async",
                 "outbox_pending")

    def __init__(self, inbox: Channel[Any], handle: Handler | BatchHandler, actor: str,
                 flush: Callable[[], Awaitable[None]] | None,
                 pending: list[Any] | None, *, batches: bool = False) -> None:
        self.inbox = inbox
        self.handle = handle
        self.actor = actor
        self.batches = batches
        self.is_async = inspect.iscoroutinefunction(handle)
        self.flush = flush
        self.outbox_pending = pending
        self.ended = anyio.Event()
        self.error: BaseException | None = None


class InlineDriver:
    """Run-to-completion delivery for a set of channels (see the module docstring).

    Args:
        channels: the inline channels in data-flow order; a drain visits them
            in this order, round after round, until the graph is quiet.
        inflight: the graph's quiescence counter (the channels must share it).
    """

    def __init__(self, channels: Sequence[Channel[Any]], inflight: InFlight) -> None:
        self._channels = tuple(channels)
        self._inflight = inflight
        self._consumers: dict[Channel[Any], _Consumer] = {}
        self._driving = False
        self._any_closed = False
        self._waiters: list[anyio.Event] = []
        # The pump's wake-up, kept apart from the drain's own waiters: while a
        # drain runs it will handle whatever arrives, so waking the pump for
        # every message it posts would only cost an event-loop trip each.
        self._pump: anyio.Event | None = None
        self._yielded = 0.0
        for ch in self._channels:
            ch.driver = self

    # --- the actors' side ------------------------------------------------------------

    async def serve(self, inbox: Channel[Any], handle: Handler, actor: str,
                    flush: Callable[[], Awaitable[None]] | None = None,
                    pending: list[Any] | None = None) -> None:
        """An actor's inbox loop under inline delivery: returns when the inbox has
        ended, raises what the handler raised.

        Args:
            flush, pending: the actor's outbox, for synchronous handlers (they
                post; the driver flushes after each message, as consume does).
        """
        await self._serve(_Consumer(inbox, handle, actor, flush, pending))

    async def serve_batches(self, inbox: Channel[Any], handle_batch: BatchHandler,
                            actor: str) -> None:
        """:meth:`serve` for an actor that handles a whole batch itself (the scorer
        groups the signals of one timestamp). ``handle_batch`` marks the batch
        done, or puts back what it did not handle and raises."""
        await self._serve(_Consumer(inbox, handle_batch, actor, None, None, batches=True))

    async def _serve(self, consumer: _Consumer) -> None:
        inbox = consumer.inbox
        if inbox in self._consumers:
            raise RuntimeError(f"inbox {inbox.name!r} already has an inline consumer")
        self._consumers[inbox] = consumer
        self.pushed()  # its backlog may be waiting
        try:
            await consumer.ended.wait()
        finally:
            if self._consumers.get(inbox) is consumer:
                del self._consumers[inbox]
        if consumer.error is not None:
            raise consumer.error

    # --- the driving side --------------------------------------------------------------

    async def drain(self) -> None:
        """Handle, in this task, every message in flight; return once the graph is quiet.

        If another task is already draining, wait for quiet instead. Lets
        other tasks (the recorder) run at least every millisecond of draining;
        a full journal channel makes it wait for the recorder anyway.
        """
        if self._driving:
            await self._inflight.wait_quiet()
            return
        self._driving = True
        try:
            while self._inflight.count:
                if not await self._round():
                    # A consumer is between incarnations, or the rest is with
                    # an actor that has its own task: wait for either.
                    await self._wait_for_work()
        finally:
            self._driving = False
            if self._pump is not None and self._inflight.count and self._ready():
                self._pump.set()  # left for another incarnation, or cancelled
        self._end_closed()
        # A trip through the event loop per drain cost ~8% of a replay (a
        # signal's life takes five drains); the other tasks (the recorder
        # taking the journal, a stop request) only need a turn often enough.
        now = time.perf_counter()
        if now - self._yielded >= _YIELD_EVERY_S:
            self._yielded = now
            await anyio.lowlevel.checkpoint()

    async def run(self) -> None:
        """The pump: drain whatever arrives while nobody else drives. Runs until cancelled."""
        while True:
            while True:
                self._end_closed()
                if self._ready() and not self._driving:
                    break
                event = self._pump = anyio.Event()
                try:
                    await event.wait()
                finally:
                    self._pump = None
            await self.drain()

    async def _round(self) -> bool:
        progressed = False
        consumers = self._consumers
        for ch in self._channels:
            if not ch._items:
                continue
            consumer = consumers.get(ch)
            if consumer is None:
                continue
            progressed = True
            await self._handle_batch(consumer)
        return progressed

    async def _handle_batch(self, c: _Consumer) -> None:
        inbox = c.inbox
        batch = inbox.take_all()
        if c.batches:
            try:
                with anyio.CancelScope(shield=True):  # as for async handlers, below
                    await c.handle(batch)  # type: ignore[misc]
            except Exception as exc:
                self._fail(c, exc)
            return
        handle = c.handle
        pending = c.outbox_pending
        i = 0
        flushing = False
        try:
            if c.is_async:
                # Shielded: an async handler interrupted half-way (the driving
                # feed being stopped) would leave its actor, which lives on,
                # with half-applied state. One scope for the batch: a scope
                # per message cost more than most handlers, and a cancellation
                # waits for the batch either way (it is one feed step's worth).
                with anyio.CancelScope(shield=True):
                    for msg in batch:
                        await handle(msg)  # type: ignore[misc]
                        i += 1
            else:
                for msg in batch:
                    handle(msg)
                    i += 1
                    if pending and c.flush is not None:
                        flushing = True
                        await c.flush()
                        flushing = False
        except Exception as exc:
            # The message that raised, or whose output could not be delivered.
            put_back_after_crash(inbox, batch, i - 1 if flushing else i, exc, c.actor)
            self._fail(c, exc)
            return
        except BaseException:
            put_back_after_cancel(inbox, batch, i)
            raise
        inbox.done(len(batch))

    def _fail(self, c: _Consumer, exc: BaseException) -> None:
        if self._consumers.get(c.inbox) is c:
            del self._consumers[c.inbox]
        c.error = exc
        c.ended.set()

    def _end_closed(self) -> None:
        # An inbox closed and emptied (shutdown) ends its actor's loop.
        if not self._any_closed:
            return
        for ch, c in list(self._consumers.items()):
            if ch.closed and not ch._items:
                del self._consumers[ch]
                c.ended.set()

    def closed(self) -> None:
        """An inline channel was closed: end its consumer now if nothing is left."""
        self._any_closed = True
        self._end_closed()
        self.pushed()

    def pushed(self) -> None:
        """A message reached an inline channel (or one closed, or a consumer attached)."""
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for event in waiters:
                event.set()
        if self._pump is not None and not self._driving:
            self._pump.set()

    def _ready(self) -> bool:
        consumers = self._consumers
        return any(ch._items and ch in consumers for ch in self._channels)

    async def _wait_for_work(self) -> None:
        """Return once a waiting batch has a consumer, or nothing is in flight."""
        inflight = self._inflight
        while True:
            self._end_closed()
            if self._ready() or not inflight.count:
                return
            # The in-flight counter sets this event when it reaches zero;
            # wait_quiet re-checks the count, so a push setting it for
            # others as well is harmless.
            event = inflight._quiet
            if event is None or event.is_set():
                event = inflight._quiet = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            finally:
                if event in self._waiters:
                    self._waiters.remove(event)
