"""The TOML configuration, as frozen msgspec Structs.

Every table is a Struct that forbids unknown fields, so a typo is an error,
not a silently ignored setting. Constraints live in the types
(``Annotated[..., Meta(...)]``). :func:`load_config` turns any problem into a
:class:`~trader.errors.ConfigError` whose one-line message names the file and
the field path, e.g.::

    config/replay.toml: $.broker.cash_usd: Expected `float` >= 1.0

``--set dotted.key=value`` overrides are applied to the parsed TOML *before*
validation, so they are checked exactly like the file. Values are read as TOML
(``--set risk.max_position_shares=100``, ``--set data.symbols=["AAPL"]``) and
fall back to a plain string (``--set strategy.name=breakout``).

Secrets are never read from TOML: see :mod:`trader.secrets`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from trader.errors import ConfigError

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeFloat = Annotated[float, Meta(ge=0.0)]
PositiveFloat = Annotated[float, Meta(gt=0.0)]
Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]
Bps = Annotated[float, Meta(ge=0.0, le=10_000.0)]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RunConfig(_Section, frozen=True, kw_only=True):
    """``[run]``: the process.

    Attributes:
        db: SQLite journal path (default ``runs/trader.db``), relative to the
            working directory.
        shutdown_deadline_s: seconds the orderly drain may take on SIGTERM
            (default 10); systemd's TimeoutStopSec must be longer.
        log_level: default log level (``info``).
        control_socket: Unix socket on which ``trader run`` takes operator
            commands (``trader halt``, ``resume``, ``flatten``; default
            ``runs/trader.sock``, mode 600). Empty: no control socket.
    """

    db: str = "runs/trader.db"
    shutdown_deadline_s: PositiveFloat = 10.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    control_socket: str = "runs/trader.sock"


class DataConfig(_Section, frozen=True, kw_only=True):
    """``[data]``: bars for replay.

    Attributes:
        dir: directory of CSV files (default ``replay_data/1Day``).
        symbols: symbols to load; empty means every symbol found.
        start, end: ISO dates bounding the replay (inclusive); empty means all.
        on_bad_row: ``error`` stops the load at the first bad row with
            file:line; ``skip`` drops and counts bad rows.
    """

    dir: str = "replay_data/1Day"
    symbols: tuple[str, ...] = ()
    start: str = ""
    end: str = ""
    on_bad_row: Literal["error", "skip"] = "error"


class ReplayConfig(_Section, frozen=True, kw_only=True):
    """``[replay]``: pacing.

    Attributes:
        speed: ``"max"`` (default: as fast as possible) or a multiple of real
            time, e.g. 60 replays one minute of bars per second.
        batch_bars: most bars per feed batch while nothing is in flight
            (default 4096; bigger batches amortise scheduling, smaller ones
            bound memory per message).
        journal_backlog: most records the journal may fall behind the graph
            in a replay (default 2048). It replaces ``[channels] recorder``
            there: live, a backlog absorbs a slow disk; in a backtest nothing
            is gained by running ahead of the disk, and the backlog holds
            every bar it refers to in memory.
    """

    speed: float | Literal["max"] = "max"
    batch_bars: PositiveInt = 4096
    journal_backlog: PositiveInt = 2048


class StrategyConfig(_Section, frozen=True, kw_only=True):
    """``[strategy]``.

    Attributes:
        name: ``sma_cross``, ``breakout``, or a dotted path ``package.module:Class``.
        instance: the strategy instance's id; part of every client order id,
            so it must stay the same across restarts (default: the name).
        params: the strategy's own parameters, validated by its params Struct.
    """

    name: str = "sma_cross"
    instance: str = ""
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class CommissionConfig(_Section, frozen=True, kw_only=True):
    """``[broker.commission]``.

    Attributes:
        model: ``bps`` (a fraction of traded value) or ``per_share``.
        bps: basis points of traded value (model ``bps``; default 0).
        per_share_usd: dollars per share (model ``per_share``).
        minimum_usd: minimum per order execution (model ``per_share``).
    """

    model: Literal["bps", "per_share"] = "bps"
    bps: Bps = 0.0
    per_share_usd: NonNegativeFloat = 0.0
    minimum_usd: NonNegativeFloat = 0.0


class BrokerConfig(_Section, frozen=True, kw_only=True):
    """``[broker]``: the simulated broker's rules (replay and the sandbox).

    Attributes:
        cash_usd: starting cash (default 100000).
        commission: the commission model.
        slippage_bps: adverse slippage on market and stop fills, in basis
            points of the fill price (default 0).
        fractional: allow fractional shares for notional orders (default false).
        max_participation: the most of a bar's volume one order may take
            (0 < x <= 1; default 1 = no cap). Below 1, big orders fill partially
            over several bars.
    """

    cash_usd: Annotated[float, Meta(ge=1.0)] = 100_000.0
    commission: CommissionConfig = CommissionConfig()
    slippage_bps: Bps = 0.0
    fractional: bool = False
    max_participation: Annotated[float, Meta(gt=0.0, le=1.0)] = 1.0


class RiskConfig(_Section, frozen=True, kw_only=True):
    """``[risk]``: sizing, pre-trade limits and circuit breakers (trader/risk_checks.py).

    Every limit is off at 0 (the default), so a config without ``[risk]``
    limits trades exactly as before they existed.

    Attributes:
        sizing: ``target_weight`` (the signal's weight of equity, default),
            ``fixed_notional``, ``fixed_fraction`` or ``volatility_target``
            (``risk_per_position_usd / (ATR x atr_multiple)`` whole shares).
            With a scorer probability ``p``, the target is scaled by ``p``
            (trader/sizing.py).
        fixed_notional_usd: order size for ``fixed_notional`` (default 10000).
        fixed_fraction: fraction of equity for ``fixed_fraction`` (default 0.1).
        risk_per_position_usd: dollars a position may lose over
            ``atr_multiple`` ATRs, for ``volatility_target`` (default 1000).
        atr_period_bars: bars in the ATR (Wilder's smoothing; default 14).
        atr_multiple: the k in ``ATR x k`` (default 2).
        max_position_shares: the most shares per symbol (0 = no limit).
        max_position_notional_usd: the most dollars per symbol (0 = no limit).
        max_order_notional_usd: the most dollars one order that does not
            shrink a position may be worth (0 = no limit).
        max_gross_exposure_pct: sum of |position values| as a percent of
            equity, e.g. 100 = 1x (0 = no limit).
        max_net_exposure_pct: |sum of position values| as a percent of
            equity (0 = no limit).
        max_open_orders: orders open at once, all symbols (0 = no limit).
        max_orders_per_minute: orders in any 60 s of message time, all
            symbols (0 = no limit).
        max_orders_per_minute_per_symbol: the same for one symbol (0 = no limit).
        price_collar_pct: deny an order whose price (its limit, or the price
            its signal was made at) is more than this percent away from the
            last trade (0 = no collar).
        duplicate_window_s: deny a second order of the same symbol and side
            within this many seconds of message time (0 = off).
        allow_short: whether a negative target may open a short (default false).
        entries_outside_regular_hours: allow orders that grow a position when
            the bar behind the signal closed outside a regular NYSE session
            (pre- or post-market, a holiday). Default false: such entries are
            denied ``outside_regular_hours``; exits always pass.
        flatten_before_close_min: close every position this many minutes
            before the session's close, and take no new entries until the next
            session (0 = off). Checked at every bar batch.
        max_drawdown_pct: HALT when equity, marked at every bar, falls this
            percent below its high-water mark (0 = off).
        daily_loss_limit_usd: HALT when equity falls this many dollars below
            its mark at the start of the session (0 = off).
        flatten_on_halt: when the drawdown or daily-loss breaker halts, also
            close every position at market (default false).
        on_stale_feed: the state a stale market-data feed forces:
            ``REDUCING`` (default), ``HALTED``, or ``ACTIVE`` (ignore).
            Staleness is measured by the feed (``[feed] stale_after_s``).
        on_order_stream_silence: the state a silent order-update stream
            forces (``[alpaca] order_stream_silence_s`` measures it):
            ``REDUCING`` (default: polling still books fills), ``HALTED`` or
            ``ACTIVE`` (journal it, keep trading).
        on_broker_errors: the state a broker failing more than ``[alpaca]
            error_rate_max`` of its requests forces: ``REDUCING`` (default),
            ``HALTED`` or ``ACTIVE``.
        on_clock_skew: the state a broker clock more than ``[alpaca]
            clock_skew_max_ms`` away from ours forces: ``HALTED`` (default:
            bar and order times can no longer be trusted), ``REDUCING`` or
            ``ACTIVE``.
        auto_resume: return to ACTIVE by itself when a breaker's condition
            clears (live data flows again after a stale feed, the order
            stream speaks again, the broker's error rate or clock is back
            within its limit, a new session starts, the kill-switch file is
            removed). Default false: an operator resumes (``trader resume``).
            The drawdown breaker never resumes by itself.
        kill_switch_file: if this file exists, HALT (checked at every bar
            batch; "" = no kill switch, the default).
        stop_loss_pct: close a position at market once a bar trades this
            percent against its average entry price (0 = off, the default;
            0 <= x < 100). Long and short alike (trader/exits.py).
        take_profit_pct: close a position at market once a bar trades this
            percent in its favour from the entry (0 = off; 0 <= x < 100).
        trailing_stop_pct: close a position at market once a bar trades this
            percent back from the best price since entry (the high-water mark
            of a long, the low-water mark of a short; 0 = off; 0 <= x < 100).
        exits: how the three exits above are carried out: ``emulated``
            (default: risk watches the bars and sends a market order after
            the bar that breached) or ``native``: each entry goes to the
            broker as a whole-share gtc market order with a bracket (Alpaca
            ``order_class`` ``bracket``, ``oto`` with one level) whose take
            profit and stop loss legs the broker holds, one-cancels-other;
            the levels are computed from the signal's price. The trailing
            stop has no bracket leg and stays emulated. ``native`` needs
            ``stop_loss_pct`` or ``take_profit_pct`` (DESIGN.md, "Exits").
    """

    sizing: Literal["target_weight", "fixed_notional", "fixed_fraction", "volatility_target"] = (
        "target_weight"
    )
    fixed_notional_usd: NonNegativeFloat = 10_000.0
    fixed_fraction: Fraction = 0.1
    risk_per_position_usd: NonNegativeFloat = 1_000.0
    atr_period_bars: PositiveInt = 14
    atr_multiple: PositiveFloat = 2.0
    max_position_shares: Annotated[int, Meta(ge=0)] = 0
    max_position_notional_usd: NonNegativeFloat = 0.0
    max_order_notional_usd: NonNegativeFloat = 0.0
    max_gross_exposure_pct: NonNegativeFloat = 0.0
    max_net_exposure_pct: NonNegativeFloat = 0.0
    max_open_orders: Annotated[int, Meta(ge=0)] = 0
    max_orders_per_minute: Annotated[int, Meta(ge=0)] = 0
    max_orders_per_minute_per_symbol: Annotated[int, Meta(ge=0)] = 0
    price_collar_pct: NonNegativeFloat = 0.0
    duplicate_window_s: NonNegativeFloat = 0.0
    allow_short: bool = False
    entries_outside_regular_hours: bool = False
    flatten_before_close_min: NonNegativeFloat = 0.0
    max_drawdown_pct: Annotated[float, Meta(ge=0.0, le=100.0)] = 0.0
    daily_loss_limit_usd: NonNegativeFloat = 0.0
    flatten_on_halt: bool = False
    on_stale_feed: Literal["ACTIVE", "REDUCING", "HALTED"] = "REDUCING"
    on_order_stream_silence: Literal["ACTIVE", "REDUCING", "HALTED"] = "REDUCING"
    on_broker_errors: Literal["ACTIVE", "REDUCING", "HALTED"] = "REDUCING"
    on_clock_skew: Literal["ACTIVE", "REDUCING", "HALTED"] = "HALTED"
    auto_resume: bool = False
    kill_switch_file: str = ""
    stop_loss_pct: Annotated[float, Meta(ge=0.0, lt=100.0)] = 0.0
    take_profit_pct: Annotated[float, Meta(ge=0.0, lt=100.0)] = 0.0
    trailing_stop_pct: Annotated[float, Meta(ge=0.0, lt=100.0)] = 0.0
    exits: Literal["emulated", "native"] = "emulated"

    def __post_init__(self) -> None:
        if self.sizing == "volatility_target" and not self.risk_per_position_usd:
            raise ValueError("volatility_target sizing needs risk_per_position_usd > 0")
        if self.exits == "native" and not (self.stop_loss_pct or self.take_profit_pct):
            # A bracket with no leg is a plain order: asking for one is a mistake.
            raise ValueError('exits: "native" needs stop_loss_pct or take_profit_pct > 0 '
                             '(a bracket carries those two; the trailing stop stays emulated)')


class ChannelsConfig(_Section, frozen=True, kw_only=True):
    """``[channels]``: inbox capacities, each chosen for a reason.

    Attributes:
        strategy: bar batches waiting for the strategy (default 64: the feed
            should feel backpressure within a second of a stalled strategy).
        scorer, risk, execution: signals and orders (default 1024: bursts at
            the minute boundary for a large universe fit without blocking).
        feed: control messages back to the feed (default 64).
        recorder: records waiting for SQLite (default 65536: absorbs a slow
            disk for a while; when full the graph slows down rather than
            dropping a record).
    """

    strategy: PositiveInt = 64
    scorer: PositiveInt = 1024
    risk: PositiveInt = 1024
    execution: PositiveInt = 1024
    feed: PositiveInt = 64
    recorder: PositiveInt = 65536


class SupervisorConfig(_Section, frozen=True, kw_only=True):
    """``[supervisor]``: restart intensity.

    Attributes:
        intensity: restarts allowed within ``period_s`` (default 5).
        period_s: the window in seconds (default 60). With systemd's
            StartLimitBurst=3 in 600 s that allows 5 x 3 = 15 actor restarts
            per 10 minutes before the unit is given up.
    """

    intensity: Annotated[int, Meta(ge=0)] = 5
    period_s: PositiveFloat = 60.0


class AlpacaConfig(_Section, frozen=True, kw_only=True):
    """``[alpaca]``: where the live path connects. Keys never live here.

    Attributes:
        trading_url: REST base for trading (default Alpaca paper).
        data_url: REST base for market data history (default Alpaca's).
        data_stream_url: market-data websocket, full URL with the feed path.
        trade_stream_url: trade-updates websocket (``.../stream``).
        key_id_env, secret_env: environment variables holding the keys.
        key_id_file, secret_file: files holding them (mode 600), if not in the env.
        request_timeout_s: our own timeout per REST call (alpaca-py has none).
        max_requests_per_minute: stay under Alpaca's 200/min (default 190).
        max_concurrent_submits: the most orders the execution actor has at
            the broker at once, each of its own symbol (one symbol's orders
            go one after another); also bounds the polls before a bar is
            released (default 8; 1 = one order at a time). Every order is
            journaled before it is sent either way, and the request budget
            above still applies.
        update_timeout_s: poll an order by id if no update arrived in this time.
        order_stream_silence_s: an order the broker took (a submit or a cancel
            it answered) that has had no trade update for this many seconds
            while the stream is connected means the stream has gone silent:
            a ``BrokerHealthChanged`` for risk (``[risk]
            on_order_stream_silence``); the next update means it speaks
            again. 0 (default) = not watched. Keep it above the stream's
            normal latency (Alpaca: well under a second).
        error_rate_max: the most of the REST requests in the last
            ``error_window_s`` that may fail (timeouts, connection failures,
            401, 429, 5xx: the answers that are no answer) before the broker
            counts as failing (a fraction, e.g. 0.5; 0 = not watched, the
            default). Healthy again once the share is back at or under it.
        error_window_s: the rolling window of ``error_rate_max``, in seconds
            (default 60).
        error_min_requests: the fewest requests in the window for the rate to
            count (default 5), so one failed request of one is not a 100%
            error rate.
        clock_skew_max_ms: the most the broker's clock (``/v2/clock``) may
            differ from ours, in milliseconds (half the request's round trip
            is allowed for); checked when the update stream starts and every
            ``clock_check_interval_s``. 0 (default) = not checked.
        clock_check_interval_s: seconds between clock checks (default 60).
    """

    trading_url: str = "https://paper-api.alpaca.markets"
    data_url: str = "https://data.alpaca.markets"
    data_stream_url: str = "wss://stream.data.alpaca.markets/v2/iex"
    trade_stream_url: str = "wss://paper-api.alpaca.markets/stream"
    key_id_env: str = "APCA_API_KEY_ID"
    secret_env: str = "APCA_API_SECRET_KEY"
    key_id_file: str = ""
    secret_file: str = ""
    request_timeout_s: PositiveFloat = 10.0
    max_requests_per_minute: Annotated[int, Meta(ge=1, le=200)] = 190
    max_concurrent_submits: PositiveInt = 8
    update_timeout_s: PositiveFloat = 5.0
    order_stream_silence_s: NonNegativeFloat = 0.0
    error_rate_max: Fraction = 0.0
    error_window_s: PositiveFloat = 60.0
    error_min_requests: PositiveInt = 5
    clock_skew_max_ms: NonNegativeFloat = 0.0
    clock_check_interval_s: PositiveFloat = 60.0


class LiveFeedConfig(_Section, frozen=True, kw_only=True):
    """``[feed]``: the live market-data feed.

    Attributes:
        kind: ``replay`` (bars from ``[data]``, paced by ``replay.speed``) or
            ``alpaca`` (the websocket feed).
        symbols: the universe to subscribe to.
        timeframe_s: bar length in seconds (default 60: minute bars).
        stale_after_s: no data for this long while the market is open means
            a reconnect and a stale event (default 120).
        reconnect_initial_s, reconnect_max_s: exponential backoff bounds.
    """

    kind: Literal["replay", "alpaca"] = "replay"
    symbols: tuple[str, ...] = ()
    timeframe_s: PositiveInt = 60
    stale_after_s: PositiveFloat = 120.0
    reconnect_initial_s: PositiveFloat = 0.5
    reconnect_max_s: PositiveFloat = 30.0


class SandboxConfig(_Section, frozen=True, kw_only=True):
    """``[sandbox]``: run the bundled Alpaca-compatible sandbox in-process.

    Attributes:
        enabled: start it and point ``[alpaca]`` at it (default false).
        data: bars it plays (default ``replay_data/1Day``).
        speed: ``"max"`` or a multiple of real time (default 60).
        start: ISO date or time to start the sandbox clock ("" = data start).
        port: 0 picks a free port.
    """

    enabled: bool = False
    data: str = "replay_data/1Day"
    speed: float | Literal["max"] = 60.0
    start: str = ""
    port: Annotated[int, Meta(ge=0, le=65535)] = 0


class ScorerTrainConfig(_Section, frozen=True, kw_only=True):
    """``[scorer.train]``: how ``trader train`` labels and validates (see trader.ml).

    Attributes:
        estimator: ``hgb`` (HistGradientBoostingClassifier, default) or
            ``logreg`` (the logistic baseline); the one saved. Both are always
            validated and reported.
        take_profit_atr: take-profit barrier in ATR14 multiples from the entry
            (default 2.0).
        stop_loss_atr: stop-loss barrier in ATR14 multiples (default 2.0).
        max_bars: time barrier in bars from the entry bar (default 10).
        folds: walk-forward test folds (default 4; the data is cut in folds + 1).
        embargo_bars: bars left between the end of every training label and
            the first test signal (default 5).
        min_samples: fewer labeled signals than this is a data error (default 50).
        drift_bins: quantile bins of the training distributions stored in the
            manifest for drift monitoring (default 10: deciles).
        gating_backtest: replay the latest fold's test period with and
            without a model fitted on that fold's past, and report both
            (default true; trader.ml.gating).
    """

    estimator: Literal["hgb", "logreg"] = "hgb"
    take_profit_atr: PositiveFloat = 2.0
    stop_loss_atr: PositiveFloat = 2.0
    max_bars: PositiveInt = 10
    folds: Annotated[int, Meta(ge=2)] = 4
    embargo_bars: Annotated[int, Meta(ge=0)] = 5
    min_samples: PositiveInt = 50
    drift_bins: Annotated[int, Meta(ge=2, le=100)] = 10
    gating_backtest: bool = True


class ScorerConfig(_Section, frozen=True, kw_only=True):
    """``[scorer]``: the ML gate between strategy and risk (DESIGN.md, the scorer).

    Attributes:
        model: a model manifest (``models/sma-daily-v1.json``) or registry
            dir + id (``models/sma-daily-v1``): that version, always; or
            registry dir + name (``models/sma-daily``): the name's current
            champion, swapped in while the daemon runs when ``trader train``
            promotes a new one. Relative to the working directory. Empty
            (default): no model, signals pass unscored.
        threshold: a signal passes when the model's probability is >= this
            (default 0.5).
        on_model_error: what happens without a usable model (none configured,
            a failed integrity check, a failed prediction): ``pass`` (default,
            rule-only: signals pass unscored) or ``drop`` (no trade: signals
            that open or change exposure are refused; exits always pass).
        drift_psi_threshold: a population stability index above this, of any
            feature or of the score, against the model's training window, is
            a drift breach (default 0.25, the usual "shifted" mark).
        drift_window_signals: how many of the latest scored signals the
            live distributions are measured over (default 200).
        model_check_interval_s: seconds between looks at the champion pointer
            when ``model`` names a model by name (default 60; 0: never, the
            champion at start serves until a restart). ``trader run`` only.
        retrain_on_drift: on a drift breach, run ``trader train`` in a worker
            process over ``[data]`` and promote the result if it beats the
            champion (default false). ``trader run`` only, with ``model``
            naming a model by name.
        train: labeling and validation for ``trader train``.
    """

    model: str = ""
    threshold: Fraction = 0.5
    on_model_error: Literal["pass", "drop"] = "pass"
    drift_psi_threshold: PositiveFloat = 0.25
    drift_window_signals: PositiveInt = 200
    model_check_interval_s: NonNegativeFloat = 60.0
    retrain_on_drift: bool = False
    train: ScorerTrainConfig = ScorerTrainConfig()


class HttpConfig(_Section, frozen=True, kw_only=True):
    """``[http]``: the operations endpoint of ``trader run`` (metrics, health, status).

    Attributes:
        enabled: serve it (default true; ``trader replay`` never does).
        listen: ``host:port`` to bind (default ``127.0.0.1:9108``: local only;
            a container sets ``0.0.0.0:9108``). Port 0 picks a free port.
        max_loop_lag_s: ``/healthz`` fails when the event loop was late by more
            than this many seconds at its last check (default 2).
    """

    enabled: bool = True
    listen: str = "127.0.0.1:9108"
    max_loop_lag_s: PositiveFloat = 2.0


LOG_LEVELS = ("debug", "info", "warning", "error")
#: The actors a ``[logging.actors]`` key may name (trader/graph.py's START_ORDER).
LOG_ACTORS = ("recorder", "execution", "risk", "scorer", "strategy", "feed")


class LoggingConfig(_Section, frozen=True, kw_only=True):
    """``[logging]``: how much each part of the daemon says (trader/logs.py).

    Attributes:
        level: the default level, one of ``debug``, ``info``, ``warning``,
            ``error``; empty (default) means ``[run] log_level``. The command
            line's ``--log-level`` beats both.
        actors: a level per actor, e.g. ``risk = "debug"`` under
            ``[logging.actors]``; keys are ``recorder``, ``execution``,
            ``risk``, ``scorer``, ``strategy``, ``feed``. A line belongs to the
            actor whose module logged it (the broker adapter's lines are
            execution's, the replay feed's are feed's). Default: none.
    """

    level: str = ""
    actors: dict[str, str] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked here rather than with Literal types: msgspec would report a
        # bad dict value as `$.logging.actors[...]`, without the actor's name.
        expected = ", ".join(LOG_LEVELS)
        if self.level and self.level not in LOG_LEVELS:
            raise ValueError(f"level: unknown log level {self.level!r} (expected {expected})")
        for actor, level in self.actors.items():
            if actor not in LOG_ACTORS:
                raise ValueError(f"actors.{actor}: not an actor (expected one of "
                                 f"{', '.join(LOG_ACTORS)})")
            if level not in LOG_LEVELS:
                raise ValueError(f"actors.{actor}: unknown log level {level!r} "
                                 f"(expected {expected})")


class RecorderConfig(_Section, frozen=True, kw_only=True):
    """``[recorder]``: the journal writer.

    Attributes:
        bar_retention_days: delete journaled ``BarsClosed`` records whose bar
            closed more than this many days (of market time) before the newest
            bar the recorder has written (0 = keep every bar, the default).
            Only raw bars are deleted: orders, fills, positions, equity and
            every other message stay. Keep it longer than the strategy's
            warm-up needs: a restarting daemon rebuilds indicators from the
            journaled bars.
    """

    bar_retention_days: Annotated[int, Meta(ge=0)] = 0


class Config(_Section, frozen=True, kw_only=True):
    """The whole file. Every section is optional and has safe defaults."""

    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    replay: ReplayConfig = ReplayConfig()
    strategy: StrategyConfig = StrategyConfig()
    broker: BrokerConfig = BrokerConfig()
    risk: RiskConfig = RiskConfig()
    channels: ChannelsConfig = ChannelsConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    alpaca: AlpacaConfig = AlpacaConfig()
    feed: LiveFeedConfig = LiveFeedConfig()
    sandbox: SandboxConfig = SandboxConfig()
    http: HttpConfig = HttpConfig()
    scorer: ScorerConfig = ScorerConfig()
    logging: LoggingConfig = LoggingConfig()
    recorder: RecorderConfig = RecorderConfig()

    @property
    def strategy_instance(self) -> str:
        return self.strategy.instance or self.strategy.name


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into a key path and a TOML-typed value.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    key, sep, raw = text.partition("=")
    path = [p for p in key.strip().split(".")]
    if not sep or not key.strip() or any(not p for p in path):
        raise ConfigError(f"--set {text!r}: expected dotted.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``dotted.key=value`` applied."""
    out: dict[str, Any] = _deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a table")
            node = child
        node[path[-1]] = value
    return out


def _deepcopy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, dict) else v for k, v in d.items()}


def decode_config(raw: dict[str, Any], *, source: str = "<config>") -> Config:
    """Validate a parsed TOML document.

    Raises:
        ConfigError: one line naming ``source`` and the field path.
    """
    try:
        config = msgspec.convert(raw, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    # Strategy parameters belong to the strategy's own Struct; check them now
    # so they fail like any other field, before anything starts.
    from trader.strategies import build

    try:
        build(config.strategy.name, config.strategy.params)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _describe(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int`, got `str` - at `$.a.b`"; put the path first,
    # which is what a person scans for.
    text = str(exc)
    message, sep, where = text.rpartition(" - at ")
    if sep:
        # A __post_init__ check may name a field below its section
        # ("actors.risk: ..."): join it onto the path.
        sub = re.match(r"([A-Za-z_][\w.]*): ", message)
        if sub:
            return f"{where.strip('`')}.{sub.group(1)}: {message[sub.end():]}"
        return f"{where.strip('`')}: {message}"
    return f"$: {text}"


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a TOML config file.

    Raises:
        ConfigError: missing or unreadable file, bad TOML, unknown key, wrong
            type or out-of-range value; the message is one line naming the file
            and the field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    raw = apply_overrides(raw, overrides or [])
    return decode_config(raw, source=str(p))
