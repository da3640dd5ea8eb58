"""Sizing: how much of a symbol a signal asks for, in cents. Pure functions.

``[risk] sizing`` picks the rule (see DESIGN.md, "Life of an order"):

* ``target_weight``: hold ``weight x equity``;
* ``fixed_notional``: hold ``sign(weight) x fixed_notional_usd``;
* ``fixed_fraction``: hold ``weight x fixed_fraction x equity``;
* ``volatility_target``: hold ``floor(|weight| x risk_per_position_usd /
  (ATR x atr_multiple))`` whole shares, signed like the weight: a move of
  ``atr_multiple`` ATRs against the position costs about the risk budget.

**Confidence.** When the scorer attached a probability ``p`` to the signal
(``SignalScored.probability`` is not None), the target is multiplied by
``p`` clipped to [0, 1]: a 0.8 probability holds 80% of what the rule alone
would. Unscored signals (``p`` is None) are not scaled. An exit (weight 0)
stays an exit whatever ``p`` is.

**Whole shares.** Volatility targets are whole shares by construction
(rounded down, one rounding). The other rules give a dollar target; the risk
actor turns an increase into a notional buy that the broker fills in whole
shares rounded down, and a decrease into a share quantity rounded down. So
every order is for whole shares, and rounding never makes a position larger
than its rule asked.

This module is not the checks (:mod:`trader.risk_checks`) and keeps no state
apart from :class:`Atr`, the running indicator the rule needs.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal

from trader.config import RiskConfig
from trader.money import to_cents, value_cents


def confidence(probability: float | None) -> float:
    """The factor a scorer's probability applies to a target: ``p`` in [0, 1], 1 if unscored."""
    if probability is None:
        return 1.0
    if probability != probability:  # NaN: a broken score must not size anything
        return 0.0
    return min(max(probability, 0.0), 1.0)


def volatility_shares(budget_cents: int, atr: float, atr_multiple: float) -> int:
    """Whole shares whose loss over ``atr_multiple`` ATRs fits ``budget_cents``.

    ``floor(budget / (atr x k))`` in decimal arithmetic on the inputs' shortest
    reprs, so the one rounding is exact: ``shares x atr x k <= budget`` and one
    more share would not fit. Zero for a non-positive ATR or budget.
    """
    if budget_cents <= 0 or not atr > 0 or not atr_multiple > 0:
        return 0
    per_share = Decimal(repr(atr)) * Decimal(repr(atr_multiple))
    shares = (Decimal(budget_cents) / 100 / per_share).to_integral_value(rounding=ROUND_FLOOR)
    return int(shares)


def target_cents(
    cfg: RiskConfig,
    weight: float,
    equity_cents: int,
    price: float,
    *,
    atr: float | None = None,
    probability: float | None = None,
) -> int | None:
    """The position value in cents that ``cfg.sizing`` asks for.

    Returns:
        The signed target; None when ``volatility_target`` has no ATR yet
        (not enough bars) for an entry.
    """
    if weight == 0:
        return 0
    c = confidence(probability)
    if cfg.sizing == "fixed_notional":
        return int(math.copysign(round(to_cents(cfg.fixed_notional_usd) * c), weight))
    if cfg.sizing == "fixed_fraction":
        return round(weight * cfg.fixed_fraction * equity_cents * c)
    if cfg.sizing == "volatility_target":
        if atr is None:
            return None
        budget = round(abs(weight) * to_cents(cfg.risk_per_position_usd) * c)
        shares = volatility_shares(budget, atr, cfg.atr_multiple)
        return int(math.copysign(value_cents(float(shares), price), weight))
    return round(weight * equity_cents * c)


class Atr:
    """Average true range of one symbol with Wilder's smoothing, O(1) per bar.

    The first ``period`` true ranges are averaged; after that
    ``atr = (atr x (period - 1) + tr) / period``. The first bar's true range
    is its high - low (there is no previous close).
    """

    __slots__ = ("_n", "_prev_close", "_sum", "period", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self.value: float | None = None
        self._prev_close: float | None = None
        self._sum = 0.0
        self._n = 0

    def update(self, high: float, low: float, close: float) -> float | None:
        prev = self._prev_close
        tr = high - low if prev is None else max(high - low, abs(high - prev), abs(low - prev))
        self._prev_close = close
        if self.value is not None:
            self.value = (self.value * (self.period - 1) + tr) / self.period
        else:
            self._sum += tr
            self._n += 1
            if self._n == self.period:
                self.value = self._sum / self.period
        return self.value
