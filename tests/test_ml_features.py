"""Scorer features: O(1) indicators, and one code path for training and live scoring."""

from __future__ import annotations

import math
import random
from pathlib import Path

import anyio
import numpy as np
import pytest

from tests.builders import bar, daily_closes
from tests.ml_support import RECORDED, RecordingModel, manifest_for, ml_config
from trader.actors.base import JournalRecord, Outbox
from trader.actors.scorer import ScorerActor
from trader.channels import Channel, InFlight
from trader.config import ScorerConfig
from trader.messages import (
    BarClosed,
    BarsClosed,
    Message,
    ScorerStateChanged,
    SignalEmitted,
    SignalScored,
)
from trader.ml import registry
from trader.ml.dataset import Dataset, build_dataset, load_bars
from trader.ml.features import FEATURE_NAMES, FeatureEngine
from trader.runner import run_replay


def _walk(symbol: str, closes_ns: list[int], *, seed: int, scale: float = 1.0) -> list[BarClosed]:
    rng = random.Random(seed)
    price = 100.0
    out = []
    for ts in closes_ns:
        o = price
        price *= math.exp(rng.gauss(0.0, 0.02))
        h, lo = max(o, price) * 1.01, min(o, price) * 0.99
        out.append(bar(symbol, ts, o * scale, h * scale, lo * scale, price * scale,
                       v=1e6 * (1 + rng.random())))
    return out


def _rows(bars: list[BarClosed], symbol: str) -> list[tuple[float, ...]]:
    engine = FeatureEngine()
    rows = []
    for b in bars:
        engine.update(b)
        if b.symbol == symbol:
            rows.append(engine.row(symbol))
    return rows


def _merge(*series: list[BarClosed]) -> list[BarClosed]:
    return sorted((b for s in series for b in s), key=lambda b: (b.ts_ns, b.symbol))


CLOSES = daily_closes("2021-01-04", 80)


def test_a_row_follows_feature_names_and_is_nan_only_while_warming_up() -> None:
    """Each feature is NaN until it has enough bars, then finite; rows follow FEATURE_NAMES."""
    bars = _merge(_walk("AAA", CLOSES, seed=1), _walk("BBB", CLOSES, seed=2))
    rows = _rows(bars, "AAA")
    assert all(len(r) == len(FEATURE_NAMES) for r in rows)
    assert all(math.isnan(v) for v in rows[0])
    assert all(math.isfinite(v) for v in rows[-1])
    named = dict(zip(FEATURE_NAMES, rows[1], strict=True))
    aaa = [b for b in bars if b.symbol == "AAA"]
    assert named["ret_1"] == math.log(aaa[1].close / aaa[0].close)
    assert math.isnan(named["ret_5"])


def test_rsi_is_100_on_a_series_that_only_rises() -> None:
    """Wilder's RSI of a monotonic rise is 100, and the 20-bar return is the log ratio."""
    bars = [bar("UP", ts, 10.0 + i, 11.0 + i, 9.5 + i, 10.5 + i) for i, ts in enumerate(CLOSES)]
    row = dict(zip(FEATURE_NAMES, _rows(bars, "UP")[-1], strict=True))
    assert row["rsi_14"] == 100.0
    assert row["ret_20"] == pytest.approx(math.log(bars[-1].close / bars[-21].close))
    assert row["dist_sma_20"] > 0


def test_features_are_scale_free() -> None:
    """The same path at ten times the price gives the same row, so one model fits all symbols."""
    one = _rows(_walk("A", CLOSES, seed=3), "A")[-1]
    ten = _rows(_walk("A", CLOSES, seed=3, scale=10.0), "A")[-1]
    assert np.allclose(one, ten, rtol=1e-9, atol=1e-12)


def test_a_row_does_not_depend_on_the_order_bars_of_its_timestamp_arrive_in() -> None:
    """The regime uses earlier timestamps only: B's bar at T arriving before or after A's
    changes nothing in A's row at T."""
    a, b = _walk("A", CLOSES, seed=4), _walk("B", CLOSES, seed=5)
    in_order, swapped = FeatureEngine(), FeatureEngine()
    for x, y in zip(a, b, strict=True):
        in_order.update(x)
        in_order.update(y)
        swapped.update(y)
        swapped.update(x)
        assert np.array_equal(in_order.row("A"), swapped.row("A"), equal_nan=True)
    mkt = FEATURE_NAMES.index("mkt_vol_20")
    assert math.isfinite(in_order.row("A")[mkt])


# --- one code path: training rows == the rows the scorer actor scores --------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    config = ml_config(tmp_path_factory.mktemp("ds"),
                       data={"start": "2009-01-01", "end": "2010-12-31"})
    return build_dataset(config)


def _live_messages(dataset: Dataset, tmp: Path, cut: int) -> list[Message]:
    """The bars as the strategy would forward them (cut in batches of about ``cut``,
    always at a signal's timestamp), each signal right after its bars."""
    merged, _ = load_bars(ml_config(tmp, data={"start": "2009-01-01", "end": "2010-12-31"}))
    signals: dict[int, list[SignalEmitted]] = {}
    for ts, sym, d in zip(dataset.ts_ns.tolist(), dataset.symbols, dataset.direction.tolist(),
                          strict=True):
        signals.setdefault(ts, []).append(SignalEmitted(
            ts_ns=ts, strategy="sma-ml", symbol=sym, target_weight=float(d)))
    out: list[Message] = []
    pending: list[BarClosed] = []
    all_bars = merged.bars(0, len(merged))
    for i, b in enumerate(all_bars):
        pending.append(b)
        last_of_ts = i + 1 == len(all_bars) or all_bars[i + 1].ts_ns != b.ts_ns
        if last_of_ts and (b.ts_ns in signals or len(pending) >= cut):
            out.append(BarsClosed(ts_ns=b.ts_ns, bars=tuple(pending)))
            pending = []
            out.extend(signals.get(b.ts_ns, []))
    if pending:
        out.append(BarsClosed(ts_ns=pending[-1].ts_ns, bars=tuple(pending)))
    return out


@pytest.mark.asyncio
@pytest.mark.parametrize("cut", [1, 7, 4096])
async def test_the_scorer_actor_scores_exactly_the_training_rows(
    dataset: Dataset, tmp_path: Path, cut: int
) -> None:
    """Bars fed bar by bar through the actor (in batches of any size) give, at each signal,
    bit-for-bit the feature row training computed over the whole series."""
    RECORDED.clear()
    loaded = registry.LoadedModel(model=RecordingModel(), manifest=manifest_for("rec"),
                                  path="memory")
    inbox: Channel[Message] = Channel("scorer", 64, InFlight())
    risk: Channel[Message] = Channel("risk", 100_000, None)
    journal: Channel[JournalRecord] = Channel("recorder", 100_000, None)
    outbox = Outbox("scorer", {SignalScored: [risk], ScorerStateChanged: []}, journal)
    actor = ScorerActor(inbox, outbox, config=ScorerConfig(model="stand-in"),
                        now_ns=lambda: 0, loader=lambda ref: loaded)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            for msg in _live_messages(dataset, tmp_path, cut):
                await inbox.send(msg)
            inbox.close()
    live = np.vstack(RECORDED)
    assert live.shape == dataset.X.shape
    assert np.array_equal(live, dataset.X, equal_nan=True)
    assert dataset.warming_up > 0  # the window starts cold: some signals were not scored


@pytest.mark.asyncio
async def test_a_replay_scores_each_signal_with_its_training_row(
    dataset: Dataset, tmp_path: Path
) -> None:
    """Through the whole graph (feed, strategy, scorer) the model sees the training rows."""
    RECORDED.clear()
    manifest = registry.save(RecordingModel(), manifest_for("rec"), tmp_path / "models")
    config = ml_config(tmp_path, data={"start": "2009-01-01", "end": "2010-12-31"},
                       scorer={"model": str(manifest)})
    with anyio.fail_after(60):
        outcome = await run_replay(config)
    assert outcome.completed
    live = np.vstack(RECORDED)
    # The replay also scores the last entries, which have no label (the data ends).
    assert len(live) == len(dataset) + dataset.unlabeled
    assert np.array_equal(live[: len(dataset)], dataset.X, equal_nan=True)
