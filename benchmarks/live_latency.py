"""Tick-to-order latency of the live path, against the embedded sandbox.

    python -m benchmarks.live_latency [--sizes 10,100,1000] [--bars 12] [--burst 10000]

For each universe size, the daemon (``run_live``: websocket feed, strategy,
scorer, risk, execution, alpaca-py) trades against the in-process sandbox on a
manual clock. A strategy signals for about 1 symbol in 20 on each bar (so the
orders stay under Alpaca's 200 requests a minute, which the adapter enforces).
Measured per order: from the moment the websocket frame carrying its bar was
read, to the moment alpaca-py's ``submit_order`` is called in the worker
thread (the request leaves the process right after). Prints p50 and p99.

``--burst N``: N symbols' bars arrive in one minute-boundary burst; prints the
time from the first frame read to the graph being quiet again with every bar
decided (signals made, risk done), with order sending off (no signals).

Figures, not assertions. Note the sandbox runs in the same process, so its
work (serialising frames, answering REST) is on the same two cores.
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib
from pathlib import Path
from typing import Any

import anyio
import msgspec

from trader import logs
from trader.actors.feed import LiveFeed
from trader.config import decode_config
from trader.data.synth import synth_bars
from trader.graph import Graph
from trader.messages import BarClosed
from trader.runner import run_live
from trader.sandbox import Sandbox


class SparseParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    every: int = 20
    silent: bool = False


class Sparse:
    """Signals for ~1/every of the symbols on each bar, alternating long and flat."""

    Params = SparseParams

    def __init__(self, params: SparseParams) -> None:
        self.params = params
        self._n: dict[str, int] = {}

    def on_bar(self, bar: BarClosed) -> float | None:
        n = self._n.get(bar.symbol, 0) + 1
        self._n[bar.symbol] = n
        if self.params.silent:
            return None
        if (n + zlib.crc32(bar.symbol.encode())) % self.params.every == 0:
            return 0.02 if (n // self.params.every) % 2 == 0 else 0.0
        return None

    def on_position(self, symbol: str, qty: float) -> None:
        return None


class Probe:
    """Frame read times per (symbol, bar close), and order send times."""

    def __init__(self) -> None:
        self.arrival: dict[tuple[str, int], int] = {}
        self.latencies_ns: list[int] = []
        self.first_frame_ns = 0
        self._frame_ns = 0

    def install(self) -> None:
        probe = self
        decode = LiveFeed._decode
        check = LiveFeed._check

        def _decode(feed: LiveFeed, data: str | bytes) -> Any:
            probe._frame_ns = time.perf_counter_ns()
            if not probe.first_frame_ns:
                probe.first_frame_ns = probe._frame_ns
            return decode(feed, data)

        def _check(feed: LiveFeed, wire: Any, symbol: str) -> BarClosed | None:
            bar = check(feed, wire, symbol)
            if bar is not None:
                probe.arrival.setdefault((bar.symbol, bar.ts_ns), probe._frame_ns)
            return bar

        LiveFeed._decode = _decode  # type: ignore[method-assign]
        LiveFeed._check = _check  # type: ignore[method-assign]

    def wrap_client(self, graph: Graph) -> None:
        broker: Any = graph.adapters.broker
        submit = broker._client.submit_order
        probe = self

        def submit_order(request: Any) -> Any:
            sent = time.perf_counter_ns()
            _, symbol, ts, _ = request.client_order_id.split(":")
            got = probe.arrival.get((symbol, int(ts)))
            if got is not None:
                probe.latencies_ns.append(sent - got)
            return submit(request)

        broker._client.submit_order = submit_order


def _config(db: Path, symbols: list[str], silent: bool) -> Any:
    return decode_config({
        "run": {"db": str(db), "log_level": "error"},
        "feed": {"kind": "alpaca", "symbols": symbols, "timeframe_s": 60,
                 "stale_after_s": 3600.0},
        "strategy": {"name": "benchmarks.live_latency:Sparse", "instance": "bench",
                     "params": {"silent": silent}},
        "risk": {"sizing": "target_weight"},
        "channels": {"strategy": 4096},
    })


async def _run(
    probe: Probe, size: int, bars: int, tmp: Path, silent: bool
) -> tuple[Probe, float]:
    probe.arrival.clear()
    probe.latencies_ns.clear()
    db = tmp / f"latency-{size}-{silent}.db"
    for stale in list(tmp.glob(db.name + "*")):  # noqa: ASYNC240 - set-up, before any I/O
        stale.unlink()  # a fresh journal: no warm-up, no last-seen bars
    tables = synth_bars(size, days=1, freq="1min", seed=5)
    graph_box: list[Graph] = []
    burst_s = 0.0
    async with Sandbox(tables, speed="max") as sb:
        config = _config(db, list(tables), silent)
        async with anyio.create_task_group() as tg:
            async def daemon() -> None:
                await run_live(config, sandbox=sb, on_graph=graph_box.append)

            tg.start_soon(daemon)
            while not (graph_box and graph_box[0].ready):  # noqa: ASYNC110 - a benchmark
                await anyio.sleep(0.01)
            graph = graph_box[0]
            probe.wrap_client(graph)
            for _ in range(bars):
                probe.first_frame_ns = 0
                await sb.market.advance(bars=1)
                published = sb.market.watermark_ns
                # settle: every symbol's bar passed on and nothing in flight
                while True:
                    feeds = [a for a in graph.supervisor.actors() if isinstance(a, LiveFeed)]
                    if feeds and len(feeds[0].last_emitted) == size and all(
                        t >= published for t in feeds[0].last_emitted.values()
                    ) and graph.inflight.count == 0:
                        break
                    await anyio.sleep(0.0005)
                if probe.first_frame_ns:
                    burst_s = max(burst_s, (time.perf_counter_ns() - probe.first_frame_ns) / 1e9)
            graph.request_stop()
    return probe, burst_s


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--bars", type=int, default=12)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--tmp", default="/tmp")
    args = parser.parse_args()
    logs.configure("error")
    probe = Probe()
    probe.install()
    tmp = Path(args.tmp)
    print("live latency: websocket frame read -> submit_order called (ms)")
    for size in (int(s) for s in args.sizes.split(",")):
        probe, burst = anyio.run(_run, probe, size, args.bars, tmp, False,
                                 backend_options={"use_uvloop": True})
        lat = probe.latencies_ns
        if not lat:
            print(f"  {size:6d} symbols: no orders measured")
            continue
        print(f"  {size:6d} symbols: orders={len(lat):5d}  p50={_pct(lat, 0.5):8.3f}"
              f"  p99={_pct(lat, 0.99):8.3f}  mean={statistics.fmean(lat) / 1e6:8.3f}"
              f"   (worst bar fully settled in {burst * 1000:.1f} ms)")
    if args.burst:
        _, burst = anyio.run(_run, probe, args.burst, 2, tmp, True,
                             backend_options={"use_uvloop": True})
        print(f"  burst: {args.burst:,} bars at one minute boundary decided in "
              f"{burst * 1000:.1f} ms (first frame read -> graph quiet); target < 100 ms")
    print("  target: p99 < 1 ms at 100 symbols")


if __name__ == "__main__":
    main()
