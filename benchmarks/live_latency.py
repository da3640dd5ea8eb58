"""Tick-to-order latency of the live path, and a full-universe burst, against the sandbox.

    python -m benchmarks.live_latency [--sizes 10,100,1000] [--bars 30] [--orders-per-bar 5]
                                      [--burst 10000] [--bursts 3] [--no-baseline]

For each universe size the daemon (``run_live``: websocket feed, strategy,
scorer, risk, execution, alpaca-py) trades against the sandbox, run in a
child process on a manual clock, one bar timestamp at a time: the sandbox
publishes every symbol's bar of a minute in one frame, the benchmark waits
until the graph is quiet (every order handed over and answered), then
publishes the next.

* **Latency**, per order: from the moment the feed read the websocket frame
  that carried its bar (the feed's own ``read_ns``, the start of
  ``trader_tick_to_order_seconds``) to the moment alpaca-py's
  ``submit_order`` is called in the worker thread (the request leaves the
  process right after). So it includes the feed's checks, the strategy,
  scorer and risk, the journal barrier and the rate limiter. The strategy
  signals on about ``--orders-per-bar`` symbols of every other bar, at every
  size (alternating long and flat), so the sizes differ in the bars per
  frame, not in the orders. The sandbox fills a market order at the next bar
  and reports the fill with it, so the bars in between carry the fills:
  their wait before the strategy sees them (market first: the poll of the
  still-open orders and the booking of their fills) is printed separately.
  The first ``--warmup`` bars are not counted (first calls, connections).
* **Baseline, same run**: each size again with ``[alpaca]
  max_concurrent_submits = 1``, which is how every order was sent before
  (one at a time, each after its own journal barrier, the polls before a
  bar one after another); printed as the ratio old / new.
* **To the wire**: the issue measures to the order request *leaving the
  process*; alpaca-py (``requests``) builds the request in Python after
  ``submit_order`` is called, so the benchmark also times, per order, the
  first byte written to the socket (``http.client.HTTPConnection.send``)
  and prints frame read -> first byte, and alpaca-py's share of it.
* **Floors, same run**: the REST round trip of one ``submit_order`` to the
  sandbox, one journal commit (``_write_sync``, in the recorder's thread),
  and, with nothing else running, alpaca-py alone (``submit_order`` -> its
  first byte on the socket, one order at a time, a client set up as
  trader's adapter sets it up) and the hop into a worker thread that every
  alpaca-py call takes: what no code of ours can go under.
* **Burst** (``--burst N``): N symbols (10,000 by default: the sandbox serves
  them all) publish their bars at one minute boundary, in one frame. Timed
  from the first frame read to the last decision: the strategy has decided
  every bar (a signal or none) and risk has decided every signal (an order
  command, a denial or nothing to do). A signal on 1 symbol in 200 of
  every other minute. Also printed: when every order of the burst had been
  handed to alpaca-py, and market first for each burst.

The sandbox compresses a market minute into however long the graph takes, so
Alpaca's request budget (``max_requests_per_minute``, per wall-clock minute)
would throttle the benchmark after a few bars; it is lifted here (with a free
token the limiter costs one deque operation; tests/test_ratelimit.py covers
the budget). The sandbox has its own process (and GIL), but shares the
machine's two cores. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import socket
import statistics
import threading
import time
import zlib
from collections.abc import Iterable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import numpy as np

from trader import logs
from trader.actors import recorder as recorder_module
from trader.actors.base import Outbox
from trader.actors.execution import ExecutionActor
from trader.actors.feed import LiveFeed
from trader.actors.risk import RiskActor
from trader.actors.strategy import StrategyActor
from trader.config import decode_config
from trader.data.bars import BarTable
from trader.data.synth import synth_bars
from trader.feedcheck import parse_rfc3339_ns
from trader.graph import Graph
from trader.latency import TickToOrder
from trader.messages import BarClosed, BarsClosed, Message, SignalScored, SubmitOrder
from trader.runner import run_live
from trader.sandbox import Sandbox

BURST_SIGNAL_EVERY = 200
KEY, SECRET = "bench-key", "bench-secret"
HEADERS = {"APCA-API-KEY-ID": KEY, "APCA-API-SECRET-KEY": SECRET}


class SparseParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    every: int = 20


class Sparse:
    """On every other bar, signals for ~1/every of the symbols, alternating long and flat.

    The bars in between carry the fills of those orders (the sandbox fills a
    market order at the next bar, and reports it with that bar), so the
    orders measured never wait behind the booking of earlier fills; that
    cost is measured on the bars in between (see the module docstring).
    """

    Params = SparseParams

    def __init__(self, params: SparseParams) -> None:
        self.params = params
        self._n: dict[str, int] = {}

    def on_bar(self, bar: BarClosed) -> float | None:
        n = self._n.get(bar.symbol, 0) + 1
        self._n[bar.symbol] = n
        if n % 2:
            return None
        k = n // 2
        if (k + zlib.crc32(bar.symbol.encode())) % self.params.every == 0:
            return 0.02 if (k // self.params.every) % 2 == 0 else 0.0
        return None

    def on_position(self, symbol: str, qty: float) -> None:
        return None


class Probe:
    """What the benchmark observes, through hooks that cost O(1) per batch or order."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, tuple[BarClosed, ...]]] = []
        self.sent: list[tuple[str, int]] = []  # (client order id, submit_order called)
        self.rest_ns: list[int] = []
        self.commit_ns: list[int] = []
        self.bars_decided = 0
        self.signals_decided = 0
        self.last_decision_ns = 0
        self.released: dict[int, int] = {}  # bar close -> the strategy first handles it
        # Per order, when it passed each stage after risk's decision (stage_ns).
        self.stages: dict[str, dict[str, int]] = {}
        self.barriers_passed: list[int] = []
        # submit_order called -> its request's first byte written to the socket.
        self.presend_ns: list[int] = []

    def reset(self) -> None:
        self.frames.clear()
        self.sent.clear()
        self.rest_ns.clear()
        self.commit_ns.clear()
        self.released.clear()
        self.stages.clear()
        self.barriers_passed.clear()
        self.presend_ns.clear()

    def install(self) -> None:
        probe = self
        arrived = TickToOrder.arrived
        strategy_handle = StrategyActor.handle
        risk_handle = RiskActor.handle
        write_sync = recorder_module._write_sync

        def _arrived(t2o: TickToOrder, bars: Iterable[BarClosed], at_ns: int) -> None:
            batch = tuple(bars)
            probe.frames.append((at_ns, batch))
            arrived(t2o, batch, at_ns)

        def _strategy(actor: StrategyActor, msg: Message) -> None:
            if type(msg) is BarsClosed:
                probe.released.setdefault(msg.ts_ns, time.perf_counter_ns())
            strategy_handle(actor, msg)
            if type(msg) is BarsClosed:
                probe.bars_decided += len(msg.bars)
                probe.last_decision_ns = time.perf_counter_ns()

        def _risk(actor: RiskActor, msg: Message) -> None:
            risk_handle(actor, msg)
            if type(msg) is SignalScored:
                probe.signals_decided += 1
                probe.last_decision_ns = time.perf_counter_ns()

        def _write(*args: Any, **kwargs: Any) -> int:
            started = time.perf_counter_ns()
            deleted: int = write_sync(*args, **kwargs)
            probe.commit_ns.append(time.perf_counter_ns() - started)
            return deleted

        post, register, barrier = Outbox.post, ExecutionActor._register, Outbox.barrier

        def _post(outbox: Outbox, msg: Message, *, journal: bool = True) -> None:
            if type(msg) is SubmitOrder:
                probe.stages[msg.client_order_id] = {"decided": time.perf_counter_ns()}
            post(outbox, msg, journal=journal)

        def _register(actor: ExecutionActor, msg: SubmitOrder) -> bool:
            probe.stages.setdefault(msg.client_order_id, {})["taken"] = time.perf_counter_ns()
            return register(actor, msg)

        async def _barrier(outbox: Outbox) -> None:
            await barrier(outbox)
            probe.barriers_passed.append(time.perf_counter_ns())

        Outbox.post = _post  # type: ignore[method-assign,assignment]
        ExecutionActor._register = _register  # type: ignore[method-assign,assignment]
        Outbox.barrier = _barrier  # type: ignore[method-assign,assignment]
        TickToOrder.arrived = _arrived  # type: ignore[method-assign,assignment]
        StrategyActor.handle = _strategy  # type: ignore[method-assign,assignment]
        RiskActor.handle = _risk  # type: ignore[method-assign,assignment]
        recorder_module._write_sync = _write
        _time_first_byte(probe)

    def wrap_client(self, graph: Graph) -> None:
        broker: Any = graph.adapters.broker
        submit = broker._client.submit_order
        probe = self

        def submit_order(request: Any) -> Any:
            sent = time.perf_counter_ns()
            probe.sent.append((request.client_order_id, sent))
            probe.stages.setdefault(request.client_order_id, {})["sent"] = sent
            _pending.order = (request.client_order_id, sent)
            try:
                return submit(request)
            finally:
                _pending.order = None
                probe.rest_ns.append(time.perf_counter_ns() - sent)

        broker._client.submit_order = submit_order
        # See the module docstring: the compressed clock would spend a minute's
        # request budget in seconds.
        broker._limiter.per_minute = 1_000_000

    def _arrivals(self) -> dict[tuple[str, int], int]:
        """(symbol, bar close) -> when the frame that carried the bar was read."""
        arrival: dict[tuple[str, int], int] = {}
        for at_ns, bars in self.frames:
            for bar in bars:
                arrival.setdefault((bar.symbol, bar.ts_ns), at_ns)
        return arrival

    def stage_ns(self) -> list[tuple[int, int, int, int]]:
        """Per order after risk's decision: (-> execution took it, -> its journal
        barrier passed, -> submit_order in the worker thread, frame read -> decided)."""
        arrival = self._arrivals()
        out = []
        passed = sorted(self.barriers_passed)
        for coid, t in self.stages.items():
            if not {"decided", "taken", "sent"} <= t.keys():
                continue
            _, symbol, ts, _ = coid.split(":")
            got = arrival.get((symbol, int(ts)))
            # The first barrier that returned after execution took the order.
            i = int(np.searchsorted(passed, t["taken"]))
            if got is None or i == len(passed):
                continue
            out.append((t["taken"] - t["decided"], passed[i] - t["taken"],
                        t["sent"] - passed[i], t["decided"] - got))
        return out

    def wire_latencies_ns(self) -> list[int]:
        """Per order: frame read -> the request's first byte written to the socket."""
        arrival = self._arrivals()
        out = []
        for coid, t in self.stages.items():
            _, symbol, ts, _ = coid.split(":")
            got = arrival.get((symbol, int(ts)))
            if got is not None and "wire" in t:
                out.append(t["wire"] - got)
        return out

    def latencies_ns(self) -> list[tuple[int, int]]:
        """Per order: (frame read -> submit_order, frame read -> strategy has the bar)."""
        arrival = self._arrivals()
        out = []
        for coid, sent in self.sent:
            _, symbol, ts, _ = coid.split(":")
            got = arrival.get((symbol, int(ts)))
            if got is not None:
                out.append((sent - got, self.released.get(int(ts), got) - got))
        return out


#: The order (client order id, submit_order called) a worker thread is sending.
_pending = threading.local()


def _time_first_byte(probe: Probe) -> None:
    """Note when each order's request first writes to its socket (see the docstring)."""
    send = http.client.HTTPConnection.send

    def timed_send(conn: http.client.HTTPConnection, data: Any) -> None:
        order = getattr(_pending, "order", None)
        if order is not None:
            now = time.perf_counter_ns()
            _pending.order = None
            coid, called = order
            probe.presend_ns.append(now - called)
            probe.stages.setdefault(coid, {})["wire"] = now
        send(conn, data)

    http.client.HTTPConnection.send = timed_send  # type: ignore[method-assign]


def _client_floor(probe: Probe, orders: int) -> list[int]:
    """alpaca-py alone: submit_order -> first byte on the socket, one order at a time."""
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    sb = SandboxProcess(synth_bars(1, days=1, freq="1min", seed=5))
    try:
        # As trader's adapter (trader.brokers.alpaca) sets its client up.
        client = TradingClient(KEY, SECRET, raw_data=True, url_override=sb.url)
        client._session.trust_env = False
        symbol = client.get_all_assets()[0]["symbol"]  # type: ignore[index]
        out = []
        for i in range(orders):
            request = MarketOrderRequest(symbol=symbol, qty=1, side=OrderSide.BUY,
                                         time_in_force=TimeInForce.DAY,
                                         client_order_id=f"floor-{i}")
            probe.presend_ns.clear()
            _pending.order = (request.client_order_id, time.perf_counter_ns())
            client.submit_order(request)
            if i >= orders // 10 and probe.presend_ns:  # after the first calls
                out.append(probe.presend_ns[0])
        return out
    finally:
        _pending.order = None
        sb.stop()


async def _thread_hop(n: int) -> list[int]:
    """The hop every alpaca-py call takes: event loop -> a worker thread running it."""
    out = []
    for i in range(n):
        called = time.perf_counter_ns()
        running = await anyio.to_thread.run_sync(time.perf_counter_ns)
        if i >= n // 10:
            out.append(running - called)
    return out


class Result(msgspec.Struct):
    latencies_ns: list[int]
    release_ns: list[int]  # of which: frame read -> the strategy has the bar
    settle_ns: list[int]
    # bars that carry the previous bar's fills: frame read -> the strategy has the bar
    fills_release_ns: list[int]
    rest_ns: list[int]
    commit_ns: list[int]
    # per burst: first frame -> the strategy has the bars, -> last decision,
    # -> last order handed over (ns); signals; bars
    bursts: list[tuple[int, int, int, int, int]]
    # per order: Probe.stage_ns
    stages: list[tuple[int, int, int, int]]
    # per order: frame read -> first byte on the socket; submit_order -> first byte
    wire_ns: list[int]
    presend_ns: list[int]


def _config(db: Path, symbols: list[str], every: int, concurrent: int,
            sb: SandboxProcess) -> Any:
    return decode_config({
        "run": {"db": str(db), "log_level": "error"},
        "http": {"enabled": False},
        "alpaca": {"trading_url": sb.url, "data_url": sb.url,
                   "data_stream_url": f"ws://127.0.0.1:{sb.port}/v2/iex",
                   "trade_stream_url": f"ws://127.0.0.1:{sb.port}/stream",
                   "max_concurrent_submits": concurrent},
        "feed": {"kind": "alpaca", "symbols": symbols, "timeframe_s": 60,
                 "stale_after_s": 3600.0},
        "strategy": {"name": "benchmarks.live_latency:Sparse", "instance": "bench",
                     "params": {"every": every}},
        "risk": {"sizing": "target_weight"},
        "channels": {"strategy": 4096},
    })


def _bars_at(tables: dict[str, BarTable]) -> dict[int, int]:
    """How many symbols have a bar at each close (synthetic minutes have gaps).

    Counted before the run: the benchmark shares the daemon's event loop.
    """
    stamps, counts = np.unique(np.concatenate([t.ts_ns for t in tables.values()]),
                               return_counts=True)
    return dict(zip(stamps.tolist(), counts.tolist(), strict=True))


class SandboxProcess:
    """The sandbox in a child process, on a manual clock: the broker is not in the
    daemon's process, as Alpaca is not (its work would otherwise share our GIL)."""

    def __init__(self, tables: dict[str, BarTable]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        # fork: the child inherits the tables instead of having them pickled.
        ctx = multiprocessing.get_context("fork")
        ready = ctx.Event()
        self._proc = ctx.Process(target=_serve_sandbox, args=(tables, self.port, ready),
                                 daemon=True)
        self._proc.start()
        if not ready.wait(300):
            self.stop()
            raise RuntimeError("the sandbox process did not start")
        self.url = f"http://127.0.0.1:{self.port}"

    async def advance(self, http: aiohttp.ClientSession) -> int:
        """Publish the next bar timestamp; returns it (UTC ns)."""
        async with http.post(f"{self.url}/admin/advance", json={"bars": 1}) as resp:
            body = await resp.json()
        return parse_rfc3339_ns(body["watermark"])

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.join(10)


def _serve_sandbox(tables: dict[str, BarTable], port: int, ready: Any) -> None:
    logs.configure("error")

    async def serve() -> None:
        async with Sandbox(tables, port=port, key_id=KEY, secret=SECRET, speed="max"):
            ready.set()
            await anyio.sleep_forever()

    anyio.run(serve, backend_options={"use_uvloop": True})


async def _run(
    probe: Probe, tables: dict[str, BarTable], *, every: int, bars: int, warmup: int,
    tmp: Path, concurrent: int, burst: bool,
) -> Result:
    db = tmp / f"latency-{len(tables)}-{concurrent}-{burst}.db"
    for stale in list(tmp.glob(db.name + "*")):  # noqa: ASYNC240 - set-up, before any I/O
        stale.unlink()  # a fresh journal: no warm-up, no last-seen bars
    graph_box: list[Graph] = []
    result = Result([], [], [], [], [], [], [], [], [], [])
    sb = SandboxProcess(tables)
    try:
        await _drive(probe, tables, sb, db, graph_box, result, every=every, bars=bars,
                     warmup=warmup, concurrent=concurrent, burst=burst)
    finally:
        sb.stop()
    return result


async def _drive(
    probe: Probe, tables: dict[str, BarTable], sb: SandboxProcess, db: Path,
    graph_box: list[Graph], result: Result, *, every: int, bars: int, warmup: int,
    concurrent: int, burst: bool,
) -> None:
    config = _config(db, list(tables), every, concurrent, sb)
    bars_at = _bars_at(tables)
    async with aiohttp.ClientSession(headers=HEADERS) as http, \
            anyio.create_task_group() as tg:
        async def daemon() -> None:
            await run_live(config, on_graph=graph_box.append)

        tg.start_soon(daemon)
        while not (graph_box and graph_box[0].ready):  # noqa: ASYNC110 - a benchmark
            await anyio.sleep(0.01)
        graph = graph_box[0]
        probe.wrap_client(graph)
        feed: LiveFeed | None = None
        while feed is None:
            feed = next((a for a in graph.supervisor.actors()
                         if isinstance(a, LiveFeed)), None)
            await anyio.sleep(0.01)
        expected = feed.emitted
        for i in range(warmup + bars):
            probe.reset()
            decided_before, signals_before = probe.bars_decided, probe.signals_decided
            watermark = await sb.advance(http)
            published = bars_at[watermark]
            expected += published
            # Settled: every bar passed on and nothing in flight (every
            # order handed over and answered).
            while not (feed.emitted >= expected and graph.inflight.count == 0):  # noqa: ASYNC110
                await anyio.sleep(0.0005)
            if i < warmup:
                continue
            first = min(at for at, _ in probe.frames)
            released = probe.released[watermark] - first
            # Quiet: every signal has reached risk as SignalScored.
            signals = probe.signals_decided - signals_before
            if burst:
                # Quiet means decided: every bar reached the strategy.
                assert probe.bars_decided - decided_before == published
                handed = max((s for _, s in probe.sent), default=first)
                result.bursts.append((released, probe.last_decision_ns - first,
                                      handed - first, signals, published))
            elif signals:
                result.settle_ns.append(time.perf_counter_ns() - first)
                for latency, release in probe.latencies_ns():
                    result.latencies_ns.append(latency)
                    result.release_ns.append(release)
                result.stages.extend(probe.stage_ns())
                result.rest_ns.extend(probe.rest_ns)
                result.commit_ns.extend(probe.commit_ns)
                result.wire_ns.extend(probe.wire_latencies_ns())
                result.presend_ns.extend(probe.presend_ns)
            else:
                result.fills_release_ns.append(released)
        graph.request_stop()


def _pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def _sizes_table(probe: Probe, args: argparse.Namespace, tmp: Path) -> None:
    print("live latency: websocket frame read -> alpaca-py submit_order called, in ms")
    print(f"  ({args.bars} bars per size after {args.warmup} warm-up bars; orders on every "
          f"other bar, ~{args.orders_per_bar:g} per bar; 'market first' is the wait, on the bars "
          "in between, until the previous orders' fills are booked)")
    header = (f"  {'symbols':>7} {'orders':>6} {'p50':>7} {'p99':>7} {'mean':>7} {'max':>7}"
              f"  {'to strategy':>11}  {'settled':>7}  {'market first':>12}")
    if not args.no_baseline:
        header += "  | one at a time: p50, p99 (old/new)"
    print(header)
    print(f"  {'':>7} {'':>6} {'':>7} {'':>7} {'':>7} {'':>7}  {'p50':>11}  {'p50':>7}"
          f"  {'p50':>12}")
    floors_rest: list[int] = []
    floors_commit: list[int] = []
    for size in (int(s) for s in args.sizes.split(",")):
        tables = synth_bars(size, days=1, freq="1min", seed=5)
        every = max(1, round(size / args.orders_per_bar))
        runs = {}
        for concurrent in ([8] if args.no_baseline else [8, 1]):
            runs[concurrent] = anyio.run(
                partial(_run, probe, tables, every=every, bars=args.bars, warmup=args.warmup,
                        tmp=tmp, concurrent=concurrent, burst=False),
                backend_options={"use_uvloop": True})
        new = runs[8]
        floors_rest.extend(new.rest_ns)
        floors_commit.extend(new.commit_ns)
        lat = new.latencies_ns
        if not lat:
            print(f"  {size:7d}: no orders measured")
            continue
        line = (f"  {size:7d} {len(lat):6d} {_pct(lat, 0.5):7.2f} {_pct(lat, 0.99):7.2f}"
                f" {statistics.fmean(lat) / 1e6:7.2f} {max(lat) / 1e6:7.2f}"
                f"  {_pct(new.release_ns, 0.5):11.2f}  {_pct(new.settle_ns, 0.5):7.2f}"
                f"  {_pct(new.fills_release_ns, 0.5):12.2f}")
        if 1 in runs and runs[1].latencies_ns:
            old = runs[1].latencies_ns
            line += (f"  | {_pct(old, 0.5):7.2f}, {_pct(old, 0.99):7.2f}"
                     f" ({_pct(old, 0.5) / _pct(lat, 0.5):.1f}x, "
                     f"{_pct(old, 0.99) / _pct(lat, 0.99):.1f}x)")
        print(line, flush=True)
        if new.stages:
            took, barrier, thread, decided = (list(c) for c in zip(*new.stages, strict=True))
            print(f"  {'':>7} where, p50/p90: frame read -> risk decided "
                  f"{_pct(decided, 0.5):.2f}/{_pct(decided, 0.9):.2f}; -> execution took it "
                  f"{_pct(took, 0.5):.2f}/{_pct(took, 0.9):.2f}; -> journal barrier "
                  f"passed {_pct(barrier, 0.5):.2f}/{_pct(barrier, 0.9):.2f}; -> submit_order "
                  f"in its thread {_pct(thread, 0.5):.2f}/{_pct(thread, 0.9):.2f}", flush=True)
        if new.wire_ns:
            print(f"  {'':>7} to the wire (frame read -> the request's first byte on the socket):"
                  f" p50 {_pct(new.wire_ns, 0.5):.2f}, p99 {_pct(new.wire_ns, 0.99):.2f};"
                  f" of which alpaca-py's submit_order before that byte p50"
                  f" {_pct(new.presend_ns, 0.5):.2f}, p99 {_pct(new.presend_ns, 0.99):.2f}",
                  flush=True)
    if floors_rest:
        print(f"  floors in this run: one submit_order REST round trip p50 "
              f"{_pct(floors_rest, 0.5):.2f} ms; one journal commit p50 "
              f"{_pct(floors_commit, 0.5):.2f} ms")
    alone = _client_floor(probe, args.floor_orders)
    hop = anyio.run(_thread_hop, args.floor_orders, backend_options={"use_uvloop": True})
    print(f"  floors alone (one at a time, nothing else running): alpaca-py's submit_order"
          f" -> its first byte\n    on the socket p50 {_pct(alone, 0.5):.2f} ms, p99"
          f" {_pct(alone, 0.99):.2f} ms; the hop into a worker thread (anyio.to_thread)"
          f" p50 {_pct(hop, 0.5):.3f} ms, p99 {_pct(hop, 0.99):.3f} ms")
    print("  target: p99 < 1 ms at 100 symbols (frame read -> request leaves the process)")


def _burst(probe: Probe, args: argparse.Namespace, tmp: Path) -> None:
    tables = synth_bars(args.burst, days=1, freq="1min", seed=5)
    result = anyio.run(
        partial(_run, probe, tables, every=BURST_SIGNAL_EVERY, bars=args.bursts, warmup=1,
                tmp=tmp, concurrent=8, burst=True),
        backend_options={"use_uvloop": True})
    print(f"burst: {args.burst:,} symbols, one frame per minute boundary, after a warm-up "
          "minute; signals on 1 symbol in 200 on every other minute (target: decided < 100 ms)")
    for released, decided, handed, signals, bars in result.bursts:
        print(f"  {bars:6,} bars, {signals:3d} signals: first frame read -> last decision "
              f"{decided / 1e6:7.1f} ms (market first {released / 1e6:6.1f} ms); "
              f"-> last order handed over {handed / 1e6:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--bars", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--orders-per-bar", type=float, default=5.0)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--floor-orders", type=int, default=500,
                        help="orders for the alpaca-py-alone floor")
    parser.add_argument("--tmp", default="/tmp")
    args = parser.parse_args()
    logs.configure("error")
    # The daemon reads its keys from the environment, as in production; alpaca-py
    # (requests) must not send 127.0.0.1 through a proxy.
    os.environ.update(APCA_API_KEY_ID=KEY, APCA_API_SECRET_KEY=SECRET)
    os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1"]))
    probe = Probe()
    probe.install()
    tmp = Path(args.tmp)
    if args.sizes:
        _sizes_table(probe, args, tmp)
    if args.burst:
        _burst(probe, args, tmp)


if __name__ == "__main__":
    main()
