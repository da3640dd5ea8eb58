"""Serve a local Alpaca-compatible exchange (``trader sandbox``) until SIGINT/SIGTERM.

::

    trader sandbox [--host 127.0.0.1] [--port 8765] [--data replay_data/1Day]
                   [--speed 1|60|max] [--start 2010-01-04T14:30:00Z]
                   [--key-id K] [--secret S] [--config config/replay.toml]
                   [--auth-timeout 10]

Keys default to ``$TRADER_SANDBOX_KEY_ID`` / ``$TRADER_SANDBOX_SECRET``, else
``sandbox-key`` / ``sandbox-secret``. With ``--speed max`` the clock moves
only on ``POST /admin/advance``. ``--config`` takes the ``[broker]`` table
(cash, commission, slippage...) from a trader TOML file.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from trader import logs
from trader.config import BrokerConfig, load_config
from trader.sandbox.market import Speed
from trader.sandbox.wire import parse_time

if TYPE_CHECKING:
    from trader.sandbox.app import Sandbox

log = structlog.get_logger("trader.sandbox")

DEFAULT_PORT = 8765


def add_sandbox_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``sandbox`` on the CLI's subparsers; the handler returns an exit code."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "sandbox",
        help="serve a local Alpaca-compatible exchange (REST + websockets) over replay data",
        description=__doc__.split("\n")[0] if __doc__ else None,
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--data", type=Path, default=Path("replay_data/1Day"),
                   help="bar CSV directory (default replay_data/1Day)")
    p.add_argument("--speed", type=_speed, default=1.0,
                   help="market time per wall time: 1 = real time (default), 60, ... or "
                   "'max' (the clock moves only on POST /admin/advance)")
    p.add_argument("--start", type=_start, default=None,
                   help="starting sandbox time, RFC 3339 or a date (default: the first bar)")
    p.add_argument("--key-id", default=os.environ.get("TRADER_SANDBOX_KEY_ID", "sandbox-key"),
                   help="API key id (default $TRADER_SANDBOX_KEY_ID or sandbox-key)")
    p.add_argument("--secret", default=os.environ.get("TRADER_SANDBOX_SECRET", "sandbox-secret"),
                   help="API secret (default $TRADER_SANDBOX_SECRET or sandbox-secret)")
    p.add_argument("--config", default=None,
                   help="trader TOML whose [broker] table sets cash and fill rules")
    p.add_argument("--auth-timeout", type=float, default=10.0,
                   help="seconds a data-stream client has to authenticate (default 10)")
    p.set_defaults(handler=run_sandbox_command)
    return p


def _speed(text: str) -> Speed:
    if text == "max":
        return "max"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed must be a number or 'max', not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("speed must be positive")
    return value


def _start(text: str) -> str:
    try:
        parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"start must be RFC 3339 or YYYY-MM-DD, not {text!r}"
        ) from None
    return text


def run_sandbox_command(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop.

    Raises:
        trader.errors.ConfigError: a bad ``--config`` (the CLI exits 2).
        trader.errors.DataError: unloadable ``--data`` (the CLI exits 4).
    """
    logs.configure(getattr(args, "log_level", None) or "info")
    logs.register_secret(args.secret)
    broker = load_config(args.config).broker if args.config else BrokerConfig()
    from trader.sandbox.app import Sandbox  # aiohttp: only for this command

    sandbox = Sandbox(
        args.data,
        host=args.host,
        port=args.port,
        key_id=args.key_id,
        secret=args.secret,
        speed=args.speed,
        start=args.start,
        broker=broker,
        auth_timeout_s=args.auth_timeout,
    )
    anyio.run(_serve, sandbox)
    return 0


async def _serve(sandbox: Sandbox) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with sandbox:
            log.info(
                "sandbox.listening",
                base_url=sandbox.base_url,
                data_ws_url=sandbox.data_ws_url,
                trade_ws_url=sandbox.trade_ws_url,
                symbols=list(sandbox.tape.symbols),
                timeframe=sandbox.tape.timeframe,
                speed=sandbox.market.speed,
            )
            async for signum in signals:
                log.info("sandbox.stopping", signal=signal.Signals(signum).name)
                break
