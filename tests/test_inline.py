"""Inline delivery (trader.inline): the replay's run-to-completion scheduling keeps
the meaning of channels, quiescence and crashes that actor tasks have."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from trader.channels import Channel, InFlight
from trader.inline import InlineDriver

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


def _graph() -> tuple[InFlight, Channel[Any], Channel[Any], InlineDriver]:
    inflight = InFlight()
    first: Channel[Any] = Channel("first", 2, inflight)
    second: Channel[Any] = Channel("second", 2, inflight)
    return inflight, first, second, InlineDriver([first, second], inflight)


async def test_drain_handles_everything_caused_in_fifo_order_and_returns_when_quiet() -> None:
    inflight, first, second, driver = _graph()
    seen: list[tuple[str, int]] = []

    def on_first(n: int) -> None:
        seen.append(("first", n))
        second.try_send(n * 10)  # each message causes one more, downstream

    async def on_second(n: int) -> None:  # async handlers are awaited in the driver's task
        seen.append(("second", n))

    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.serve, first, on_first, "first")
        tg.start_soon(driver.serve, second, on_second, "second")
        await anyio.wait_all_tasks_blocked()
        # More than the capacity (2): inline channels have no backpressure,
        # since the producer's task is the one that drains them.
        for n in (1, 2, 3):
            assert first.try_send(n)
        await driver.drain()
        assert inflight.count == 0
        assert seen == [("first", 1), ("first", 2), ("first", 3),
                        ("second", 10), ("second", 20), ("second", 30)]
        first.close()
        second.close()
    # Closed and empty inboxes end their actors' loops.


async def test_a_message_from_outside_is_handled_by_the_pump_while_nobody_drives() -> None:
    inflight, first, _, driver = _graph()
    handled = anyio.Event()

    def on_first(msg: str) -> None:
        if msg == "halt":
            handled.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.run)
        tg.start_soon(driver.serve, first, on_first, "first")
        await anyio.wait_all_tasks_blocked()
        first.try_send("halt")  # an operator's command: no feed is driving
        with anyio.fail_after(5):
            await handled.wait()
            await inflight.wait_quiet()
        tg.cancel_scope.cancel()


async def test_a_crash_is_the_actors_the_rest_of_its_batch_waits_for_the_next_incarnation(
) -> None:
    inflight, first, second, driver = _graph()
    handled: list[str] = []

    def flaky(msg: str) -> None:
        if msg == "poison":
            raise Boom(msg)
        handled.append(msg)

    for msg in ("a", "poison", "b", "c"):
        first.try_send(msg)
    async with anyio.create_task_group() as tg:
        crashed: list[BaseException] = []

        async def incarnation() -> None:
            try:
                await driver.serve(first, flaky, "first")
            except Boom as exc:
                crashed.append(exc)

        tg.start_soon(incarnation)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(5):
            # The driver waits for a consumer to come back rather than spin.
            async with anyio.create_task_group() as inner:
                inner.start_soon(driver.drain)
                await anyio.wait_all_tasks_blocked()
                assert [str(e) for e in crashed] == ["poison"]
                assert handled == ["a"]
                assert list(first._items) == ["b", "c"]  # kept, in order
                assert inflight.count == 2
                tg.start_soon(driver.serve, first, flaky, "first")  # the restart
        assert handled == ["a", "b", "c"]
        assert inflight.count == 0
        first.close()
        second.close()


async def test_a_second_serve_on_one_inbox_is_a_wiring_bug() -> None:
    _, first, second, driver = _graph()
    async with anyio.create_task_group() as tg:
        tg.start_soon(driver.serve, first, lambda m: None, "first")
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="already has an inline consumer"):
            await driver.serve(first, lambda m: None, "again")
        first.close()
        second.close()
        await driver.drain()


async def test_inline_channels_still_refuse_after_close() -> None:
    _, first, _, _ = _graph()
    first.close()
    assert not first.try_send("late")
    with pytest.raises(anyio.ClosedResourceError):
        await first.send("late")
