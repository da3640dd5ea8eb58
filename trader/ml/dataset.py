"""The training set: every historical signal of the configured strategy, with
its features and its triple-barrier label.

The bars are those a replay of the same config would see (``[data]``: dir,
symbols, start, end), merged in (time, symbol) order by the replay's own
:class:`~trader.replay.MergedBars`. Each bar goes through the strategy's pure
``on_bar`` and through a :class:`~trader.ml.features.FeatureEngine`, exactly as
the strategy and scorer actors do; a signal's feature row is read right after
its bar, which is the row the scorer reads when it scores that signal live.

Only signals with a non-zero target weight are samples: the scorer gates
entries and changes of exposure, never an exit (a model must not be able to
hold a position open). Nor are signals whose features are still warming up
(a NaN in the row): the scorer does not score those either, so the model
never has to judge what it was not trained on. Labels look only at bars
inside the configured window, never past ``data.end``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from trader.config import Config
from trader.data.bars import load_dir
from trader.ml.features import FEATURE_NAMES, FeatureEngine
from trader.ml.labels import triple_barrier
from trader.replay import MergedBars
from trader.strategies import build as build_strategy

_ATR = FEATURE_NAMES.index("atr_14")
_BLOCK = 16384


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labeled signals, one row each, in signal order.

    Attributes:
        X: feature rows, ``(n, len(FEATURE_NAMES))`` float64, all finite.
        y: labels, 1 = take profit first.
        t0: the signal's bar timestamp as an index into the universe's timestamps.
        t1: the label's deciding bar, same clock (so ``t1 - t0`` counts bars).
        ts_ns: the signal's close time.
        symbols: the signal's symbol per row.
        direction: +1 long target, -1 short target.
        signals: every signal the strategy emitted (exits and unlabeled included).
        warming_up: entries left out because a feature was still NaN.
        unlabeled: warmed-up entries left out because the data ends before their label.
        data_dir, data_symbols, data_hash: what the bars were.
    """

    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int64]
    t0: npt.NDArray[np.int64]
    t1: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    symbols: tuple[str, ...]
    direction: npt.NDArray[np.int64]
    signals: int
    warming_up: int
    unlabeled: int
    data_dir: str
    data_symbols: tuple[str, ...]
    data_hash: str

    def __len__(self) -> int:
        return len(self.y)


def load_bars(config: Config) -> tuple[MergedBars, str]:
    """The merged bars of ``config.data`` and the hash of the files they came from.

    Raises:
        DataError: a bad data file, a missing symbol or directory.
        ConfigError: bad ``data.start``/``data.end``.
    """
    from trader.runner import _date_bound_ns  # the replay's own reading of the bounds

    tables, reports = load_dir(
        Path(config.data.dir),
        on_bad_row=config.data.on_bad_row,
        symbols=list(config.data.symbols) or None,
    )
    # The same hash a replay records in its runs row, so the two can be matched.
    data_hash = hashlib.sha256("".join(sorted(r.sha256 for r in reports)).encode()).hexdigest()
    start_ns = _date_bound_ns(config.data.start, end=False, field="$.data.start")
    end_ns = _date_bound_ns(config.data.end, end=True, field="$.data.end")
    return MergedBars(tables, start_ns, end_ns), data_hash


def build_dataset(config: Config) -> Dataset:
    """Run the strategy and the feature engine over the configured bars and label the signals.

    Raises:
        DataError: as :func:`load_bars`.
        ConfigError: bad dates or strategy parameters.
    """
    merged, data_hash = load_bars(config)
    spec = config.scorer.train
    strategy = build_strategy(config.strategy.name, config.strategy.params)
    engine = FeatureEngine()
    n_symbols = len(merged.symbols)
    # Each bar's position among its own symbol's bars, for the forward look.
    position = np.empty(len(merged), dtype=np.int64)
    counts = np.zeros(n_symbols, dtype=np.int64)
    for i, s in enumerate(merged.sym.tolist()):
        position[i] = counts[s]
        counts[s] += 1

    rows: list[tuple[float, ...]] = []
    where: list[int] = []  # index into merged of each entry signal
    directions: list[int] = []
    signals = 0
    warming_up = 0
    for i in range(0, len(merged), _BLOCK):
        j = min(i + _BLOCK, len(merged))
        for k, bar in enumerate(merged.bars(i, j), start=i):
            engine.update(bar)
            weight = strategy.on_bar(bar)
            if weight is None:
                continue
            signals += 1
            if weight == 0.0:
                continue
            row = engine.row(bar.symbol)
            if not all(map(math.isfinite, row)):
                warming_up += 1
                continue
            rows.append(row)
            where.append(k)
            directions.append(1 if weight > 0 else -1)

    timeline = np.unique(merged.ts)
    per_symbol = [np.flatnonzero(merged.sym == s) for s in range(n_symbols)]
    opens, highs, lows, closes = merged.cols[0], merged.cols[1], merged.cols[2], merged.cols[3]
    columns = [(opens[ix], highs[ix], lows[ix]) for ix in per_symbol]
    keep: list[int] = []
    labels: list[int] = []
    ends: list[int] = []
    for n, (k, row, direction) in enumerate(zip(where, rows, directions, strict=True)):
        s = int(merged.sym[k])
        o, h, lo = columns[s]
        outcome = triple_barrier(
            signal_index=int(position[k]), direction=direction,
            width=row[_ATR] * float(closes[k]), open_=o, high=h, low=lo,
            take_profit=spec.take_profit_atr, stop_loss=spec.stop_loss_atr,
            max_bars=spec.max_bars,
        )
        if outcome is None:
            continue
        keep.append(n)
        labels.append(outcome.label)
        ends.append(int(merged.ts[per_symbol[s][outcome.exit_index]]))

    ix = np.asarray([where[n] for n in keep], dtype=np.int64)
    ts = merged.ts[ix].astype(np.int64)
    X = np.asarray([rows[n] for n in keep], dtype=np.float64).reshape(-1, len(FEATURE_NAMES))
    return Dataset(
        X=X,
        y=np.asarray(labels, dtype=np.int64),
        t0=np.searchsorted(timeline, ts).astype(np.int64),
        t1=np.searchsorted(timeline, np.asarray(ends, dtype=np.int64)).astype(np.int64),
        ts_ns=ts,
        symbols=tuple(merged.symbols[int(merged.sym[k])] for k in ix.tolist()),
        direction=np.asarray([directions[n] for n in keep], dtype=np.int64),
        signals=signals,
        warming_up=warming_up,
        unlabeled=len(where) - len(keep),
        data_dir=config.data.dir,
        data_symbols=tuple(merged.symbols),
        data_hash=data_hash,
    )
