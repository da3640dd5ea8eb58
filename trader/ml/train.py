"""``trader train``: fit, validate and register the scorer's model.

1. **Dataset** (:mod:`trader.ml.dataset`): the configured strategy's
   historical entry signals, their features (the scorer's own path) and
   triple-barrier labels.
2. **Validation**: purged, embargoed walk-forward folds
   (:mod:`trader.ml.splits`). In each fold both candidates are fitted on the
   past and scored on the test block: a HistGradientBoostingClassifier and a
   LogisticRegression baseline, each calibrated (``CalibratedClassifierCV``,
   sigmoid, on purged walk-forward splits of its own training set). Reported
   per fold: AUC, Brier score, precision at the gating threshold
   (``[scorer] threshold``) and how many signals would pass.
3. **Model**: the configured estimator (``[scorer.train] estimator``) is
   refitted the same way on every sample and saved to the registry with its
   manifest (:mod:`trader.ml.registry`), which also carries the training
   window's feature and score distributions (:mod:`trader.ml.drift`).
4. **Champion/challenger** (:mod:`trader.ml.champion`): the new version is
   promoted to champion of its name only if it beats the current champion
   on the latest walk-forward fold.

Training is CPU-bound and never runs on the event loop: the CLI runs it in
its own process, and :func:`train_in_worker` runs it in a worker process for
async callers. Everything is seeded; the same data and config give the same
model.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from trader.config import Config
from trader.errors import DataError
from trader.ml import champion, registry
from trader.ml.dataset import Dataset, build_dataset
from trader.ml.drift import build_reference
from trader.ml.features import FEATURE_NAMES
from trader.ml.gating import GatingEffect, format_effect, gating_effect
from trader.ml.splits import Index, walk_forward_splits

ESTIMATORS = ("hgb", "logreg")
_INNER_FOLDS = 3


class FoldMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """One walk-forward fold of one estimator.

    ``auc`` is None when the test block holds one class only; ``precision`` is
    None when no test signal reaches the threshold.
    """

    fold: int
    train: int
    test: int
    test_start: str
    test_end: str
    base_rate: float
    auc: float | None
    brier: float
    precision: float | None
    pass_rate: float


class TrainResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a training run produced: where the manifest is, the manifest, and the duel.

    ``decision`` is None when the run was told not to challenge the champion.
    """

    manifest_path: str
    manifest: registry.Manifest
    decision: champion.Decision | None = None
    gating: GatingEffect | None = None


def make_estimator(kind: str) -> Any:
    """A fresh, seeded, small estimator of ``kind`` (``hgb`` or ``logreg``).

    Raises:
        ValueError: unknown kind.
    """
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        # Small and regularised: a few hundred signals cannot support more.
        # No early stopping: its validation split would be random, not in time.
        return HistGradientBoostingClassifier(
            max_iter=50, learning_rate=0.1, max_leaf_nodes=8, min_samples_leaf=20,
            l2_regularization=1.0, max_bins=64, early_stopping=False, random_state=0,
        )
    if kind == "logreg":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            StandardScaler(),
            LogisticRegression(C=0.5, max_iter=2000),
        )
    raise ValueError(f"unknown estimator {kind!r} (known: {', '.join(ESTIMATORS)})")


def _both_classes(y: npt.NDArray[np.int64]) -> bool:
    return bool(len(y)) and 0 < int(y.sum()) < len(y)


def fit_calibrated(
    kind: str, X: npt.NDArray[np.float64], y: npt.NDArray[np.int64],
    t0: npt.NDArray[np.int64], t1: npt.NDArray[np.int64], *, embargo: int,
) -> tuple[Any, str]:
    """Fit ``kind`` on all of ``X`` and calibrate it on purged walk-forward splits.

    Returns:
        The fitted model and how it was calibrated (``sigmoid`` over N splits,
        or ``none`` when no split has both classes on each side).
    """
    from sklearn.calibration import CalibratedClassifierCV

    splits = [
        (tr, te) for tr, te in walk_forward_splits(t0, t1, folds=_INNER_FOLDS, embargo=embargo)
        if _both_classes(y[tr]) and _both_classes(y[te])
    ]
    if not splits:
        return make_estimator(kind).fit(X, y), "none"
    model = CalibratedClassifierCV(make_estimator(kind), method="sigmoid", cv=splits)
    return model.fit(X, y), f"sigmoid over {len(splits)} purged walk-forward splits"


def _iso(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def evaluate(
    kind: str, ds: Dataset, splits: list[tuple[Index, Index]], *, threshold: float,
    embargo: int,
) -> list[FoldMetrics]:
    """Walk-forward metrics of ``kind`` on ``ds``: fit on each fold's past, score its test."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    out: list[FoldMetrics] = []
    for k, (tr, te) in enumerate(splits, start=1):
        if not _both_classes(ds.y[tr]):
            continue  # nothing to learn from one class; the fold is not reported
        model, _ = fit_calibrated(kind, ds.X[tr], ds.y[tr], ds.t0[tr], ds.t1[tr],
                                  embargo=embargo)
        p = model.predict_proba(ds.X[te])[:, 1]
        y = ds.y[te]
        passed = p >= threshold
        out.append(FoldMetrics(
            fold=k,
            train=len(tr),
            test=len(te),
            test_start=_iso(int(ds.ts_ns[te].min())),
            test_end=_iso(int(ds.ts_ns[te].max())),
            base_rate=float(y.mean()),
            auc=_finite(float(roc_auc_score(y, p))) if _both_classes(y) else None,
            brier=float(brier_score_loss(y, p)),
            precision=float(y[passed].mean()) if passed.any() else None,
            pass_rate=float(passed.mean()),
        ))
    return out


def _mean(folds: list[FoldMetrics], field: str) -> float | None:
    values = [getattr(f, field) for f in folds if getattr(f, field) is not None]
    return float(np.mean(values)) if values else None


def summarize(folds: list[FoldMetrics]) -> dict[str, Any]:
    """Per-fold metrics and their means, as plain data for the manifest."""
    return {
        "folds": msgspec.to_builtins(folds),
        "mean": {f: _mean(folds, f) for f in ("auc", "brier", "precision", "pass_rate")},
    }


def _latest_fold(
    folds: list[dict[str, Any]], latest: int
) -> champion.FoldScore | None:
    for f in folds:
        if f["fold"] == latest:
            return champion.FoldScore(auc=f["auc"], brier=f["brier"])
    return None


def train(
    config: Config, *, out_dir: str | Path = "models", challenge: bool = True
) -> TrainResult:
    """Build the dataset, validate both estimators, fit and register the configured one.

    With ``challenge`` (the default), the new version then duels the name's
    champion on the latest walk-forward fold and is promoted if it wins
    (:mod:`trader.ml.champion`).

    Raises:
        DataError: a bad data file, or too few labeled signals
            (``[scorer.train] min_samples``) or walk-forward folds.
        ConfigError: bad dates or strategy parameters.
    """
    spec = config.scorer.train
    threshold = config.scorer.threshold
    registry.use_one_thread()
    ds = build_dataset(config)
    if len(ds) < spec.min_samples:
        raise DataError(
            f"{ds.data_dir}: {len(ds)} labeled signals of strategy {config.strategy.name!r} "
            f"(need [scorer.train] min_samples = {spec.min_samples}); use more data or symbols"
        )
    splits = walk_forward_splits(ds.t0, ds.t1, folds=spec.folds, embargo=spec.embargo_bars)
    if not splits:
        raise DataError(f"{ds.data_dir}: too few signals for {spec.folds} walk-forward folds")
    metrics = {
        kind: summarize(evaluate(kind, ds, splits, threshold=threshold,
                                 embargo=spec.embargo_bars))
        for kind in ESTIMATORS
    }
    model, calibration = fit_calibrated(spec.estimator, ds.X, ds.y, ds.t0, ds.t1,
                                        embargo=spec.embargo_bars)
    # The score's reference is the model's own probabilities on its training
    # rows: the live scores it is compared with come from this same model.
    drift = build_reference(ds.X, model.predict_proba(ds.X)[:, 1], FEATURE_NAMES,
                            bins=spec.drift_bins)
    manifest = registry.Manifest(
        name=config.strategy_instance,
        estimator=spec.estimator,
        calibration=calibration,
        features=FEATURE_NAMES,
        threshold=threshold,
        strategy={"name": config.strategy.name, "instance": config.strategy_instance,
                  "params": config.strategy.params},
        training_window=registry.TrainingWindow(
            start=_iso(int(ds.ts_ns.min())), end=_iso(int(ds.ts_ns.max())), signals=len(ds),
        ),
        data=registry.DataInfo(dir=ds.data_dir, symbols=ds.data_symbols, hash=ds.data_hash),
        labels={"method": "triple_barrier", "take_profit_atr": spec.take_profit_atr,
                "stop_loss_atr": spec.stop_loss_atr, "max_bars": spec.max_bars,
                "entry": "next bar open", "positive_rate": float(ds.y.mean()),
                "signals": ds.signals, "warming_up": ds.warming_up,
                "unlabeled": ds.unlabeled},
        validation={"method": "purged walk-forward", "folds": spec.folds,
                    "folds_used": len(splits), "embargo_bars": spec.embargo_bars,
                    "calibration_splits": _INNER_FOLDS},
        metrics=metrics,
        libraries=registry.library_versions(),
        created_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        drift=drift,
    )
    path = registry.save(model, manifest, out_dir)
    saved = registry.read_manifest(path)
    decision = None
    if challenge:
        _, test = splits[-1]
        decision = champion.challenge(
            out_dir, saved, _latest_fold(metrics[spec.estimator]["folds"], len(splits)),
            ds.X[test], ds.y[test], test_start=_iso(int(ds.ts_ns[test].min())),
            test_end=_iso(int(ds.ts_ns[test].max())),
        )
        champion.apply(out_dir, saved, decision)
    gating = _gating(config, ds, splits, manifest) if spec.gating_backtest else None
    return TrainResult(manifest_path=str(path), manifest=saved, decision=decision,
                       gating=gating)


def _gating(config: Config, ds: Dataset, splits: list[tuple[Index, Index]],
            manifest: registry.Manifest) -> GatingEffect | None:
    """The latest fold, replayed with and without a model fitted on its past only."""
    spec = config.scorer.train
    tr, te = splits[-1]
    if not _both_classes(ds.y[tr]):
        return None
    model, calibration = fit_calibrated(spec.estimator, ds.X[tr], ds.y[tr], ds.t0[tr],
                                        ds.t1[tr], embargo=spec.embargo_bars)
    fold_manifest = msgspec.structs.replace(
        manifest,
        name=f"{manifest.name}-gating",
        calibration=calibration,
        training_window=registry.TrainingWindow(
            start=_iso(int(ds.ts_ns[tr].min())), end=_iso(int(ds.ts_ns[tr].max())),
            signals=len(tr),
        ),
        drift=None,
    )
    return gating_effect(config, model, fold_manifest,
                         start=_iso(int(ds.ts_ns[te].min()))[:10],
                         end=_iso(int(ds.ts_ns[te].max()))[:10])


async def train_in_worker(config: Config, *, out_dir: str | Path = "models") -> TrainResult:
    """:func:`train` in a worker process, so the event loop never waits on it."""
    import anyio.to_process

    result: TrainResult = await anyio.to_process.run_sync(
        functools.partial(train, config, out_dir=str(out_dir)), cancellable=True
    )
    return result


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def format_report(result: TrainResult) -> str:
    """A plain-text report of a training run: the model, then each estimator's folds."""
    m = result.manifest
    w = m.training_window
    lines = [
        f"model {m.model_id} ({m.estimator}, calibration: {m.calibration})",
        f"  manifest  {result.manifest_path}",
        f"  window    {w.start} .. {w.end}, {w.signals} labeled signals "
        f"(positive rate {m.labels['positive_rate']:.3f})",
        f"  data      {m.data.dir} {','.join(m.data.symbols)} sha256:{m.data.hash[:12]}",
        f"  threshold {m.threshold:g}",
    ]
    d = result.decision
    if d is not None:
        verdict = "promoted to champion" if d.promote else f"not promoted ({d.champion_id} stays)"
        lines.append(f"  champion  {verdict}: {d.reason}")
        if d.challenger is not None or d.champion is not None:
            def pair(s: champion.FoldScore | None) -> str:
                return "-" if s is None else f"AUC {_fmt(s.auc)} Brier {s.brier:.3f}"
            lines.append(
                f"            latest fold {d.test_start[:10]}..{d.test_end[:10]} "
                f"({d.test_signals} signals): challenger {pair(d.challenger)}, "
                f"champion {pair(d.champion)}"
                + (" (champion in-sample there)" if d.champion_in_sample else ""))
    if result.gating is not None:
        lines.extend(format_effect(result.gating))
    lines.append("")
    header = (f"{'estimator':<9} {'fold':>4} {'train':>6} {'test':>5}  {'test period':<23} "
              f"{'base':>5} {'AUC':>6} {'Brier':>6} {'prec@thr':>8} {'pass':>5}")
    lines.append(header)
    for kind, summary in m.metrics.items():
        for f in summary["folds"]:
            lines.append(
                f"{kind:<9} {f['fold']:>4} {f['train']:>6} {f['test']:>5}  "
                f"{f['test_start'][:10]}..{f['test_end'][:10]}  {f['base_rate']:>5.3f} "
                f"{_fmt(f['auc']):>6} {f['brier']:>6.3f} {_fmt(f['precision']):>8} "
                f"{f['pass_rate']:>5.2f}"
            )
        mean = summary["mean"]
        pass_rate = _fmt(mean["pass_rate"], ".2f")
        lines.append(
            f"{kind:<9} {'mean':>4} {'':>6} {'':>5}  {'':<23} {'':>5} {_fmt(mean['auc']):>6} "
            f"{_fmt(mean['brier']):>6} {_fmt(mean['precision']):>8} {pass_rate:>5}"
        )
    return "\n".join(lines)
