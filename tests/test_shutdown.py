"""Signals: the daemon drains and exits cleanly, in a real process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from trader.data.synth import synth_bars, write_csv

REPO = Path(__file__).resolve().parent.parent


def _start(tmp_path: Path, speed: float) -> tuple[subprocess.Popen[str], Path]:
    data = tmp_path / "data"
    write_csv(synth_bars(2, days=2, seed=7), data)
    db = tmp_path / "run.db"
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[run]\ndb = "{db}"\nshutdown_deadline_s = 10.0\n'
        f'control_socket = "{tmp_path / "c.sock"}"\n'
        f'[data]\ndir = "{data}"\n'
        f"[replay]\nspeed = {speed}\n"
        '[strategy]\nname = "sma_cross"\nparams = { fast = 2, slow = 5 }\n'
        "[http]\nenabled = false\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "always", "PYTHONDEVMODE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trader", "run", "--config", str(cfg)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    return proc, db


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 30.0) -> list[str]:
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never logged; got:\n{''.join(seen)}")


def test_sigterm_drains_the_graph_and_exits_0_without_warnings(tmp_path: Path) -> None:
    """SIGTERM stops the feed, drains, flushes the journal and exits 0 within the deadline."""
    proc, db = _start(tmp_path, speed=1200.0)
    try:
        before = _wait_for_line(proc, '"graph ready"')
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        elapsed = time.monotonic() - start
    finally:
        proc.kill()
    stderr = "".join(before) + err
    assert proc.returncode == 0, stderr
    assert elapsed < 10.0
    assert '"graph stopped"' in stderr
    for bad in ("Warning", "was destroyed but it is pending", "Traceback", "unclosed"):
        assert bad not in stderr, stderr
    # The journal was flushed: what the log says was written is on disk.
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM journal").fetchone()
    assert n > 0


def test_a_second_signal_never_hangs_or_crashes_the_shutdown(tmp_path: Path) -> None:
    """Two signals in a row end the process promptly with 5 (drain cut short) or 0
    (the drain finished first), never a traceback or a hang."""
    proc, _ = _start(tmp_path, speed=1200.0)
    try:
        _wait_for_line(proc, '"graph ready"')
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode in (0, 5)  # 0 if the drain won the race with the second signal


class AlwaysCrashes:
    """A strategy that raises on every bar: a crash loop on command."""

    import msgspec as _msgspec

    class Params(_msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        pass

    def __init__(self, params: object) -> None:
        self.params = params

    def on_bar(self, bar: object) -> float | None:
        raise RuntimeError("strategy bug on command")

    def on_position(self, symbol: str, qty: float) -> None:
        return None


def test_a_crash_loop_beyond_the_intensity_exits_with_code_3(tmp_path: Path) -> None:
    """An actor that keeps crashing exhausts the budget; the process exits 3, not 0 or 1."""
    data = tmp_path / "data"
    write_csv(synth_bars(1, days=1, seed=3), data)
    cfg = tmp_path / "crash.toml"
    cfg.write_text(
        f'[run]\ndb = "{tmp_path / "c.db"}"\n[data]\ndir = "{data}"\n'
        '[strategy]\nname = "tests.test_shutdown:AlwaysCrashes"\n'
        # Small batches: each crash drops only the batch it crashed on, so
        # there are bars left to crash on again.
        "[replay]\nbatch_bars = 10\n"
        "[supervisor]\nintensity = 2\nperiod_s = 60.0\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "trader", "replay", "--config", str(cfg), "--no-report"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "restart budget exhausted" in proc.stderr
    assert "strategy bug on command" in proc.stderr
    # The journal was closed in order: the recorder was stopped last and its
    # file is readable.
    with sqlite3.connect(tmp_path / "c.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)
