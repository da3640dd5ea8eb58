"""Microseconds per signal for the scorer's batch scoring.

    python -m benchmarks.scorer [--repeat N]

Trains the default scorer model (calibrated HistGradientBoosting, as
``trader train`` would) on the bundled daily bars into a temporary registry,
loads it back through the integrity check, and times:

* ``score_rows`` on batches of real feature rows (what the scorer actor runs
  in its worker thread, once per signal timestamp), per signal;
* the feature update, per bar, and a row read, per signal (on the loop).

A figure, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from trader.actors.scorer import score_rows
from trader.config import decode_config
from trader.ml import registry
from trader.ml.dataset import load_bars
from trader.ml.features import FeatureEngine
from trader.ml.train import train

BATCHES = (1, 4, 16, 64, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=200, help="calls per batch size")
    args = parser.parse_args()
    config = decode_config({
        "data": {"dir": "replay_data/1Day", "symbols": ["AAPL", "GOOG", "IBM", "MSFT"]},
        "strategy": {"name": "sma_cross", "instance": "bench", "params": {"fast": 5, "slow": 20}},
    })
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = train(config, out_dir=Path(tmp))
        trained_s = time.perf_counter() - started
        model = registry.load(result.manifest_path)

    merged, _ = load_bars(config)
    bars = merged.bars(0, len(merged))
    engine = FeatureEngine()
    started = time.perf_counter()
    engine.update_many(bars)
    update_us = (time.perf_counter() - started) / len(bars) * 1e6
    started = time.perf_counter()
    rows = [engine.row(s) for _ in range(100) for s in merged.symbols]
    row_us = (time.perf_counter() - started) / len(rows) * 1e6

    m = model.manifest
    print(f"scorer: {m.model_id} ({m.estimator}, {m.calibration}), trained in {trained_s:.1f}s "
          f"on {m.training_window.signals} signals")
    print(f"  features: {update_us:6.2f} µs per bar update, {row_us:6.2f} µs per row read "
          f"({len(bars):,} bars)")
    for size in BATCHES:
        batch = (rows * (size // len(rows) + 1))[:size]
        score_rows(model, batch)  # warm
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(max(1, args.repeat // max(1, size // 16))):
                score_rows(model, batch)
            calls = max(1, args.repeat // max(1, size // 16))
            best = min(best, (time.perf_counter() - started) / calls)
        print(f"  batch {size:4d}: {best * 1e3:8.3f} ms per call   "
              f"{best / size * 1e6:9.1f} µs per signal")


if __name__ == "__main__":
    main()
