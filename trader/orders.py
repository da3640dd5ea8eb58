"""Client order ids and the order state machine.

Client order ids are deterministic: ``{instance}:{symbol}:{signal ts}:{intent}``.
They depend only on the strategy instance named in config, the symbol, the
signal's time and what the order is for, never on the process or the run.
So an order re-sent after a crash carries the id the broker already knows,
and the broker's uniqueness check turns the resend into a lookup, never into
a second order.

Order states (Alpaca's, as seen by the execution actor)::

    pending_new ──▶ new ──▶ partially_filled ──▶ filled
         │           │            │
         └───────────┴────────────┴──▶ canceled | rejected | expired | replaced

Terminal states never change again; an update that would move an order out
of a terminal state is ignored and logged.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from trader.messages import ClientOrderId

OrderPhase = Literal[
    "pending_new", "new", "partially_filled", "filled", "canceled", "rejected", "expired",
    "replaced",
]
TERMINAL: frozenset[str] = frozenset({"filled", "canceled", "rejected", "expired", "replaced"})

_ALLOWED: dict[str, frozenset[str]] = {
    "pending_new": frozenset(
        {"new", "partially_filled", "filled", "canceled", "rejected", "expired", "replaced"}
    ),
    "new": frozenset({"partially_filled", "filled", "canceled", "expired", "replaced", "rejected"}),
    "partially_filled": frozenset(
        {"partially_filled", "filled", "canceled", "expired", "replaced"}
    ),
}


def client_order_id(instance: str, symbol: str, signal_ts_ns: int, intent: str) -> ClientOrderId:
    """The deterministic id of the order ``intent`` (e.g. ``buy``) made for a signal."""
    coid = f"{instance}:{symbol}:{signal_ts_ns}:{intent}"
    if len(coid) > 128:  # Alpaca's limit; instance names are the only long part
        raise ValueError(f"client order id longer than 128 characters: {coid!r}")
    return ClientOrderId(coid)


class TrackedOrder(msgspec.Struct, kw_only=True):
    """What the execution actor knows of one order."""

    client_order_id: str
    symbol: str
    phase: OrderPhase = "pending_new"
    broker_order_id: str = ""
    filled_qty: float = 0.0
    submitted_ns: int = 0


def can_move(current: str, new: str) -> bool:
    """Whether the state machine allows ``current`` → ``new``."""
    return new in _ALLOWED.get(current, frozenset())
