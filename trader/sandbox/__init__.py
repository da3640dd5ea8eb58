"""``trader sandbox``: a local exchange that speaks Alpaca's REST and websocket protocols.

The real alpaca-py clients (and the daemon's own Alpaca adapter) point their
``url_override`` at it and trade against replay data, with fills computed by
:class:`trader.brokers.simulated.Exchange`: the same code replay uses.

Public names: :class:`Sandbox` (embed it), :class:`FaultConfig` (misbehave on
purpose), :class:`ClockNotManual`. Everything else is internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trader.sandbox.app import Sandbox
    from trader.sandbox.faults import FaultConfig
    from trader.sandbox.market import ClockNotManual

__all__ = ["ClockNotManual", "FaultConfig", "Sandbox"]

_HOMES = {"Sandbox": "app", "FaultConfig": "faults", "ClockNotManual": "market"}


def __getattr__(name: str) -> Any:
    # Imported on first use: the server pulls in aiohttp, which every other
    # command (a replay, the CLI's parser) would otherwise pay for at start.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
