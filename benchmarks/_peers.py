"""``sma_cross`` written for the peer libraries, for ``benchmarks/replay.py``.

The rule is trader's (trader/strategies/sma_cross.py): with ``d = SMA(close,
fast) - SMA(close, slow)``, enter long when the previous ``d < 0`` and this
``d > 0``; leave when the previous ``d > 0`` and this ``d < 0``. The order is a
market order filled at the *next* bar's open, in whole shares, sized from the
cash at that open (all-in for one symbol; ``value / n_symbols`` capped by cash
for several, like trader's ``fixed_fraction`` sizing). No commission, no
slippage.

* backtesting.py: the library's own idiom, ``self.I`` SMAs and
  ``backtesting.lib.crossover`` (which is exactly the strict rule above);
  ``self.buy()`` sizes at the next open from the available cash. It is
  single-asset, so several symbols are run one after another.
* backtrader: ``bt.ind.SMA`` lines and the same strict test in ``next``;
  ``cheat_on_open`` so that the size is computed in ``next_open`` from the
  open the order fills at (``order_target_percent`` would size on the close
  and be rejected on every gap up). Several symbols are several datas in one
  Cerebro with one shared broker. Default Cerebro otherwise (runonce,
  preload, standard observers).

Only imported inside the benchmark's child processes, so the parent never pays
for (or depends on) these libraries' imports.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

FAST = 10
SLOW = 30


def _sma(values: Any, n: int) -> Any:
    return pd.Series(values).rolling(n).mean().to_numpy()


# --------------------------------------------------------------------------- backtesting.py


def run_backtesting(frames: Mapping[str, pd.DataFrame], cash: float) -> dict[str, Any]:
    """Run each symbol on its own ``Backtest``; return times and trade counts.

    ``run_s`` is the sum over symbols of constructing and running the
    ``Backtest`` (its run includes computing its statistics).
    """
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    class SmaCross(Strategy):  # type: ignore[misc]
        fast = FAST
        slow = SLOW

        def init(self) -> None:
            self.sma_fast = self.I(_sma, self.data.Close, self.fast)
            self.sma_slow = self.I(_sma, self.data.Close, self.slow)

        def next(self) -> None:
            if crossover(self.sma_fast, self.sma_slow):
                self.buy()
            elif crossover(self.sma_slow, self.sma_fast):
                self.position.close()

    run_s = 0.0
    bars = 0
    trades: dict[str, int] = {}
    for symbol, df in frames.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bt = Backtest(df, SmaCross, cash=cash, commission=0.0, trade_on_close=False,
                          exclusive_orders=False, finalize_trades=False)
            stats = bt.run()
        run_s += time.perf_counter() - start
        bars += len(df)
        trades[symbol] = int(stats["# Trades"])
    return {"run_s": run_s, "bars": bars, "trades": trades}


# --------------------------------------------------------------------------- backtrader


def run_backtrader(frames: Mapping[str, pd.DataFrame], cash_per_symbol: float) -> dict[str, Any]:
    """Run every symbol as one data of a single Cerebro; return times and trade counts.

    ``run_s`` covers adding the feeds and ``cerebro.run()`` (backtrader copies
    the frames into its own line buffers there).
    """
    import backtrader as bt

    n_symbols = len(frames)

    class SmaCross(bt.Strategy):  # type: ignore[misc]
        def __init__(self) -> None:
            self.diff = {
                d: bt.ind.SMA(d.close, period=FAST) - bt.ind.SMA(d.close, period=SLOW)
                for d in self.datas
            }
            self.seen: dict[Any, int] = {d: 0 for d in self.datas}
            self.want: dict[Any, str] = {}
            self.closed: dict[str, int] = {d._name: 0 for d in self.datas}

        def notify_trade(self, trade: Any) -> None:
            if trade.isclosed:
                self.closed[trade.data._name] += 1

        def next(self) -> None:
            for d, diff in self.diff.items():
                n = len(d)
                if n == self.seen[d]:
                    continue  # no new bar for this symbol at this time
                self.seen[d] = n
                prev, now = diff[-1], diff[0]
                if prev < 0 < now:
                    self.want[d] = "buy"
                elif prev > 0 > now:
                    self.want[d] = "close"

        def next_open(self) -> None:
            # cheat_on_open: the new bars are loaded and orders placed here fill
            # at their open, which is the next bar's open for what next() saw.
            if not self.want:
                return
            broker = self.broker
            for d, what in list(self.want.items()):
                if len(d) == self.seen[d]:
                    continue  # this symbol has no new bar yet: wait for it
                del self.want[d]
                if what == "close":
                    if self.getposition(d).size:
                        self.close(data=d)
                    continue
                budget = min(broker.getvalue() / n_symbols, broker.getcash())
                size = math.floor(budget / d.open[0])
                if size > 0:
                    self.buy(data=d, size=size)

    start = time.perf_counter()
    cerebro = bt.Cerebro(cheat_on_open=True)
    cerebro.broker.setcash(cash_per_symbol * n_symbols)
    cerebro.broker.setcommission(commission=0.0)
    for symbol, df in frames.items():
        cerebro.adddata(bt.feeds.PandasData(dataname=df, name=symbol))
    cerebro.addstrategy(SmaCross)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strat = cerebro.run()[0]
    run_s = time.perf_counter() - start
    return {
        "run_s": run_s,
        "bars": int(sum(len(df) for df in frames.values())),
        "trades": dict(strat.closed),
    }


def frame_of(ts_ns: Any, o: Any, h: Any, lo: Any, c: Any, v: Any) -> pd.DataFrame:
    """OHLCV DataFrame with a naive UTC DatetimeIndex, as both libraries expect."""
    index = pd.DatetimeIndex(np.asarray(ts_ns, dtype="datetime64[ns]"), name="Datetime")
    return pd.DataFrame(
        {"Open": o, "High": h, "Low": lo, "Close": c, "Volume": v}, index=index
    )
