"""Walk-forward splits, purged and embargoed (López de Prado, AFML ch. 7).

A labeled sample spans an interval ``[t0, t1]``: from the signal to the bar
that decided its label. Two samples whose intervals overlap share future
prices, so a model trained on one and tested on the other has seen part of
the answer. So:

* **walk-forward**: samples are ordered by ``t0`` and cut into ``folds + 1``
  contiguous blocks; fold ``k`` tests on block ``k`` and trains only on what
  came before (block 0 only ever trains);
* **purged**: a training sample whose label window reaches the test period is
  dropped;
* **embargoed**: so is one whose label ends within ``embargo`` of the first
  test sample (serial correlation outlives the label window).

Together: every training sample ``i`` and every test sample ``j`` of a split
satisfy ``t1[i] + embargo < t0[j]`` (``tests/test_ml_train.py`` checks this
property with hypothesis). Times are any integer clock; training uses the
index of the bar timestamp in the universe, so ``embargo`` counts bars.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Index = npt.NDArray[np.intp]


def walk_forward_splits(
    t0: npt.ArrayLike, t1: npt.ArrayLike, *, folds: int, embargo: int
) -> list[tuple[Index, Index]]:
    """The ``(train, test)`` index arrays of each usable fold, oldest first.

    Args:
        t0: when each sample starts (its signal), any order.
        t1: when each sample's label was decided (``t1 >= t0``).
        folds: how many test blocks (the samples are cut into ``folds + 1``).
        embargo: the gap, in the units of ``t0``/``t1``, left between the end
            of every training label and the start of the test block.

    Returns:
        One pair of ascending index arrays into ``t0`` per fold whose training
        and test sets are both non-empty; fewer than ``folds`` when the data
        is too short.

    Raises:
        ValueError: mismatched lengths, ``t1 < t0``, ``folds < 1`` or a
            negative embargo.
    """
    start = np.asarray(t0, dtype=np.int64)
    end = np.asarray(t1, dtype=np.int64)
    if start.shape != end.shape or start.ndim != 1:
        raise ValueError("t0 and t1 must be 1-d arrays of the same length")
    if folds < 1:
        raise ValueError(f"folds must be >= 1, not {folds}")
    if embargo < 0:
        raise ValueError(f"embargo must be >= 0, not {embargo}")
    if np.any(end < start):
        raise ValueError("every t1 must be >= its t0")
    n = len(start)
    order = np.argsort(start, kind="stable")
    bounds = [(n * b) // (folds + 1) for b in range(folds + 2)]
    out: list[tuple[Index, Index]] = []
    for k in range(1, folds + 1):
        test = order[bounds[k] : bounds[k + 1]]
        if not len(test):
            continue
        test_start = start[test].min()
        before = order[: bounds[k]]
        train = before[end[before] + embargo < test_start]
        if len(train):
            out.append((np.sort(train).astype(np.intp), np.sort(test).astype(np.intp)))
    return out
