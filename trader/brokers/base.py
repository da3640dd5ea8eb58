"""The broker port: what the execution actor needs from any broker.

Adapters: :class:`trader.brokers.simulated.SimulatedBroker` (replay) and the
Alpaca adapter (live and sandbox). Every adapter reports order updates as the
graph's own messages (``OrderAccepted``, ``OrderFilled``, ...) on its
``updates`` channel, so the execution actor cannot tell them apart.

Errors: a definite refusal raises :class:`~trader.errors.BrokerRejected`
(the actor records an ``OrderRejected``); a transient fault raises
:class:`~trader.errors.BrokerUnavailable` (the adapter has already retried).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

import anyio
import msgspec
from anyio.abc import TaskStatus

from trader.channels import Channel
from trader.messages import Message, SubmitOrder


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's view of the account, in cents."""

    cash_cents: int
    equity_cents: int
    buying_power_cents: int


class PositionState(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's view of one position."""

    symbol: str
    qty: float
    avg_price: float
    cost_cents: int


class OrderState(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's view of one order, for reconciliation and polling."""

    broker_order_id: str
    client_order_id: str
    symbol: str
    side: str
    status: str
    qty: float | None
    filled_qty: float
    filled_avg_price: float | None
    parent_client_order_id: str = ""
    """For a bracket's leg: the client order id of the entry it closes."""


class Broker(Protocol):
    """The port. ``updates`` carries order events as graph messages.

    ``durable_updates`` says whether the broker outlives this process. If it
    does (Alpaca, the sandbox), a fill must be committed to the journal
    before anyone acts on it, or a crash could lose what the broker already
    executed. The in-process simulated broker dies with the process, so its
    fills need only be journaled in order, not waited for.
    """

    updates: Channel[Message]
    durable_updates: bool

    async def stream(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the broker's order updates onto ``updates`` until cancelled.

        Calls ``task_status.started()`` once the update stream is listening:
        the execution actor sends no order before that. Reconnects by itself;
        it returns only when cancelled.
        """
        ...

    async def sync(self, symbols: Collection[str]) -> None:
        """Make sure every update so far for open orders in ``symbols`` is on ``updates``.

        The live feed calls this before it releases a bar, so a fill that
        happened during the bar is booked before the strategy and risk see
        the bar (the order replay guarantees by construction). Costs a lookup
        per open order of those symbols; nothing when none is open.
        """
        ...

    async def submit(self, order: SubmitOrder) -> None:
        """Send an order; its acceptance arrives on ``updates``.

        Raises:
            BrokerRejected: the broker refused it (including a duplicate client order id).
            BrokerUnavailable: transient failure after retries.
        """
        ...

    async def cancel(self, client_order_id: str) -> None:
        ...

    async def account(self) -> AccountState:
        ...

    async def positions(self) -> list[PositionState]:
        ...

    async def open_orders(self) -> list[OrderState]:
        ...

    async def order(self, client_order_id: str) -> OrderState | None:
        ...
