"""The ``trader`` command line.

Exit codes (a contract; see README.md):

====  ==========================================================
0     success (or a clean shutdown after SIGTERM/SIGINT)
1     an unexpected error (a bug: the traceback is logged); ``trader db
      backup|check``: the journal (or its copy) failed its integrity check
2     usage or configuration error (one line naming the field)
3     restart budget exhausted: an actor kept crashing
4     data error (a bad data file; the message names file:line)
5     interrupted: a second signal cut the shutdown drain short
6     halt/resume/flatten: no daemon took the command (none on the socket, or stopping)
====  ==========================================================
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from trader import __version__, logs
from trader.config import Config, load_config
from trader.errors import ConfigError, DataError, RestartBudgetExhausted

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_RESTARTS = 3
EXIT_DATA = 4
EXIT_INTERRUPTED = 5
EXIT_UNREACHABLE = 6

log = structlog.get_logger("trader.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit code is 2 as well
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_config_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--config", default=default, help=f"TOML config (default {default})")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field by dotted path, e.g. strategy.params.fast=10 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trader", description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="log level (default: the config's run.log_level)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("version", help="print the version")
    p.set_defaults(handler=_cmd_version)

    p = sub.add_parser("run", help="run the daemon")
    _add_config_args(p, "config/sandbox.toml")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser("replay", help="backtest: replay data through the same graph")
    _add_config_args(p, "config/replay.toml")
    p.add_argument("--data", help="data directory (overrides data.dir)")
    p.add_argument("--start", help="first date (overrides data.start)")
    p.add_argument("--end", help="last date (overrides data.end)")
    p.add_argument("--db", help="SQLite journal (overrides run.db)")
    p.add_argument("--speed", help="'max' (as fast as possible) or a multiple of real time, "
                   "e.g. 60 (overrides replay.speed)")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object on the last line of stdout")
    p.add_argument("--report", metavar="HTML", help="write the HTML report here "
                   "(default: next to the journal, <db>.html)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--symbol", help="symbol to chart in the report (default: the first traded)")
    p.set_defaults(handler=_cmd_replay)

    p = sub.add_parser("report", help="regenerate the summary and HTML report from a journal")
    p.add_argument("db", help="SQLite journal written by trader replay")
    p.add_argument("--run", help="run id (default: the latest run in the file)")
    p.add_argument("--out", help="HTML output path (default: <db>.html)")
    p.add_argument("--symbol", help="symbol to chart (default: the first traded)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("train", help="train the ML scorer on the strategy's historical signals")
    _add_config_args(p, "config/replay.toml")
    p.add_argument("--data", help="data directory (overrides data.dir)")
    p.add_argument("--out", default="models", help="model registry directory (default models/)")
    p.set_defaults(handler=_cmd_train)

    for name, text in (
        ("halt", "stop new orders in the running daemon and cancel its open entries"),
        ("resume", "let the running daemon trade again (clears every breaker)"),
        ("flatten", "close every position of the running daemon at market "
                    "(the trading state is unchanged: halt first to stop re-entries)"),
    ):
        p = sub.add_parser(name, help=text)
        _add_config_args(p, "config/sandbox.toml")
        p.add_argument("--socket", help="control socket (default: the config's run.control_socket)")
        p.add_argument("--reason", default="operator", help="why, for the journal and the logs")
        p.set_defaults(handler=_cmd_control, control=name)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub: Any) -> None:
    # Subcommands owned by other packages register themselves here.
    from trader.data.commands import add_data_commands
    from trader.maintenance import add_db_commands

    add_data_commands(sub)
    add_db_commands(sub)
    try:
        from trader.sandbox.commands import add_sandbox_command
    except ImportError:  # pragma: no cover - the sandbox is part of the package
        return
    add_sandbox_command(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Commands with a config file reconfigure from it; the others log at
    # --log-level (default info) from the start.
    logs.configure(args.log_level or "info")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"trader: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DataError as exc:
        print(f"trader: data error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except RestartBudgetExhausted as exc:
        print(f"trader: {exc}", file=sys.stderr)
        return EXIT_RESTARTS


def _load(args: argparse.Namespace, extra: Sequence[str] = ()) -> Config:
    config = load_config(args.config, [*args.overrides, *extra])
    # --log-level beats [logging] level, which beats [run] log_level; the
    # per-actor levels of [logging.actors] apply under any of them.
    logs.configure(args.log_level or config.logging.level or config.run.log_level,
                   actors=config.logging.actors)
    return config


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"trader {__version__}")
    return EXIT_OK


def _anyio_run(fn: Callable[[], Any]) -> Any:
    """Run on uvloop where it is installed (Linux), else asyncio's default loop."""
    import anyio

    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(fn)
    return anyio.run(fn, backend_options={"use_uvloop": True})


def _run_graph_main(coro_fn: Callable[[], Any]) -> int:
    from trader.runner import Interrupted

    try:
        _anyio_run(coro_fn)
    except BaseExceptionGroup as group:
        # Task groups wrap what an actor raised; unwrap the ones with an exit code.
        budget = group.subgroup(RestartBudgetExhausted)
        if budget is not None:
            print(f"trader: {_first(budget)}", file=sys.stderr)
            return EXIT_RESTARTS
        if group.subgroup(Interrupted) is not None:
            return EXIT_INTERRUPTED
        for kind in (ConfigError, DataError):
            sub = group.subgroup(kind)
            if sub is not None:
                raise _first(sub) from None
        raise
    except Interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _cmd_run(args: argparse.Namespace) -> int:
    from trader.http import Ops
    from trader.runner import run_live, run_replay

    config = _load(args)
    # Metrics, /healthz, /readyz, /status and systemd notification ([http]).
    ops = Ops(config.http)
    if config.feed.kind == "replay":
        # A paper simulation: the replay feed paced by replay.speed against the
        # simulated broker. Same graph, same journal.
        # It is a daemon all the same: operator commands, and a trading state
        # that survives a restart.
        return _run_graph_main(lambda: run_replay(
            config, install_signal_handlers=True, ops=ops, restore_risk_state=True,
            control_socket=config.run.control_socket or None))
    return _run_graph_main(lambda: run_live(
        config, install_signal_handlers=True, ops=ops,
        control_socket=config.run.control_socket or None))


def _cmd_control(args: argparse.Namespace) -> int:
    from trader.control import send_command
    from trader.errors import ControlUnavailable

    path = args.socket
    if not path:
        path = load_config(args.config, args.overrides).run.control_socket
        if not path:
            raise ConfigError(f"{args.config}: $.run.control_socket: empty: no control socket")
    try:
        answer = send_command(path, args.control, args.reason)
    except ControlUnavailable as exc:
        print(f"trader: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if answer != "ok":  # e.g. the daemon is shutting down: it did not take the command
        print(f"trader: the daemon answered: {answer}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(answer)
    return EXIT_OK


def _cmd_replay(args: argparse.Namespace) -> int:
    import anyio  # noqa: F401

    from trader.runner import ReplayOutcome, run_replay

    extra = []
    if args.data:
        extra.append(f'data.dir="{args.data}"')
    if args.start:
        extra.append(f'data.start="{args.start}"')
    if args.end:
        extra.append(f'data.end="{args.end}"')
    if args.db:
        extra.append(f'run.db="{args.db}"')
    if args.speed:
        extra.append('replay.speed="max"' if args.speed == "max" else f"replay.speed={args.speed}")
    config = _load(args, extra)
    outcome: list[ReplayOutcome] = []
    progress = _progress_bar()

    async def main() -> None:
        outcome.append(
            await run_replay(config, install_signal_handlers=True,
                             on_progress=progress)
        )

    try:
        status = _run_graph_main(main)
    finally:
        if progress is not None:
            progress.close()
    if status != EXIT_OK or not outcome:
        return status
    return _print_results(
        outcome[0].db_path, outcome[0].run_id, args, bars=outcome[0].bars,
        html=False if args.no_report else args.report,
    )


class _Progress:
    """A tqdm bar with ETA on a terminal; nothing otherwise (logs say enough)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=" bars", unit_scale=True, file=sys.stderr,
                             leave=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _progress_bar() -> _Progress | None:
    return _Progress() if sys.stderr.isatty() else None


def _print_results(
    db_path: str, run_id: str | None, args: argparse.Namespace, *, bars: int = 0,
    html: str | bool | None = None,
) -> int:
    from trader import results

    report = html is not False
    try:
        # With a report, the bars are counted in the pass that reads the
        # chart's prices: the journal is decoded once.
        res = results.load_results(db_path, run_id, bars=bars, count_bars=not report)
        symbol = getattr(args, "symbol", None) or (res.fills[0].symbol if res.fills else None)
        scan = results.scan_bars(db_path, res.run_id, symbol) if report else None
        if scan is not None and not bars:
            res.bars = scan.count
        summary = results.summary_of(res)
    except results.RunNotFound as exc:
        print(f"trader: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if scan is not None:
        out = Path(html) if isinstance(html, str) else Path(f"{db_path}.html")
        results.write_html(res, summary, out, symbol=symbol,
                           price_ts=scan.ts_ns if symbol else None,
                           price_close=scan.close if symbol else None)
        log.info("report written", path=str(out))
    if args.json:
        print(results.summary_json(summary, res.run_id))
    else:
        print(results.summary_text(summary))
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    # CPU-bound and synchronous: this process is the worker (no event loop here).
    from trader.ml.train import format_report, train

    config = _load(args, [f'data.dir="{args.data}"'] if args.data else [])
    print(format_report(train(config, out_dir=args.out)))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    logs.configure(args.log_level or "info")
    return _print_results(args.db, args.run, args, html=args.out)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
