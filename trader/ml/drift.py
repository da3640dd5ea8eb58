"""Drift: how far the live features and scores have moved from the training window.

The measure is the **population stability index** of each feature and of the
model's score::

    PSI = Σ_b (a_b - e_b) · ln(a_b / e_b)

over the bins ``b`` of the training distribution, where ``e_b`` is the share
of the training rows in bin ``b`` and ``a_b`` the share of the live rows. A
share of zero is floored at :data:`PSI_FLOOR` (the log would be infinite). The
usual reading: under 0.1 stable, 0.1–0.25 moving, over 0.25 shifted
(``[scorer] drift_psi_threshold``, default 0.25).

* **Reference** (:func:`build_reference`, at training time): the bin edges
  are the deciles (``[scorer.train] drift_bins``) of the training rows, the
  proportions are the training rows' shares of those bins. It is stored in
  the model's manifest (``Manifest.drift``); a manifest written before drift
  monitoring has none and its model runs unmonitored.
* **Live** (:class:`RollingPsi`): the last ``[scorer] drift_window_signals``
  rows the scorer scored. The population is the same as the reference's
  (entry signals with warmed-up features), which is why the window counts
  scored signals, not bars: the rows of every bar would be another
  distribution than the rows at signals. Counts are kept per bin and each
  bin's PSI term is updated only when its count changes, so a new row costs
  a bisect and two terms per feature, never a pass over the window.

Bins are closed on the right: edges ``e_0 < e_1 < ...`` make the bins
``(-inf, e_0], (e_0, e_1], ..., (e_k, +inf)``, in training (numpy's
``searchsorted(side="left")``) and live (``bisect_left``) alike.

This module only measures. The scorer decides what a breach means
(:mod:`trader.actors.scorer`), training builds the reference
(:mod:`trader.ml.train`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from typing import Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

#: The smallest share a bin can have in the formula (an empty bin's log is infinite).
PSI_FLOOR: Final = 1e-4

#: A breach episode ends when every PSI is back under this share of the threshold:
#: a PSI hovering at the threshold must not open a new episode every few signals.
CLEAR_RATIO: Final = 0.8

#: Once the window is full, a :class:`DriftMonitor` reports every window / this
#: many rows (the gauges lag by at most a quarter of a window).
REPORTS_PER_WINDOW: Final = 4

_RESUM_EVERY: Final = 4096

SCORE: Final = "score"
"""The name of the score's distribution among the breached names."""


class Reference(msgspec.Struct, frozen=True, kw_only=True):
    """One training distribution: the interior bin edges and each bin's share.

    ``len(proportions) == len(edges) + 1`` and the proportions sum to 1.
    """

    edges: tuple[float, ...]
    proportions: tuple[float, ...]


class DriftReference(msgspec.Struct, frozen=True, kw_only=True):
    """The training window's distributions, as stored in a model manifest.

    ``features`` maps each feature name to its reference; ``score`` is the
    distribution of the fitted model's probabilities on its own training rows.
    """

    bins: int
    rows: int
    features: dict[str, Reference]
    score: Reference


def reference(values: npt.ArrayLike, bins: int) -> Reference:
    """Quantile bins of ``values`` and the share of ``values`` in each.

    Repeated quantiles (a feature with few distinct values) collapse into one
    edge, so a bin is never empty by construction.

    Raises:
        ValueError: no values, a non-finite value, or ``bins < 2``.
    """
    x = np.asarray(values, dtype=np.float64)
    if bins < 2:
        raise ValueError(f"bins must be >= 2, not {bins}")
    if x.ndim != 1 or not len(x) or not np.isfinite(x).all():
        raise ValueError("a reference needs a non-empty 1-d array of finite values")
    quantiles = np.quantile(x, np.arange(1, bins) / bins)
    edges = np.unique(quantiles)
    counts = np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1)
    return Reference(edges=tuple(float(e) for e in edges),
                     proportions=tuple(float(c) / len(x) for c in counts))


def build_reference(
    X: npt.NDArray[np.float64], scores: npt.ArrayLike, names: Sequence[str], *, bins: int
) -> DriftReference:
    """The reference of every column of ``X`` (named by ``names``) and of ``scores``."""
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X has shape {X.shape}, expected (n, {len(names)})")
    return DriftReference(
        bins=bins,
        rows=int(X.shape[0]),
        features={name: reference(X[:, k], bins) for k, name in enumerate(names)},
        score=reference(scores, bins),
    )


def psi(expected: Sequence[float], actual: Sequence[float], *, floor: float = PSI_FLOOR) -> float:
    """The population stability index of ``actual`` shares against ``expected`` shares.

    Raises:
        ValueError: the two have different lengths.
    """
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} expected shares but {len(actual)} actual ones")
    pairs = zip(expected, actual, strict=True)
    return math.fsum(_term(max(e, floor), max(a, floor)) for e, a in pairs)


def _term(e: float, a: float) -> float:
    return (a - e) * math.log(a / e)


class RollingPsi:
    """The PSI of the last ``window`` values against one :class:`Reference`, O(1) per value.

    :attr:`value` is None until the window is full: a PSI over a handful of
    values would breach on noise.
    """

    __slots__ = ("_buf", "_counts", "_edges", "_expected", "_since", "_terms", "_total",
                 "_window")

    def __init__(self, ref: Reference, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window}")
        self._edges = list(ref.edges)
        self._expected = [max(p, PSI_FLOOR) for p in ref.proportions]
        self._window = window
        self._buf: deque[int] = deque()
        self._counts = [0] * len(self._expected)
        self._terms = [0.0] * len(self._expected)
        self._total = 0.0
        self._since = 0

    def push(self, x: float) -> None:
        """Add one value (evicting the oldest once the window is full)."""
        b = bisect_left(self._edges, x)
        buf, counts = self._buf, self._counts
        buf.append(b)
        counts[b] += 1
        n = len(buf)
        if n > self._window:
            old = buf.popleft()
            counts[old] -= 1
            if old != b:
                self._retally(old)
                self._retally(b)
            self._since += 1
            if self._since >= _RESUM_EVERY:
                # The running total drifts by rounding; the terms themselves
                # are always recomputed from exact counts.
                self._total = math.fsum(self._terms)
                self._since = 0
        elif n == self._window:
            for k in range(len(counts)):
                self._terms[k] = self._term_of(k)
            self._total = math.fsum(self._terms)

    def _term_of(self, k: int) -> float:
        return _term(self._expected[k], max(self._counts[k] / self._window, PSI_FLOOR))

    def _retally(self, k: int) -> None:
        new = self._term_of(k)
        self._total += new - self._terms[k]
        self._terms[k] = new

    @property
    def value(self) -> float | None:
        """The PSI of the window, or None while it is filling."""
        return self._total if len(self._buf) >= self._window else None

    @property
    def shares(self) -> list[float]:
        """Each bin's share of the values seen (of the window, once full)."""
        n = len(self._buf)
        return [c / n if n else 0.0 for c in self._counts]


class DriftSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Every PSI of a full window, and which of them are past the threshold."""

    features: tuple[str, ...]
    feature_psi: tuple[float, ...]
    score_psi: float
    breached: tuple[str, ...]


class DriftMonitor:
    """Rolling PSIs of one model's features and score, and its breach episodes.

    Feed it each scored row with its score (:meth:`observe`), then ask
    :meth:`step` once per batch of rows: it says when an episode starts
    (some PSI above ``threshold``) or ends (every PSI back under
    :data:`CLEAR_RATIO` × threshold), and :meth:`report_due` says when the
    periodic report is due.
    """

    def __init__(self, ref: DriftReference, names: Sequence[str], *, window: int,
                 threshold: float) -> None:
        missing = [n for n in names if n not in ref.features]
        if missing:
            raise ValueError(f"the drift reference lacks features {missing}")
        self.names = tuple(names)
        self.window = window
        self.threshold = threshold
        self._features = [RollingPsi(ref.features[n], window) for n in names]
        self._score = RollingPsi(ref.score, window)
        self.in_breach = False
        self._seen = 0
        self._every = max(1, math.ceil(window / REPORTS_PER_WINDOW))
        self._due = False

    def observe(self, row: Sequence[float], score: float) -> None:
        """Add one scored row (in ``names`` order) and its probability."""
        for rolling, x in zip(self._features, row, strict=True):
            rolling.push(x)
        self._score.push(score)
        self._seen += 1
        if self._seen >= self.window and (self._seen - self.window) % self._every == 0:
            self._due = True

    def snapshot(self) -> DriftSnapshot | None:
        """The PSIs now, or None while the window is filling."""
        score = self._score.value
        if score is None:
            return None
        values = tuple(r.value or 0.0 for r in self._features)
        limit = self.threshold
        breached = tuple(n for n, v in zip(self.names, values, strict=True) if v > limit)
        if score > limit:
            breached = (*breached, SCORE)
        return DriftSnapshot(features=self.names, feature_psi=values, score_psi=score,
                             breached=breached)

    def step(self) -> tuple[Literal["breach", "clear"] | None, DriftSnapshot | None]:
        """Whether a breach episode started or ended since the last step, and the PSIs."""
        snap = self.snapshot()
        if snap is None:
            return None, None
        if not self.in_breach and snap.breached:
            self.in_breach = True
            return "breach", snap
        if self.in_breach:
            calm = self.threshold * CLEAR_RATIO
            if snap.score_psi <= calm and all(v <= calm for v in snap.feature_psi):
                self.in_breach = False
                return "clear", snap
        return None, snap

    def report_due(self) -> bool:
        """True once per window / :data:`REPORTS_PER_WINDOW` rows after the window filled."""
        due, self._due = self._due, False
        return due
