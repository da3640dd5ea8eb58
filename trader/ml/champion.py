"""Champion/challenger: a newly trained model serves only if it beats the current one.

``trader train`` (and the retrain a drift breach can start) registers every
model it fits as a new version: the **challenger**. The **champion** is the
version the name's pointer (``<name>.champion.json``, :mod:`trader.ml.registry`)
names; a scorer configured with the name serves it and swaps to a new one
while running.

The duel is on the **latest walk-forward fold** of the challenger's dataset,
the period closest to the market the winner will trade:

* the challenger: its own out-of-sample result on that fold (its estimator
  fitted on the fold's purged, embargoed past, scored on the fold's test
  block; :func:`trader.ml.train.evaluate`);
* the champion: the registered artifact, as it would serve, scored on the
  same test block.

The better **AUC** wins; when the AUCs are equal or one is undefined (a test
block of one class), the lower **Brier score** wins; a tie keeps the
champion. When the champion was trained on data that overlaps the test block,
it is scored in-sample there, which favours it: the rule errs towards the
model already serving (``Decision.champion_in_sample`` says when).

No champion yet, or one that no longer loads (its artifact changed, or the
feature list did): the challenger is promoted, and the reason says why.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from trader.errors import ModelIntegrityError
from trader.ml import registry


class FoldScore(msgspec.Struct, frozen=True, kw_only=True):
    """One model's result on the latest fold's test block."""

    auc: float | None
    brier: float


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """Whether the challenger replaces the champion, and on what evidence."""

    promote: bool
    reason: str
    challenger_id: str
    champion_id: str | None = None
    challenger: FoldScore | None = None
    champion: FoldScore | None = None
    test_start: str = ""
    test_end: str = ""
    test_signals: int = 0
    champion_in_sample: bool = False


def better(challenger: FoldScore | None, champion: FoldScore) -> tuple[bool, str]:
    """The duel's rule: AUC, then Brier; a tie (or no challenger result) keeps the champion."""
    if challenger is None:
        return False, "the challenger has no result on the latest fold (one class in its past)"
    a, b = challenger.auc, champion.auc
    if a is not None and b is not None and a != b:
        if a > b:
            return True, f"AUC {a:.4f} > champion's {b:.4f} on the latest fold"
        return False, f"AUC {a:.4f} < champion's {b:.4f} on the latest fold"
    if challenger.brier < champion.brier:
        return True, (f"AUC tied or undefined; Brier {challenger.brier:.4f} < champion's "
                      f"{champion.brier:.4f} on the latest fold")
    return False, (f"AUC tied or undefined; Brier {challenger.brier:.4f} >= champion's "
                   f"{champion.brier:.4f} on the latest fold: the champion stays")


def score(y: npt.NDArray[np.int64], p: npt.ArrayLike) -> FoldScore:
    """AUC (None for a one-class block) and Brier score of probabilities ``p`` for labels ``y``."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    prob = np.asarray(p, dtype=np.float64)
    both = bool(len(y)) and 0 < int(y.sum()) < len(y)
    return FoldScore(auc=float(roc_auc_score(y, prob)) if both else None,
                     brier=float(brier_score_loss(y, prob)))


def challenge(
    root: str | Path,
    challenger: registry.Manifest,
    challenger_score: FoldScore | None,
    test_X: npt.NDArray[np.float64],
    test_y: npt.NDArray[np.int64],
    *,
    test_start: str,
    test_end: str,
) -> Decision:
    """Decide the duel between ``challenger`` and the current champion of its name.

    Args:
        root: the registry directory.
        challenger: the challenger's manifest (already saved).
        challenger_score: its out-of-sample result on the latest fold.
        test_X, test_y: the latest fold's test block, for the champion.
        test_start, test_end: that block's first and last signal (UTC, ISO).
    """
    common: dict[str, Any] = dict(challenger_id=challenger.model_id,
                                  challenger=challenger_score, test_start=test_start,
                                  test_end=test_end, test_signals=len(test_y))
    try:
        pointer = registry.read_champion(root, challenger.name)
    except ModelIntegrityError as exc:
        return Decision(promote=True, reason=f"the champion pointer is unusable: {exc}",
                        **common)
    if pointer is None:
        return Decision(promote=True, reason="no champion yet", **common)
    if pointer.model_id == challenger.model_id:
        return Decision(promote=False, reason="already the champion",
                        champion_id=pointer.model_id, **common)
    try:
        champion = registry.load(Path(root) / pointer.manifest)
    except ModelIntegrityError as exc:
        return Decision(promote=True, reason=f"the champion no longer loads: {exc}",
                        champion_id=pointer.model_id, **common)
    champion_score = score(test_y, champion.model.predict_proba(test_X)[:, 1])
    promote, why = better(challenger_score, champion_score)
    return Decision(promote=promote, reason=why, champion_id=pointer.model_id,
                    champion=champion_score,
                    champion_in_sample=champion.manifest.training_window.end >= test_start,
                    **common)


def apply(root: str | Path, challenger: registry.Manifest, decision: Decision) -> Path | None:
    """Write the champion pointer if ``decision`` promotes; the pointer's path, else None."""
    if not decision.promote:
        return None
    return registry.promote(
        root, challenger, reason=decision.reason, decision=msgspec.to_builtins(decision),
        now_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
