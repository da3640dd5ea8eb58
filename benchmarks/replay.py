"""Replay throughput and peak memory, against backtrader and backtesting.py.

    python benchmarks/replay.py [--workload a|b|all] [--bars N] [--peers/--no-peers]
                                [--symbols N] [--sessions N] [--peer-limit-symbols K]
                                [--profile] [--workdir DIR]

Workloads (minute bars from trader.data.synth, seed fixed):

* (a) one symbol x ``--bars`` minute bars (default 1,000,000; the sessions
  are ``ceil(bars / 390)``, and early closes and missing minutes make the
  exact count a little lower; it is printed);
* (b) ``--symbols`` x ``--sessions`` of minute bars (default 500 x 20, about
  3.9M bars).

Every engine runs the same strategy: sma_cross 10/30 (enter on a strict
upward cross of the fast SMA over the slow one, leave on a strict downward
cross), long only, a market order filled at the next bar's open in whole
shares. On (a) it is all-in (trader: ``target_weight`` 1.0); on (b) every
symbol gets ``1/N`` of the equity with ``N x 100,000`` cash (trader:
``fixed_fraction`` 1/N), so every crossover of every symbol trades in every
engine and the trade counts can be compared.

Each measurement is a fresh child process (this file with ``--child``), so
its peak RSS (``ru_maxrss`` of the child itself) belongs to that run alone.
For trader the child executes ``python -m trader replay --config <toml>
--no-report --json`` in-process via ``runpy`` (exactly what ``python -m``
does), timing ``run_replay`` (load + graph) and the graph alone from inside;
the parent times the whole process, start-up included. The full graph runs,
recorder (SQLite journal) on. For the peers the child loads pickled pandas
frames and runs the library; "run" is the library's own work.

The data is generated once per benchmark run into a temporary directory
(CSV in trader's schema, pickled DataFrames for the peers, and trader's
binary bar cache, made by a first load that is timed and printed on its own,
as the peers' frames are made ready beforehand); ``--workdir`` keeps and
reuses it.

**Recorder floor, same run.** After trader's run a child rewrites the rows
that run recorded into a fresh SQLite file beside it, in one transaction,
``synchronous=OFF``, one thread, nothing else running: every table as
recorded, except the journal, which gets one row per timestamp holding the
bodies of all that timestamp's messages but the bars (as if bars were
journaled by reference and messages batched per timestamp, the most any
redesign of the message protocol could save). No graph, no encoding, no
GIL hand-off: ``bars / seconds`` is a ceiling on any replay that records
what this one did, and it is printed beside the target.

``--profile`` runs trader's workload (a) (or (b) with ``--workload b``)
in-process under cProfile and prints the top 25 functions by tottime.

A figure, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEED = 20240102
CASH = 100_000.0
MINUTES_PER_SESSION = 390
HERE = Path(__file__).resolve()

# --------------------------------------------------------------------------- data


def _workload_spec(args: argparse.Namespace, name: str) -> dict[str, Any]:
    if name == "a":
        return {"name": "a", "symbols": 1,
                "sessions": max(1, math.ceil(args.bars / MINUTES_PER_SESSION))}
    return {"name": "b", "symbols": args.symbols, "sessions": args.sessions}


def _prepare(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """Generate (or reuse) the workload's CSVs and peer frames; return what was made.

    The generation runs in a child process: on Linux a child inherits the
    high-water RSS of the process it was forked from, so the parent must stay
    small for the children's ``ru_maxrss`` to be their own.
    """
    marker = _data_dir(spec, root) / "ready.json"
    # Reusing a workdir: load once untimed anyway, so a bar cache written by
    # an older trader (another format) is rebuilt here, not in the timed run.
    engine = "warm" if marker.exists() else "prepare"
    spec_path = root / f"prepare-{spec['name']}.json"
    spec_path.write_text(json.dumps({"engine": engine, "workload": spec, "root": str(root)}))
    subprocess.run([sys.executable, str(HERE), "--child", str(spec_path)], check=True)
    return dict(json.loads(marker.read_text()))


def _data_dir(spec: dict[str, Any], root: Path) -> Path:
    return root / f"{spec['name']}-{spec['symbols']}x{spec['sessions']}-seed{SEED}"


def _generate(spec: dict[str, Any], root: Path) -> None:
    base = _data_dir(spec, root)
    marker = base / "ready.json"
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    from trader.data.synth import synth_bars, write_csv

    try:
        from benchmarks._peers import frame_of
    except ImportError:  # run as a script: benchmarks/ itself is on sys.path
        from _peers import frame_of  # type: ignore[no-redef, import-not-found, unused-ignore]

    t0 = time.perf_counter()
    tables = synth_bars(spec["symbols"], days=spec["sessions"], seed=SEED)
    t1 = time.perf_counter()
    write_csv(tables, base / "csv")
    t2 = time.perf_counter()
    frames = {
        s: frame_of(t.ts_ns, t.open, t.high, t.low, t.close, t.volume) for s, t in tables.items()
    }
    pd.to_pickle(frames, base / "frames.pkl")
    t3 = time.perf_counter()
    # trader's first load of a CSV parses it and writes its binary bar cache
    # (trader.data.bars); every later load reads the cache. The peers get
    # their data ready-made too (the pickled frames above), so the timed runs
    # compare warm loads, and the first load's cost is printed on its own.
    from trader.data.bars import load_dir

    load_dir(base / "csv")
    t4 = time.perf_counter()
    info = {
        "dir": str(base),
        "csv": str(base / "csv"),
        "frames": str(base / "frames.pkl"),
        "symbols": list(tables),
        "bars": int(sum(len(t.ts_ns) for t in tables.values())),
        "bars_by_symbol": {s: len(t.ts_ns) for s, t in tables.items()},
        "generate_s": t1 - t0,
        "csv_s": t2 - t1,
        "frames_s": t3 - t2,
        "cache_s": t4 - t3,
    }
    marker.write_text(json.dumps(info))


def _trader_toml(spec: dict[str, Any], data: dict[str, Any], db: Path) -> str:
    n = len(data["symbols"])
    if spec["name"] == "a":
        cash, risk = CASH, 'sizing = "target_weight"'
    else:
        cash, risk = CASH * n, f'sizing = "fixed_fraction"\nfixed_fraction = {1.0 / n!r}'
    return f"""\
[run]
db = "{db}"
log_level = "warning"

[data]
dir = "{data['csv']}"

[replay]
speed = "max"

[strategy]
name = "sma_cross"
instance = "bench"
params = {{ fast = 10, slow = 30, weight = 1.0 }}

[broker]
cash_usd = {cash!r}

[risk]
{risk}
"""


# --------------------------------------------------------------------------- children


def _maxrss_mb() -> float:
    # Linux reports kilobytes (macOS bytes).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _child_trader(spec: dict[str, Any]) -> dict[str, Any]:
    import contextlib
    import io
    import runpy

    import trader.runner as runner

    times: dict[str, float] = {}
    real_replay, real_run = runner.run_replay, runner.run_until_stopped

    async def timed_replay(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return await real_replay(*a, **k)
        finally:
            times["replay_s"] = time.perf_counter() - t

    async def timed_run(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return await real_run(*a, **k)
        finally:
            times["graph_s"] = time.perf_counter() - t

    runner.run_replay = timed_replay
    runner.run_until_stopped = timed_run
    sys.argv = ["trader", "replay", "--config", spec["config"], "--no-report", "--json"]
    out = io.StringIO()
    t = time.perf_counter()
    code: Any = 0
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_module("trader", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code
    cli_s = time.perf_counter() - t
    rss = _maxrss_mb()
    if code not in (0, None):
        raise SystemExit(f"trader exited with {code}: {out.getvalue()[-2000:]}")
    summary = json.loads(out.getvalue().strip().splitlines()[-1])
    # Per-symbol round trips for the sanity check (after the measurement).
    from trader import results
    from trader.report.stats import round_trips

    res = results.load_results(spec["db"], summary["run_id"])
    by_symbol: dict[str, int] = {}
    for trade in round_trips(res.fills):
        by_symbol[trade.symbol] = by_symbol.get(trade.symbol, 0) + 1
    return {
        "bars": summary["bars"],
        "trades": by_symbol,
        "trades_total": summary["trades"],
        "run_s": times.get("replay_s"),
        "graph_s": times.get("graph_s"),
        "cli_s": cli_s,
        "maxrss_mb": rss,
    }


def _child_peer(spec: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

    try:
        from benchmarks import _peers
    except ImportError:
        import _peers  # type: ignore[no-redef, unused-ignore]

    frames = pd.read_pickle(spec["frames"])
    frames = {s: frames[s] for s in spec["symbols"]}
    if spec["engine"] == "backtesting":
        out = _peers.run_backtesting(frames, CASH)
    else:
        out = _peers.run_backtrader(frames, CASH)
    del frames
    out["maxrss_mb"] = _maxrss_mb()
    return out


def _child_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a run's recorded rows into a fresh file; time only the writing."""
    import itertools
    import sqlite3

    src = sqlite3.connect(spec["db"])
    tables: list[tuple[str, str, list[tuple[Any, ...]]]] = []
    for name, sql in src.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"):
        if name == "journal":
            rows = src.execute(
                "SELECT run_id, ts_ns, source, seq, type, body FROM journal"
                " WHERE type != 'BarsClosed' ORDER BY ts_ns, seq").fetchall()
            packed = []
            for ts, group in itertools.groupby(rows, key=lambda r: r[1]):
                first, *rest = group
                packed.append((first[0], ts, "batch", first[3], "Batch",
                               b"".join([first[5], *(r[5] for r in rest)])))
            tables.append((name, sql, packed))
        else:
            tables.append((name, sql, src.execute(f'SELECT * FROM "{name}"').fetchall()))
    src.close()
    path = Path(spec["db"]).with_name("floor.db")
    dst = sqlite3.connect(path, isolation_level=None)
    dst.execute("PRAGMA journal_mode=WAL")
    dst.execute("PRAGMA synchronous=OFF")
    for _name, sql, _rows in tables:
        dst.execute(sql)
    t = time.perf_counter()
    dst.execute("BEGIN")
    for name, _sql, rows in tables:
        if rows:
            marks = ",".join("?" * len(rows[0]))
            dst.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows)
    dst.execute("COMMIT")
    write_s = time.perf_counter() - t
    dst.close()
    return {"write_s": write_s, "rows": sum(len(r) for _n, _s, r in tables),
            "by_table": {n: len(r) for n, _s, r in tables}}


def _child(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec["engine"] == "prepare":
        _generate(spec["workload"], Path(spec["root"]))
        return
    if spec["engine"] == "warm":
        from trader.data.bars import load_dir

        load_dir(_data_dir(spec["workload"], Path(spec["root"])) / "csv")
        return
    children = {"trader": _child_trader, "floor": _child_floor}
    result = children.get(spec["engine"], _child_peer)(spec)
    Path(spec["result"]).write_text(json.dumps(result))


def _measure(spec: dict[str, Any], tmp: Path, label: str) -> dict[str, Any] | None:
    """Run one measurement in a fresh child; return its result plus wall time."""
    spec_path = tmp / f"spec-{label}.json"
    spec["result"] = str(tmp / f"result-{label}.json")
    spec_path.write_text(json.dumps(spec))
    log_path = tmp / f"child-{label}.log"
    t = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run([sys.executable, str(HERE), "--child", str(spec_path)],
                              stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        print(f"  !! {label} failed (exit {proc.returncode}); last output:\n{tail}", flush=True)
        return None
    result: dict[str, Any] = json.loads(Path(spec["result"]).read_text())
    result["process_s"] = wall
    return result


# --------------------------------------------------------------------------- report


def _rate(bars: float, seconds: float | None) -> float | None:
    return bars / seconds if seconds else None


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if not a or not b else f"{a / b:.2f}x"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "NOT MET")


def _row(name: str, r: dict[str, Any], note: str = "") -> dict[str, Any]:
    """Normalise a result into the figures of one table row."""
    bars = r["bars"]
    run_s = r.get("graph_s") or r["run_s"]
    return {
        "name": name,
        "bars": bars,
        "trades": sum(r["trades"].values()),
        "process_s": r["process_s"],
        "process_rate": _rate(bars, r["process_s"]),
        "run_s": run_s,
        "run_rate": _rate(bars, run_s),
        "load_run_s": r["run_s"],
        "mb": r["maxrss_mb"],
        "note": note,
    }


def _extrapolate(row: dict[str, Any], total_bars: int) -> dict[str, Any]:
    """Scale a peer's run on some symbols to all of them, linearly in bars.

    The library's run time scales with the bars; the rest of the process
    (start-up, imports, loading) is kept as measured. Peak memory is as
    measured (not scaled) and so is the trade count.
    """
    factor = total_bars / row["bars"]
    out = dict(row)
    fixed = row["process_s"] - row["load_run_s"]
    out["run_s"] = row["run_s"] * factor
    out["load_run_s"] = row["load_run_s"] * factor
    out["process_s"] = fixed + out["load_run_s"]
    out["bars"] = total_bars
    out["process_rate"] = _rate(total_bars, out["process_s"])
    out["run_rate"] = _rate(total_bars, out["run_s"])
    out["measured_bars"] = row["bars"]
    return out


def _print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"  {'engine':<26}{'bars':>11}{'trades':>8}{'process s':>11}{'bars/s':>11}"
            f"{'run s':>9}{'bars/s':>11}{'peak MB':>9}")
    print(head)
    print(f"  {'':<26}{'':>11}{'':>8}{'(whole process, start-up incl.)':>33}"
          f"{'(in-process run)':>20}")
    for r in rows:
        print(f"  {r['name']:<26}{r['bars']:>11,}{r['trades']:>8,}{r['process_s']:>11.2f}"
              f"{_fmt(r['process_rate']):>11}{r['run_s']:>9.2f}{_fmt(r['run_rate']):>11}"
              f"{r['mb']:>9.0f}")
        if r["note"]:
            print(f"  {'':<4}{r['note']}")


def _run_workload(args: argparse.Namespace, name: str, root: Path) -> None:
    spec = _workload_spec(args, name)
    print(f"\n== workload ({name}): {spec['symbols']} symbol(s) x {spec['sessions']} sessions"
          f" of minute bars, seed {SEED}", flush=True)
    data = _prepare(spec, root)
    symbols: list[str] = data["symbols"]
    print(f"   {data['bars']:,} bars over {len(symbols)} symbol(s)"
          f" (generated in {data['generate_s']:.1f}s, CSV {data['csv_s']:.1f}s,"
          f" frames {data['frames_s']:.1f}s, trader's bar cache {data.get('cache_s', 0):.1f}s:"
          f" a first load, not in the timed runs)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"run-{name}-", dir=root))
    rows: list[dict[str, Any]] = []

    db = tmp / "trader.db"
    cfg = tmp / "trader.toml"
    cfg.write_text(_trader_toml(spec, data, db))
    print("   running trader ...", flush=True)
    tr = _measure({"engine": "trader", "config": str(cfg), "db": str(db)}, tmp, "trader")
    if tr is None:
        return
    rows.append(_row("trader (graph + recorder)", tr,
                     note=f"run s = graph only; load CSV + graph {tr['run_s']:.2f}s; "
                          f"CLI incl. summary {tr['cli_s']:.2f}s; "
                          f"journal {db.stat().st_size / 1e6:,.0f} MB"))
    floor = _measure({"engine": "floor", "db": str(db)}, tmp, "floor")

    peer_rows: dict[str, dict[str, Any]] = {}
    peer_symbols = symbols
    if args.peers:
        k = args.peer_limit_symbols
        if len(symbols) > 1 and 0 < k < len(symbols):
            peer_symbols = symbols[:k]
        measured_bars = sum(data["bars_by_symbol"][s] for s in peer_symbols)
        for engine, label in (("backtesting", "backtesting.py"), ("backtrader", "backtrader")):
            print(f"   running {label} on {len(peer_symbols)} symbol(s) ...", flush=True)
            r = _measure({"engine": engine, "frames": data["frames"], "symbols": peer_symbols},
                         tmp, engine)
            if r is None:
                continue
            notes = []
            if engine == "backtesting" and len(peer_symbols) > 1:
                notes.append("single-asset: one Backtest per symbol, run times summed")
            if engine == "backtrader" and len(peer_symbols) > 1:
                notes.append(f"one Cerebro, {len(peer_symbols)} datas")
            row = _row(label, r)
            if len(peer_symbols) < len(symbols):
                row = _extrapolate(row, data["bars"])
                notes.append(
                    f"EXTRAPOLATED linearly from {len(peer_symbols)} of {len(symbols)} symbols "
                    f"({measured_bars:,} bars: run {r['run_s']:.2f}s, process "
                    f"{r['process_s']:.2f}s); trades and peak MB are for those "
                    f"{len(peer_symbols)} symbols only")
            row["note"] = "; ".join(notes)
            peer_rows[engine] = row
            peer_rows[engine]["trades_by_symbol"] = r["trades"]
            rows.append(row)

    print()
    _print_table(rows)
    trader_row = rows[0]

    # Sanity: the same strategy gives (nearly) the same trades.
    if peer_rows:
        same = list(peer_symbols)
        trader_same = sum(tr["trades"].get(s, 0) for s in same)
        peer_counts = {
            row["name"]: sum(row["trades_by_symbol"].get(s, 0) for s in same)
            for row in peer_rows.values()
        }
        counts = ", ".join(f"{k} {v:,}" for k, v in peer_counts.items())
        scope = "" if len(same) == len(symbols) else f" on the {len(same)} peer symbols"
        print(f"\n  trades (closed round trips){scope}: trader {trader_same:,}, {counts}")
        if any(v != trader_same for v in peer_counts.values()):
            print("  (differences come from ties: on a one-cent grid fast == slow happens;"
                  " trader's SMAs\n   are exact (integer cent sums), so a tie is no cross;"
                  " the peers' float means\n   can differ by +-1e-15 there and read it as one)")

    for row in peer_rows.values():
        proc_ratio = _ratio(trader_row["process_rate"], row["process_rate"])
        print(f"  trader / {row['name']}: bars/s {proc_ratio}"
              f" whole process, {_ratio(trader_row['run_rate'], row['run_rate'])} in-process run;"
              f" peak MB {_ratio(trader_row['mb'], row['mb'])}")

    if floor is not None:
        ceiling = tr["bars"] / floor["write_s"]
        print(f"\n  recorder floor: the {floor['rows']:,} rows this run recorded (journal packed"
              f" one row per timestamp,\n   bars by reference), written by SQLite alone in one"
              f" transaction: {floor['write_s']:.2f}s,\n   a ceiling of {ceiling:,.0f} bars/s"
              f" for any replay that records them")
    print()
    if name == "a":
        bt = peer_rows.get("backtesting")
        if bt is None:
            print("  target (a): trader >= 2x backtesting.py bars/s ... n/a (peers not run)")
            print("  target (a): trader peak memory <= backtesting.py's ... n/a (peers not run)")
        else:
            proc = trader_row["process_rate"] / bt["process_rate"]
            run = trader_row["run_rate"] / bt["run_rate"]
            print(f"  target (a): trader >= 2x backtesting.py bars/s (whole process): "
                  f"{_met(proc >= 2.0)} ({proc:.2f}x; in-process run {run:.2f}x, "
                  f"{_met(run >= 2.0)})")
            mem = trader_row["mb"] / bt["mb"]
            print(f"  target (a): trader peak memory <= backtesting.py's: {_met(mem <= 1.0)} "
                  f"({trader_row['mb']:.0f} MB vs {bt['mb']:.0f} MB)")
            if floor is not None:
                budget = tr["bars"] / (2 * bt["process_rate"])
                print(f"  at 2x backtesting.py the whole process may take {budget:.2f}s; the"
                      f" recorder floor takes {floor['write_s']:.2f}s of it,\n   leaving"
                      f" {budget - floor['write_s']:.2f}s for start-up, loading, the graph and"
                      f" the summary (trader took {tr['process_s']:.2f}s)")
    else:
        rate = trader_row["process_rate"]
        print(f"  target (b): trader > 1,000,000 bars/s (whole process): "
              f"{_met(rate > 1_000_000)} ({rate:,.0f} bars/s; graph only "
              f"{trader_row['run_rate']:,.0f}, {_met(trader_row['run_rate'] > 1_000_000)})")
        if floor is not None:
            print(f"  the recorder floor alone allows {ceiling:,.0f} bars/s:"
                  f" {'above' if ceiling > 1_000_000 else 'BELOW'} the target")
        if len(symbols) != 500 or spec["sessions"] != 20:
            print(f"  (NOTE: the target is for 500 x 20 sessions; this run was "
                  f"{len(symbols)} x {spec['sessions']})")
    sys.stdout.flush()


# --------------------------------------------------------------------------- profile


def _profile(args: argparse.Namespace, root: Path) -> None:
    import cProfile
    import io
    import pstats

    name = "b" if args.workload == "b" else "a"
    spec = _workload_spec(args, name)
    data = _prepare(spec, root)
    tmp = Path(tempfile.mkdtemp(prefix=f"profile-{name}-", dir=root))
    db, cfg = tmp / "trader.db", tmp / "trader.toml"
    cfg.write_text(_trader_toml(spec, data, db))
    print(f"\n== profile: trader on workload ({name}), {data['bars']:,} bars, in-process "
          f"(trader.cli.main replay --no-report --json) under cProfile", flush=True)
    from trader.cli import main as cli_main

    out = io.StringIO()
    prof = cProfile.Profile()
    t = time.perf_counter()
    import contextlib

    with contextlib.redirect_stdout(out):
        prof.enable()
        code = cli_main(["replay", "--config", str(cfg), "--no-report", "--json"])
        prof.disable()
    wall = time.perf_counter() - t
    print(f"   exit {code}, {wall:.1f}s under the profiler "
          f"({data['bars'] / wall:,.0f} bars/s profiled)")
    stats = pstats.Stats(prof, stream=sys.stdout)
    stats.sort_stats("tottime").print_stats(25)


# --------------------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workload", choices=["a", "b", "all"], default="all")
    parser.add_argument("--bars", type=int, default=1_000_000,
                        help="workload (a): minute bars wanted (default 1,000,000)")
    parser.add_argument("--symbols", type=int, default=500, help="workload (b): symbols")
    parser.add_argument("--sessions", type=int, default=20, help="workload (b): sessions")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                        help="also run backtrader and backtesting.py (default on)")
    parser.add_argument("--peer-limit-symbols", type=int, default=20, metavar="K",
                        help="workload (b): run the peers on the first K symbols and "
                             "extrapolate linearly (default 20; 0 = all)")
    parser.add_argument("--profile", action="store_true",
                        help="instead: profile trader's workload (a) (or b with "
                             "--workload b) in-process, top 25 by tottime")
    parser.add_argument("--workdir", help="keep data and runs here and reuse the data "
                        "(default: a temporary directory, removed at the end)")
    args = parser.parse_args()

    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="trader-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        print(f"replay benchmark: python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"data in {root}")
        if args.profile:
            _profile(args, root)
            return
        for name in (["a", "b"] if args.workload == "all" else [args.workload]):
            _run_workload(args, name, root)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
