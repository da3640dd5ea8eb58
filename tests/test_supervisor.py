"""The supervisor, driven by toy actors that crash on command.

Most tests install a :class:`~tests.fakes.FakeClock` in ``trader.supervisor`` so
backoff jumps instead of sleeping; one test measures the real wait.
"""

from __future__ import annotations

import random
from functools import partial

import anyio
import pytest
from structlog.testing import capture_logs

import trader.supervisor
from tests.fakes import (
    CrashOnCommand,
    FakeClock,
    ToyCrash,
    Toys,
    crash,
    hold,
    ping,
    quit_,
)
from trader.channels import InFlight
from trader.errors import RestartBudgetExhausted
from trader.supervisor import ChildSpec, Restart, RestartBudget, Supervisor

pytestmark = pytest.mark.asyncio


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    clock.install(monkeypatch, trader.supervisor)
    return clock


def shut_down(sup: Supervisor, toys: Toys) -> None:
    """The orderly path: exits become final, every inbox ends, every child returns."""
    sup.begin_shutdown()
    toys.close_all()


def budget_exhausted_by(child: str) -> pytest.RaisesGroup[RestartBudgetExhausted]:
    """What Supervisor.run raises: its task group wraps RestartBudgetExhausted."""
    return pytest.RaisesGroup(
        pytest.RaisesExc(RestartBudgetExhausted, check=lambda exc: exc.child == child)
    )


# --- the inbox survives a crash ------------------------------------------------------


async def test_a_child_that_crashes_on_a_message_is_restarted_with_the_rest_of_its_inbox(
    clock: FakeClock,
) -> None:
    """Messages behind the poison one, in its batch and later, go to the next incarnation."""
    toys = Toys("a")
    trace = toys.trace
    toys.send("a", ping(1), crash(2), ping(3), ping(4))  # one batch
    second_setup = trace.gate("a", 2)
    sup = Supervisor(toys.specs, strategy="one_for_one", rng=random.Random(0))
    with capture_logs() as logs, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await trace.wait_until(lambda: trace.has("setup", "a", 2))
            # Queued while nobody consumes: the crash is over, the successor not ready.
            toys.send("a", ping(5), ping(6))
            second_setup.set()
            await trace.wait_until(lambda: len(trace.handled("a")) == 5)
            shut_down(sup, toys)
    assert trace.handled("a") == [(1, 1), (2, 3), (2, 4), (2, 5), (2, 6)]
    assert toys.inboxes["a"].statistics().received == 6
    [dropped] = [e for e in logs if e["event"] == "actor crashed on message"]
    assert dropped["actor"] == "a"
    assert dropped["log_level"] == "error"
    assert dropped["message_type"] == "Crash"
    assert "n=2" in dropped["message"]
    assert isinstance(dropped["exc_info"], ToyCrash)
    [crashed] = [e for e in logs if e["event"] == "child crashed"]
    assert crashed["actor"] == "a"
    assert crashed["error"] == "ToyCrash: a#1 crashed on command 2"
    assert sup.restart_counts == {"a": 1}


# --- the restart budget ------------------------------------------------------------


async def test_a_crash_loop_beyond_the_intensity_stops_all_children_in_reverse_and_raises(
    clock: FakeClock,
) -> None:
    """The third crash with intensity 2 stops every child, last started first, and gives up."""
    toys = Toys("a", "b", "c")
    toys.send("a", crash(1), crash(2), crash(3))
    sup = Supervisor(
        toys.specs, budget=RestartBudget(intensity=2, period=60.0), rng=random.Random(0)
    )
    with capture_logs() as logs, anyio.fail_after(5), budget_exhausted_by("a"):
        await sup.run()
    # Each restart stops c then b before restarting a, b, c; the last crash stops them for good.
    assert toys.trace.actors("stop") == ["a", "c", "b"] * 3
    assert toys.trace.incarnations == {"a": 3, "b": 3, "c": 3}
    assert sup.restart_counts == {"a": 2, "b": 2, "c": 2}
    [gave_up] = [e for e in logs if e["event"] == "restart budget exhausted"]
    assert gave_up["actor"] == "a"
    assert gave_up["log_level"] == "critical"


async def test_the_budget_counts_only_restarts_within_the_period(clock: FakeClock) -> None:
    """Restarts further apart than the period never exhaust it; two close together do."""
    toys = Toys("a")
    trace = toys.trace
    sup = Supervisor(
        toys.specs, budget=RestartBudget(intensity=1, period=10.0), rng=random.Random(0)
    )
    with anyio.fail_after(5), pytest.RaisesGroup(budget_exhausted_by("a")):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            for incarnation in (2, 3, 4):  # intensity 1, but 11 s apart
                clock.advance(11.0)
                toys.send("a", crash())
                await trace.wait_until(partial(trace.has, "ready", "a", incarnation))
            toys.send("a", crash())  # a second restart within 10 s of the last
    assert trace.incarnations["a"] == 4
    assert trace.actors("stop") == ["a"] * 4


# --- strategies and restart types ------------------------------------------------------


async def test_rest_for_one_restarts_the_crashed_child_and_every_child_started_after_it(
    clock: FakeClock,
) -> None:
    """Under rest_for_one a crash of b restarts b then c, and leaves a alone."""
    toys = Toys("a", "b", "c")
    trace = toys.trace
    restarted: list[str] = []
    sup = Supervisor(toys.specs, strategy="rest_for_one", rng=random.Random(0))
    sup.on_restart = restarted.append
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            toys.send("b", crash())
            await trace.wait_until(lambda: trace.has("ready", "c", 2))
            await anyio.wait_all_tasks_blocked()
            assert trace.incarnations == {"a": 1, "b": 2, "c": 2}
            assert trace.actors("stop") == ["b", "c"]
            assert trace.actors("ready") == ["a", "b", "c", "b", "c"]
            shut_down(sup, toys)
    assert restarted == ["b", "c"]
    assert sup.restart_counts == {"a": 0, "b": 1, "c": 1}


async def test_one_for_one_restarts_only_the_crashed_child(clock: FakeClock) -> None:
    """Under one_for_one a crash of b restarts b alone."""
    toys = Toys("a", "b", "c")
    trace = toys.trace
    sup = Supervisor(toys.specs, strategy="one_for_one", rng=random.Random(0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            toys.send("b", crash())
            await trace.wait_until(lambda: trace.has("ready", "b", 2))
            await anyio.wait_all_tasks_blocked()
            assert trace.incarnations == {"a": 1, "b": 2, "c": 1}
            assert trace.actors("stop") == ["b"]
            shut_down(sup, toys)
    assert sup.restart_counts == {"a": 0, "b": 1, "c": 0}


@pytest.mark.parametrize(
    ("restart", "ending", "restarted"),
    [
        ("permanent", "crash", True),
        ("permanent", "return", True),
        ("transient", "crash", True),
        ("transient", "return", False),
        ("temporary", "crash", False),
        ("temporary", "return", False),
    ],
)
async def test_a_child_is_restarted_according_to_its_restart_type_and_how_it_ended(
    clock: FakeClock, restart: Restart, ending: str, restarted: bool
) -> None:
    """permanent always restarts, transient only after a crash, temporary never."""
    toys = Toys("a", restart={"a": restart})
    trace = toys.trace
    sup = Supervisor(toys.specs, strategy="one_for_one", rng=random.Random(0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            toys.send("a", crash() if ending == "crash" else quit_(), ping(1))
            await trace.wait_until(lambda: trace.has("stop", "a", 1))
            await anyio.wait_all_tasks_blocked()
            assert trace.incarnations["a"] == (2 if restarted else 1)
            # What followed the ending message waits for a successor, if any.
            assert trace.handled("a") == ([(2, 1)] if restarted else [])
            assert len(toys.inboxes["a"]) == (0 if restarted else 1)
            shut_down(sup, toys)
    assert sup.restart_counts == {"a": 1 if restarted else 0}


async def test_a_temporary_child_stopped_for_a_sibling_restart_is_not_restarted(
    clock: FakeClock,
) -> None:
    """Under rest_for_one a temporary child after the crashed one is stopped and stays down."""
    toys = Toys("a", "t", "c", restart={"t": "temporary"})
    trace = toys.trace
    sup = Supervisor(toys.specs, strategy="rest_for_one", rng=random.Random(0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            toys.send("a", crash())
            await trace.wait_until(lambda: trace.has("ready", "c", 2))
            await anyio.wait_all_tasks_blocked()
            assert trace.incarnations == {"a": 2, "t": 1, "c": 2}
            assert trace.actors("stop") == ["a", "c", "t"]
            shut_down(sup, toys)
    assert sup.restart_counts == {"a": 1, "t": 0, "c": 1}


async def test_after_begin_shutdown_a_crash_is_final(clock: FakeClock) -> None:
    """Once shutdown has begun, a crashed permanent child is not restarted."""
    toys = Toys("a")
    sup = Supervisor(toys.specs, rng=random.Random(0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            sup.begin_shutdown()
            toys.send("a", crash())
        # sup.run returned by itself: its only child is gone for good.
    assert toys.trace.incarnations == {"a": 1}


async def test_child_names_must_be_unique() -> None:
    """Two children with one name would make stop_child and the metrics ambiguous."""
    toys = Toys("a")
    with pytest.raises(ValueError, match="unique"):
        Supervisor([*toys.specs, ChildSpec(name="a", factory=toys.specs[0].factory)])


# --- start order ---------------------------------------------------------------------


async def test_each_child_starts_only_after_the_previous_one_is_ready(clock: FakeClock) -> None:
    """The supervisor builds child n+1 only once child n called task_status.started()."""
    toys = Toys("a", "b", "c")
    trace = toys.trace
    gates = {name: trace.gate(name, 1) for name in ("a", "b", "c")}
    sup = Supervisor(toys.specs, rng=random.Random(0))
    all_ready = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def supervise() -> None:
                await tg.start(sup.run)
                all_ready.set()

            tg.start_soon(supervise)
            for i, name in enumerate(("a", "b", "c")):
                await anyio.wait_all_tasks_blocked()
                assert trace.actors("setup") == ["a", "b", "c"][: i + 1]
                assert trace.actors("ready") == ["a", "b", "c"][:i]
                assert not all_ready.is_set()
                gates[name].set()
            await all_ready.wait()
            assert trace.actors("ready") == ["a", "b", "c"]
            shut_down(sup, toys)


@pytest.mark.parametrize(
    ("restart", "restarted"),
    [("permanent", True), ("transient", True), ("temporary", False)],
)
async def test_a_child_that_crashes_before_ready_counts_as_a_crash(
    clock: FakeClock, restart: Restart, restarted: bool
) -> None:
    """A crash in setup does not stall the start sequence and is restarted per its type."""
    toys = Toys("a", "b", "c", restart={"b": restart})
    trace = toys.trace
    trace.crash_before_ready("b")
    sup = Supervisor(toys.specs, strategy="rest_for_one", rng=random.Random(0))
    with capture_logs() as logs, anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.wait_all_tasks_blocked()
            assert not trace.has("ready", "b", 1)
            if restarted:
                assert trace.incarnations == {"a": 1, "b": 2, "c": 2}
                assert trace.actors("ready") == ["a", "c", "b", "c"]
            else:
                assert trace.incarnations == {"a": 1, "b": 1, "c": 1}
                assert trace.actors("ready") == ["a", "c"]
            shut_down(sup, toys)
    [crashed] = [e for e in logs if e["event"] == "child crashed"]
    assert crashed["error"] == "ToyCrash: b#1 crashed before ready"


# --- backoff -------------------------------------------------------------------------


async def test_the_supervisor_backs_off_exponentially_with_jitter_between_restarts(
    clock: FakeClock,
) -> None:
    """The k-th restart in the window waits initial * 2**(k-1), capped, times a 0.5-1 jitter."""
    toys = Toys("a")
    toys.send("a", *(crash(n) for n in range(5)))
    budget = RestartBudget(intensity=10, period=60.0, backoff_initial=0.1, backoff_max=0.5)
    sup = Supervisor(toys.specs, budget=budget, rng=random.Random(7))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await toys.trace.wait_until(lambda: toys.trace.has("ready", "a", 6))
            shut_down(sup, toys)
    jitter = random.Random(7)
    caps = [0.1, 0.2, 0.4, 0.5, 0.5]
    assert clock.sleeps == pytest.approx([cap * (0.5 + jitter.random() / 2) for cap in caps])
    assert all(cap / 2 <= slept <= cap for cap, slept in zip(caps, clock.sleeps, strict=True))


async def test_the_backoff_is_a_real_wait_between_the_crash_and_the_restart() -> None:
    """Without a fake clock, the successor's setup begins a backoff after the crash."""
    toys = Toys("a")
    trace = toys.trace
    budget = RestartBudget(backoff_initial=0.05)
    sup = Supervisor(toys.specs, budget=budget, rng=random.Random(3))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            toys.send("a", crash())
            await trace.wait_until(lambda: trace.has("ready", "a", 2))
            shut_down(sup, toys)
    [stopped] = [s for s in trace.of("stop", "a") if s.incarnation == 1]
    [restarted] = [s for s in trace.of("setup", "a") if s.incarnation == 2]
    expected = 0.05 * (0.5 + random.Random(3).random() / 2)
    assert restarted.at - stopped.at >= expected - 0.001


# --- cancellation keeps messages ---------------------------------------------------------


async def test_a_child_cancelled_mid_batch_by_a_sibling_restart_leaves_its_messages_behind(
    clock: FakeClock,
) -> None:
    """A rest_for_one restart cancels b mid-message; b's successor handles it and the rest."""
    inflight = InFlight()
    toys = Toys("a", "b", inflight=inflight)
    trace = toys.trace
    sup = Supervisor(toys.specs, strategy="rest_for_one", rng=random.Random(0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            toys.send("b", hold(1), ping(2), ping(3))
            await trace.wait_until(lambda: trace.has("holding", "b", 1))
            toys.send("a", crash())
            await trace.wait_until(lambda: len(trace.handled("b")) == 3)
            await inflight.wait_quiet()
            shut_down(sup, toys)
    assert trace.handled("b") == [(2, 1), (2, 2), (2, 3)]
    assert trace.incarnations == {"a": 2, "b": 2}
    assert inflight.count == 0


async def test_stop_child_mid_batch_leaves_the_unhandled_messages_in_the_inbox(
    clock: FakeClock,
) -> None:
    """stop_child cancels the child mid-message without a restart; nothing is lost."""
    inflight = InFlight()
    toys = Toys("b", inflight=inflight)
    trace = toys.trace
    inbox = toys.inboxes["b"]
    sup = Supervisor(toys.specs, rng=random.Random(0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            toys.send("b", hold(1), ping(2), ping(3))
            await trace.wait_until(lambda: trace.has("holding", "b", 1))
            await sup.stop_child("b")
            await anyio.wait_all_tasks_blocked()
            assert trace.incarnations == {"b": 1}
            assert len(inbox) == 3
            assert inflight.count == 3
            successor = CrashOnCommand("b", inbox, trace)
            await tg.start(successor.run)
            await inflight.wait_quiet()
            inbox.close()
    assert trace.handled("b") == [(2, 1), (2, 2), (2, 3)]
    assert inbox.statistics().received == 3


async def test_a_poison_message_is_counted_handled_so_quiescence_is_reached(
    clock: FakeClock,
) -> None:
    """The dropped crash message is marked done, so the graph can still become quiet."""
    inflight = InFlight()
    toys = Toys("a", inflight=inflight)
    sup = Supervisor(toys.specs, rng=random.Random(0))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            toys.send("a", ping(1), crash(2), ping(3))
            await inflight.wait_quiet()
            assert toys.trace.handled("a") == [(1, 1), (2, 3)]
            shut_down(sup, toys)
    assert toys.inboxes["a"].statistics().received == 3
