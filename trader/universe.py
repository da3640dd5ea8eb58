"""Universe changes in a replay: when a symbol whose data ends is delisted.

A symbol may start late (an IPO) or stop early (a delisting, a merger). A
late start needs nothing: the strategy builds a symbol's indicators from its
first bar, so nothing about it exists before then. An early stop does: a
position held in it would otherwise stay open, marked at a price that never
moves again, until the replay ends.

The rule: a symbol whose last bar closes on New York day *D* is delisted at
the first bar timestamp of the replay on a later day — the first moment at
which "it did not trade" is a fact (the market has opened again, and it is
not there). Not at its last bar: no one knew then that it was the last, and
acting on it would be look-ahead. A symbol whose last bar is on the replay's
last day is not delisted: the data simply ends.

What happens at that moment (the simulated exchange's
:meth:`~trader.brokers.simulated.Exchange.delist`, driven by the replay feed)
is in DESIGN.md, "Universe changes".

What it is not: a corporate-actions feed. Live, the broker says what happened
to a position (reconciliation); there is no delisting event on the wire.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from trader import calendar

__all__ = ["Delistings"]

I64 = npt.NDArray[np.int64]
_NONE: Mapping[str, int] = MappingProxyType({})


class Delistings:
    """Where, in a replay's merged bars, symbols are delisted.

    Args:
        ts: the merged bars' close times, ascending.
        sym: each bar's index into ``symbols``.
        symbols: the symbol names.
    """

    def __init__(self, ts: I64, sym: npt.NDArray[np.int32], symbols: Sequence[str]) -> None:
        by_index: dict[int, dict[str, int]] = {}
        n = len(ts)
        if n:
            # The last occurrence of each symbol: the first in the reversed arrays.
            seen, first_rev = np.unique(sym[::-1], return_index=True)
            for k, rev in zip(seen.tolist(), first_rev.tolist(), strict=True):
                last_ts = int(ts[n - 1 - rev])
                # The first bar closing after midnight New York at the end of the
                # last bar's day (a bar closing at midnight belongs to the day before).
                day = calendar.ny_date(last_ts - 1)
                midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0),
                                               tzinfo=calendar.NEW_YORK)
                after = int(midnight.timestamp()) * 1_000_000_000
                i = int(np.searchsorted(ts, after, side="right"))
                if i < n:
                    by_index.setdefault(i, {})[symbols[k]] = last_ts
        self._at = {i: dict(sorted(names.items())) for i, names in by_index.items()}
        self._indices = sorted(self._at)

    def __len__(self) -> int:
        return len(self._at)

    def at(self, i: int) -> Mapping[str, int]:
        """The symbols delisted just before the bars starting at merged index ``i``, each
        with the close time of its last bar."""
        return self._at.get(i, _NONE)

    def next_after(self, i: int, default: int) -> int:
        """The first index after ``i`` where symbols are delisted, or ``default``.

        A replay batch must end there, so that the delisting happens between
        the same two bars whatever the batch size.
        """
        # bisect on a list: asked at every replay step, where numpy's
        # per-call overhead would cost more than the search.
        k = bisect.bisect_right(self._indices, i)
        return self._indices[k] if k < len(self._indices) else default
