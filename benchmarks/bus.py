"""Messages per second through a chain of five actors with no work per hop.

    python -m benchmarks.bus [--messages N]

Prints end-to-end messages/s and the per-hop cost in microseconds, under
uvloop and under asyncio's default loop, in the same run. The actors are the
real ones (InboxActor over trader.channels.Channel with an Outbox, tracked by
the graph's in-flight counter), so this measures what the graph pays per hop.
A figure, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import time

import anyio

from trader.actors.base import InboxActor, Outbox
from trader.channels import Channel, InFlight
from trader.messages import BatchCut, Message

HOPS = 5


class Forward(InboxActor):
    """Passes every message on, unchanged."""

    def handle(self, msg: Message) -> None:
        self._out.post(msg, journal=False)


class Sink(InboxActor):
    def __init__(self, inbox: Channel[Message], outbox: Outbox, total: int,
                 done: anyio.Event) -> None:
        super().__init__(inbox, outbox)
        self.count = 0
        self._total = total
        self._done = done

    def handle(self, msg: Message) -> None:
        self.count += 1
        if self.count == self._total:
            self._done.set()


async def chain(total: int, capacity: int = 1024) -> float:
    inflight = InFlight()
    channels: list[Channel[Message]] = [
        Channel(f"hop{i}", capacity, inflight) for i in range(HOPS + 1)
    ]
    done = anyio.Event()
    actors: list[InboxActor] = [
        Forward(channels[i], Outbox(f"hop{i}", {BatchCut: [channels[i + 1]]}, None))
        for i in range(HOPS)
    ]
    sink = Sink(channels[HOPS], Outbox("sink", {}, None), total, done)
    msgs = [BatchCut(ts_ns=i) for i in range(total)]
    async with anyio.create_task_group() as tg:
        for actor in (*actors, sink):
            await tg.start(actor.run)
        start = time.perf_counter()
        first = channels[0]
        for m in msgs:
            if not first.try_send(m):
                await first.send(m)
        await done.wait()
        elapsed = time.perf_counter() - start
        for ch in channels:
            ch.close()
    return elapsed


def measure(total: int, backend_options: dict[str, object]) -> tuple[float, float]:
    best = float("inf")
    for _ in range(3):
        best = min(best, anyio.run(chain, total, backend_options=backend_options))
    rate = total / best
    per_hop_us = best / total / HOPS * 1e6
    return rate, per_hop_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300_000)
    args = parser.parse_args()
    print(f"bus: {args.messages:,} messages through {HOPS} forwarding actors (best of 3)")
    results = {}
    for name, opts in (("asyncio", {"use_uvloop": False}), ("uvloop", {"use_uvloop": True})):
        rate, hop = measure(args.messages, opts)
        results[name] = rate
        print(f"  {name:8s} {rate:12,.0f} msg/s end to end   {hop:6.3f} µs per hop")
    print(f"  uvloop / asyncio: {results['uvloop'] / results['asyncio']:.2f}x"
          f"   target: >= 300,000 msg/s end to end")


if __name__ == "__main__":
    main()
