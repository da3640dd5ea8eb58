"""Strategies: small classes that turn bars into target weights.

A strategy is chosen in config by name (``sma_cross``, ``breakout``) or by a
dotted path ``package.module:Class``. It declares its parameters as a frozen
``msgspec.Struct`` (``Params``), validated when the config is loaded, so a bad
parameter is a config error naming ``$.strategy.params.<field>``.
"""

from __future__ import annotations

import importlib
from typing import Any

import msgspec

from trader.errors import ConfigError
from trader.strategies.base import Strategy
from trader.strategies.breakout import Breakout
from trader.strategies.sma_cross import SmaCross

BUILTIN: dict[str, type[Any]] = {"sma_cross": SmaCross, "breakout": Breakout}


def resolve(name: str) -> type[Any]:
    """Find a strategy class by builtin name or ``module:Class`` path.

    Raises:
        ConfigError: unknown name or unimportable path.
    """
    if name in BUILTIN:
        return BUILTIN[name]
    module_name, sep, attr = name.partition(":")
    if not sep:
        raise ConfigError(
            f"$.strategy.name: unknown strategy {name!r} "
            f"(builtins: {', '.join(sorted(BUILTIN))}; or use package.module:Class)"
        )
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"$.strategy.name: cannot import {name!r}: {exc}") from None
    if not isinstance(cls, type):
        raise ConfigError(f"$.strategy.name: {name!r} is not a class")
    return cls


def build(name: str, params: dict[str, Any]) -> Strategy:
    """Instantiate a strategy with validated parameters.

    Raises:
        ConfigError: unknown strategy or invalid parameters (naming the field).
    """
    cls = resolve(name)
    try:
        p = msgspec.convert(params, type=cls.Params)
    except msgspec.ValidationError as exc:
        text = str(exc)
        message, sep, where = text.rpartition(" - at ")
        field = "$.strategy.params"
        if sep:
            field = where.strip("`").replace("$", field, 1)
        raise ConfigError(f"{field}: {message if sep else text}") from None
    strategy: Strategy = cls(p)
    return strategy
