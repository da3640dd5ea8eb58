"""The actor contract, the outbox, and the batched inbox loop.

An actor is anything with a ``name`` and ``async def run(*, task_status)``. It
calls ``task_status.started()`` once it is really ready, returns when its
inbox ends, and raises on a fault (the supervisor decides what happens next).

:class:`InboxActor` is the common shape: take every message available,
handle each, then mark the batch done (which is what quiescence counts). If
handling raises, the unhandled rest of the batch goes back to the head of the
inbox for the next incarnation, and the message it crashed on is logged with
the exception: only that one message is lost. An actor whose input exists
nowhere else (the live strategy: a bar is journaled once the strategy has
consumed it) sets ``keep_crashed``: the message goes back too, so a poison
message crashes every incarnation until the supervisor's budget is spent.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import anyio
import structlog
from anyio.abc import TaskStatus

from trader.channels import Channel
from trader.errors import InvariantViolation
from trader.messages import Message

log = structlog.get_logger("trader.actor")

JournalRecord = tuple[str, Message]
"""What the recorder receives: the emitting actor's name and the message."""


class Actor(Protocol):
    """What the supervisor runs."""

    name: str

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        ...


class JournalCommits:
    """How many journal records the recorder has committed, in channel order.

    The journal channel is FIFO, so record number ``n`` (its position in the
    channel's ``sent`` count) is durable once ``committed >= n``.
    """

    __slots__ = ("_urgent", "_waiters", "committed")

    def __init__(self) -> None:
        self.committed = 0
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._urgent: anyio.Event | None = None

    @property
    def urgent(self) -> bool:
        """Someone is waiting for a commit: the recorder should not linger."""
        return bool(self._waiters)

    async def wait_urgent(self) -> None:
        """Return once someone waits for a commit."""
        if self._waiters:
            return
        if self._urgent is None:
            self._urgent = anyio.Event()
        await self._urgent.wait()

    def advance(self, committed: int) -> None:
        self.committed = committed
        if self._waiters:
            still = []
            for n, event in self._waiters:
                if n <= committed:
                    event.set()
                else:
                    still.append((n, event))
            self._waiters = still

    async def wait_for(self, n: int) -> None:
        if self.committed >= n:
            return
        event = anyio.Event()
        self._waiters.append((n, event))
        if self._urgent is not None:
            self._urgent.set()
            self._urgent = None
        await event.wait()


class Outbox:
    """Where an actor's messages go: the destinations graph.py wired for each type, and
    the journal.

    Emitting a type that graph.py did not declare for this actor is a wiring
    bug, so it raises instead of dropping the message.
    """

    __slots__ = ("_commits", "_journal", "_routes", "pending", "source")

    def __init__(
        self,
        source: str,
        routes: Mapping[type[Message], Sequence[Channel[Message]]],
        journal: Channel[JournalRecord] | None,
        commits: JournalCommits | None = None,
    ) -> None:
        self.source = source
        self._routes = {t: tuple(chs) for t, chs in routes.items()}
        self._journal = journal
        self._commits = commits
        self.pending: list[tuple[Channel[Any], Any]] = []

    def post(self, msg: Message, *, journal: bool = True) -> None:
        """Send ``msg`` without waiting: the ``_nowait`` half of :meth:`emit`.

        Destinations with room get it now. If one is full, the message (and,
        to keep every destination FIFO, everything posted after it) waits in
        :attr:`pending` until :meth:`flush`. Actors with synchronous handlers
        post; their inbox loop flushes before taking the next message, so a
        full inbox still pushes back on the sender.
        """
        try:
            destinations = self._routes[type(msg)]
        except KeyError:
            raise InvariantViolation(
                f"{self.source} emitted {type(msg).__name__}, which graph.py does not route"
            ) from None
        pending = self.pending
        jrn = self._journal
        if journal and jrn is not None:
            record = (self.source, msg)
            if pending or not jrn.try_send(record):
                pending.append((jrn, record))
        for channel in destinations:
            if pending or not channel.try_send(msg):
                pending.append((channel, msg))

    async def barrier(self) -> None:
        """Wait until everything journaled so far (by any actor) is committed.

        The execution actor calls this before it sends an order to a broker
        that outlives us: the order is on disk before the broker can know it.
        """
        if self._journal is not None and self._commits is not None:
            await self._commits.wait_for(self._journal.sent)

    async def flush(self) -> None:
        """Deliver what :meth:`post` could not, in order, waiting for room."""
        pending = self.pending
        while pending:
            channel, item = pending[0]
            await channel.send(item)
            del pending[0]

    async def emit(self, msg: Message, *, journal: bool = True, durable: bool = False) -> None:
        """Send ``msg`` to its destinations, journaling it first, waiting for room.

        Args:
            journal: False for a message that another actor journals instead
                (the replay feed's batches: the strategy journals the bars it
                consumed).
            durable: wait until the journal record is committed to disk before
                anyone downstream sees the message (fills, final order states).
        """
        if durable and journal and self._journal is not None and self._commits is not None:
            await self.flush()
            jrn = self._journal
            await jrn.send((self.source, msg))
            await self._commits.wait_for(jrn.sent)
            journal = False
        self.post(msg, journal=journal)
        if self.pending:
            await self.flush()

    async def emit_durably(self, msgs: Sequence[Message]) -> None:
        """:meth:`emit` ``durable=True`` for several messages, with one commit for all.

        Each is journaled, in order; once the journal has committed the last,
        all go downstream, in order. So none is seen before it is on disk, and
        fifty fills booked together wait for one commit, not fifty.
        """
        if self._journal is None or self._commits is None:
            for msg in msgs:
                await self.emit(msg)
            return
        await self.flush()
        jrn = self._journal
        for msg in msgs:
            await jrn.send((self.source, msg))
        await self._commits.wait_for(jrn.sent)
        for msg in msgs:
            self.post(msg, journal=False)
        if self.pending:
            await self.flush()

    def routes(self, msg_type: type[Message]) -> bool:
        return msg_type in self._routes


class InboxActor:
    """Base for actors that react to an inbox. Subclasses implement :meth:`handle`."""

    name: str = "actor"
    keep_crashed: bool = False
    """Put the message a crash happened on back as well (see the module docstring)."""

    def __init__(self, inbox: Channel[Message], outbox: Outbox) -> None:
        self._inbox = inbox
        self._out = outbox

    async def setup(self) -> None:
        """Make the actor ready (rebuild state, open connections) before it reports started."""

    async def teardown(self) -> None:
        """Release resources; runs on every exit, shielded and bounded by the caller."""

    def handle(self, msg: Message) -> Awaitable[None] | None:
        """Handle one message: a plain method that posts, or a coroutine function."""
        raise NotImplementedError

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.setup()
            task_status.started()
            await self._loop()
        finally:
            with anyio.CancelScope(shield=True):
                await self.teardown()

    async def _loop(self) -> None:
        await consume(self._inbox, self.handle, self.name, self._out,
                      keep_crashed=self.keep_crashed)


async def consume(
    inbox: Channel[Message],
    handle: Callable[[Message], Awaitable[None] | None],
    actor: str,
    outbox: Outbox | None = None,
    *,
    keep_crashed: bool = False,
) -> None:
    """Handle ``inbox`` in batches until it ends; see the module docstring for crashes.

    ``handle`` may be synchronous (it posts to ``outbox``, which is flushed
    after each message) or a coroutine function. Synchronous handlers skip a
    coroutine per message, which is most of the per-hop cost.

    Under inline delivery (replay, trader.inline) the inbox's driver calls
    ``handle`` instead, in the task that needs the graph quiet; this task
    only waits, and raises if the handler did.
    """
    driver = inbox.driver
    if driver is not None:
        if keep_crashed:
            # The replay feed releases a crashed batch again itself.
            raise InvariantViolation(f"{actor}: keep_crashed under inline delivery")
        await driver.serve(inbox, handle, actor,
                           outbox.flush if outbox is not None else None,
                           outbox.pending if outbox is not None else None)
        return
    if not inspect.iscoroutinefunction(handle):
        assert outbox is not None, "a synchronous handler posts to an outbox"
        await _consume_sync(inbox, cast(Callable[[Message], None], handle), actor, outbox,
                            keep_crashed)
        return
    handle_async = cast(Callable[[Message], Awaitable[None]], handle)
    while True:
        try:
            batch = await inbox.receive_batch()
        except anyio.EndOfStream:
            return
        i = 0
        try:
            for msg in batch:
                await handle_async(msg)
                i += 1
        except Exception as exc:
            put_back_after_crash(inbox, batch, i, exc, actor, keep=keep_crashed)
            raise
        except BaseException:
            put_back_after_cancel(inbox, batch, i)
            raise
        inbox.done(len(batch))


async def _consume_sync(
    inbox: Channel[Message], handle: Callable[[Message], None], actor: str, outbox: Outbox,
    keep_crashed: bool,
) -> None:
    pending = outbox.pending
    while True:
        try:
            batch = await inbox.receive_batch()
        except anyio.EndOfStream:
            return
        i = 0
        flushing = False
        try:
            for msg in batch:
                handle(msg)
                if pending:
                    flushing = True
                    await outbox.flush()
                    flushing = False
                i += 1
        except Exception as exc:
            # Failing to deliver the output of a handled message is not a
            # reason to handle it twice.
            put_back_after_crash(inbox, batch, i, exc, actor, keep=keep_crashed and not flushing)
            raise
        except BaseException:
            put_back_after_cancel(inbox, batch, i)
            raise
        inbox.done(len(batch))


def put_back_after_crash(inbox: Channel[Message], batch: list[Message], i: int,
                         exc: Exception, actor: str, *, keep: bool = False) -> None:
    """Handling ``batch[i]`` raised: log and drop it (unless ``keep``), put the rest
    back (consume and the inline driver share this)."""
    # The message it crashed on is reported and dropped (a poison message would
    # otherwise crash every restart); the rest of the batch waits, in order,
    # for the next incarnation. Kept, it is the first the next one handles.
    kept = 0 if keep else 1
    inbox.requeue_front(batch[i + kept :])
    inbox.done(i + kept)
    log.error(
        "actor crashed on message",
        actor=actor,
        kept=keep,
        message_type=type(batch[i]).__name__,
        message=repr(batch[i])[:500],
        exc_info=exc,
    )


def put_back_after_cancel(inbox: Channel[Message], batch: list[Message], i: int) -> None:
    """Cancelled before ``batch[i]`` was fully handled: put it and the rest back."""
    # Cancelled (a supervisor restart or shutdown): the message was not fully
    # handled, so it is kept for the successor. Side effects it already caused
    # are safe to repeat: client order ids are deterministic.
    inbox.requeue_front(batch[i:])
    inbox.done(i)
