"""Champion/challenger promotion, hot swap in a running scorer, and replays with drift."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
import pytest

from tests.builders import bar, daily_closes
from tests.ml_support import RecordingModel, manifest_for, ml_config
from trader.actors.base import JournalRecord, Outbox
from trader.actors.scorer import ScorerActor
from trader.channels import Channel, InFlight
from trader.config import ScorerConfig
from trader.errors import ModelIntegrityError
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
from trader.ml import champion, registry
from trader.ml.champion import FoldScore
from trader.ml.train import train
from trader.runner import run_replay

# --- the rule -----------------------------------------------------------------------


def test_the_challenger_wins_on_a_higher_auc_and_loses_on_a_lower_one() -> None:
    """AUC decides first, whatever the Brier scores say."""
    champ = FoldScore(auc=0.60, brier=0.20)
    assert champion.better(FoldScore(auc=0.61, brier=0.30), champ)[0] is True
    assert champion.better(FoldScore(auc=0.59, brier=0.10), champ)[0] is False


def test_with_equal_or_undefined_auc_the_lower_brier_wins_and_a_tie_keeps_the_champion() -> None:
    """Brier breaks ties; an exact tie, or no challenger result, keeps the model serving."""
    champ = FoldScore(auc=0.60, brier=0.20)
    assert champion.better(FoldScore(auc=0.60, brier=0.19), champ)[0] is True
    assert champion.better(FoldScore(auc=None, brier=0.19), champ)[0] is True
    assert champion.better(FoldScore(auc=0.60, brier=0.20), champ)[0] is False
    assert champion.better(None, champ)[0] is False


# --- the duel against a registered champion ------------------------------------------------

# The latest fold's test block: the stand-in champion answers 0.5 to every row,
# so its AUC is 0.5 and its Brier score 0.25.
TEST_X = np.zeros((4, 14))
TEST_Y = np.array([0, 1, 0, 1], dtype=np.int64)


def _register(root: Path, probability: float) -> registry.Manifest:
    path = registry.save(RecordingModel(probability), manifest_for("m"), root)
    return registry.read_manifest(path)


def _duel(root: Path, challenger: registry.Manifest, score: FoldScore) -> champion.Decision:
    decision = champion.challenge(root, challenger, score, TEST_X, TEST_Y,
                                  test_start="2010-01-04T21:00:00Z",
                                  test_end="2010-06-30T20:00:00Z")
    champion.apply(root, challenger, decision)
    return decision


def test_a_challenger_that_beats_the_champion_becomes_champion(tmp_path: Path) -> None:
    """First model: champion by default. A better one replaces it, and the pointer says why."""
    first = _register(tmp_path, 0.5)
    assert _duel(tmp_path, first, FoldScore(auc=0.55, brier=0.24)).reason == "no champion yet"
    second = _register(tmp_path, 0.5)
    decision = _duel(tmp_path, second, FoldScore(auc=0.7, brier=0.22))
    assert decision.promote
    assert decision.champion == FoldScore(auc=0.5, brier=0.25)
    pointer = registry.read_champion(tmp_path, "m")
    assert pointer is not None
    assert pointer.model_id == "m-v2"
    assert pointer.decision["challenger"]["auc"] == 0.7
    assert registry.load(tmp_path / "m").model_id == "m-v2"  # by name: the champion


def test_a_challenger_that_does_not_beat_the_champion_is_registered_but_not_served(
    tmp_path: Path,
) -> None:
    """A worse model gets its version and manifest; the pointer keeps naming the champion."""
    _duel(tmp_path, _register(tmp_path, 0.5), FoldScore(auc=0.55, brier=0.24))
    worse = _register(tmp_path, 0.5)
    decision = _duel(tmp_path, worse, FoldScore(auc=0.45, brier=0.26))
    assert not decision.promote
    assert decision.champion_id == "m-v1"
    assert (tmp_path / "m-v2.json").exists()
    assert registry.resolve(tmp_path / "m") == tmp_path / "m-v1.json"


def test_a_champion_that_no_longer_loads_loses_to_any_challenger(tmp_path: Path) -> None:
    """A tampered champion cannot defend its place: the reason names the integrity failure."""
    _duel(tmp_path, _register(tmp_path, 0.5), FoldScore(auc=0.55, brier=0.24))
    artifact = tmp_path / "m-v1.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    decision = _duel(tmp_path, _register(tmp_path, 0.5), FoldScore(auc=0.1, brier=0.9))
    assert decision.promote
    assert "no longer loads" in decision.reason
    assert "sha256" in decision.reason


def test_a_name_without_a_champion_is_a_model_integrity_error(tmp_path: Path) -> None:
    """The scorer's degradation rule then applies, with a message saying what to do."""
    with pytest.raises(ModelIntegrityError, match="no champion promoted"):
        registry.load(tmp_path / "nothing")


# --- hot swap in a running scorer ------------------------------------------------------------

CLOSES = daily_closes("2021-01-04", 60)
SYMBOLS = ("AAA", "BBB", "CCC")


def _bars() -> list[BarClosed]:
    out = []
    for k, sym in enumerate(SYMBOLS):
        price = 50.0 + 10 * k
        for i, ts in enumerate(CLOSES):
            o = price
            price *= math.exp(0.01 * math.sin(i * (k + 1)))
            out.append(bar(sym, ts, o, max(o, price) * 1.01, min(o, price) * 0.99, price))
    return sorted(out, key=lambda b: (b.ts_ns, b.symbol))


BARS = _bars()


def _step(ts: int, first: bool = False) -> list[Message]:
    """The bars up to ``ts`` (all of them the first time) and an entry per symbol at ``ts``."""
    bars = tuple(b for b in BARS if b.ts_ns <= ts and (first or b.ts_ns == ts))
    return [BarsClosed(ts_ns=ts, bars=bars),
            *(SignalEmitted(ts_ns=ts, strategy="s", symbol=s, target_weight=1.0)
              for s in SYMBOLS)]


class Harness:
    """A running scorer and everything it sent, waited for without sleeping."""

    def __init__(self) -> None:
        self.inbox: Channel[Message] = Channel("scorer", 1024, InFlight())
        self.risk: Channel[Message] = Channel("risk", 1024, None)
        self.journal: Channel[JournalRecord] = Channel("recorder", 1024, None)
        self.scored: list[SignalScored] = []
        self.journaled: list[Message] = []
        types = (ScorerStateChanged, DriftMeasured, DriftDetected, ModelSwapped,
                 ModelSwapRefused)
        self.outbox = Outbox("scorer", {SignalScored: [self.risk], **{t: [] for t in types}},
                             self.journal)

    async def scored_until(self, n: int) -> list[SignalScored]:
        while len(self.scored) < n:
            batch = await self.risk.receive_batch()
            self.risk.done(len(batch))
            self.scored += [m for m in batch if isinstance(m, SignalScored)]
        return self.scored[-len(SYMBOLS):]

    async def journaled_until(self, done: Callable[[Message], bool]) -> Message:
        while True:
            for msg in self.journaled:
                if done(msg):
                    return msg
            batch = await self.journal.receive_batch()
            self.journal.done(len(batch))
            self.journaled += [m for _, m in batch]


@pytest.mark.asyncio
async def test_a_new_champion_is_swapped_in_between_messages_and_a_tampered_one_is_refused(
    tmp_path: Path,
) -> None:
    """v1 scores; v2 promoted → ModelSwapped, next signals carry v2; bad v3 refused; none lost."""
    v1 = _register(tmp_path, 0.3)
    registry.promote(tmp_path, v1, reason="first")
    v2 = _register(tmp_path, 0.8)
    v3 = _register(tmp_path, 0.9)
    artifact = tmp_path / "m-v3.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    h = Harness()
    actor = ScorerActor(h.inbox, h.outbox, config=ScorerConfig(
        model=str(tmp_path / "m"), model_check_interval_s=0.01), now_ns=lambda: 7,
        follow_champion=True)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            for msg in _step(CLOSES[-3], first=True):
                h.inbox.send_nowait(msg)
            first = await h.scored_until(3)
            assert {(s.model_id, s.probability) for s in first} == {("m-v1", 0.3)}

            registry.promote(tmp_path, v2, reason="better")
            swapped = await h.journaled_until(lambda m: isinstance(m, ModelSwapped))
            assert isinstance(swapped, ModelSwapped)
            assert (swapped.model_id, swapped.previous_model_id) == ("m-v2", "m-v1")
            for msg in _step(CLOSES[-2]):
                h.inbox.send_nowait(msg)
            second = await h.scored_until(6)
            assert {(s.model_id, s.probability) for s in second} == {("m-v2", 0.8)}

            registry.promote(tmp_path, v3, reason="tampered after training")
            refused = await h.journaled_until(lambda m: isinstance(m, ModelSwapRefused))
            assert isinstance(refused, ModelSwapRefused)
            assert (refused.model_id, refused.current_model_id) == ("m-v3", "m-v2")
            assert "sha256" in refused.reason
            for msg in _step(CLOSES[-1]):
                h.inbox.send_nowait(msg)
            third = await h.scored_until(9)
            assert {(s.model_id, s.probability) for s in third} == {("m-v2", 0.8)}
            h.inbox.close()
    assert len(h.scored) == 9, "every signal answered exactly once across the swaps"
    assert actor.model_id == "m-v2"


# --- replays with the champion and drift monitoring ------------------------------------------


def _journal(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT ts_ns, source, seq, type, body FROM journal ORDER BY ts_ns, source, seq"
        ).fetchall()


@pytest.mark.asyncio
async def test_two_replays_with_the_champion_and_drift_monitoring_write_identical_journals(
    tmp_path: Path,
) -> None:
    """Same model, same data: the same journal rows, drift reports included."""
    models = tmp_path / "models"
    result = train(ml_config(tmp_path, data={"end": "2009-12-31"}), out_dir=models)
    assert result.decision is not None
    assert result.decision.promote
    assert result.manifest.drift is not None
    journals = []
    for n in (1, 2):
        db = tmp_path / f"run{n}.db"
        config = ml_config(tmp_path, run={"db": str(db)},
                           data={"start": "2010-01-01", "end": "2010-12-31"},
                           scorer={"model": str(models / "sma-ml"), "drift_window_signals": 8})
        with anyio.fail_after(60):
            outcome = await run_replay(config)
        assert outcome.completed
        journals.append(_journal(db))
    assert journals[0] == journals[1]
    types = {row[3] for row in journals[0]}
    assert "DriftMeasured" in types
    assert "ModelSwapped" not in types  # a replay scores with one model throughout
