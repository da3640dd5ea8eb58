"""Toy actors, toy messages and a jumping clock for the runtime tests.

The toy actor, :class:`CrashOnCommand`, is a real :class:`~trader.actors.base.InboxActor`
(so it exercises the real batched inbox loop) whose behaviour is scripted by the
messages it receives: it records what it handled in a :class:`Trace` shared by
the test and every incarnation, crashes on :class:`Crash`, returns on
:class:`Quit`, and forwards :class:`Ping` wherever its outbox routes it.

This module holds no tests and no trading logic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import anyio
import pytest

from trader.actors.base import Actor, InboxActor, Outbox
from trader.channels import Channel, InFlight
from trader.messages import Message
from trader.supervisor import ChildSpec, Restart

# --- toy messages ------------------------------------------------------------------


class Ping(Message, frozen=True, kw_only=True):
    """Handle (record) me, then forward me if the outbox routes Ping."""

    n: int


class Crash(Message, frozen=True, kw_only=True):
    """Raise :class:`ToyCrash` while handling me."""

    n: int


class Hold(Message, frozen=True, kw_only=True):
    """The first time any incarnation handles me, block until cancelled; later, complete."""

    n: int


class Quit(Message, frozen=True, kw_only=True):
    """Return normally, as if the inbox had ended; later messages stay queued."""


def ping(n: int) -> Ping:
    return Ping(ts_ns=n, n=n)


def crash(n: int = 0) -> Crash:
    return Crash(ts_ns=n, n=n)


def hold(n: int) -> Hold:
    return Hold(ts_ns=n, n=n)


def quit_() -> Quit:
    return Quit(ts_ns=0)


class ToyCrash(Exception):
    """What a toy actor raises when told to crash."""


# --- the trace ---------------------------------------------------------------------


class Step(NamedTuple):
    """One thing a toy actor did. ``at`` is anyio's (real) clock."""

    kind: str  # setup, ready, handled, holding, quit, stop
    actor: str
    incarnation: int
    n: int | None
    at: float


class Trace:
    """What every incarnation of every toy actor did, in order, and what they are told.

    Shared by a test and its actors; it outlives restarts the way channels do.
    """

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.incarnations: dict[str, int] = {}
        self._crash_before_ready: dict[str, int] = {}
        self._gates: dict[tuple[str, int], anyio.Event] = {}
        self._valves: dict[str, anyio.Event] = {}
        self._held: set[tuple[str, int]] = set()
        self._changed = anyio.Event()

    # --- what actors call -----------------------------------------------------------

    def begin(self, actor: str) -> int:
        """Number a new incarnation of ``actor`` (1 for the first)."""
        self.incarnations[actor] = self.incarnations.get(actor, 0) + 1
        return self.incarnations[actor]

    def record(self, kind: str, actor: str, incarnation: int, n: int | None = None) -> None:
        self.steps.append(Step(kind, actor, incarnation, n, anyio.current_time()))
        self._changed.set()
        self._changed = anyio.Event()

    def take_crash_before_ready(self, actor: str) -> bool:
        left = self._crash_before_ready.get(actor, 0)
        if left:
            self._crash_before_ready[actor] = left - 1
        return left > 0

    def setup_gate(self, actor: str, incarnation: int) -> anyio.Event | None:
        return self._gates.get((actor, incarnation))

    def valve(self, actor: str) -> anyio.Event | None:
        return self._valves.get(actor)

    def first_hold(self, actor: str, n: int) -> bool:
        """True the first time ``actor`` (any incarnation) handles ``Hold(n)``."""
        if (actor, n) in self._held:
            return False
        self._held.add((actor, n))
        return True

    # --- what tests call ------------------------------------------------------------

    def crash_before_ready(self, actor: str, times: int = 1) -> None:
        """Make the next ``times`` incarnations of ``actor`` raise in setup."""
        self._crash_before_ready[actor] = times

    def gate(self, actor: str, incarnation: int) -> anyio.Event:
        """Make that incarnation's setup wait for the returned event."""
        return self._gates.setdefault((actor, incarnation), anyio.Event())

    def close_valve(self, actor: str) -> None:
        """Make ``actor`` wait before handling each Ping until :meth:`open_valve`."""
        self._valves[actor] = anyio.Event()

    def open_valve(self, actor: str) -> None:
        self._valves.pop(actor).set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait (unbounded: wrap in ``fail_after``) until ``condition()`` holds."""
        while not condition():
            await self._changed.wait()

    def has(self, kind: str, actor: str, incarnation: int | None = None) -> bool:
        return any(
            s.kind == kind and s.actor == actor
            and (incarnation is None or s.incarnation == incarnation)
            for s in self.steps
        )

    def of(self, kind: str, actor: str | None = None) -> list[Step]:
        return [s for s in self.steps if s.kind == kind and actor in (None, s.actor)]

    def handled(self, actor: str) -> list[tuple[int, int | None]]:
        """``(incarnation, n)`` of every message ``actor`` finished handling, in order."""
        return [(s.incarnation, s.n) for s in self.of("handled", actor)]

    def actors(self, kind: str) -> list[str]:
        """Which actors did ``kind``, in order (e.g. the stop order)."""
        return [s.actor for s in self.of(kind)]


# --- the toy actor -----------------------------------------------------------------


class CrashOnCommand(InboxActor):
    """An inbox actor that does what its messages say and records it in a :class:`Trace`.

    Setup records ``setup``, waits for the test's gate for this incarnation if
    there is one, raises if told to crash before ready, then records ``ready``.
    Teardown (which runs on every exit) records ``stop``.
    """

    def __init__(
        self,
        name: str,
        inbox: Channel[Message],
        trace: Trace,
        outbox: Outbox | None = None,
    ) -> None:
        super().__init__(inbox, outbox or Outbox(name, {}, None))
        self.name = name
        self._trace = trace
        self.incarnation = trace.begin(name)
        self._quit: anyio.CancelScope | None = None

    def _record(self, kind: str, n: int | None = None) -> None:
        self._trace.record(kind, self.name, self.incarnation, n)

    async def setup(self) -> None:
        self._record("setup")
        gate = self._trace.setup_gate(self.name, self.incarnation)
        if gate is not None:
            await gate.wait()
        if self._trace.take_crash_before_ready(self.name):
            raise ToyCrash(f"{self.name}#{self.incarnation} crashed before ready")
        self._record("ready")

    async def teardown(self) -> None:
        self._record("stop")

    async def _loop(self) -> None:
        # Quit cancels this scope from inside handle(); the inbox loop then
        # requeues whatever it had not handled, and run() returns normally.
        with anyio.CancelScope() as self._quit:
            await super()._loop()

    async def handle(self, msg: Message) -> None:
        # A cancellation point before each message, as any real handler has one:
        # after Quit, the next message is left for a successor.
        await anyio.lowlevel.checkpoint_if_cancelled()
        match msg:
            case Ping(n=n):
                valve = self._trace.valve(self.name)
                if valve is not None:
                    await valve.wait()
                self._record("handled", n)
                if self._out.routes(Ping):
                    await self._out.emit(msg, journal=False)
            case Crash(n=n):
                raise ToyCrash(f"{self.name}#{self.incarnation} crashed on command {n}")
            case Hold(n=n):
                if self._trace.first_hold(self.name, n):
                    self._record("holding", n)
                    await anyio.sleep_forever()
                self._record("handled", n)
            case Quit():
                self._record("quit")
                assert self._quit is not None
                self._quit.cancel()
            case _:
                raise AssertionError(f"unexpected message {msg!r}")


class Relay(InboxActor):
    """A synchronous hop (the hot-path shape): records each Ping and posts it on."""

    def __init__(self, name: str, inbox: Channel[Message], trace: Trace, outbox: Outbox) -> None:
        super().__init__(inbox, outbox)
        self.name = name
        self._trace = trace
        self.incarnation = trace.begin(name)

    def handle(self, msg: Message) -> None:
        assert isinstance(msg, Ping), msg
        self._trace.record("handled", self.name, self.incarnation, msg.n)
        self._out.post(msg, journal=False)


class Toys:
    """Toy children with one inbox each (capacity 16), for a :class:`Supervisor`."""

    def __init__(
        self,
        *names: str,
        restart: dict[str, Restart] | None = None,
        inflight: InFlight | None = None,
    ) -> None:
        self.trace = Trace()
        self.inboxes: dict[str, Channel[Message]] = {
            name: Channel(name, 16, inflight) for name in names
        }
        types = restart or {}
        self.specs: Sequence[ChildSpec] = [
            ChildSpec(name=name, factory=self._factory(name), restart=types.get(name, "permanent"))
            for name in names
        ]

    def _factory(self, name: str) -> Callable[[], Actor]:
        def build() -> Actor:
            return CrashOnCommand(name, self.inboxes[name], self.trace)

        return build

    def send(self, actor: str, *msgs: Message) -> None:
        for msg in msgs:
            self.inboxes[actor].send_nowait(msg)

    def close_all(self) -> None:
        for inbox in self.inboxes.values():
            inbox.close()


# --- the clock ---------------------------------------------------------------------


class FakeClock:
    """A clock that jumps instead of sleeping (trio's MockClock, for one module).

    :meth:`install` replaces the ``anyio`` a module sees with a view whose
    ``sleep`` records the delay, moves this clock forward and only yields once,
    and whose ``current_time`` reads this clock. Everything else is anyio's.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def current_time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def install(self, monkeypatch: pytest.MonkeyPatch, module: object) -> None:
        monkeypatch.setattr(module, "anyio", _AnyioOnFakeClock(self))


class _AnyioOnFakeClock:
    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        if name == "sleep":
            return self._clock.sleep
        if name == "current_time":
            return self._clock.current_time
        return getattr(anyio, name)
