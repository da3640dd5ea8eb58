"""The scorer actor: gating with a model, the degradation rule, and deterministic replays."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio
import numpy as np
import pytest
from structlog.testing import capture_logs

from tests.builders import bar, daily_closes
from tests.ml_support import (
    RECORDED,
    FailingModel,
    RecordingModel,
    manifest_for,
    ml_config,
)
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
from trader.ml.dataset import build_dataset
from trader.ml.train import train
from trader.runner import run_replay

pytestmark = pytest.mark.asyncio

T = TypeVar("T")

CLOSES = daily_closes("2021-01-04", 60)
SYMBOLS = ("AAA", "BBB", "CCC")


def _bars() -> list[BarClosed]:
    out = []
    for k, sym in enumerate(SYMBOLS):
        price = 50.0 + 10 * k
        for i, ts in enumerate(CLOSES):
            o = price
            price *= math.exp(0.01 * math.sin(i * (k + 1)))
            out.append(bar(sym, ts, o, max(o, price) * 1.01, min(o, price) * 0.99, price,
                           v=1e6 + 1e4 * ((i * 7 + k) % 13)))
    return sorted(out, key=lambda b: (b.ts_ns, b.symbol))


def _signal(symbol: str, weight: float, ts: int = CLOSES[-1]) -> SignalEmitted:
    return SignalEmitted(ts_ns=ts, strategy="s", symbol=symbol, target_weight=weight)


def _messages(*signals: SignalEmitted) -> list[Message]:
    bars = tuple(_bars())
    return [BarsClosed(ts_ns=bars[-1].ts_ns, bars=bars), *signals]


class Run:
    """What one scorer incarnation sent: to risk, and to the journal."""

    def __init__(self, scored: list[SignalScored], journal: list[Message]) -> None:
        self.scored = scored
        self.states = [m for m in journal if isinstance(m, ScorerStateChanged)]


async def _run(
    messages: Sequence[Message],
    config: ScorerConfig,
    loader: Callable[[str], registry.LoadedModel] = registry.load,
) -> Run:
    inbox: Channel[Message] = Channel("scorer", 1024, InFlight())
    risk: Channel[Message] = Channel("risk", 1024, None)
    journal: Channel[JournalRecord] = Channel("recorder", 1024, None)
    outbox = Outbox("scorer", {SignalScored: [risk], ScorerStateChanged: []}, journal)
    actor = ScorerActor(inbox, outbox, config=config, now_ns=lambda: 7, loader=loader)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            for msg in messages:  # no await in between: the actor takes them as one batch
                inbox.send_nowait(msg)
            inbox.close()
    scored = [m for m in _drain(risk) if isinstance(m, SignalScored)]
    return Run(scored, [m for _, m in _drain(journal)])


def _drain(channel: Channel[T]) -> list[T]:
    out = []
    while len(channel):
        out.append(channel.receive_nowait())
    return out


def _stand_in(model: object) -> Callable[[str], registry.LoadedModel]:
    loaded = registry.LoadedModel(model=model, manifest=manifest_for("stand-in", model_id="si-v1"),
                                  path="memory")
    return lambda ref: loaded


# --- scoring -------------------------------------------------------------------


async def test_signals_of_one_timestamp_are_scored_in_one_batch_and_gated_by_threshold() -> None:
    """One predict_proba for the timestamp; passed = probability >= threshold; exits unscored."""
    RECORDED.clear()
    run = await _run(
        _messages(_signal("AAA", 1.0), _signal("BBB", 0.0), _signal("CCC", -1.0)),
        ScorerConfig(model="x", threshold=0.6), _stand_in(RecordingModel(0.6)),
    )
    assert len(RECORDED) == 1
    assert RECORDED[0].shape == (2, 14)
    by_symbol = {s.signal.symbol: s for s in run.scored}
    assert [s.signal.symbol for s in run.scored] == ["AAA", "BBB", "CCC"]
    assert by_symbol["AAA"].probability == 0.6
    assert by_symbol["AAA"].passed
    assert by_symbol["AAA"].model_id == "si-v1"
    assert by_symbol["BBB"].probability is None
    assert by_symbol["BBB"].passed
    assert [s.state for s in run.states] == ["scoring"]

    below = await _run(_messages(_signal("AAA", 1.0)), ScorerConfig(model="x", threshold=0.61),
                       _stand_in(RecordingModel(0.6)))
    assert below.scored[0].probability == 0.6
    assert not below.scored[0].passed


async def test_a_signal_whose_bar_the_scorer_never_saw_is_not_scored() -> None:
    """Features of another time would be a wrong answer: the rule applies instead."""
    RECORDED.clear()
    late = _signal("AAA", 1.0, ts=CLOSES[-1] + 1)
    run = await _run(_messages(late), ScorerConfig(model="x", on_model_error="drop"),
                     _stand_in(RecordingModel(0.9)))
    assert RECORDED == []
    assert run.scored[0].probability is None
    assert not run.scored[0].passed


# --- the degradation rule ---------------------------------------------------------


@pytest.mark.parametrize(("rule", "state"), [("pass", "rule_only"), ("drop", "no_trade")])
async def test_without_a_model_the_rule_decides_and_the_state_is_journaled(
    rule: str, state: str
) -> None:
    """No model: ``pass`` lets entries through unscored, ``drop`` refuses them; exits pass."""
    config = ScorerConfig(on_model_error=rule)  # type: ignore[arg-type]
    run = await _run(_messages(_signal("AAA", 1.0), _signal("BBB", 0.0)), config)
    assert [(s.probability, s.passed) for s in run.scored] == [(None, rule == "pass"),
                                                                (None, True)]
    assert [(s.state, s.reason, s.ts_ns) for s in run.states] == [
        (state, "no model configured", 7)]


async def test_the_default_is_rule_only() -> None:
    """DESIGN.md's rule: with the default config every signal passes unscored, and it says so."""
    with capture_logs() as logs:
        run = await _run(_messages(_signal("AAA", 1.0)), ScorerConfig())
    assert [e["state"] for e in logs if e["event"] == "scorer has no model"] == ["rule_only"]
    assert run.scored[0].passed
    assert run.scored[0].probability is None
    assert run.states[0].state == "rule_only"


@pytest.mark.parametrize("rule", ["pass", "drop"])
async def test_a_tampered_model_is_refused_logged_and_journaled_then_the_rule_applies(
    tmp_path: Path, rule: str
) -> None:
    """A changed artifact never scores: the error is logged, the state journaled, the rule holds."""
    manifest = registry.save(RecordingModel(0.9), manifest_for("m"), tmp_path)
    artifact = tmp_path / "m-v1.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    with capture_logs() as logs:
        run = await _run(_messages(_signal("AAA", 1.0)),
                         ScorerConfig(model=str(manifest), on_model_error=rule))  # type: ignore[arg-type]
    assert run.scored[0].probability is None
    assert run.scored[0].passed is (rule == "pass")
    (state,) = run.states
    assert state.state == ("rule_only" if rule == "pass" else "no_trade")
    assert "sha256" in state.reason
    assert "does not match" in state.reason
    assert any(e["event"] == "scorer model refused; degrading" and e["log_level"] == "error"
               for e in logs)


async def test_a_failing_prediction_degrades_then_recovers_and_both_are_journaled() -> None:
    """The model raising is not a crash: that timestamp follows the rule, the next is scored."""
    first, second = CLOSES[-2], CLOSES[-1]
    bars = _bars()
    messages: list[Message] = [
        BarsClosed(ts_ns=first, bars=tuple(b for b in bars if b.ts_ns <= first)),
        _signal("AAA", 1.0, ts=first),
        BarsClosed(ts_ns=second, bars=tuple(b for b in bars if b.ts_ns == second)),
        _signal("AAA", 1.0, ts=second),
    ]
    with capture_logs() as logs:
        run = await _run(messages, ScorerConfig(model="x", on_model_error="drop"),
                         _stand_in(FailingModel(failures=1, probability=0.9)))
    assert [(s.probability, s.passed) for s in run.scored] == [(None, False), (0.9, True)]
    assert [s.state for s in run.states] == ["scoring", "no_trade", "scoring"]
    assert "model exploded" in run.states[1].reason
    assert run.states[1].ts_ns == first
    assert any(e["event"] == "scoring failed; degrading" for e in logs)


# --- replays with a real model ------------------------------------------------------


def _rows(db: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] != "run_id"]
        return conn.execute(
            f"SELECT {', '.join(cols)} FROM {table} ORDER BY {', '.join(cols)}").fetchall()


async def test_two_replays_with_the_same_model_write_identical_signals_and_orders(
    tmp_path: Path,
) -> None:
    """Train on 2003-2009, replay 2010 twice: the same probabilities, verdicts and orders."""
    train_config = ml_config(tmp_path, data={"end": "2009-12-31"})
    manifest = Path(train(train_config, out_dir=tmp_path / "models").manifest_path)
    replay_window = {"start": "2010-01-01", "end": "2010-12-31"}
    # A threshold at the median score of the replay's signals: some pass, some do not.
    ds = build_dataset(ml_config(tmp_path, data=replay_window))
    model = registry.load(manifest).model
    threshold = float(np.median(model.predict_proba(ds.X)[:, 1]))
    tables = []
    for n in (1, 2):
        db = tmp_path / f"run{n}.db"
        config = ml_config(tmp_path, run={"db": str(db)}, data=replay_window,
                           scorer={"model": str(manifest), "threshold": threshold})
        with anyio.fail_after(60):
            outcome = await run_replay(config)
        assert outcome.completed
        tables.append((_rows(db, "signals"), _rows(db, "orders"), _rows(db, "fills")))
    assert tables[0] == tables[1]
    signals, orders, _ = tables[0]
    scored = [s for s in signals if s[6] is not None]  # probability column
    assert scored
    assert all(s[7] == "sma-ml-v1" for s in scored)
    assert orders
    probabilities = [float(s[6]) for s in scored]  # type: ignore[arg-type]
    assert min(probabilities) < threshold <= max(probabilities)
