"""Builders for the ML scorer's tests: configs over the bundled data, stand-in models.

Stand-in models live here (not in a test module) because the registry pickles
them: unpickling imports this module by name. Builders only, no assertions.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from trader.config import Config, decode_config
from trader.ml import registry
from trader.ml.features import FEATURE_NAMES

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "replay_data" / "1Day"
SYMBOLS = ["AAPL", "GOOG", "IBM", "MSFT"]


def ml_config(tmp: Path, **sections: dict[str, Any]) -> Config:
    """A replay/train config over the bundled daily bars: four stocks, a fast sma_cross."""
    raw: dict[str, Any] = {
        "run": {"db": str(tmp / "run.db")},
        "data": {"dir": str(DATA), "symbols": SYMBOLS, "start": "2003-01-01",
                 "end": "2010-12-31"},
        "strategy": {"name": "sma_cross", "instance": "sma-ml", "params": {"fast": 5, "slow": 20}},
        "broker": {"commission": {"model": "per_share", "per_share_usd": 0.005,
                                  "minimum_usd": 1.0}, "slippage_bps": 2.0},
        "risk": {"sizing": "fixed_fraction", "fixed_fraction": 0.2},
        "scorer": {"train": {"folds": 3, "embargo_bars": 5}},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return decode_config(raw)


def manifest_for(name: str, **fields: Any) -> registry.Manifest:
    """A manifest with placeholder provenance, for stand-in models."""
    base: dict[str, Any] = dict(
        name=name, estimator="stand-in", calibration="none", features=FEATURE_NAMES,
        threshold=0.5, strategy={"name": "sma_cross"},
        training_window=registry.TrainingWindow(start="", end="", signals=0),
        data=registry.DataInfo(dir="", symbols=(), hash=""), labels={}, validation={},
        metrics={}, libraries=registry.library_versions(), created_utc="",
    )
    base.update(fields)
    return registry.Manifest(**base)


# Rows every RecordingModel instance was asked about, in call order. A global
# because the registry hands the scorer an unpickled copy, not our instance.
RECORDED: list[npt.NDArray[np.float64]] = []
_lock = threading.Lock()


class RecordingModel:
    """Answers ``probability`` for every row and records the rows (one batch per call)."""

    classes_ = np.array([0, 1])
    n_features_in_ = len(FEATURE_NAMES)

    def __init__(self, probability: float = 0.5) -> None:
        self.probability = probability

    def predict_proba(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        with _lock:
            RECORDED.append(np.array(X, copy=True))
        p = np.full(len(X), self.probability)
        return np.column_stack([1.0 - p, p])


class FailingModel(RecordingModel):
    """Raises on the first ``failures`` calls, then behaves like RecordingModel."""

    def __init__(self, failures: int, probability: float = 0.9) -> None:
        super().__init__(probability)
        self.failures = failures

    def predict_proba(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("model exploded")
        return super().predict_proba(X)
