"""The shipped strategies, on hand-built bars."""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import pytest

from tests.builders import bar, daily_closes
from trader.actors.base import Outbox
from trader.actors.strategy import StrategyActor
from trader.channels import Channel, InFlight
from trader.errors import ConfigError
from trader.messages import BarClosed, BarsClosed, BatchCut, Message, SignalEmitted
from trader.strategies import build, resolve
from trader.strategies.base import DEFAULT_WARMUP_BARS, Strategy, warmup_bars
from trader.strategies.breakout import Breakout, BreakoutParams
from trader.strategies.indicators import RollingSums
from trader.strategies.sma_cross import SmaCross, SmaCrossParams

DAYS = daily_closes("2024-01-02", 40)


def _feed(strategy: Breakout | SmaCross, rows: list[tuple[float, float, float, float]]
          ) -> list[float | None]:
    out = []
    for ts, (o, h, lo, c) in zip(DAYS, rows, strict=False):
        out.append(strategy.on_bar(bar("X", ts, o, h, lo, c, 1000.0)))
    return out


def flat(price: float) -> tuple[float, float, float, float]:
    return (price, price + 0.5, price - 0.5, price)


def test_breakout_enters_on_a_close_above_the_previous_n_highs() -> None:
    """N=3: highs 10.5, 10.5, 10.5; a close of 11 > 10.5 on bar 5 enters (ATR ready at 3 bars)."""
    s = Breakout(BreakoutParams(entry_lookback=3, exit_lookback=2, atr_period=3, atr_mult=3.0))
    out = _feed(s, [flat(10), flat(10), flat(10), flat(10), (10, 11.2, 10, 11)])
    assert out == [None, None, None, None, 1.0]


def test_breakout_does_not_enter_on_a_close_equal_to_the_previous_high() -> None:
    """A close of exactly the previous highest high (10.5) is not a breakout."""
    s = Breakout(BreakoutParams(entry_lookback=3, exit_lookback=2, atr_period=3))
    out = _feed(s, [flat(10), flat(10), flat(10), flat(10), (10, 10.5, 10, 10.5)])
    assert out[-1] is None


def test_breakout_exits_on_a_close_below_the_previous_m_lows() -> None:
    """After entering at 11, the previous two lows are 10 and 10.5; a close of 9.9 exits."""
    s = Breakout(BreakoutParams(entry_lookback=3, exit_lookback=2, atr_period=3, atr_mult=50.0))
    out = _feed(s, [flat(10), flat(10), flat(10), flat(10), (10, 11.2, 10, 11),
                    (11, 11.6, 10.5, 11), (11, 11.2, 9.8, 9.9)])
    assert out[4] == 1.0
    assert out[5] is None
    assert out[6] == 0.0


def test_breakout_exits_on_the_atr_trailing_stop() -> None:
    """Peak close 12 minus 1 x ATR (about 1.1) is about 10.9; a close of 10.8 exits."""
    s = Breakout(BreakoutParams(entry_lookback=3, exit_lookback=10, atr_period=3, atr_mult=1.0))
    out = _feed(s, [flat(10), flat(10), flat(10), flat(10), (10, 11.2, 10, 11),
                    (11, 12.1, 11, 12), (12, 12, 10.7, 10.8)])
    assert out[4] == 1.0
    assert out[6] == 0.0


def test_breakout_trails_a_position_adopted_from_the_broker() -> None:
    """A position found at start-up is managed: the exit rules apply to it."""
    s = Breakout(BreakoutParams(entry_lookback=3, exit_lookback=2, atr_period=3))
    _feed(s, [flat(10), flat(10), flat(10)])
    s.on_position("X", 100.0)
    assert s.on_bar(bar("X", DAYS[3], 10, 10.2, 9.0, 9.1, 1000.0)) == 0.0


def test_sma_cross_enters_and_exits_on_strict_crosses() -> None:
    """fast=2, slow=3 over closes 10, 9, 8, 12, 3.

    bar 3: fast 8.5 < slow 9 (first comparison, nothing before it);
    bar 4: fast 10 > slow 9.67 after fast < slow: enter (1.0);
    bar 5: fast 7.5 < slow 7.67 after fast > slow: exit (0.0).
    """
    s = SmaCross(SmaCrossParams(fast=2, slow=3))
    out = _feed(s, [flat(10), flat(9), flat(8), flat(12), flat(3)])
    assert out == [None, None, None, 1.0, 0.0]


def test_sma_cross_touching_is_not_crossing() -> None:
    """Closes 10, 10, 10, 12, 8: the averages go from equal to apart to equal: no signal."""
    s = SmaCross(SmaCrossParams(fast=2, slow=3))
    out = _feed(s, [flat(10), flat(10), flat(10), flat(12), flat(8)])
    assert out == [None, None, None, None, None]


def test_sma_cross_equal_averages_are_not_a_cross() -> None:
    """Prices on a cent grid that make the averages exactly equal never signal."""
    s = SmaCross(SmaCrossParams(fast=2, slow=4))
    closes = [10.1, 10.2, 10.1, 10.2, 10.1, 10.2, 10.1, 10.2]
    out = _feed(s, [flat(c) for c in closes])
    assert all(o is None for o in out)


def test_sma_cross_long_short_goes_short_on_the_down_cross() -> None:
    """With long_short, a down-cross targets -weight instead of flat."""
    s = SmaCross(SmaCrossParams(fast=2, slow=3, long_short=True, weight=0.5))
    out = _feed(s, [flat(10), flat(9), flat(8), flat(12), flat(3)])
    assert out[3] == 0.5
    assert out[4] == -0.5


def test_rolling_sums_are_the_exact_sums_of_the_last_short_and_long_prices() -> None:
    sums = RollingSums(2, 4)
    prices = [10.01, 10.02, 10.03, 10.04, 10.10, 9.99]
    out = [sums.push(p) for p in prices]
    assert out[:3] == [None, None, None]  # until four prices are in
    # In millionths: 10.03 + 10.04 and 10.01 + ... + 10.04, then the windows slide.
    assert out[3] == (20_070_000, 40_100_000)
    assert out[4] == (20_140_000, 40_190_000)
    assert out[5] == (20_090_000, 40_160_000)


def test_rolling_sums_need_a_short_window_shorter_than_the_long_one() -> None:
    with pytest.raises(ValueError, match="short < long"):
        RollingSums(4, 4)


def test_strategies_resolve_by_name_or_dotted_path() -> None:
    """Builtins by name; anything else by module:Class; a bad name is a config error."""
    assert resolve("breakout") is Breakout
    assert resolve("trader.strategies.sma_cross:SmaCross") is SmaCross
    with pytest.raises(ConfigError, match=r"\$\.strategy\.name"):
        resolve("nope")
    with pytest.raises(ConfigError, match="cannot import"):
        resolve("trader.nothing_here:Thing")
    with pytest.raises(ConfigError, match=r"\$\.strategy\.params\.slow"):
        build("sma_cross", {"slow": "thirty"})


# --- a new strategy incarnation (a daemon's restart) ------------------------------------


async def _restarted(strategy: Strategy, warmup: list[BarClosed],
                     held: Mapping[str, float] | None, bars: list[BarClosed]
                     ) -> list[SignalEmitted]:
    """Run a StrategyActor as a daemon starts one: warm-up, positions, then ``bars``."""
    inbox: Channel[Message] = Channel("strategy", 64, InFlight())
    out: Channel[Message] = Channel("out", 64, None)
    outbox = Outbox("strategy", {BarsClosed: [], SignalEmitted: [out], BatchCut: []}, None)

    async def positions() -> Mapping[str, float]:
        assert held is not None
        return held

    actor = StrategyActor(inbox, outbox, strategy=strategy, instance="s", warmup=warmup,
                          positions=None if held is None else positions)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(actor.run)
            inbox.send_nowait(BarsClosed(ts_ns=bars[-1].ts_ns, bars=tuple(bars)))
            inbox.close()
    signals = []
    while len(out):
        msg = out.receive_nowait()
        assert isinstance(msg, SignalEmitted)
        signals.append(msg)
    return signals


@pytest.mark.asyncio
async def test_a_restarted_breakout_keeps_trailing_a_position_it_entered_before_its_warm_up(
) -> None:
    """The warm-up bars (flat at 10) hold no entry: the position was entered before
    them. Told the journal's 100 shares, the new instance exits on the first close below
    the previous two lows (9.5); without them it would sit in a position it never exits."""
    params = {"entry_lookback": 3, "exit_lookback": 2, "atr_period": 3}
    warmup = [bar("X", ts, *flat(10)) for ts in DAYS[:5]]
    drop = [bar("X", DAYS[5], 10, 10.2, 9.0, 9.1, 1000.0)]

    told = await _restarted(build("breakout", params), warmup, {"X": 100.0}, drop)
    assert [(s.symbol, s.target_weight, s.ts_ns) for s in told] == [("X", 0.0, DAYS[5])]
    assert await _restarted(build("breakout", params), warmup, None, drop) == []


@pytest.mark.asyncio
async def test_a_position_closed_while_the_strategy_was_down_lets_it_enter_again() -> None:
    """The warm-up holds the entry at 11 (so the strategy thinks it is long), but the
    journal says the position was closed since (an operator's flatten): the next
    breakout above the previous highs (11.2) is a new entry, not ignored."""
    params = {"entry_lookback": 3, "exit_lookback": 10, "atr_period": 3, "atr_mult": 50.0}
    warmup = [bar("X", ts, *flat(10)) for ts in DAYS[:4]] + [
        bar("X", DAYS[4], 10, 11.2, 10, 11, 1000.0)]
    breakout = [bar("X", DAYS[5], 11, 12.5, 11, 12, 1000.0)]

    told = await _restarted(build("breakout", params), warmup, {"X": 0.0}, breakout)
    assert [(s.target_weight, s.ts_ns) for s in told] == [(1.0, DAYS[5])]
    assert await _restarted(build("breakout", params), warmup, None, breakout) == []


def test_a_strategy_asks_for_the_warm_up_its_longest_window_needs() -> None:
    """At least the default; more when a window is longer (the daemon reads that many)."""
    assert warmup_bars(SmaCross(SmaCrossParams(fast=10, slow=30))) == DEFAULT_WARMUP_BARS
    assert warmup_bars(SmaCross(SmaCrossParams(fast=50, slow=1000))) == 1001
    # Wilder's ATR: 40 periods leave its start within e^-40 of an uninterrupted series.
    long_atr = Breakout(BreakoutParams(entry_lookback=20, exit_lookback=10, atr_period=20))
    assert warmup_bars(long_atr) == 21 + 40 * 20
