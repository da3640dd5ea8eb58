"""The scorer actor: between strategy and risk, the ML gate on signals.

It receives the bars the strategy has seen (``BarsClosed``, always before the
signals they caused) and keeps a :class:`~trader.ml.features.FeatureEngine`
over them: the same code that built the model's training rows. Each
``SignalEmitted`` with a non-zero target weight is scored with the model's
calibrated probability (once its features have warmed up: a row with a NaN
is not scored, as training leaves such signals out); the signals of one timestamp are scored in one
``predict_proba`` call, in a worker thread, so the event loop never waits on
the model. Out goes ``SignalScored(probability, model_id, passed=probability
>= threshold)``. A signal with target weight 0 is an exit and always passes
unscored: a model must never be able to hold a position open.

Degradation rule (DESIGN.md, "The scorer"): with no model configured, a model
that fails its integrity check (:class:`~trader.errors.ModelIntegrityError`)
or a prediction that fails, ``[scorer] on_model_error`` decides: ``pass``
(default, rule-only: signals pass unscored) or ``drop`` (no trade: entries
are refused). Either way it is logged and journaled as a
``ScorerStateChanged`` whenever the state changes, and every unscored signal
is journaled with ``probability = None``; nothing degrades silently.

State: the model (loaded once per incarnation, off the loop) and the
features, rebuilt from the bars it sees (live, from the journal's recent bars
at start). A restart loses only the warm-up of the features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import anyio
import structlog

from trader.actors.base import InboxActor, Outbox
from trader.channels import Channel
from trader.config import ScorerConfig
from trader.errors import ModelIntegrityError
from trader.messages import (
    BarClosed,
    BarsClosed,
    Message,
    ScorerState,
    ScorerStateChanged,
    SignalEmitted,
    SignalScored,
)
from trader.ml.features import FeatureEngine, Row
from trader.ml.registry import LoadedModel
from trader.ml.registry import load as load_model

log = structlog.get_logger("trader.scorer")


def score_rows(model: LoadedModel, rows: Sequence[Row]) -> list[float]:
    """The model's probability of a take profit for each feature row (one batch).

    Raises:
        ValueError: the model returned something other than one probability
            in [0, 1] per row.
    """
    import numpy as np

    proba = model.model.predict_proba(np.asarray(rows, dtype=np.float64))
    out = [float(p) for p in proba[:, 1]]
    if len(out) != len(rows) or not all(0.0 <= p <= 1.0 for p in out):
        raise ValueError(f"model {model.model_id} returned invalid probabilities: {out[:5]}")
    return out


class ScorerActor(InboxActor):
    """Scores signals with the configured model, or degrades per ``on_model_error``."""

    name = "scorer"

    def __init__(
        self,
        inbox: Channel[Message],
        outbox: Outbox,
        *,
        config: ScorerConfig,
        now_ns: Callable[[], int],
        warmup: Sequence[BarClosed] = (),
        loader: Callable[[str], LoadedModel] = load_model,
    ) -> None:
        super().__init__(inbox, outbox)
        self._cfg = config
        self._now_ns = now_ns
        self._warmup = warmup
        self._loader = loader
        self._model: LoadedModel | None = None
        self._features: FeatureEngine | None = None
        self._state: ScorerState | None = None
        self._fallback: ScorerState = (
            "rule_only" if config.on_model_error == "pass" else "no_trade"
        )

    # --- lifecycle ---------------------------------------------------------------

    async def setup(self) -> None:
        ref = self._cfg.model
        if not ref:
            # The documented default, so info, not a warning; still never silent.
            log.info("scorer has no model", state=self._fallback,
                     rule=self._cfg.on_model_error)
            self._set_state(self._fallback, "no model configured", self._now_ns())
            return
        try:
            # Reading, hashing and unpickling take milliseconds to seconds
            # (the first scikit-learn import): not on the event loop.
            model = await anyio.to_thread.run_sync(self._loader, ref)
        except ModelIntegrityError as exc:
            log.error("scorer model refused; degrading", model=ref, error=str(exc),
                      rule=self._cfg.on_model_error)
            self._set_state(self._fallback, f"model refused: {exc}", self._now_ns())
            return
        features = FeatureEngine()
        features.update_many(self._warmup)
        self._model, self._features = model, features
        log.info("scorer model loaded", model_id=model.model_id, path=model.path,
                 threshold=self._cfg.threshold)
        self._set_state("scoring", f"model {model.model_id} loaded", self._now_ns(),
                        model.model_id)

    def _set_state(
        self, state: ScorerState, reason: str, ts_ns: int, model_id: str | None = None
    ) -> None:
        # Callers log the cause; this journals the transition.
        if state == self._state:
            return
        self._state = state
        self._out.post(ScorerStateChanged(ts_ns=ts_ns, state=state, reason=reason,
                                          model_id=model_id))

    # --- messages ----------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        # Signals never get here: _loop scores them in groups.
        if isinstance(msg, BarsClosed) and self._features is not None:
            self._features.update_many(msg.bars)

    async def _loop(self) -> None:
        # InboxActor's loop, except that consecutive signals of one timestamp
        # are scored together: one predict_proba and one thread hop per
        # timestamp, not per signal. Crash and cancellation semantics are the
        # same as trader.actors.base.consume (a group counts as its first message).
        inbox, out = self._inbox, self._out
        while True:
            if out.pending:
                await out.flush()
            try:
                batch = await inbox.receive_batch()
            except anyio.EndOfStream:
                return
            i = 0
            try:
                while i < len(batch):
                    msg = batch[i]
                    j = i + 1
                    if isinstance(msg, SignalEmitted):
                        group = [msg]
                        while j < len(batch):
                            nxt = batch[j]
                            if not (isinstance(nxt, SignalEmitted) and nxt.ts_ns == msg.ts_ns):
                                break
                            group.append(nxt)
                            j += 1
                        await self._score(group)
                    else:
                        self.handle(msg)
                    if out.pending:
                        await out.flush()
                    i = j
            except Exception as exc:
                inbox.requeue_front(batch[i + 1 :])
                inbox.done(i + 1)
                log.error("actor crashed on message", actor=self.name,
                          message_type=type(batch[i]).__name__,
                          message=repr(batch[i])[:500], exc_info=exc)
                raise
            except BaseException:
                inbox.requeue_front(batch[i:])
                inbox.done(i)
                raise
            inbox.done(len(batch))

    async def _score(self, group: list[SignalEmitted]) -> None:
        model, features = self._model, self._features
        scores: dict[int, float] = {}
        if model is not None and features is not None:
            rows: list[Row] = []
            at: list[int] = []
            for k, sig in enumerate(group):
                if sig.target_weight == 0.0:
                    continue
                if features.last_ts(sig.symbol) != sig.ts_ns:
                    # Its bar never reached us (a restart lost it): a row of
                    # another time would be a wrong answer, so no answer.
                    log.warning("no features at the signal's bar; not scored",
                                symbol=sig.symbol, ts_ns=sig.ts_ns,
                                rule=self._cfg.on_model_error)
                    continue
                row = features.row(sig.symbol)
                if not all(map(math.isfinite, row)):
                    # Training leaves these out too: the model never saw a NaN.
                    log.info("features still warming up; not scored", symbol=sig.symbol,
                             ts_ns=sig.ts_ns, rule=self._cfg.on_model_error)
                    continue
                rows.append(row)
                at.append(k)
            if rows:
                ts = group[0].ts_ns
                try:
                    probabilities = await anyio.to_thread.run_sync(score_rows, model, rows)
                except Exception as exc:
                    # A model that fails must not stop trading on the rules
                    # (or, with drop, keep refusing entries): degrade, loudly.
                    log.error("scoring failed; degrading", model_id=model.model_id,
                              signals=len(rows), exc_info=exc)
                    self._set_state(self._fallback, f"prediction failed: {exc!r}"[:500], ts,
                                    model.model_id)
                else:
                    scores = dict(zip(at, probabilities, strict=True))
                    self._set_state("scoring", f"model {model.model_id} scoring", ts,
                                    model.model_id)
        self._emit(group, scores)

    def _emit(self, group: list[SignalEmitted], scores: dict[int, float]) -> None:
        threshold = self._cfg.threshold
        model_id = self._model.model_id if self._model is not None else None
        unscored_pass = self._cfg.on_model_error == "pass"
        post = self._out.post
        for k, sig in enumerate(group):
            p = scores.get(k)
            if p is not None and math.isfinite(p):
                post(SignalScored(ts_ns=sig.ts_ns, signal=sig, probability=p,
                                  model_id=model_id, passed=p >= threshold))
            else:
                passed = sig.target_weight == 0.0 or unscored_pass
                post(SignalScored(ts_ns=sig.ts_ns, signal=sig, passed=passed))
