"""RateLimiter on a fake clock: the budget per minute holds and cancels go first.

Time moves only when a test says so (:class:`FakeTime`), so nothing really waits.
"""

from __future__ import annotations

import anyio
import pytest

from trader.ratelimit import Priority, RateLimiter


class FakeTime:
    """A clock that jumps; ``sleep`` returns once the test has moved time far enough."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, anyio.Event]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake = anyio.Event()
        entry = (self.now + seconds, wake)
        self._sleepers.append(entry)
        try:
            await wake.wait()
        finally:
            self._sleepers.remove(entry)

    def next_wake(self) -> float | None:
        return min((t for t, _ in self._sleepers), default=None)

    async def advance(self, seconds: float) -> None:
        """Move time and let everything that can run, run."""
        self.now += seconds
        for t, wake in self._sleepers:
            if t <= self.now:
                wake.set()
        await anyio.wait_all_tasks_blocked()


def limiter(per_minute: int, t: FakeTime) -> RateLimiter:
    return RateLimiter(per_minute, clock=t.clock, sleep=t.sleep)


@pytest.mark.asyncio
async def test_grants_up_to_the_budget_at_once() -> None:
    """With tokens free, acquire returns without waiting."""
    t = FakeTime()
    rl = limiter(3, t)
    with anyio.fail_after(1):
        for _ in range(3):
            await rl.acquire()
    assert (rl.granted, t.now) == (3, 0.0)


@pytest.mark.asyncio
async def test_no_sixty_second_window_sees_more_than_the_budget() -> None:
    """Three eager callers taking 30 tokens from a budget of 5 per minute: every window
    of 60 s holds at most 5 grants, and each token comes back exactly a minute later."""
    t = FakeTime()
    rl = limiter(5, t)
    grants: list[float] = []

    async def caller() -> None:
        for _ in range(10):
            await rl.acquire()
            grants.append(t.now)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(caller)
            await anyio.wait_all_tasks_blocked()
            while len(grants) < 30:
                nxt = t.next_wake()
                assert nxt is not None, "callers are waiting but nobody sleeps"
                await t.advance(nxt - t.now)
    assert len(grants) == 30
    for i in range(len(grants) - 5):
        assert grants[i + 5] - grants[i] >= 60.0
    assert grants == [60.0 * (i // 5) for i in range(30)]


@pytest.mark.asyncio
async def test_waiting_cancels_are_served_before_waiting_orders() -> None:
    """Orders queued first still wait behind cancels that queued after them."""
    t = FakeTime()
    rl = limiter(2, t)
    await rl.acquire()
    await rl.acquire()
    served: list[str] = []

    async def request(name: str, priority: Priority) -> None:
        await rl.acquire(priority)
        served.append(name)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            queue: list[tuple[str, Priority]] = [
                ("order-1", "normal"), ("order-2", "normal"),
                ("cancel-1", "cancel"), ("cancel-2", "cancel"),
            ]
            for name, priority in queue:
                tg.start_soon(request, name, priority)
                await anyio.wait_all_tasks_blocked()  # queue in this order
            assert rl.waiting == 4
            await t.advance(60.0)
            assert served == ["cancel-1", "cancel-2"]
            await t.advance(60.0)
    assert served == ["cancel-1", "cancel-2", "order-1", "order-2"]


@pytest.mark.asyncio
async def test_a_cancelled_waiter_gives_up_its_place() -> None:
    """A caller cancelled while waiting leaves the queue; the next one gets its token."""
    t = FakeTime()
    rl = limiter(1, t)
    await rl.acquire()
    served: list[str] = []

    async def request(name: str) -> None:
        await rl.acquire()
        served.append(name)

    impatient = anyio.CancelScope()

    async def cancellable() -> None:
        with impatient:
            await request("impatient")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request, "first")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(cancellable)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(request, "patient")
            await anyio.wait_all_tasks_blocked()
            impatient.cancel()
            await anyio.wait_all_tasks_blocked()
            assert rl.waiting == 2
            await t.advance(60.0)
            assert served == ["first"]
            await t.advance(60.0)
    assert served == ["first", "patient"]
    assert rl.waiting == 0


def test_the_budget_must_be_positive() -> None:
    """A budget below one request per minute is a configuration error."""
    with pytest.raises(ValueError, match="at least 1"):
        RateLimiter(0)
