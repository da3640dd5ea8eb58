"""The execution actor: reconciliation on every start, and orders sent once."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection, Mapping, Sequence

import anyio
import pytest
from anyio.abc import TaskGroup, TaskStatus

from trader.actors.base import JournalCommits, JournalRecord, Outbox
from trader.actors.execution import ExecutionActor
from trader.brokers.base import AccountState, OrderState, PositionState
from trader.channels import Channel, InFlight
from trader.errors import BrokerRejected
from trader.journal import KnownOrder
from trader.messages import (
    AccountUpdated,
    CancelOrder,
    ClientOrderId,
    Message,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PositionChanged,
    ReconciliationDone,
    SubmitOrder,
)

T = 1_704_230_400_000_000_000


class FakeBroker:
    """A broker whose state the test sets; it records what it was asked."""

    durable_updates = True

    def __init__(self, orders: dict[str, OrderState] | None = None) -> None:
        self.updates: Channel[Message] = Channel("broker", 64)
        self.orders = orders or {}
        self.submitted: list[str] = []

    async def stream(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async def sync(self, symbols: Collection[str]) -> None:
        return None

    async def submit(self, order: SubmitOrder) -> None:
        if order.client_order_id in self.orders:
            raise BrokerRejected("client_order_id must be unique", code="40010001", status=422)
        self.submitted.append(order.client_order_id)

    async def cancel(self, client_order_id: str) -> None:
        raise BrokerRejected("order not found", code="40410000", status=404)

    async def account(self) -> AccountState:
        return AccountState(cash_cents=1_000_000, equity_cents=1_000_000,
                            buying_power_cents=1_000_000)

    async def positions(self) -> list[PositionState]:
        return [PositionState(symbol="AAPL", qty=10.0, avg_price=101.0, cost_cents=101_000)]

    async def open_orders(self) -> list[OrderState]:
        return [o for o in self.orders.values() if o.status in ("new", "partially_filled")]

    async def order(self, client_order_id: str) -> OrderState | None:
        return self.orders.get(client_order_id)


def _state(coid: str, status: str, filled: float, avg: float | None) -> OrderState:
    return OrderState(broker_order_id=f"b-{coid}", client_order_id=coid, symbol="AAPL",
                      side="buy", status=status, qty=10.0, filled_qty=filled,
                      filled_avg_price=avg)


def _known(coid: str, filled: float = 0.0, avg: float | None = None) -> KnownOrder:
    return KnownOrder(client_order_id=coid, symbol="AAPL", side="buy", status="new",
                      filled_qty=filled, avg_price=avg)


def _drain(channel: Channel[Message]) -> list[Message]:
    got = []
    while True:
        try:
            got.append(channel.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return got


async def _run(broker: FakeBroker, known: list[KnownOrder],
               commands: Sequence[SubmitOrder] = (),
               recorded: Mapping[str, float] | None = None) -> list[Message]:
    inbox: Channel[Message] = Channel("execution", 64)
    out: Channel[Message] = Channel("out", 256)
    types = (AccountUpdated, PositionChanged, ReconciliationDone, OrderAccepted, OrderFilled,
             OrderCanceled, OrderRejected, OrderExpired)
    actor = ExecutionActor(inbox, Outbox("execution", {t: [out] for t in types}, None),
                           broker=broker, now_ns=lambda: T, known_orders=lambda: known,
                           known_positions=None if recorded is None else lambda: recorded)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            for cmd in commands:
                await inbox.send(cmd)
            inbox.close()
    return _drain(out)


@pytest.mark.asyncio
async def test_start_up_adopts_the_brokers_account_and_positions_before_reporting_done() -> None:
    """Account, then positions, then ReconciliationDone: risk rebuilds from the broker."""
    got = await _run(FakeBroker(), [])
    assert [type(m) for m in got] == [AccountUpdated, PositionChanged, ReconciliationDone]
    assert isinstance(got[1], PositionChanged)
    assert (got[1].symbol, got[1].qty) == ("AAPL", 10.0)


@pytest.mark.asyncio
async def test_a_position_closed_at_the_broker_while_we_were_down_is_announced_closed() -> None:
    """Journal: AAPL 10 and MSFT 5 held. Broker: AAPL 10 only (MSFT sold by hand). Start-up
    says MSFT is now 0, so the strategy and the journal stop believing it is held; one
    difference. A symbol the journal saw closed (TSLA 0) is not announced again."""
    got = await _run(FakeBroker(), [], recorded={"AAPL": 10.0, "MSFT": 5.0, "TSLA": 0.0})
    positions = [(m.symbol, m.qty) for m in got if isinstance(m, PositionChanged)]
    assert positions == [("AAPL", 10.0), ("MSFT", 0.0)]
    assert isinstance(got[-1], ReconciliationDone)
    assert got[-1].differences == 1


@pytest.mark.asyncio
async def test_a_position_quantity_the_broker_disagrees_with_is_the_brokers_and_a_difference(
) -> None:
    """Journal: AAPL 4 held. Broker: AAPL 10. AAPL is announced at 10 (once) and counted."""
    got = await _run(FakeBroker(), [], recorded={"AAPL": 4.0})
    positions = [(m.symbol, m.qty) for m in got if isinstance(m, PositionChanged)]
    assert positions == [("AAPL", 10.0)]
    assert isinstance(got[-1], ReconciliationDone)
    assert got[-1].differences == 1


@pytest.mark.asyncio
async def test_a_fill_that_happened_while_we_were_down_is_recorded_at_start() -> None:
    """Journal: 4 of 10 filled at 100. Broker: 10 filled at avg 101. Adopt 6 at 101.67."""
    broker = FakeBroker({"o1": _state("o1", "filled", 10.0, 101.0)})
    got = await _run(broker, [_known("o1", 4.0, 100.0)])
    fills = [m for m in got if isinstance(m, OrderFilled)]
    assert len(fills) == 1
    f = fills[0]
    assert (f.qty, f.price, f.cum_qty, f.status) == (6.0, 101.67, 10.0, "filled")
    assert f.execution_id == "reconcile:b-o1:10"
    done = [m for m in got if isinstance(m, ReconciliationDone)]
    assert done[0].differences == 1


@pytest.mark.asyncio
async def test_an_order_that_never_reached_the_broker_is_closed_not_resent() -> None:
    """Journaled but unknown to the broker: it is recorded as canceled, and not sent."""
    broker = FakeBroker()
    got = await _run(broker, [_known("ghost")])
    canceled = [m for m in got if isinstance(m, OrderCanceled)]
    assert [c.client_order_id for c in canceled] == ["ghost"]
    assert "never reached the broker" in canceled[0].reason
    assert broker.submitted == []


@pytest.mark.asyncio
async def test_final_states_reached_while_down_are_adopted() -> None:
    """Canceled after a partial fill, expired, rejected: each becomes its event."""
    broker = FakeBroker({
        "c": _state("c", "canceled", 3.0, 99.0),
        "e": _state("e", "expired", 0.0, None),
        "r": _state("r", "rejected", 0.0, None),
    })
    got = await _run(broker, [_known("c"), _known("e"), _known("r")])
    kinds = [(type(m).__name__, getattr(m, "client_order_id", "")) for m in got
             if isinstance(m, OrderFilled | OrderCanceled | OrderExpired | OrderRejected)]
    assert kinds == [("OrderFilled", "c"), ("OrderCanceled", "c"), ("OrderExpired", "e"),
                     ("OrderRejected", "r")]


@pytest.mark.asyncio
async def test_the_same_command_twice_is_sent_once_and_a_known_id_is_adopted() -> None:
    """A repeated command is not resent; an id the broker has already is adopted."""
    cmd = SubmitOrder(ts_ns=T, client_order_id=ClientOrderId("s:AAPL:1:buy"), strategy="s",
                      symbol="AAPL", side="buy", qty=1.0)
    old = SubmitOrder(ts_ns=T, client_order_id=ClientOrderId("old"), strategy="s",
                      symbol="AAPL", side="buy", qty=1.0)
    broker = FakeBroker({"old": _state("old", "filled", 10.0, 100.0)})
    got = await _run(broker, [], [cmd, cmd, old])
    assert broker.submitted == ["s:AAPL:1:buy"]
    assert not [m for m in got if isinstance(m, OrderRejected)]


@pytest.mark.asyncio
async def test_a_fill_already_booked_is_not_booked_again() -> None:
    """A stream fill whose cumulative quantity was covered by reconciliation is ignored."""
    broker = FakeBroker({"o1": _state("o1", "partially_filled", 5.0, 100.0)})
    stale = OrderFilled(ts_ns=T, client_order_id=ClientOrderId("o1"), symbol="AAPL",
                        execution_id="e-old", side="buy", qty=5.0, price=100.0,
                        commission_cents=0, cum_qty=5.0, avg_price=100.0,
                        status="partially_filled")
    got = await _run_with_updates(broker, [_known("o1")], [stale])
    assert [f.execution_id for f in got if isinstance(f, OrderFilled)] == ["reconcile:b-o1:5"]


class FillsDuringReconciliation(FakeBroker):
    """Holds 10 AAPL with o1 (buy 5) open; o1 fills at 100 the first time its state is read,
    after the positions were (the REST API has no snapshot), and the update stream, which
    was listening, brings that fill too."""

    def __init__(self, *, fill_on_read: bool = True) -> None:
        super().__init__({"o1": _state("o1", "new", 0.0, None)})
        self.held = 10.0
        self.cash_cents = 1_000_000
        self.fill_on_read = fill_on_read

    async def account(self) -> AccountState:
        return AccountState(cash_cents=self.cash_cents, equity_cents=2_000_000,
                            buying_power_cents=self.cash_cents)

    async def positions(self) -> list[PositionState]:
        return [PositionState(symbol="AAPL", qty=self.held, avg_price=100.0,
                              cost_cents=int(self.held) * 10_000)]

    def fill(self) -> None:
        self.orders["o1"] = _state("o1", "filled", 5.0, 100.0)
        self.held += 5.0
        self.cash_cents -= 50_000
        self.updates.send_nowait(OrderFilled(
            ts_ns=T, client_order_id=ClientOrderId("o1"), symbol="AAPL", execution_id="e1",
            side="buy", qty=5.0, price=100.0, commission_cents=0, cum_qty=5.0, avg_price=100.0,
            status="filled"))

    async def order(self, client_order_id: str) -> OrderState | None:
        if self.fill_on_read:
            self.fill_on_read = False
            self.fill()
        return await super().order(client_order_id)


async def _run_with_updates(broker: FakeBroker, known: list[KnownOrder],
                            updates: Sequence[Message] = ()) -> list[Message]:
    """Like _run, but the actor also handles what the update stream brought, and
    ``updates`` sent on it after reconciliation."""
    inbox: Channel[Message] = Channel("execution", 8)
    out: Channel[Message] = Channel("out", 64)
    types = (AccountUpdated, PositionChanged, ReconciliationDone, OrderAccepted, OrderFilled)
    actor = ExecutionActor(inbox, Outbox("execution", {t: [out] for t in types}, None),
                           broker=broker, now_ns=lambda: T, known_orders=lambda: known)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            for update in updates:
                await broker.updates.send(update)
            # Every task blocked again means the actor has handled the stream's updates.
            await anyio.wait_all_tasks_blocked()
            inbox.close()
    return _drain(out)


@pytest.mark.asyncio
async def test_a_fill_the_stream_brings_after_reconciliation_adopted_it_is_not_booked_again(
) -> None:
    """o1 filled (5 at 100) after the stream began listening and before reconciliation read
    the broker: the positions include it, reconciliation adopts it, and the stream's own copy
    of that execution is dropped, so it is booked and journaled once."""
    broker = FillsDuringReconciliation(fill_on_read=False)
    broker.fill()
    got = await _run_with_updates(broker, [_known("o1")])
    assert [(m.symbol, m.qty) for m in got if isinstance(m, PositionChanged)] == [("AAPL", 15.0)]
    assert [f.execution_id for f in got if isinstance(f, OrderFilled)] == ["reconcile:b-o1:5"]


@pytest.mark.asyncio
async def test_a_fill_landing_between_reconciliations_reads_is_in_the_positions_and_adopted_once(
) -> None:
    """The broker's positions read 10 AAPL, then o1 (buy 5) fills before its state is read.
    Taking those reads together would state 10 held and adopt the fill without booking it
    (15 at the broker, 10 in our book). The book moved while the orders were read, so the
    reads are taken again: 15 stated, the fill adopted once, the stream's copy dropped."""
    broker = FillsDuringReconciliation()
    got = await _run_with_updates(broker, [_known("o1")])
    assert [(m.symbol, m.qty) for m in got if isinstance(m, PositionChanged)] == [("AAPL", 15.0)]
    assert [f.execution_id for f in got if isinstance(f, OrderFilled)] == ["reconcile:b-o1:5"]
    assert [m.cash_cents for m in got if isinstance(m, AccountUpdated)] == [950_000]


# --- sending: one journal barrier per pass, different symbols concurrently ----------


class GatedBroker(FakeBroker):
    """Holds every submit until the test opens the gate, and records what it saw.

    ``durable`` is the set of client order ids committed to the (fake) journal;
    ``unjournaled`` collects any order that reached the broker before its
    journal record was committed.
    """

    def __init__(self, durable: set[str], *, fail: str = "") -> None:
        super().__init__()
        self.durable = durable
        self.fail = fail
        self.gate = anyio.Event()
        self.started: list[str] = []
        self.unjournaled: list[str] = []
        self.at_broker: dict[str, int] = {}  # symbol -> submits in progress
        self.most_at_once = 0
        self.overlapping_symbols: list[str] = []
        self.canceled: list[tuple[str, bool]] = []  # (coid, its submit had finished)

    async def submit(self, order: SubmitOrder) -> None:
        coid = order.client_order_id
        self.started.append(coid)
        if coid not in self.durable:
            self.unjournaled.append(coid)
        if self.at_broker.get(order.symbol):
            self.overlapping_symbols.append(order.symbol)
        self.at_broker[order.symbol] = self.at_broker.get(order.symbol, 0) + 1
        self.most_at_once = max(self.most_at_once, sum(self.at_broker.values()))
        try:
            if coid == self.fail:
                raise RuntimeError("the adapter broke")
            await self.gate.wait()
            await super().submit(order)
        finally:
            self.at_broker[order.symbol] -= 1

    async def cancel(self, client_order_id: str) -> None:
        self.canceled.append((client_order_id, client_order_id in self.submitted))


class Rig:
    """Risk's outbox (journal first, then execution's inbox), a recorder that commits
    whatever is queued, and the execution actor under test."""

    def __init__(self, broker: GatedBroker, *, max_in_flight: int = 8) -> None:
        self.inflight = InFlight()
        self.inbox: Channel[Message] = Channel("execution", 64, self.inflight)
        self.journal: Channel[JournalRecord] = Channel("recorder", 1024)
        self.commits = JournalCommits()
        self.risk = Outbox("risk", {SubmitOrder: [self.inbox], CancelOrder: [self.inbox]},
                           self.journal, self.commits)
        self.broker = broker
        self.transactions = 0
        # Closed: the recorder holds its transaction open until the test opens it.
        self.disk = anyio.Event()
        self.disk.set()
        self.out: Channel[Message] = Channel("out", 1024)
        out = self.out
        self.actor = ExecutionActor(
            self.inbox,
            Outbox("execution", {t: [out] for t in _EXECUTION_EMITS}, self.journal,
                   self.commits),
            broker=broker, now_ns=lambda: T, known_orders=list, max_in_flight=max_in_flight)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[TaskGroup]:
        """The recorder and the started actor in a task group, all within 10 s."""
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.record)
                await tg.start(self.actor.run)
                yield tg

    async def record(self) -> None:
        """The recorder's contract: a batch is durable once ``advance`` says so."""
        while True:
            batch = await self.journal.receive_batch()
            await self.disk.wait()
            for _, msg in batch:
                if isinstance(msg, SubmitOrder):
                    self.broker.durable.add(msg.client_order_id)
            self.transactions += 1
            self.commits.advance(self.commits.committed + len(batch))


_EXECUTION_EMITS = (AccountUpdated, PositionChanged, ReconciliationDone, OrderAccepted,
                    OrderFilled, OrderCanceled, OrderRejected, OrderExpired)


def _order(symbol: str, n: int = 1) -> SubmitOrder:
    return SubmitOrder(ts_ns=T + n, client_order_id=ClientOrderId(f"s:{symbol}:{T + n}:buy"),
                       strategy="s", symbol=symbol, side="buy", qty=1.0)


@pytest.mark.asyncio
async def test_orders_of_different_symbols_are_at_the_broker_at_once_each_journaled_first() -> None:
    """Five orders decided together: one journal commit, then all five at the broker at once."""
    broker = GatedBroker(set())
    rig = Rig(broker)
    async with rig.running() as tg:
        await anyio.wait_all_tasks_blocked()
        before = rig.transactions
        rig.disk = anyio.Event()  # a slow disk: nothing commits yet
        for symbol in ("AAPL", "IBM", "MSFT", "NVDA", "TSLA"):
            rig.risk.post(_order(symbol))
        await anyio.wait_all_tasks_blocked()
        assert broker.started == []  # not before the journal has them
        rig.disk.set()
        await anyio.wait_all_tasks_blocked()
        assert broker.most_at_once == 5
        assert rig.transactions == before + 1  # one barrier for the pass
        broker.gate.set()
        await anyio.wait_all_tasks_blocked()
        assert rig.inflight.count == 0
        tg.cancel_scope.cancel()
    assert broker.unjournaled == []
    assert sorted(broker.submitted) == sorted(broker.started)
    assert len(broker.submitted) == 5


@pytest.mark.asyncio
async def test_one_symbols_orders_reach_the_broker_one_after_another_in_risks_order() -> None:
    """A second order of a symbol waits for the first; other symbols do not wait."""
    broker = GatedBroker(set())
    rig = Rig(broker)
    first, second, other = _order("AAPL", 1), _order("AAPL", 2), _order("IBM", 3)
    async with rig.running() as tg:
        for cmd in (first, second, other):
            rig.risk.post(cmd)
        await anyio.wait_all_tasks_blocked()
        assert broker.started == [first.client_order_id, other.client_order_id]
        broker.gate.set()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert broker.overlapping_symbols == []
    assert broker.submitted.index(first.client_order_id) \
        < broker.submitted.index(second.client_order_id)


@pytest.mark.asyncio
async def test_a_cancel_goes_to_the_broker_only_after_its_orders_submit() -> None:
    """A cancel that overtakes its order's submit would be refused as unknown."""
    broker = GatedBroker(set())
    rig = Rig(broker)
    order = _order("AAPL")
    async with rig.running() as tg:
        rig.risk.post(order)
        rig.risk.post(CancelOrder(ts_ns=T, client_order_id=order.client_order_id))
        await anyio.wait_all_tasks_blocked()
        assert broker.canceled == []
        broker.gate.set()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert broker.canceled == [(order.client_order_id, True)]


@pytest.mark.asyncio
async def test_no_more_than_max_in_flight_commands_are_taken_the_rest_wait_in_the_inbox() -> None:
    """With room for two, three of five orders wait in the inbox (backpressure on risk)."""
    broker = GatedBroker(set())
    rig = Rig(broker, max_in_flight=2)
    async with rig.running() as tg:
        for symbol in ("AAPL", "IBM", "MSFT", "NVDA", "TSLA"):
            rig.risk.post(_order(symbol))
        await anyio.wait_all_tasks_blocked()
        assert broker.most_at_once == 2
        assert len(rig.inbox) == 3
        broker.gate.set()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert len(broker.submitted) == 5
    assert broker.most_at_once == 2
    assert broker.unjournaled == []


@pytest.mark.asyncio
async def test_a_command_repeated_while_its_order_is_at_the_broker_is_not_sent_again() -> None:
    """Send once: the client order id is claimed before the submit starts."""
    broker = GatedBroker(set())
    rig = Rig(broker)
    order = _order("AAPL")
    async with rig.running() as tg:
        rig.risk.post(order)
        await anyio.wait_all_tasks_blocked()
        rig.risk.post(order)
        rig.risk.post(order)
        await anyio.wait_all_tasks_blocked()
        broker.gate.set()
        await anyio.wait_all_tasks_blocked()
        assert rig.inflight.count == 0
        tg.cancel_scope.cancel()
    assert broker.started == [order.client_order_id]
    assert broker.submitted == [order.client_order_id]


@pytest.mark.asyncio
async def test_a_submit_that_raises_crashes_the_actor_and_the_unsent_orders_wait_in_order() -> None:
    """The failing order is dropped (logged); the others in flight go back, in risk's order."""
    orders = [_order(s, i) for i, s in enumerate(("AAPL", "IBM", "MSFT", "NVDA"))]
    broker = GatedBroker(set(), fail=orders[1].client_order_id)
    rig = Rig(broker)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.record)

            async def execution() -> None:
                # The actor's own task group (the update stream) wraps it.
                with pytest.raises(ExceptionGroup) as crashed:
                    await rig.actor.run()
                assert crashed.group_contains(RuntimeError, match="the adapter broke")

            tg.start_soon(execution)
            await anyio.wait_all_tasks_blocked()
            for cmd in orders:
                rig.risk.post(cmd)
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
    assert sorted(broker.started) == sorted(o.client_order_id for o in orders)
    assert broker.submitted == []
    back = []
    while len(rig.inbox):
        back.append(rig.inbox.receive_nowait())
    assert back == [orders[0], orders[2], orders[3]]
    assert rig.inflight.count == 3  # the dropped one is done; the rest still count


def _fill(symbol: str) -> OrderFilled:
    return OrderFilled(ts_ns=T, client_order_id=ClientOrderId(f"s:{symbol}:{T}:buy"),
                       symbol=symbol, execution_id=f"e-{symbol}", side="buy", qty=1.0,
                       price=100.0, commission_cents=0, cum_qty=1.0, avg_price=100.0,
                       status="filled")


@pytest.mark.asyncio
async def test_fills_that_arrive_together_share_one_commit_and_none_is_seen_before_it() -> None:
    """Five fills of one bar (market first books them together): nothing downstream sees
    any of them until the journal has committed them, and that is one commit, not five."""
    broker = GatedBroker(set())
    rig = Rig(broker)
    fills = [_fill(symbol) for symbol in ("AAPL", "IBM", "MSFT", "NVDA", "TSLA")]
    async with rig.running() as tg:
        await anyio.wait_all_tasks_blocked()
        _drain(rig.out)  # reconciliation's facts
        before = rig.transactions
        rig.disk = anyio.Event()  # a slow disk: nothing commits yet
        for fill in fills:
            assert broker.updates.try_send(fill)
        await anyio.wait_all_tasks_blocked()
        assert _drain(rig.out) == []  # not before the journal has them
        rig.disk.set()
        await anyio.wait_all_tasks_blocked()
        assert rig.transactions == before + 1
        assert _drain(rig.out) == fills  # all of them, in the broker's order
        tg.cancel_scope.cancel()


class _PoisonedExecution(ExecutionActor):
    def _admit(self, msg: Message) -> bool | None:
        if isinstance(msg, OrderFilled) and msg.symbol == "IBM":
            raise ValueError("a bug in the state machine")
        return super()._admit(msg)


@pytest.mark.asyncio
async def test_an_update_the_actor_crashes_on_is_dropped_and_the_rest_of_its_batch_waits() -> None:
    """The fills before and after the poison one are neither lost nor sent on half-booked:
    they wait, in order, for the next incarnation (which starts from a reconciliation)."""
    broker = GatedBroker(set())
    rig = Rig(broker)
    actor = _PoisonedExecution(
        rig.inbox, Outbox("execution", {t: [rig.out] for t in _EXECUTION_EMITS}, rig.journal,
                          rig.commits),
        broker=broker, now_ns=lambda: T, known_orders=list)
    fills = [_fill("AAPL"), _fill("IBM"), _fill("MSFT")]

    async def crash() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(rig.record)
            await tg.start(actor.run)
            await anyio.wait_all_tasks_blocked()
            _drain(rig.out)
            for fill in fills:
                assert broker.updates.try_send(fill)

    with anyio.fail_after(10), pytest.raises(ExceptionGroup) as crashed:
        await crash()
    assert "a bug in the state machine" in repr(crashed.value.exceptions)
    assert [m for m in _drain(rig.out) if isinstance(m, OrderFilled)] == []
    assert _drain(broker.updates) == [fills[0], fills[2]]
