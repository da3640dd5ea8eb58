"""Journal maintenance: ``trader db backup`` and ``trader db check``.

::

    trader db backup SRC DEST [--force]
    trader db check DB

Both are safe while a daemon writes the journal. The journal is SQLite in WAL
mode, so a reader never blocks the writer and sees one committed state:

* **backup** copies ``SRC`` with SQLite's online backup API in a single step,
  that is inside one read transaction, so the copy is exactly the journal as
  of one commit (a consistent prefix of what the daemon wrote), however fast
  the daemon keeps committing. It is written to ``DEST.partial``, checked
  with ``PRAGMA integrity_check``, switched to a rollback journal (one
  self-contained file) and only then renamed to ``DEST``: a ``DEST`` that
  exists is a whole, checked copy.
* **check** runs ``PRAGMA integrity_check`` over a read-only connection and
  prints what it found.

Exit codes (README.md): 0 the copy or the file is intact; 1 an integrity
failure (the file, or the copy, is damaged or is not an SQLite database; a
failed copy is deleted); 2 usage: ``SRC``/``DB`` does not exist, or ``DEST``
exists and ``--force`` was not given.

What this is not: retention (the recorder deletes old bars as it writes,
``[recorder] bar_retention_days``) or a restore (a backup is a journal: point
``[run] db`` at it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import msgspec

from trader.actors.recorder import connect_readonly

__all__ = ["BackupReport", "CheckReport", "add_db_commands", "backup", "check"]

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_USAGE = 2

_MAX_PROBLEMS = 100
"""integrity_check stops after this many problems: enough to judge the damage."""


class CheckReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``PRAGMA integrity_check`` and a look at the tables found."""

    path: str
    problems: tuple[str, ...]
    schema_version: int | None = None
    runs: int | None = None
    records: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


class BackupReport(msgspec.Struct, frozen=True, kw_only=True):
    """A finished backup: where it went and what the check of the copy said."""

    source: str
    dest: str
    bytes: int
    seconds: float
    check: CheckReport

    @property
    def ok(self) -> bool:
        return self.check.ok


def _inspect(conn: sqlite3.Connection, path: str) -> CheckReport:
    """Run the integrity check over ``conn`` and count runs and journal records."""
    try:
        rows = conn.execute(f"PRAGMA integrity_check({_MAX_PROBLEMS})").fetchall()
        problems = tuple(str(r[0]) for r in rows if r[0] != "ok")
        if problems:
            return CheckReport(path=path, problems=problems)
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        runs = records = None
        if "runs" in tables:
            (runs,) = conn.execute("SELECT COUNT(*) FROM runs").fetchone()
        if "journal" in tables:
            (records,) = conn.execute("SELECT COUNT(*) FROM journal").fetchone()
    except sqlite3.DatabaseError as exc:
        # "file is not a database", "database disk image is malformed": damage
        # bad enough that SQLite refuses to read on.
        return CheckReport(path=path, problems=(f"{type(exc).__name__}: {exc}",))
    return CheckReport(path=path, problems=(), schema_version=version, runs=runs,
                       records=records)


def check(path: str | Path) -> CheckReport:
    """Check a journal's integrity without writing to it (safe while a daemon writes).

    Raises:
        FileNotFoundError: ``path`` is not a file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such journal")
    with contextlib.closing(connect_readonly(p)) as conn:
        return _inspect(conn, str(p))


def backup(source: str | Path, dest: str | Path, *, overwrite: bool = False) -> BackupReport:
    """Copy a journal, consistently, while a daemon may be writing it.

    Args:
        source: the journal.
        dest: where the copy goes (its directory is created).
        overwrite: replace an existing ``dest``.

    Returns:
        the report; when the copy fails its integrity check it is deleted and
        ``report.ok`` is false.

    Raises:
        FileNotFoundError: ``source`` is not a file.
        FileExistsError: ``dest`` exists and ``overwrite`` is false, or
            ``dest`` is ``source``.
    """
    src, dst = Path(source), Path(dest)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such journal")
    if dst.exists() and dst.resolve() == src.resolve():
        # --force must never swap a running daemon's journal for its own copy.
        raise FileExistsError(f"{dst}: is the journal itself")
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst}: exists (--force replaces it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        with contextlib.closing(connect_readonly(src)) as reader, \
                contextlib.closing(sqlite3.connect(partial)) as copy:
            # pages=-1 (all at once): one read transaction, so one committed
            # state. Stepping in smaller pieces would restart the copy after
            # every commit of a busy daemon, and might never finish.
            reader.backup(copy, pages=-1)
            # The copy inherits WAL mode from the source's header; a backup
            # should be one file that can be moved around on its own.
            copy.execute("PRAGMA journal_mode=DELETE")
            report = _inspect(copy, str(dst))
    except sqlite3.DatabaseError as exc:
        report = CheckReport(path=str(dst), problems=(f"{type(exc).__name__}: {exc}",))
    seconds = time.perf_counter() - started
    if not report.ok:
        partial.unlink(missing_ok=True)
        return BackupReport(source=str(src), dest=str(dst), bytes=0, seconds=seconds,
                            check=report)
    os.replace(partial, dst)
    return BackupReport(source=str(src), dest=str(dst), bytes=dst.stat().st_size,
                        seconds=seconds, check=report)


# --- the command line -----------------------------------------------------------------------


def add_db_commands(sub: Any) -> None:
    """Register ``trader db backup`` and ``trader db check`` on the CLI's subparsers."""
    db = sub.add_parser("db", help="journal maintenance: backup, integrity check")
    db_sub = db.add_subparsers(dest="db_command", required=True, parser_class=type(db))

    p = db_sub.add_parser("backup", help="copy a journal consistently, even while a daemon "
                          "writes it, and check the copy")
    p.add_argument("source", metavar="SRC", help="the journal (e.g. runs/trader.db)")
    p.add_argument("dest", metavar="DEST", help="where the copy goes")
    p.add_argument("--force", action="store_true", help="replace DEST if it exists")
    p.set_defaults(handler=_cmd_backup)

    p = db_sub.add_parser("check", help="check a journal's integrity (read-only)")
    p.add_argument("db", metavar="DB", help="the journal")
    p.set_defaults(handler=_cmd_check)


def _describe(report: CheckReport) -> str:
    return (f"schema v{report.schema_version}, {report.runs or 0} runs, "
            f"{report.records or 0} journal records")


def _print_problems(report: CheckReport) -> None:
    for problem in report.problems:
        print(f"  {problem}")


def _cmd_backup(args: argparse.Namespace) -> int:
    try:
        report = backup(args.source, args.dest, overwrite=args.force)
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"trader db backup: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not report.ok:
        print(f"{report.source}: the copy failed its integrity check; nothing written:")
        _print_problems(report.check)
        return EXIT_DAMAGED
    print(f"{report.source} -> {report.dest}: {report.bytes} bytes, "
          f"{_describe(report.check)}, integrity ok ({report.seconds:.2f}s)")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        report = check(args.db)
    except FileNotFoundError as exc:
        print(f"trader db check: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not report.ok:
        print(f"{report.path}: damaged:")
        _print_problems(report)
        return EXIT_DAMAGED
    print(f"{report.path}: ok ({_describe(report)})")
    return EXIT_OK
