"""The backtest effect of gating: the same replay with and without the scorer.

AUC says whether a model ranks signals; a trader wants to know what the gate
does to the equity curve. So ``trader train`` replays the latest walk-forward
fold's test period twice through the full graph — once with every signal
passing (no model), once gated by a model fitted on that fold's training part
only — and reports both summaries side by side. The gated model never saw the
test period (the fold is purged and embargoed), so the comparison is out of
sample; the model registered by ``trader train`` is fitted on everything and is
*not* the one replayed here (replaying it over its own training data would
flatter it).

The replay starts cold at the test period's first bar: the strategy's
indicators warm up inside the period, identically in both runs.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import msgspec

from trader.config import Config
from trader.ml import registry


class Figures(msgspec.Struct, frozen=True, kw_only=True):
    """The few summary figures the comparison prints."""

    total_return: float
    sharpe: float | None
    max_drawdown: float
    trades: int
    final_equity: float


class GatingEffect(msgspec.Struct, frozen=True, kw_only=True):
    """Both replays of the latest fold's test period."""

    start: str
    end: str
    threshold: float
    ungated: Figures
    gated: Figures


def _replay(config: Config, db: Path) -> Figures:
    from trader.results import load_results, summary_of
    from trader.runner import run_replay

    # A thread of its own: train() is synchronous, but its caller may be
    # inside an event loop (anyio.run refuses to nest).
    with ThreadPoolExecutor(1, thread_name_prefix="gating-replay") as pool:
        outcome = pool.submit(anyio.run, lambda: run_replay(config, db_path=str(db))).result()
    s = summary_of(load_results(outcome.db_path, outcome.run_id, bars=outcome.bars))
    return Figures(total_return=s.total_return, sharpe=s.sharpe, max_drawdown=s.max_drawdown,
                   trades=s.trades, final_equity=s.final_equity)


def gating_effect(config: Config, model: Any, manifest: registry.Manifest, *,
                  start: str, end: str) -> GatingEffect:
    """Replay ``start``..``end`` (ISO dates) without a model, then gated by ``model``.

    ``manifest`` describes ``model`` (its training window must end before
    ``start`` for the result to mean anything; the caller guarantees it).
    """
    with tempfile.TemporaryDirectory(prefix="trader-gating-") as tmp:
        root = Path(tmp)
        path = registry.save(model, manifest, root / "models")
        base = msgspec.structs.replace(
            config,
            data=msgspec.structs.replace(config.data, start=start, end=end),
            # Quiet and local: this is a measurement, not a run an operator watches.
            run=msgspec.structs.replace(config.run, log_level="warning"),
        )
        ungated = _replay(
            msgspec.structs.replace(base, scorer=msgspec.structs.replace(base.scorer, model="")),
            root / "ungated.db",
        )
        gated = _replay(
            msgspec.structs.replace(
                base, scorer=msgspec.structs.replace(base.scorer, model=str(path))),
            root / "gated.db",
        )
    return GatingEffect(start=start, end=end, threshold=config.scorer.threshold,
                        ungated=ungated, gated=gated)


def format_effect(effect: GatingEffect) -> list[str]:
    """Report lines for :func:`trader.ml.train.format_report`."""
    def row(label: str, f: Figures) -> str:
        sharpe = "-" if f.sharpe is None else f"{f.sharpe:.2f}"
        return (f"  {label:<8} return {f.total_return:>8.2%}  Sharpe {sharpe:>6}  "
                f"max drawdown {f.max_drawdown:>7.2%}  trades {f.trades:>5}  "
                f"final equity {f.final_equity:,.2f}")

    return [
        f"gating effect, latest fold's test period {effect.start}..{effect.end} "
        f"(out of sample; gate at {effect.threshold:g}):",
        row("ungated", effect.ungated),
        row("gated", effect.gated),
    ]
