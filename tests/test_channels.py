"""Channels (bounded batched inboxes) and the InFlight quiescence counter."""

from __future__ import annotations

import anyio
import pytest

from tests.fakes import CrashOnCommand, Ping, Relay, Trace, ping
from trader.actors.base import Outbox
from trader.channels import Channel, ChannelStats, InFlight
from trader.messages import Message

pytestmark = pytest.mark.asyncio


async def _drain(channel: Channel[int], batches: list[list[int]], total: int) -> None:
    got = 0
    while got < total:
        batch = await channel.receive_batch()
        batches.append(batch)
        got += len(batch)


# --- bounded sending -----------------------------------------------------------------


async def test_a_full_channel_blocks_send_until_the_consumer_takes_a_batch() -> None:
    """A send into a full channel waits, and goes through once a batch is taken."""
    channel: Channel[int] = Channel("c", 2)
    channel.send_nowait(1)
    channel.send_nowait(2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(channel.send, 3)
            await anyio.wait_all_tasks_blocked()
            assert channel.sent == 2
            assert await channel.receive_batch() == [1, 2]
            await anyio.wait_all_tasks_blocked()
            assert channel.sent == 3
    assert channel.receive_nowait() == 3


async def test_send_nowait_raises_would_block_when_full() -> None:
    """send_nowait refuses instead of growing the queue past its capacity."""
    channel: Channel[int] = Channel("c", 1)
    channel.send_nowait(1)
    with pytest.raises(anyio.WouldBlock):
        channel.send_nowait(2)
    assert len(channel) == 1


async def test_waiting_senders_go_through_in_arrival_order_without_exceeding_capacity() -> None:
    """Senders blocked on a full channel are admitted FIFO, never more than the capacity."""
    channel: Channel[int] = Channel("c", 2)
    channel.send_nowait(0)
    channel.send_nowait(1)
    batches: list[list[int]] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(2, 9):
                tg.start_soon(channel.send, i)
                await anyio.wait_all_tasks_blocked()  # fixes the arrival order
            while sum(map(len, batches)) < 9:
                batches.append(await channel.receive_batch())
                await anyio.wait_all_tasks_blocked()
                assert len(channel) <= channel.capacity
    assert [i for batch in batches for i in batch] == list(range(9))
    assert all(len(batch) <= 2 for batch in batches)


async def test_a_late_sender_cannot_overtake_a_woken_waiting_sender() -> None:
    """Between a waiting sender's wake-up and its push, new sends wait their turn."""
    channel: Channel[str] = Channel("c", 1)
    channel.send_nowait("first")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(channel.send, "waiting")
            await anyio.wait_all_tasks_blocked()
            assert await channel.receive_batch() == ["first"]
            # The waiting sender has been woken but has not run yet.
            with pytest.raises(anyio.WouldBlock):
                channel.send_nowait("late")
            tg.start_soon(channel.send, "late")
            assert await channel.receive_batch() == ["waiting"]
            assert await channel.receive_batch() == ["late"]


async def test_a_sender_cancelled_as_it_is_woken_either_sends_or_hands_its_turn_on() -> None:
    """Cancelling a woken sender before it runs never strands the senders queued behind it."""
    channel: Channel[str] = Channel("c", 1)
    channel.send_nowait("first")
    received: list[str] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def cancellable_send() -> None:
                with scope:
                    await channel.send("cancelled")

            tg.start_soon(cancellable_send)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(channel.send, "next")
            await anyio.wait_all_tasks_blocked()
            received += await channel.receive_batch()
            scope.cancel()  # the woken sender has not run yet
            while "next" not in received:
                received += await channel.receive_batch()
    # Whether the cancellation or the wake-up wins is the backend's call; either
    # way the order holds and nothing is stuck or duplicated.
    assert received in (["first", "cancelled", "next"], ["first", "next"])
    assert channel.statistics().sent == len(received)


async def test_a_sender_cancelled_while_waiting_leaves_the_queue() -> None:
    """A cancelled waiting sender sends nothing and does not block those behind it."""
    channel: Channel[str] = Channel("c", 1)
    channel.send_nowait("first")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            scope = anyio.CancelScope()

            async def cancellable_send() -> None:
                with scope:
                    await channel.send("cancelled")

            tg.start_soon(cancellable_send)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(channel.send, "next")
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            assert await channel.receive_batch() == ["first"]
            assert await channel.receive_batch() == ["next"]


# --- receiving -----------------------------------------------------------------------


async def test_receive_batch_returns_everything_available_in_order() -> None:
    """One receive_batch takes the whole backlog at once."""
    channel: Channel[int] = Channel("c", 10)
    for i in range(5):
        channel.send_nowait(i)
    assert await channel.receive_batch() == [0, 1, 2, 3, 4]
    assert len(channel) == 0


async def test_receive_batch_takes_at_most_limit_and_leaves_the_rest_in_order() -> None:
    """With a limit, the batch is the oldest ``limit`` messages."""
    channel: Channel[int] = Channel("c", 10)
    for i in range(5):
        channel.send_nowait(i)
    assert await channel.receive_batch(limit=2) == [0, 1]
    assert await channel.receive_batch(limit=2) == [2, 3]
    assert await channel.receive_batch(limit=2) == [4]


async def test_receive_batch_waits_for_a_send() -> None:
    """A consumer on an empty channel wakes when a message arrives."""
    channel: Channel[int] = Channel("c", 4)
    got: list[int] = []

    async def consumer() -> None:
        got.extend(await channel.receive_batch())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            await channel.send(7)
    assert got == [7]


async def test_receive_nowait_takes_one_or_raises_would_block() -> None:
    """receive_nowait takes the oldest message, and raises WouldBlock when empty."""
    channel: Channel[int] = Channel("c", 4)
    channel.send_nowait(1)
    channel.send_nowait(2)
    assert channel.receive_nowait() == 1
    assert channel.receive_nowait() == 2
    with pytest.raises(anyio.WouldBlock):
        channel.receive_nowait()


# --- closing -------------------------------------------------------------------------


async def test_a_closed_channel_is_drained_then_ends() -> None:
    """After close() the consumer still gets the backlog, then EndOfStream."""
    channel: Channel[int] = Channel("c", 4)
    channel.send_nowait(1)
    channel.send_nowait(2)
    channel.close()
    assert channel.closed
    assert await channel.receive_batch() == [1, 2]
    with pytest.raises(anyio.EndOfStream):
        await channel.receive_batch()
    with pytest.raises(anyio.EndOfStream):
        channel.receive_nowait()


async def test_close_wakes_a_waiting_consumer_with_end_of_stream() -> None:
    """A consumer blocked on an empty channel sees EndOfStream when it is closed."""
    channel: Channel[int] = Channel("c", 4)
    ended = anyio.Event()

    async def consumer() -> None:
        with pytest.raises(anyio.EndOfStream):
            await channel.receive_batch()
        ended.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()
            channel.close()
    assert ended.is_set()


async def test_sending_to_a_closed_channel_raises_closed_resource_error() -> None:
    """send, send_nowait and senders waiting for room all fail once the channel is closed."""
    channel: Channel[int] = Channel("c", 1)
    channel.send_nowait(1)
    failed: list[int] = []

    async def waiting_sender(i: int) -> None:
        with pytest.raises(anyio.ClosedResourceError):
            await channel.send(i)
        failed.append(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting_sender, 2)
            tg.start_soon(waiting_sender, 3)
            await anyio.wait_all_tasks_blocked()
            channel.close()
    assert sorted(failed) == [2, 3]
    with pytest.raises(anyio.ClosedResourceError):
        channel.send_nowait(4)
    with pytest.raises(anyio.ClosedResourceError):
        await channel.send(4)
    assert await channel.receive_batch() == [1]


# --- bookkeeping ---------------------------------------------------------------------


async def test_statistics_report_depth_and_totals() -> None:
    """statistics() gives the name, capacity, current depth and sent/received totals."""
    channel: Channel[int] = Channel("orders", 8)
    for i in range(5):
        channel.send_nowait(i)
    await channel.receive_batch(limit=3)
    assert channel.statistics() == ChannelStats(
        name="orders", capacity=8, depth=2, sent=5, received=3
    )
    assert channel.sent == 5


async def test_requeue_front_puts_unhandled_messages_back_ahead_of_later_ones() -> None:
    """Requeued messages come out first, in their original order, and are not counted twice."""
    channel: Channel[int] = Channel("c", 8)
    for i in range(1, 6):
        channel.send_nowait(i)
    batch = await channel.receive_batch()
    channel.requeue_front(batch[2:])
    channel.send_nowait(6)
    assert channel.statistics().received == 2
    assert await channel.receive_batch() == [3, 4, 5, 6]
    assert channel.statistics() == ChannelStats(
        name="c", capacity=8, depth=0, sent=6, received=6
    )


async def test_a_capacity_below_one_is_rejected() -> None:
    """A channel must hold at least one message."""
    with pytest.raises(ValueError, match="capacity"):
        Channel("c", 0)


# --- quiescence ----------------------------------------------------------------------


async def test_a_tracked_channel_counts_sends_in_flight_until_done() -> None:
    """Each send adds one in flight and done() removes them; untracked channels count nothing."""
    inflight = InFlight()
    tracked: Channel[int] = Channel("t", 4, inflight)
    untracked: Channel[int] = Channel("u", 4)
    tracked.send_nowait(1)
    await tracked.send(2)
    untracked.send_nowait(3)
    assert inflight.count == 2
    await tracked.receive_batch()
    assert inflight.count == 2  # received is not handled
    tracked.done(2)
    untracked.done(1)
    assert inflight.count == 0


async def test_done_more_often_than_add_raises() -> None:
    """A double done() is a bug that would make quiescence lie, so it raises."""
    inflight = InFlight()
    inflight.add()
    inflight.done()
    with pytest.raises(RuntimeError, match="more often"):
        inflight.done()


async def test_wait_quiet_returns_at_once_when_nothing_is_in_flight() -> None:
    """With nothing in flight, wait_quiet does not block."""
    inflight = InFlight()
    with anyio.fail_after(1):
        await inflight.wait_quiet()
    inflight.add(2)
    inflight.done(2)
    with anyio.fail_after(1):
        await inflight.wait_quiet()


async def _when_quiet(
    inflight: InFlight,
    trace: Trace,
    handled_by_c: list[tuple[int, int | None]],
    quiet: anyio.Event,
) -> None:
    """Wait for quiescence, then note what the last hop had handled at that moment."""
    await inflight.wait_quiet()
    handled_by_c.extend(trace.handled("c"))
    quiet.set()


@pytest.mark.parametrize("slow_hop", ["a", "b", "c"])
async def test_wait_quiet_returns_only_once_the_last_hop_has_handled_everything(
    slow_hop: str,
) -> None:
    """Along a chain a -> b -> c, wait_quiet waits for every message each hop sends on."""
    inflight = InFlight()
    trace = Trace()
    inboxes: dict[str, Channel[Message]] = {
        name: Channel(name, 4, inflight) for name in ("a", "b", "c")
    }
    next_hop = {"a": "b", "b": "c"}
    actors = [
        CrashOnCommand(
            name,
            inboxes[name],
            trace,
            Outbox(name, {Ping: [inboxes[next_hop[name]]]} if name in next_hop else {}, None),
        )
        for name in ("c", "b", "a")  # consumers first
    ]
    count = 10  # more than a capacity, so hops also wait on each other
    handled_by_c_when_quiet: list[tuple[int, int | None]] = []
    quiet = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for actor in actors:
                await tg.start(actor.run)
            trace.close_valve(slow_hop)
            inboxes["a"].send_nowait(ping(0))
            tg.start_soon(_when_quiet, inflight, trace, handled_by_c_when_quiet, quiet)
            tg.start_soon(inboxes["a"].send_all, [ping(n) for n in range(1, count)])
            await anyio.wait_all_tasks_blocked()
            assert not quiet.is_set()
            assert inflight.count > 0
            trace.open_valve(slow_hop)
            await quiet.wait()
            assert handled_by_c_when_quiet == [(1, n) for n in range(count)]
            assert inflight.count == 0
            for name in ("a", "b", "c"):  # along the data flow, as graph.py shuts down
                inboxes[name].close()
    assert [trace.handled(name) for name in ("a", "b")] == [handled_by_c_when_quiet] * 2


async def test_wait_quiet_counts_what_synchronous_handlers_post_on() -> None:
    """Messages posted by synchronous hops (and parked in their outbox) keep the graph busy."""
    inflight = InFlight()
    trace = Trace()
    inboxes: dict[str, Channel[Message]] = {
        name: Channel(name, 2, inflight) for name in ("a", "b", "c")
    }
    last = CrashOnCommand("c", inboxes["c"], trace)
    relays = [
        Relay(name, inboxes[name], trace, Outbox(name, {Ping: [inboxes[dest]]}, None))
        for name, dest in (("b", "c"), ("a", "b"))
    ]
    count = 10  # five times a capacity: posts park in the outbox and are flushed
    handled_by_c_when_quiet: list[tuple[int, int | None]] = []
    quiet = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for actor in (last, *relays):
                await tg.start(actor.run)
            trace.close_valve("c")
            inboxes["a"].send_nowait(ping(0))
            tg.start_soon(_when_quiet, inflight, trace, handled_by_c_when_quiet, quiet)
            tg.start_soon(inboxes["a"].send_all, [ping(n) for n in range(1, count)])
            await anyio.wait_all_tasks_blocked()
            assert not quiet.is_set()
            trace.open_valve("c")
            await quiet.wait()
            assert handled_by_c_when_quiet == [(1, n) for n in range(count)]
            for inbox in inboxes.values():
                inbox.close()
