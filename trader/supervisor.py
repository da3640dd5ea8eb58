"""An OTP-style supervisor over anyio.

Child specs are data (:class:`ChildSpec`): a name, a factory that builds a
fresh actor for each incarnation, and a restart type. The supervisor starts
children in order, each one only after the previous reported ready
(``task_status.started()``), so consumers exist before producers send.

Restart types (OTP's words):

* ``permanent`` — always restarted when it exits, normally or not;
* ``transient`` — restarted only after a crash;
* ``temporary`` — never restarted.

Strategies:

* ``one_for_one`` — only the crashed child restarts;
* ``rest_for_one`` — the crashed child and every child started after it
  restart (the later ones are stopped first, in reverse start order).

Intensity: more than ``intensity`` restarts within ``period`` seconds exhausts
the budget. The supervisor then stops every child in reverse start order and
raises :class:`~trader.errors.RestartBudgetExhausted`; the CLI turns that into
exit code 3 so systemd, the next supervisor up, takes over.

Lifecycle of a child::

    starting ──started()──▶ running ──exit/crash──▶ (backoff) ──▶ starting
        │                      │
        └────crash─────────────┴──budget spent──▶ stopped (supervisor raises)

Channels belong to the graph, not to the child, so a restarted child finds its
inbox with everything that was queued for it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Literal

import anyio
import msgspec
import structlog
from anyio.abc import TaskGroup, TaskStatus

from trader.actors.base import Actor
from trader.errors import RestartBudgetExhausted

log = structlog.get_logger("trader.supervisor")

Restart = Literal["permanent", "transient", "temporary"]
SupervisionStrategy = Literal["one_for_one", "rest_for_one"]


class ChildSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How to run one child."""

    name: str
    factory: Callable[[], Actor]
    restart: Restart = "permanent"


class RestartBudget(msgspec.Struct, frozen=True, kw_only=True):
    """At most ``intensity`` restarts within ``period`` seconds; backoff between them."""

    intensity: int = 5
    period: float = 60.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0


class _Exit(msgspec.Struct, frozen=True):
    index: int
    incarnation: int
    error: Exception | None


class _Child:
    __slots__ = ("actor", "exited", "incarnation", "scope", "spec")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.actor: Actor | None = None
        self.scope: anyio.CancelScope | None = None
        self.incarnation = 0
        self.exited = anyio.Event()
        self.exited.set()


class Supervisor:
    """Runs children under a restart strategy and budget.

    Args:
        specs: children in start order.
        strategy: ``one_for_one`` or ``rest_for_one``.
        budget: restart intensity and backoff.
        rng: jitter source (tests pass a seeded one).
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        strategy: SupervisionStrategy = "rest_for_one",
        budget: RestartBudget | None = None,
        rng: random.Random | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self._children = [_Child(s) for s in specs]
        self._strategy = strategy
        self._budget = budget or RestartBudget()
        self._rng = rng or random.Random()
        self._restarts: deque[float] = deque()
        self._exits: deque[_Exit] = deque()
        self._exit_signal = anyio.Event()
        self._stopping = False
        self._tg: TaskGroup | None = None
        self.restart_counts: dict[str, int] = dict.fromkeys(names, 0)
        self.on_restart: Callable[[str], None] | None = None

    # --- public ----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start every child in order, then supervise until all have stopped.

        Raises:
            RestartBudgetExhausted: too many restarts; every child is stopped first.
        """
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for i in range(len(self._children)):
                await self._start(i)
            task_status.started()
            try:
                await self._supervise()
            finally:
                self._tg = None

    def index_of(self, name: str) -> int:
        for i, child in enumerate(self._children):
            if child.spec.name == name:
                return i
        raise KeyError(name)

    def actors(self) -> list[Actor]:
        """The current incarnation of each running child (for metrics and tests)."""
        return [c.actor for c in self._children if c.actor is not None and not c.exited.is_set()]

    async def stop_child(self, name: str) -> None:
        """Cancel one child and wait for it to end; it is not restarted."""
        child = self._children[self.index_of(name)]
        if child.scope is not None:
            child.scope.cancel()
        await child.exited.wait()

    async def wait_child(self, name: str) -> None:
        """Wait until a child has ended for good (used during an orderly shutdown)."""
        await self._children[self.index_of(name)].exited.wait()

    def begin_shutdown(self) -> None:
        """From now on, exits are final: nothing is restarted."""
        self._stopping = True

    # --- internals -------------------------------------------------------------

    async def _start(self, index: int) -> None:
        assert self._tg is not None
        child = self._children[index]
        child.incarnation += 1
        child.exited = anyio.Event()
        await self._tg.start(self._child_main, index, child.incarnation)

    async def _child_main(
        self, index: int, incarnation: int, *, task_status: TaskStatus[None]
    ) -> None:
        child = self._children[index]
        error: Exception | None = None
        started = False

        class _Status:
            def started(self, value: None = None) -> None:
                nonlocal started
                if not started:
                    started = True
                    task_status.started()

        try:
            with anyio.CancelScope() as scope:
                child.scope = scope
                actor = child.actor = child.spec.factory()
                try:
                    await actor.run(task_status=_Status())
                except Exception as exc:
                    error = exc
            cancelled = scope.cancel_called
        finally:
            child.scope = None
            # A child that dies before it is ready still counts as started, so
            # the supervisor's start loop moves on and handles it as a crash.
            if not started:
                started = True
                task_status.started()
            child.exited.set()
            self._exit_signal.set()
        if cancelled and error is None:
            return  # stopped by us: not an exit to act on
        if error is not None:
            log.error(
                "child crashed",
                actor=child.spec.name,
                incarnation=incarnation,
                error=f"{type(error).__name__}: {error}",
            )
        self._exits.append(_Exit(index, incarnation, error))
        self._exit_signal.set()

    async def _supervise(self) -> None:
        while True:
            if not self._exits:
                if all(c.exited.is_set() for c in self._children):
                    return
                self._exit_signal = anyio.Event()
                await self._exit_signal.wait()
                continue
            exit_ = self._exits.popleft()
            child = self._children[exit_.index]
            if exit_.incarnation != child.incarnation:
                continue  # a stale report from an incarnation already replaced
            if self._stopping or not self._should_restart(child.spec.restart, exit_.error):
                continue
            await self._restart_from(exit_.index)

    @staticmethod
    def _should_restart(restart: Restart, error: Exception | None) -> bool:
        if restart == "permanent":
            return True
        if restart == "transient":
            return error is not None
        return False

    async def _restart_from(self, index: int) -> None:
        name = self._children[index].spec.name
        now = anyio.current_time()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > self._budget.period:
            self._restarts.popleft()
        if len(self._restarts) > self._budget.intensity:
            log.critical(
                "restart budget exhausted",
                actor=name,
                intensity=self._budget.intensity,
                period_s=self._budget.period,
            )
            await self._stop_all()
            raise RestartBudgetExhausted(name, len(self._restarts), self._budget.period)

        last = len(self._children) if self._strategy == "rest_for_one" else index + 1
        # Stop the later children first, in reverse start order (OTP).
        for j in range(last - 1, index, -1):
            await self._cancel(j)
        attempt = len(self._restarts)
        delay = min(self._budget.backoff_max, self._budget.backoff_initial * 2 ** (attempt - 1))
        # Full jitter: restarts of many daemons after a shared outage spread out.
        await anyio.sleep(delay * (0.5 + self._rng.random() / 2))
        for j in range(index, last):
            child = self._children[j]
            if j != index and child.spec.restart == "temporary":
                # OTP: a temporary child is never restarted, not even when a
                # sibling's restart stopped it.
                continue
            self.restart_counts[child.spec.name] += 1
            if self.on_restart is not None:
                self.on_restart(child.spec.name)
            log.warning("restarting child", actor=child.spec.name, restarts=len(self._restarts))
            await self._start(j)

    async def _cancel(self, index: int) -> None:
        child = self._children[index]
        if child.scope is not None:
            child.scope.cancel()
        await child.exited.wait()

    async def _stop_all(self) -> None:
        self._stopping = True
        for j in range(len(self._children) - 1, -1, -1):
            await self._cancel(j)
