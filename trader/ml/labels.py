"""Triple-barrier labels: did a signal's trade reach its take profit first?

A signal at bar ``k`` of a symbol is traded as the market would trade it: the
order fills at the **open of bar k+1** (the simulated broker's rule). From
that entry, three barriers:

* take profit at ``entry ± take_profit x width`` (label 1);
* stop loss at ``entry ∓ stop_loss x width`` (label 0);
* a time limit of ``max_bars`` bars from the entry bar (label 0: the trade
  did not pay within its time).

``width`` is a price distance known at the signal (training uses ATR14 x
close, the ``atr_14`` feature). The path of prices inside a bar is unknown, so
a bar that touches both barriers counts as the stop (the pessimistic reading).
A signal whose data ends before any barrier is reached is left unlabeled.

The label's end (the bar where it was decided) matters as much as the label:
the walk-forward splits purge training samples whose label window reaches
into a test period (:mod:`trader.ml.splits`).

Pure functions over numpy columns; no I/O.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np
import numpy.typing as npt

Barrier = Literal["take_profit", "stop_loss", "time"]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """One labeled signal.

    Attributes:
        label: 1 if the take profit was hit first, else 0.
        exit_index: index of the bar (in the symbol's columns) that decided it.
        barrier: which barrier decided it.
        entry: the entry price (the open of the bar after the signal).
    """

    label: int
    exit_index: int
    barrier: Barrier
    entry: float


def triple_barrier(
    *,
    signal_index: int,
    direction: int,
    width: float,
    open_: npt.NDArray[np.float64],
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    take_profit: float,
    stop_loss: float,
    max_bars: int,
) -> Outcome | None:
    """Label the signal at ``signal_index`` of one symbol's bars.

    Args:
        signal_index: the bar whose close produced the signal.
        direction: +1 for a long target, -1 for a short one.
        width: the barrier unit in price (e.g. ATR), > 0.
        open_, high, low: the symbol's columns.
        take_profit, stop_loss: barrier distances in units of ``width``.
        max_bars: the time limit in bars, counting the entry bar.

    Returns:
        The outcome, or None when the data ends before it is decided (or
        ``width`` is not a positive number).

    Raises:
        ValueError: ``direction`` is not +1 or -1.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, not {direction}")
    if not width > 0.0:  # also catches NaN
        return None
    first = signal_index + 1
    n = len(open_)
    if first >= n:
        return None
    entry = float(open_[first])
    if direction > 0:
        upper, lower = entry + take_profit * width, entry - stop_loss * width
    else:
        upper, lower = entry + stop_loss * width, entry - take_profit * width
    last = min(first + max_bars, n)
    for i in range(first, last):
        hit_up = high[i] >= upper
        hit_down = low[i] <= lower
        if not (hit_up or hit_down):
            continue
        stopped = hit_down if direction > 0 else hit_up
        if stopped:  # both touched: the stop, since the order inside the bar is unknown
            return Outcome(label=0, exit_index=i, barrier="stop_loss", entry=entry)
        return Outcome(label=1, exit_index=i, barrier="take_profit", entry=entry)
    if first + max_bars > n:
        return None  # the data ends before the time limit
    return Outcome(label=0, exit_index=first + max_bars - 1, barrier="time", entry=entry)
