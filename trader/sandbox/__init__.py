"""``trader sandbox``: a local exchange that speaks Alpaca's REST and websocket protocols.

The real alpaca-py clients (and the daemon's own Alpaca adapter) point their
``url_override`` at it and trade against replay data, with fills computed by
:class:`trader.brokers.simulated.Exchange`: the same code replay uses.

Public names: :class:`Sandbox` (embed it), :class:`FaultConfig` (misbehave on
purpose), :class:`ClockNotManual`. Everything else is internal.
"""

from __future__ import annotations

from trader.sandbox.app import Sandbox
from trader.sandbox.faults import FaultConfig
from trader.sandbox.market import ClockNotManual

__all__ = ["ClockNotManual", "FaultConfig", "Sandbox"]
