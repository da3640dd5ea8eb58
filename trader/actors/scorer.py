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

Drift (:mod:`trader.ml.drift`): each scored row and its probability go into
rolling PSIs against the model's training window (``Manifest.drift``). Every
quarter window a ``DriftMeasured`` is journaled (the metrics' gauges come
from it); when a PSI passes ``[scorer] drift_psi_threshold`` a
``DriftDetected`` is journaled, once per breach episode, and with
``retrain_on_drift`` a retrain starts in a worker process.

Hot swap (``trader run`` only, ``[scorer] model`` naming a model by name):
a task re-reads the champion pointer every ``model_check_interval_s``; a new
champion is loaded and verified off the loop, then installed between two
messages (a signal group is scored by one model) and journaled as
``ModelSwapped``. One that fails its integrity check is refused
(``ModelSwapRefused``) and the current model keeps scoring. A replay never
swaps or retrains: its journal must depend on the data alone.

State: the model (loaded once per incarnation, off the loop), the features,
rebuilt from the bars it sees (live, from the journal's recent bars at
start), and the drift windows. A restart loses the warm-up of the features
and refills the drift windows; it resolves the champion again.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from trader.actors.base import InboxActor, Outbox
from trader.channels import Channel
from trader.config import Config, ScorerConfig
from trader.errors import ModelIntegrityError
from trader.messages import (
    BarClosed,
    BarsClosed,
    DriftDetected,
    DriftMeasured,
    Message,
    ModelSwapped,
    ModelSwapRefused,
    ScorerState,
    ScorerStateChanged,
    SignalEmitted,
    SignalScored,
)
from trader.ml import registry
from trader.ml.drift import DriftMonitor
from trader.ml.features import FEATURE_NAMES, FeatureEngine, Row
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
        warmup: Sequence[BarClosed] | Callable[[], Awaitable[Sequence[BarClosed]]] = (),
        loader: Callable[[str], LoadedModel] = load_model,
        follow_champion: bool = False,
        retrain_config: Config | None = None,
    ) -> None:
        """
        Args:
            warmup: the bars its features replay first, or an async function
                returning them (a daemon's restart reads the journal).
            follow_champion: swap to a new champion while running (``trader run``;
                only when ``config.model`` names a model by name and
                ``model_check_interval_s`` > 0).
            retrain_config: the whole config, for the retrain a drift breach
                starts with ``retrain_on_drift`` (None: never retrain).
        """
        super().__init__(inbox, outbox)
        self._cfg = config
        self._now_ns = now_ns
        self._warmup = warmup
        self._loader = loader
        self._model: LoadedModel | None = None
        self._features: FeatureEngine | None = None
        self._drift: DriftMonitor | None = None
        self._state: ScorerState | None = None
        self._fallback: ScorerState = (
            "rule_only" if config.on_model_error == "pass" else "no_trade"
        )
        by_name = registry.champion_ref(config.model)
        self._watch = (by_name if follow_champion and config.model_check_interval_s > 0
                       else None)
        self._retrain_config = (retrain_config if config.retrain_on_drift and by_name
                                else None)
        self._registry_dir = by_name[0] if by_name else None
        self._tg: TaskGroup | None = None
        self._busy = True  # inside a batch (or not yet looping): swaps wait for a boundary
        self._incoming: LoadedModel | ModelSwapRefused | None = None
        self._refused: str | None = None
        self._check_now = anyio.Event()
        self._retraining = False

    async def _warmup_bars(self) -> Sequence[BarClosed]:
        warmup = self._warmup
        return warmup if isinstance(warmup, Sequence) else await warmup()

    @property
    def model_id(self) -> str | None:
        """The model scoring now (None: the degradation rule applies)."""
        return self._model.model_id if self._model is not None else None

    # --- lifecycle ---------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # InboxActor.run, plus the tasks that follow the champion and retrain.
        try:
            await self.setup()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self._watch is not None:
                    tg.start_soon(self._follow, *self._watch)
                task_status.started()
                await self._loop()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.teardown()

    async def setup(self) -> None:
        ref = self._cfg.model
        if self._retrain_config is not None:
            name = registry.safe_name(self._retrain_config.strategy_instance)
            by_name = registry.champion_ref(ref)
            if by_name is not None and by_name[1] != name:
                log.warning("retrained models will not be served: they are named after the "
                            "strategy instance", retrained_as=name, follows=by_name[1])
        if self._watch is not None:
            # A champion promoted later must score at once, not after a warm-up.
            self._features = FeatureEngine()
            self._features.update_many(await self._warmup_bars())
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
        if self._features is None:
            self._features = FeatureEngine()
            self._features.update_many(await self._warmup_bars())
        self._model = model
        self._drift = self._monitor(model)
        log.info("scorer model loaded", model_id=model.model_id, path=model.path,
                 threshold=self._cfg.threshold, follows_champion=self._watch is not None)
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

    def _monitor(self, model: LoadedModel) -> DriftMonitor | None:
        ref = model.manifest.drift
        if ref is None:
            log.info("model has no drift reference (trained before drift monitoring); "
                     "drift is not measured", model_id=model.model_id)
            return None
        try:
            return DriftMonitor(ref, FEATURE_NAMES, window=self._cfg.drift_window_signals,
                                threshold=self._cfg.drift_psi_threshold)
        except ValueError as exc:
            log.warning("unusable drift reference; drift is not measured",
                        model_id=model.model_id, error=str(exc))
            return None

    # --- the champion ------------------------------------------------------------

    async def _follow(self, root: Path, name: str) -> None:
        interval = self._cfg.model_check_interval_s
        while True:
            with anyio.move_on_after(interval):
                await self._check_now.wait()
            self._check_now = anyio.Event()
            await self._look(root, name)

    async def _look(self, root: Path, name: str) -> None:
        try:
            # A few hundred bytes, but still a file read: not on the loop.
            pointer = await anyio.to_thread.run_sync(registry.read_champion, root, name)
        except ModelIntegrityError as exc:
            log.error("champion pointer unreadable; the current model keeps scoring",
                      error=str(exc))
            return
        incoming = self._incoming
        known = {self.model_id, self._refused,
                 incoming.model_id if incoming is not None else None}
        if pointer is None or pointer.model_id in known:
            return
        try:
            model = await anyio.to_thread.run_sync(self._loader, str(root / pointer.manifest))
        except ModelIntegrityError as exc:
            # Remembered, so a bad champion is refused once, not every interval.
            self._refused = pointer.model_id
            log.error("new champion refused; the current model keeps scoring",
                      model_id=pointer.model_id, current=self.model_id, error=str(exc))
            self._offer(ModelSwapRefused(ts_ns=self._now_ns(), model_id=pointer.model_id,
                                         reason=str(exc)[:500], current_model_id=self.model_id))
            return
        self._offer(model)

    def _offer(self, change: LoadedModel | ModelSwapRefused) -> None:
        # Between batches the change happens now; inside one, the loop makes it
        # before its next message, so a swap never splits a message's handling.
        self._incoming = change
        if not self._busy:
            self._take_incoming()

    def _take_incoming(self) -> None:
        change, self._incoming = self._incoming, None
        if change is None:
            return
        if isinstance(change, ModelSwapRefused):
            self._out.post(change)
            return
        previous = self.model_id
        ts = self._now_ns()
        self._model = change
        self._drift = self._monitor(change)
        log.info("scorer model swapped", model_id=change.model_id, previous=previous,
                 path=change.path)
        self._out.post(ModelSwapped(ts_ns=ts, model_id=change.model_id,
                                    previous_model_id=previous, reason="champion promoted"))
        self._set_state("scoring", f"model {change.model_id} loaded", ts, change.model_id)

    def _start_retrain(self) -> bool:
        config, root, tg = self._retrain_config, self._registry_dir, self._tg
        if config is None or root is None or tg is None or self._retraining:
            return False
        self._retraining = True
        tg.start_soon(self._retrain, config, root)
        return True

    async def _retrain(self, config: Config, root: Path) -> None:
        from trader.ml.train import train_in_worker

        try:
            result = await train_in_worker(config, out_dir=root)
        except Exception as exc:
            # A failed retrain (too few signals, unreadable data) must not stop
            # the champion from scoring: it is reported and the breach stands.
            log.error("retrain after drift failed; the champion keeps scoring", exc_info=exc)
        else:
            d = result.decision
            log.info("retrain after drift finished", model_id=result.manifest.model_id,
                     promoted=d is not None and d.promote,
                     reason=d.reason if d is not None else "")
            self._check_now.set()  # a promoted challenger is swapped in now
        finally:
            self._retraining = False

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
        if inbox.driver is not None:
            # Inline delivery (replay, trader.inline): the driver hands us
            # whole batches in its task.
            self._busy = False
            await inbox.driver.serve_batches(inbox, self._handle_batch, self.name)
            return
        while True:
            if out.pending:
                await out.flush()
            self._busy = False
            try:
                batch = await inbox.receive_batch()
            except anyio.EndOfStream:
                return
            await self._handle_batch(batch)

    async def _handle_batch(self, batch: list[Message]) -> None:
        inbox, out = self._inbox, self._out
        self._busy = True
        i = 0
        try:
            while i < len(batch):
                if self._incoming is not None:
                    self._take_incoming()
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
        self._busy = False

    async def _score(self, group: list[SignalEmitted]) -> None:
        # One model for the whole group, even if a swap is offered meanwhile.
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
                    self._observe_drift(model, rows, probabilities, ts)
        self._emit(group, scores, model.model_id if model is not None else None)

    def _observe_drift(self, model: LoadedModel, rows: list[Row], probabilities: list[float],
                       ts_ns: int) -> None:
        monitor = self._drift
        if monitor is None or model is not self._model:
            return
        for row, p in zip(rows, probabilities, strict=True):
            monitor.observe(row, p)
        change, snap = monitor.step()
        due = monitor.report_due()
        if snap is None:
            return
        if change == "breach":
            retraining = self._start_retrain()
            log.warning("model drift detected", model_id=model.model_id,
                        breached=list(snap.breached), score_psi=round(snap.score_psi, 4),
                        threshold=monitor.threshold, retraining=retraining)
            self._out.post(DriftDetected(
                ts_ns=ts_ns, model_id=model.model_id, window_signals=monitor.window,
                threshold=monitor.threshold, features=snap.features,
                feature_psi=snap.feature_psi, score_psi=snap.score_psi,
                breached=snap.breached, retraining=retraining))
        elif change == "clear" or due:
            if change == "clear":
                log.info("model drift cleared", model_id=model.model_id)
            self._out.post(DriftMeasured(
                ts_ns=ts_ns, model_id=model.model_id, window_signals=monitor.window,
                threshold=monitor.threshold, features=snap.features,
                feature_psi=snap.feature_psi, score_psi=snap.score_psi,
                breached=snap.breached, in_breach=monitor.in_breach))

    def _emit(self, group: list[SignalEmitted], scores: dict[int, float],
              model_id: str | None) -> None:
        threshold = self._cfg.threshold
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
