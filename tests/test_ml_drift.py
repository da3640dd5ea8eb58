"""Drift: the PSI maths, the rolling window, and the scorer journaling a breach once."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import anyio
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tests.builders import bar, daily_closes
from tests.ml_support import RecordingModel, manifest_for
from trader.actors.base import JournalRecord, Outbox
from trader.actors.scorer import ScorerActor
from trader.channels import Channel, InFlight
from trader.config import Config, ScorerConfig, decode_config
from trader.messages import (
    BarClosed,
    BarsClosed,
    DriftDetected,
    DriftMeasured,
    Message,
    ModelSwapped,
    ModelSwapRefused,
    ScorerStateChanged,
    SignalEmitted,
    SignalScored,
)
from trader.metrics import Metrics
from trader.ml import registry
from trader.ml.drift import (
    PSI_FLOOR,
    DriftMonitor,
    DriftReference,
    Reference,
    RollingPsi,
    build_reference,
    psi,
    reference,
)
from trader.ml.features import FEATURE_NAMES, FeatureEngine

# --- the maths, by hand -----------------------------------------------------------


def test_psi_of_a_shifted_two_bin_distribution_matches_the_hand_computation() -> None:
    """(0.5, 0.5) → (0.7, 0.3): 0.2·ln(0.7/0.5) + (−0.2)·ln(0.3/0.5) = 0.16946."""
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(0.2 * math.log(1.4) - 0.2 * math.log(0.6))
    assert psi([0.5, 0.5], [0.7, 0.3]) == pytest.approx(0.169459, abs=1e-6)


def test_psi_is_zero_for_the_same_distribution_and_symmetric_in_its_two_arguments() -> None:
    """No shift, no index; and each term (a − e)·ln(a/e) reads the same either way round."""
    assert psi([0.1, 0.2, 0.7], [0.1, 0.2, 0.7]) == 0.0
    assert psi([0.1, 0.9], [0.4, 0.6]) == pytest.approx(psi([0.4, 0.6], [0.1, 0.9]))


def test_an_empty_bin_counts_as_the_floor_not_as_infinity() -> None:
    """Everything moved into one bin of two: e = (0.5, 0.5), a = (1, 0) floored to 1e-4."""
    expected = 0.5 * math.log(1 / 0.5) + (PSI_FLOOR - 0.5) * math.log(PSI_FLOOR / 0.5)
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(expected)
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(4.6043, abs=1e-4)


def test_the_reference_bins_are_quantiles_closed_on_the_right() -> None:
    """Values 1..10 in 2 bins: edge 5.5; in 5 bins: two values per bin; repeats collapse."""
    halves = reference(np.arange(1, 11), bins=2)
    assert halves.edges == (5.5,)
    assert halves.proportions == (0.5, 0.5)
    fifths = reference(np.arange(1, 11), bins=5)
    assert fifths.proportions == pytest.approx((0.2,) * 5)
    # A value equal to an edge falls in the bin to its left, live as in training.
    rolling = RollingPsi(Reference(edges=(5.0,), proportions=(0.5, 0.5)), window=2)
    rolling.push(5.0)
    rolling.push(5.0)
    assert rolling.shares == [1.0, 0.0]
    constant = reference(np.full(20, 0.5), bins=10)
    assert constant.edges == (0.5,)
    assert constant.proportions == (1.0, 0.0)


def test_the_rolling_psi_waits_for_a_full_window_then_equals_the_psi_of_its_last_values() -> None:
    """Incremental counts give the same index as a recomputation over the window, at every step."""
    ref = reference(np.linspace(0.0, 1.0, 101), bins=4)
    window = 25
    rolling = RollingPsi(ref, window)
    rng = random.Random(7)
    values = [rng.uniform(-0.2, 1.5) for _ in range(6000)]  # past a resum, too
    for n, x in enumerate(values, start=1):
        rolling.push(x)
        if n < window:
            assert rolling.value is None
            continue
        last = values[n - window : n]
        counts = np.bincount(np.searchsorted(ref.edges, last, side="left"),
                             minlength=len(ref.proportions))
        assert rolling.value == pytest.approx(psi(ref.proportions, list(counts / window)), abs=1e-9)


def test_a_breach_episode_is_reported_once_and_ends_only_well_under_the_threshold() -> None:
    """Shifted rows open one episode; it closes once every PSI is under 80% of the threshold."""
    ref = DriftReference(bins=2, rows=2, score=Reference(edges=(0.5,), proportions=(0.5, 0.5)),
                         features={"x": Reference(edges=(0.0,), proportions=(0.5, 0.5))})
    monitor = DriftMonitor(ref, ("x",), window=4, threshold=0.25)
    balanced = [(-1.0, 0.2), (1.0, 0.8)]
    for x, p in balanced * 2:
        monitor.observe((x,), p)
    assert monitor.step()[0] is None
    changes = []
    for _ in range(6):  # all rows on one side: PSI 4.604 on x
        monitor.observe((1.0,), 0.2 if _ % 2 else 0.8)
        changes.append(monitor.step()[0])
    assert changes.count("breach") == 1
    assert monitor.in_breach
    for x, p in balanced * 2:
        monitor.observe((x,), p)
    change, snap = monitor.step()
    assert change == "clear"
    assert snap is not None
    assert snap.breached == ()


# --- the scorer: shifted features raise the gauge and journal one DriftDetected ---------

CLOSES = daily_closes("2021-01-04", 60)
SYMBOLS = tuple(f"S{k:02d}" for k in range(24))


def _bars(daily_move: float) -> list[BarClosed]:
    """Every symbol's 60 bars; ``daily_move`` sets how far each close moves (volatility)."""
    out = []
    for k, sym in enumerate(SYMBOLS):
        price = 40.0 + k
        for i, ts in enumerate(CLOSES):
            o = price
            price *= math.exp(daily_move * math.sin(i * 1.7 + k))
            out.append(bar(sym, ts, o, max(o, price) * 1.002, min(o, price) * 0.998, price,
                           v=1e6 + 1e4 * ((i * 7 + k) % 13)))
    return sorted(out, key=lambda b: (b.ts_ns, b.symbol))


def _calm_reference() -> DriftReference:
    """The training window: rows of every symbol over the last 10 calm sessions."""
    engine = FeatureEngine()
    rows = []
    for b in _bars(0.002):
        engine.update(b)
        if b.ts_ns >= CLOSES[-10]:
            rows.append(engine.row(b.symbol))
    X = np.asarray(rows, dtype=np.float64)
    return build_reference(X, np.full(len(X), 0.5), FEATURE_NAMES, bins=10)


def _loader(manifest: registry.Manifest) -> Callable[[str], registry.LoadedModel]:
    loaded = registry.LoadedModel(model=RecordingModel(0.5), manifest=manifest, path="memory")
    return lambda ref: loaded


def _outbox(journal: Channel[JournalRecord], risk: Channel[Message]) -> Outbox:
    types = (ScorerStateChanged, DriftMeasured, DriftDetected, ModelSwapped, ModelSwapRefused)
    return Outbox("scorer", {SignalScored: [risk], **{t: [] for t in types}}, journal)


@pytest.mark.asyncio
async def test_shifted_features_raise_the_psi_gauge_past_the_threshold_and_journal_one_drift_event(
) -> None:
    """The issue's drift test: volatile bars against a calm training window, two signal groups."""
    manifest = manifest_for("drifty", model_id="drifty-v1", drift=_calm_reference())
    config = ScorerConfig(model="x", drift_psi_threshold=0.25,
                          drift_window_signals=len(SYMBOLS))
    inbox: Channel[Message] = Channel("scorer", 4096, InFlight())
    risk: Channel[Message] = Channel("risk", 4096, None)
    journal: Channel[JournalRecord] = Channel("recorder", 4096, None)
    actor = ScorerActor(inbox, _outbox(journal, risk), config=config, now_ns=lambda: 7,
                        loader=_loader(manifest))
    volatile = _bars(0.05)
    messages: list[Message] = []
    for ts in CLOSES[-2:]:
        messages.append(BarsClosed(ts_ns=ts, bars=tuple(b for b in volatile if b.ts_ns <= ts
                                                        and (ts == CLOSES[-2] or b.ts_ns == ts))))
        messages += [SignalEmitted(ts_ns=ts, strategy="s", symbol=s, target_weight=1.0)
                     for s in SYMBOLS]
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            for msg in messages:
                inbox.send_nowait(msg)
            inbox.close()
    records = []
    while len(journal):
        records.append(journal.receive_nowait())
    drift = [m for _, m in records if isinstance(m, DriftDetected)]
    assert len(drift) == 1, "one breach episode, one event, however many signals it spans"
    (event,) = drift
    assert event.ts_ns == CLOSES[-2]
    assert event.model_id == "drifty-v1"
    assert "vol_20" in event.breached
    assert "score" not in event.breached  # the stand-in's score never moved

    metrics = Metrics(CollectorRegistry())
    metrics.on_commit(records, 0.001)  # what the recorder does with each committed batch
    value = metrics.registry.get_sample_value
    vol_psi = value("trader_model_feature_psi", {"feature": "vol_20"})
    assert vol_psi is not None
    assert vol_psi > 0.25
    assert value("trader_model_drift_psi_threshold") == 0.25
    assert value("trader_model_score_psi") == 0.0
    assert value("trader_model_drift_breach") == 1.0
    assert value("trader_model_drift_events_total") == 1.0


@pytest.mark.asyncio
async def test_a_breach_with_retrain_on_drift_retrains_in_the_background_and_swaps_in_the_winner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """retrain_on_drift: the breach starts `trader train` off the loop (stood in for here);
    its promoted challenger is swapped in at once, journaled, and scores the next signals."""
    from trader.ml import train as train_module

    calm = _calm_reference()
    v1 = registry.read_manifest(registry.save(
        RecordingModel(0.5), manifest_for("drifty", drift=calm), tmp_path))
    registry.promote(tmp_path, v1, reason="first")
    retrains: list[tuple[str, Path]] = []

    async def retrain(config: Config, *, out_dir: str | Path = "models") -> object:
        # What a winning `trader train` leaves behind: a new version, promoted.
        retrains.append((config.strategy_instance, Path(out_dir)))
        v2 = registry.read_manifest(registry.save(
            RecordingModel(0.9), manifest_for("drifty", drift=calm), out_dir))
        registry.promote(out_dir, v2, reason="beat the champion on the latest fold")
        return SimpleNamespace(manifest=v2, decision=SimpleNamespace(promote=True, reason="won"))

    monkeypatch.setattr(train_module, "train_in_worker", retrain)
    config = ScorerConfig(model=str(tmp_path / "drifty"), drift_psi_threshold=0.25,
                          drift_window_signals=len(SYMBOLS), retrain_on_drift=True,
                          model_check_interval_s=3600.0)  # only the retrain prompts a look
    whole = decode_config({"strategy": {"name": "sma_cross", "instance": "drifty"},
                           "scorer": {"model": str(tmp_path / "drifty")}})
    inbox: Channel[Message] = Channel("scorer", 4096, InFlight())
    risk: Channel[Message] = Channel("risk", 4096, None)
    journal: Channel[JournalRecord] = Channel("recorder", 4096, None)
    actor = ScorerActor(inbox, _outbox(journal, risk), config=config, now_ns=lambda: 7,
                        follow_champion=True, retrain_config=whole)
    volatile = _bars(0.05)
    journaled: list[Message] = []

    async def until(kind: type[Message]) -> None:
        while not any(isinstance(m, kind) for m in journaled):
            batch = await journal.receive_batch()
            journal.done(len(batch))
            journaled.extend(m for _, m in batch)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            ts = CLOSES[-2]
            inbox.send_nowait(BarsClosed(ts_ns=ts, bars=tuple(b for b in volatile
                                                             if b.ts_ns <= ts)))
            for s in SYMBOLS:
                inbox.send_nowait(SignalEmitted(ts_ns=ts, strategy="s", symbol=s,
                                                target_weight=1.0))
            await until(DriftDetected)
            await until(ModelSwapped)
            ts = CLOSES[-1]
            inbox.send_nowait(BarsClosed(ts_ns=ts, bars=tuple(b for b in volatile
                                                             if b.ts_ns == ts)))
            inbox.send_nowait(SignalEmitted(ts_ns=ts, strategy="s", symbol=SYMBOLS[0],
                                            target_weight=1.0))
            inbox.close()
    assert retrains == [("drifty", tmp_path)], "one retrain, of this strategy, into the registry"
    swapped = next(m for m in journaled if isinstance(m, ModelSwapped))
    assert (swapped.previous_model_id, swapped.model_id) == ("drifty-v1", "drifty-v2")
    scored = []
    while len(risk):
        scored.append(risk.receive_nowait())
    last = [m for m in scored if isinstance(m, SignalScored)][-1]
    assert (last.model_id, last.probability) == ("drifty-v2", 0.9)
