"""The ``trader data ...`` command-line subcommands.

::

    trader data synth --symbols N|A,B --days N [--freq 1min] --out DIR
    trader data fetch --symbols AAPL,MSFT --start 2024-01-01 --end 2024-06-30
                      --timeframe 1Min|5Min|1Hour|1Day [--feed iex|sip]
                      [--adjustment raw|split|dividend|all] [--out replay_data/<timeframe>]
                      [--data-url URL] [--config TOML] [--extended-hours]
    trader data ls [DIR]
    trader data check DIR [--json]

Exit codes: 0 success; ``check`` exits 1 when it finds defects (0 when clean);
2 usage or configuration (e.g. no API keys); 4 data error (an unreadable
directory, a refused or failing fetch: rerun it to resume); 5 interrupted
(``fetch`` keeps every page written; rerun to resume).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import msgspec

from trader.data.store import TIMEFRAMES
from trader.data.synth import FREQS, synth_bars, write_csv

__all__ = ["add_data_commands"]


def _symbols_arg(text: str) -> int | list[str]:
    """Parse ``--symbols``: a count, or a comma-separated list of names."""
    if text.strip().isdigit():
        return int(text)
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a count or a comma-separated list of symbols")
    return names


def _date_arg(text: str) -> dt.date:
    """Parse a ``YYYY-MM-DD`` date."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None


def _run_synth(args: argparse.Namespace) -> int:
    """Generate synthetic bars and write one CSV per symbol."""
    try:
        tables = synth_bars(
            args.symbols, args.days, freq=args.freq, seed=args.seed, start=args.start
        )
    except ValueError as exc:
        print(f"trader data synth: {exc}", file=sys.stderr)
        return 2
    paths = write_csv(tables, args.out)
    rows = sum(len(t) for t in tables.values())
    print(
        f"wrote {len(paths)} files, {rows} {args.freq} bars "
        f"({len(tables)} symbols x {args.days} sessions from {args.start}, seed {args.seed}) "
        f"to {args.out}"
    )
    return 0


class _FetchProgress:
    """A tqdm bar over sessions fetched, on a terminal; retries are shown either way."""

    def __init__(self, symbols: list[str], start: dt.date, end: dt.date) -> None:
        from trader import calendar

        self._closes = [s.close_ns for s in calendar.sessions(start, end)]
        self._done: dict[str, int] = dict.fromkeys(symbols, 0)
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=len(symbols) * len(self._closes), unit=" sessions",
                             file=sys.stderr, leave=False)

    def page(self, symbol: str, added: int, last_close_ns: int | None) -> None:
        import bisect

        if last_close_ns is not None:
            self._done[symbol] = bisect.bisect_right(self._closes, last_close_ns)
        self._update(symbol)

    def finished(self, symbol: str) -> None:
        self._done[symbol] = len(self._closes)
        self._update(symbol)

    def retry(self, symbol: str, attempt: int, error: str) -> None:
        message = f"{symbol}: attempt {attempt} failed ({error[:120]}); retrying"
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def _update(self, symbol: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(symbol)
            self._bar.update(sum(self._done.values()) - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _run_fetch(args: argparse.Namespace) -> int:
    """Fetch bars from Alpaca's data API into one CSV per symbol, resumably."""
    import anyio

    from trader.data.fetch import AlpacaBarsSource, FetchPolicy, FetchResult, FetchSpec, fetch
    from trader.ratelimit import RateLimiter
    from trader.secrets import load_credentials

    if not isinstance(args.symbols, list):
        print("trader data fetch: --symbols takes names, e.g. AAPL,MSFT", file=sys.stderr)
        return 2
    try:
        spec = FetchSpec(symbols=tuple(args.symbols), start=args.start, end=args.end,
                         timeframe=args.timeframe, feed=args.feed, adjustment=args.adjustment,
                         extended_hours=args.extended_hours)
    except ValueError as exc:
        print(f"trader data fetch: {exc}", file=sys.stderr)
        return 2
    url = args.data_url
    key_sources: dict[str, str] = {}
    if args.config:
        from trader.config import load_config

        alpaca = load_config(args.config).alpaca
        url = url or alpaca.data_url
        key_sources = {"key_id_env": alpaca.key_id_env, "secret_env": alpaca.secret_env,
                       "key_id_file": alpaca.key_id_file, "secret_file": alpaca.secret_file}
    credentials = load_credentials(**key_sources)
    policy = FetchPolicy()
    source = AlpacaBarsSource(credentials, spec, url=url, timeout_s=policy.timeout_s)
    out: Path = args.out or Path("replay_data") / spec.timeframe
    progress = _FetchProgress(args.symbols, spec.start, spec.end)

    async def run() -> list[FetchResult]:
        limiter = RateLimiter(policy.per_minute)  # one budget for every symbol
        results: list[FetchResult] = []
        for symbol in spec.symbols:
            one = msgspec.structs.replace(spec, symbols=(symbol,))
            results += await fetch(one, out, source, policy=policy, limiter=limiter,
                                   on_page=progress.page, on_retry=progress.retry)
            progress.finished(symbol)
        return results

    try:
        results = anyio.run(run)
    except KeyboardInterrupt:
        print(f"trader data fetch: interrupted; every page written is kept in {out}: "
              f"rerun the same command to resume", file=sys.stderr)
        return 5
    finally:
        progress.close()
    for r in results:
        state = "up to date" if r.up_to_date else f"+{r.added} bars in {r.requests} request(s)"
        print(f"{r.symbol}: {r.rows} bars ({state}) -> {r.path}")
    return 0


def _run_ls(args: argparse.Namespace) -> int:
    """List the bar files under a directory."""
    from trader.data.store import format_listing, ls

    rows = ls(args.dir)
    if args.json:
        print(msgspec.json.encode(rows).decode())
    else:
        print(format_listing(rows, args.dir))
    return 0


def _run_check(args: argparse.Namespace) -> int:
    """Check bar files for defects; exit 1 when any is found."""
    from trader.data.quality import Thresholds, check, format_report

    thresholds = Thresholds(outlier_sigmas=args.outlier_sigmas, gap_minutes=args.gap_minutes,
                            zero_volume_run=args.zero_volume_run)
    report = check(args.dir, thresholds)
    if args.json:
        print(msgspec.json.encode(report).decode())
    else:
        print(format_report(report))
    return 0 if report.clean else 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _add_fetch(data_sub: Any) -> None:
    fetch = data_sub.add_parser(
        "fetch",
        help="download historical bars from Alpaca (resumable)",
        description="Download historical stock bars through alpaca-py into one CSV per "
        "symbol. An interrupted fetch continues where it stopped when run again.",
    )
    fetch.add_argument("--symbols", type=_symbols_arg, required=True,
                       help="comma-separated symbols, e.g. AAPL,MSFT")
    fetch.add_argument("--start", type=_date_arg, required=True, help="first date, YYYY-MM-DD")
    fetch.add_argument("--end", type=_date_arg, required=True,
                       help="last date, YYYY-MM-DD (inclusive)")
    fetch.add_argument("--timeframe", choices=list(TIMEFRAMES), required=True, help="bar size")
    fetch.add_argument("--feed", choices=["iex", "sip"], default="iex",
                       help="data feed (default iex, the free plan's)")
    fetch.add_argument("--adjustment", choices=["raw", "split", "dividend", "all"],
                       default="raw", help="corporate-action adjustment (default raw)")
    fetch.add_argument("--out", type=Path, default=None,
                       help="output directory (default replay_data/<timeframe>)")
    fetch.add_argument("--data-url", default=None,
                       help="data REST base URL, e.g. a sandbox's http://127.0.0.1:8765 "
                       "(default Alpaca's, or the --config's alpaca.data_url)")
    fetch.add_argument("--config", default=None,
                       help="trader TOML whose [alpaca] table names the key sources")
    fetch.add_argument("--extended-hours", action="store_true",
                       help="keep intraday bars outside the regular session")
    fetch.set_defaults(handler=_run_fetch)


def _add_ls_and_check(data_sub: Any) -> None:
    ls = data_sub.add_parser(
        "ls", help="list bar files: rows, range and gaps per symbol and timeframe",
        description="List every symbol of every CSV under DIR with its rows, first and last "
        "bar, and gaps against the exchange calendar.",
    )
    ls.add_argument("dir", nargs="?", type=Path, default=Path("replay_data"),
                    help="data directory (default replay_data)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(handler=_run_ls)

    check = data_sub.add_parser(
        "check", help="check bar files for defects (exit 1 when any)",
        description="Check every CSV under DIR (or one file) for calendar gaps, bad and "
        "disordered rows, zero volumes, outlier returns and unadjusted splits. Exit 0 when "
        "clean, 1 when defects are found.",
    )
    check.add_argument("dir", type=Path, help="data directory or CSV file")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.add_argument("--outlier-sigmas", type=_positive_float, default=None,
                       help="robust sd beyond which a return is an outlier "
                       "(default by timeframe: 1Day 15, 1Hour 20, 5Min 30, 1Min 50)")
    check.add_argument("--gap-minutes", type=_positive_int, default=15,
                       help="shortest intraday hole reported as a gap (default 15)")
    check.add_argument("--zero-volume-run", type=_positive_int, default=1,
                       help="shortest run of zero-volume bars reported (default 1)")
    check.set_defaults(handler=_run_check)


def add_data_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``trader data synth|fetch|ls|check`` to the CLI.

    Each leaf parser sets ``handler``: a function taking the parsed arguments
    and returning the process exit code.

    Args:
        subparsers: The top-level parser's subparsers.
    """
    data = subparsers.add_parser("data", help="market data tools")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    synth = data_sub.add_parser(
        "synth",
        help="write synthetic bars as CSV",
        description="Generate realistic synthetic bars (one CSV per symbol).",
    )
    synth.add_argument(
        "--symbols",
        type=_symbols_arg,
        required=True,
        help="number of symbols (named S000, S001, ...) or a comma-separated list of names",
    )
    synth.add_argument("--days", type=int, required=True, help="number of sessions")
    synth.add_argument("--freq", choices=list(FREQS), default="1min", help="bar size")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument(
        "--start",
        type=_date_arg,
        default=dt.date(2024, 1, 2),
        help="first date to consider, YYYY-MM-DD (default 2024-01-02)",
    )
    synth.set_defaults(handler=_run_synth)
    _add_fetch(data_sub)
    _add_ls_and_check(data_sub)
