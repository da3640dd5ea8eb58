"""The ``trader data ...`` command-line subcommands."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

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


def add_data_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``trader data synth`` to the CLI.

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
