"""The replay clock: data moves it, and sleepers wake when it passes their time."""

from __future__ import annotations

import anyio
import pytest

from trader.clock import ReplayClock

pytestmark = pytest.mark.anyio


async def test_a_sleeper_wakes_only_once_the_data_reaches_its_time() -> None:
    """Sleeping until 300: advancing to 100 and 200 leaves it asleep; 300 wakes it."""
    clock = ReplayClock(start_ns=0)
    woke_at: list[int] = []

    async def sleeper() -> None:
        await clock.sleep_until(300)
        woke_at.append(clock.now_ns())

    with anyio.fail_after(5):  # a sleeper never woken fails here rather than hanging
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await anyio.wait_all_tasks_blocked()
            for ts in (100, 200):
                clock.advance_to(ts)
                await anyio.wait_all_tasks_blocked()
                assert woke_at == []
            clock.advance_to(300)
    assert woke_at == [300]


async def test_time_never_goes_back_and_a_past_time_does_not_sleep() -> None:
    clock = ReplayClock(start_ns=500)
    clock.advance_to(400)
    assert clock.now_ns() == 500
    with anyio.fail_after(1):
        await clock.sleep_until(500)
