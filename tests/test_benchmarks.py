"""Every benchmark still runs end to end, at a tiny size.

The figures are the benchmarks' business (they print them, with their
targets); here only that each one completes and prints the figure it
exists for. Without this a benchmark breaks silently: benchmarks/risk.py
stopped at its first order once risk began denying entries outside the
regular session, and nothing noticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize(
    ("args", "figure"),
    [
        (["-m", "benchmarks.bus", "--messages", "2000"], "msg/s end to end"),
        (["-m", "benchmarks.risk", "--orders", "200"], "µs per order"),
        (["-m", "benchmarks.scorer", "--repeat", "1"], "µs per signal"),
    ],
    ids=["bus", "risk", "scorer"],
)
def test_the_in_process_benchmarks_run_and_print_their_figure(args: list[str],
                                                              figure: str) -> None:
    assert figure in _run(*args)


def test_the_replay_benchmark_runs_the_full_graph_and_its_recorder_floor(
        tmp_path: Path) -> None:
    args = ("benchmarks/replay.py", "--workload", "a", "--bars", "3000", "--no-peers",
            "--workdir", str(tmp_path))
    out = _run(*args)
    assert "trader (graph + recorder)" in out
    assert "bars/s" in out
    assert "recorder floor" in out
    assert "a ceiling of" in out
    # A kept workdir is reused: its data is not generated again.
    again = _run(*args)
    assert "trader (graph + recorder)" in again
    assert len(list(tmp_path.glob("a-1x*"))) == 1


def test_the_live_latency_benchmark_runs_against_the_sandbox(tmp_path: Path) -> None:
    out = _run("-m", "benchmarks.live_latency", "--sizes", "10", "--bars", "4", "--warmup", "1",
               "--burst", "200", "--bursts", "1", "--no-baseline", "--floor-orders", "40",
               "--tmp", str(tmp_path))
    assert "p99" in out
    assert "to the wire" in out
    assert "alpaca-py's submit_order -> its first byte" in out
    assert "first frame read -> last decision" in out
