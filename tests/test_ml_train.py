"""``trader train``: labels, purged walk-forward splits, the registry and its integrity checks."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import sklearn
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ml_support import DATA, REPO, SYMBOLS, RecordingModel, manifest_for, ml_config
from trader.cli import EXIT_DATA, EXIT_OK, main
from trader.data.bars import load_dir
from trader.errors import ModelIntegrityError
from trader.ml import registry
from trader.ml import train as train_module
from trader.ml.features import FEATURE_NAMES
from trader.ml.labels import triple_barrier
from trader.ml.splits import walk_forward_splits
from trader.ml.train import train_in_worker

TRAIN_ARGS = [
    "train", "--config", str(REPO / "config" / "replay.toml"), "--data", str(DATA),
    "--set", f"data.symbols={json.dumps(SYMBOLS)}",
    "--set", 'data.start="2003-01-01"', "--set", 'data.end="2010-12-31"',
    "--set", "strategy.params={fast = 5, slow = 20}", "--set", 'strategy.instance="sma-ml"',
    "--set", "scorer.train.folds=3",
]


def _cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    # main() configures logging; put it back (the module fixture outlives its test's stderr).
    saved = structlog.get_config()
    try:
        with contextlib.redirect_stdout(out):
            code = main(list(args))
    finally:
        structlog.configure(**saved)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One CLI training run on the bundled data: the manifest path and what it printed."""
    models = tmp_path_factory.mktemp("models")
    code, out = _cli(*TRAIN_ARGS, "--out", str(models))
    assert code == EXIT_OK, out
    return models / "sma-ml-v1.json", out


# --- end to end ----------------------------------------------------------------


def test_trader_train_reports_auc_brier_and_precision_per_fold_for_both_models(
    trained: tuple[Path, str],
) -> None:
    """The CLI trains on the bundled data and prints one line per walk-forward fold and model."""
    path, out = trained
    manifest = registry.read_manifest(path)
    assert f"model {manifest.model_id}" in out
    assert all(word in out for word in ("AUC", "Brier", "prec@thr"))
    for kind in ("hgb", "logreg"):
        folds = [ln for ln in out.splitlines()
                 if ln.startswith(f"{kind} ") and ln.split()[1].isdigit()]
        assert len(folds) == len(manifest.metrics[kind]["folds"]) >= 2


def test_trader_train_reports_the_gate_s_backtest_effect_out_of_sample(
    trained: tuple[Path, str],
) -> None:
    """The latest fold's test period is replayed twice through the graph: every
    signal passing, and gated by a model fitted on that fold's past. The gate
    can only remove entries, so the gated run never trades more."""
    path, out = trained
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("gating effect"))
    m = registry.read_manifest(path)
    latest = m.metrics["hgb"]["folds"][-1]
    assert f"test period {latest['test_start'][:10]}..{latest['test_end'][:10]}" in lines[head]
    ungated, gated = lines[head + 1].split(), lines[head + 2].split()
    assert ungated[0] == "ungated"
    assert gated[0] == "gated"
    trades = {row[0]: int(row[row.index("trades") + 1]) for row in (ungated, gated)}
    assert trades["ungated"] > 0
    assert trades["gated"] <= trades["ungated"]


def test_the_gated_replay_uses_a_model_that_never_saw_the_test_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model replayed is fitted on the fold's training part only: its window ends
    before the test period starts (the registered model, fitted on everything, is not it)."""
    seen: dict[str, object] = {}

    def spy(config: object, model: object, manifest: registry.Manifest, *, start: str,
            end: str) -> None:
        seen.update(window=manifest.training_window, start=start, end=end)

    monkeypatch.setattr(train_module, "gating_effect", spy)
    result = train_module.train(ml_config(tmp_path), out_dir=tmp_path / "models")
    assert result.gating is None  # the spy returned nothing
    window = seen["window"]
    assert isinstance(window, registry.TrainingWindow)
    assert window.end[:10] < str(seen["start"]) <= str(seen["end"])
    assert window.end < result.manifest.training_window.end


def test_the_first_model_of_a_name_becomes_its_champion_with_its_drift_reference(
    trained: tuple[Path, str],
) -> None:
    """``trader train`` says it promoted, the pointer names the version, the manifest has bins."""
    path, out = trained
    assert "champion  promoted to champion: no champion yet" in out
    pointer = registry.read_champion(path.parent, "sma-ml")
    assert pointer is not None
    assert pointer.manifest == path.name
    drift = registry.read_manifest(path).drift
    assert drift is not None
    assert set(drift.features) == set(FEATURE_NAMES)
    assert math.isclose(sum(drift.score.proportions), 1.0)


def test_a_manifest_written_before_drift_monitoring_still_loads(tmp_path: Path) -> None:
    """No ``drift`` key: the model loads and scores, unmonitored (the scorer logs it)."""
    path = registry.save(RecordingModel(0.5), manifest_for("old"), tmp_path)
    raw = json.loads(path.read_text())
    del raw["drift"]
    path.write_text(json.dumps(raw))
    assert registry.load(path).manifest.drift is None


def test_the_manifest_is_complete_and_vouches_for_its_artifact(
    trained: tuple[Path, str],
) -> None:
    """Features and order, window, data hash, metrics, versions and the artifact's sha256."""
    path, _ = trained
    m = registry.read_manifest(path)
    assert m.model_id == "sma-ml-v1"
    assert m.version == 1
    assert m.estimator == "hgb"
    assert m.features == FEATURE_NAMES
    artifact = path.parent / m.artifact
    assert m.sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
    _, reports = load_dir(DATA, symbols=SYMBOLS)
    assert m.data.hash == hashlib.sha256(
        "".join(sorted(r.sha256 for r in reports)).encode()).hexdigest()
    assert m.data.symbols == tuple(SYMBOLS)
    w = m.training_window
    assert "2003-01-01" <= w.start < w.end <= "2011-01-01"
    assert w.signals >= 50
    assert m.strategy == {"name": "sma_cross", "instance": "sma-ml",
                          "params": {"fast": 5, "slow": 20}}
    assert m.labels["method"] == "triple_barrier"
    assert m.labels["max_bars"] == 10
    assert m.validation["embargo_bars"] == 5
    assert m.validation["folds"] == 3
    assert m.calibration.startswith("sigmoid")
    for kind in ("hgb", "logreg"):
        for fold in m.metrics[kind]["folds"]:
            assert 0.0 <= fold["brier"] <= 1.0
            assert fold["auc"] is None or 0.0 <= fold["auc"] <= 1.0
            assert "precision" in fold
            assert 0.0 <= fold["pass_rate"] <= 1.0
        assert set(m.metrics[kind]["mean"]) == {"auc", "brier", "precision", "pass_rate"}
    assert m.libraries["scikit-learn"] == sklearn.__version__
    assert {"python", "numpy", "joblib", "trader"} <= set(m.libraries)


def test_a_registered_model_loads_by_dir_and_id_and_scores_rows(
    trained: tuple[Path, str],
) -> None:
    """``models/<id>`` resolves to its manifest; the model gives probabilities for rows with NaN."""
    path, _ = trained
    loaded = registry.load(path.parent / "sma-ml-v1")
    rows = np.full((3, len(FEATURE_NAMES)), np.nan)
    rows[1] = 0.01
    p = loaded.model.predict_proba(rows)[:, 1]
    assert p.shape == (3,)
    assert np.all((p >= 0) & (p <= 1))


# --- integrity -------------------------------------------------------------------


def _copy(path: Path, to: Path) -> Path:
    m = registry.read_manifest(path)
    to.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, to / path.name)
    shutil.copy(path.parent / m.artifact, to / m.artifact)
    return to / path.name


def test_a_tampered_artifact_is_refused_with_model_integrity_error(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    """One changed byte in the artifact: its sha256 no longer matches and loading refuses."""
    path = _copy(trained[0], tmp_path)
    artifact = tmp_path / registry.read_manifest(path).artifact
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"sha256 .* does not match its manifest"):
        registry.load(path)


@pytest.mark.parametrize("change", ["reordered", "missing"])
def test_a_manifest_with_another_feature_list_is_refused(
    trained: tuple[Path, str], tmp_path: Path, change: str
) -> None:
    """A model trained on other features (or another order) would score garbage: refused."""
    path = _copy(trained[0], tmp_path)
    raw = json.loads(path.read_text())
    names = list(FEATURE_NAMES)
    raw["features"] = names[1::-1] + names[2:] if change == "reordered" else names[:-1]
    path.write_text(json.dumps(raw))
    expected = "another order" if change == "reordered" else "missing"
    with pytest.raises(ModelIntegrityError, match=f"other features.*{expected}"):
        registry.load(path)


def test_a_missing_manifest_or_artifact_is_refused(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    """Nothing to verify is not a model: both cases name the file."""
    with pytest.raises(ModelIntegrityError, match="manifest not found"):
        registry.load(tmp_path / "nope-v1")
    path = _copy(trained[0], tmp_path)
    (tmp_path / registry.read_manifest(path).artifact).unlink()
    with pytest.raises(ModelIntegrityError, match="cannot read the artifact"):
        registry.load(path)


def test_each_save_is_a_new_version(tmp_path: Path) -> None:
    """Saving under the same name never overwrites: v1, then v2, each loadable."""
    first = registry.save(RecordingModel(0.2), manifest_for("m"), tmp_path)
    second = registry.save(RecordingModel(0.8), manifest_for("m"), tmp_path)
    assert (first.name, second.name) == ("m-v1.json", "m-v2.json")
    assert registry.load(first).model.probability == 0.2
    assert registry.load(second).model_id == "m-v2"


def test_too_few_labeled_signals_is_a_data_error(tmp_path: Path) -> None:
    """Two months of data cannot train a model: exit code 4 with the count."""
    code, _ = _cli(*TRAIN_ARGS, "--set", 'data.start="2010-11-01"', "--out", str(tmp_path))
    assert code == EXIT_DATA
    assert not list(tmp_path.iterdir())


@pytest.mark.asyncio
async def test_training_from_async_code_runs_in_a_worker_process(tmp_path: Path) -> None:
    """train_in_worker returns the registered model without running sklearn on the loop."""
    config = ml_config(tmp_path, data={"symbols": ["AAPL", "IBM"], "start": "2006-01-01",
                                       "end": "2009-12-31"},
                       scorer={"train": {"folds": 2, "min_samples": 20}})
    result = await train_in_worker(config, out_dir=tmp_path / "models")
    loaded = registry.load(result.manifest_path)  # what the scorer would do, off the loop
    assert loaded.model_id == "sma-ml-v1"
    assert result.manifest.sha256 == loaded.manifest.sha256


# --- splits ----------------------------------------------------------------------


@settings(deadline=None, max_examples=200)  # a busy CI box must not fail on timing
@given(
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 40)), max_size=80),
    st.integers(1, 6),
    st.integers(0, 30),
)
def test_no_training_sample_is_within_the_embargo_of_a_test_sample(
    samples: list[tuple[int, int]], folds: int, embargo: int
) -> None:
    """Every training label ends more than ``embargo`` before every test sample starts."""
    t0 = np.array([a for a, _ in samples], dtype=np.int64)
    t1 = t0 + np.array([d for _, d in samples], dtype=np.int64)
    splits = walk_forward_splits(t0, t1, folds=folds, embargo=embargo)
    assert len(splits) <= folds
    for train, test in splits:
        assert len(train)
        assert len(test)
        assert not set(train.tolist()) & set(test.tolist())
        for i in train.tolist():
            for j in test.tolist():
                assert t1[i] + embargo < t0[j], (i, j)


def test_walk_forward_tests_each_block_once_in_time_order() -> None:
    """Test blocks are disjoint and move forward; each trains on the purged past only."""
    t0 = np.arange(100, dtype=np.int64)[::-1].copy()  # any input order
    t1 = t0 + 3
    splits = walk_forward_splits(t0, t1, folds=4, embargo=2)
    assert len(splits) == 4
    starts = [int(t0[test].min()) for _, test in splits]
    assert starts == sorted(starts) == [20, 40, 60, 80]
    tested = np.concatenate([test for _, test in splits])
    assert len(set(tested.tolist())) == len(tested) == 80
    train, _ = splits[0]
    # Signals 15..19 are purged: label (3 bars) plus embargo (2) would reach 20.
    assert sorted(t0[train].tolist()) == list(range(15))


# --- labels ----------------------------------------------------------------------


def _bars(highs: list[float], lows: list[float]) -> dict[str, np.ndarray]:
    n = len(highs)
    return {"open_": np.full(n, 10.0), "high": np.array(highs), "low": np.array(lows)}


@pytest.mark.parametrize(
    ("highs", "lows", "direction", "label", "barrier", "exit_index"),
    [
        # entry 10 at bar 1; long: take profit 12, stop 9
        ([10, 10.5, 12.0, 10, 10], [10, 9.5, 10, 10, 10], 1, 1, "take_profit", 2),
        ([10, 10.5, 10.5, 10, 10], [10, 9.5, 8.9, 10, 10], 1, 0, "stop_loss", 2),
        ([10, 12.5, 10, 10, 10], [10, 8.5, 10, 10, 10], 1, 0, "stop_loss", 1),  # both: stop
        ([10, 10.5, 10.5, 10.5, 10], [10, 9.5, 9.5, 9.5, 10], 1, 0, "time", 3),
        # short: take profit 8, stop 11
        ([10, 10.5, 10.5, 10, 10], [10, 9.5, 7.9, 10, 10], -1, 1, "take_profit", 2),
        ([10, 11.1, 10.5, 10, 10], [10, 9.5, 7.9, 10, 10], -1, 0, "stop_loss", 1),
    ],
)
def test_triple_barrier_labels_by_the_first_barrier_touched(
    highs: list[float], lows: list[float], direction: int, label: int, barrier: str,
    exit_index: int,
) -> None:
    """Entry at the next open; a bar touching both barriers counts as the stop."""
    out = triple_barrier(signal_index=0, direction=direction, width=1.0,
                         take_profit=2.0, stop_loss=1.0, max_bars=3, **_bars(highs, lows))
    assert out is not None
    assert (out.label, out.barrier, out.exit_index, out.entry) == (
        label, barrier, exit_index, 10.0)


def test_a_signal_whose_data_ends_before_a_barrier_has_no_label() -> None:
    """Too few forward bars (or no width) means unknown, not a loss."""
    bars = _bars([10, 10.5, 10.5], [10, 9.5, 9.5])
    kw = dict(take_profit=2.0, stop_loss=1.0, max_bars=3, **bars)
    assert triple_barrier(signal_index=0, direction=1, width=1.0, **kw) is None  # type: ignore[arg-type]
    assert triple_barrier(signal_index=2, direction=1, width=1.0, **kw) is None  # type: ignore[arg-type]
    assert triple_barrier(signal_index=0, direction=1, width=math.nan, **kw) is None  # type: ignore[arg-type]
