"""Throughput of the message bus against a bare asyncio.Queue fan-out, measured in one run.

1 publisher -> S subscribers (default 4), each subscribed to `bar.>` while the publisher cycles
over `bar.SYM0..bar.SYM7`. Every consumer checks that it sees message i exactly in order
(0, 1, 2, ...) and the run fails loudly if any count, order or bus counter is wrong.

Variants:
  ceiling        S bounded asyncio.Queue, `await q.put(m)` per queue per message, `await q.get()`
  ceiling_put_nowait  the same queues, `put_nowait` while not full (a stronger ceiling, reference)
  ceiling_batch  the same queues carrying lists of `--batch` messages (reference only)
  bus_publish    `await bus.publish(topic, msg)` per message, consumers `await sub.get()`
  bus_publish_get_batch  per-message publish, consumers use get_batch (reference only)
  bus_batch      `await bus.publish_batch(...)` with `--batch` messages, consumers get_batch

Each variant runs once with N/10 as warm-up, then `--repeats` times; the best run is reported
because the machine is shared and noisy (the median is reported too).

    .venv/bin/python benchmarks/bench_bus.py [--n 1000000] [--repeats 3] [--no-uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _loop import loop_factory as event_loop_factory

from engine.bus import MessageBus, OverflowPolicy, Subscription


class BenchmarkError(RuntimeError):
    pass


def _topics(symbols: int) -> list[str]:
    return [f"bar.SYM{i}" for i in range(symbols)]


def _check(name: str, seen: int, n: int) -> None:
    if seen != n:
        raise BenchmarkError(f"{name}: consumer saw {seen} messages, expected {n}")


async def _run_consumers(
    consumers: list[Coroutine[Any, Any, int]], publisher: Callable[[], Awaitable[None]], n: int
) -> float:
    tasks = [asyncio.create_task(c) for c in consumers]
    await asyncio.sleep(0)  # consumers start waiting first, as in a running engine
    start = time.perf_counter()
    await publisher()
    seen = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for i, count in enumerate(seen):
        _check(f"consumer {i}", count, n)
    return elapsed


async def ceiling(n: int, subs: int, capacity: int, symbols: int, batch: int) -> float:
    topics = _topics(symbols)
    queues: list[asyncio.Queue[tuple[str, int]]] = [
        asyncio.Queue(maxsize=capacity) for _ in range(subs)
    ]

    async def consume(q: asyncio.Queue[tuple[str, int]]) -> int:
        expected = 0
        get = q.get
        while expected < n:
            _topic, m = await get()
            if m != expected:
                raise BenchmarkError(f"ceiling: got {m}, expected {expected}")
            expected += 1
        return expected

    async def publish() -> None:
        puts = [q.put for q in queues]
        k = len(topics)
        for i in range(n):
            item = (topics[i % k], i)
            for put in puts:
                await put(item)

    return await _run_consumers([consume(q) for q in queues], publish, n)


async def ceiling_put_nowait(n: int, subs: int, capacity: int, symbols: int, batch: int) -> float:
    """A stronger bare-queue ceiling: put_nowait while there is room, await put only when full
    (what a careful hand-written fan-out does; the bus's fast path is the same idea)."""
    topics = _topics(symbols)
    queues: list[asyncio.Queue[tuple[str, int]]] = [
        asyncio.Queue(maxsize=capacity) for _ in range(subs)
    ]

    async def consume(q: asyncio.Queue[tuple[str, int]]) -> int:
        expected = 0
        get = q.get
        while expected < n:
            _topic, m = await get()
            if m != expected:
                raise BenchmarkError(f"ceiling_put_nowait: got {m}, expected {expected}")
            expected += 1
        return expected

    async def publish() -> None:
        k = len(topics)
        for i in range(n):
            item = (topics[i % k], i)
            for q in queues:
                if q.full():
                    await q.put(item)
                else:
                    q.put_nowait(item)

    return await _run_consumers([consume(q) for q in queues], publish, n)


async def ceiling_batch(n: int, subs: int, capacity: int, symbols: int, batch: int) -> float:
    topics = _topics(symbols)
    # Same message capacity as the other variants, expressed in batches.
    queues: list[asyncio.Queue[list[tuple[str, int]]]] = [
        asyncio.Queue(maxsize=max(1, capacity // batch)) for _ in range(subs)
    ]

    async def consume(q: asyncio.Queue[list[tuple[str, int]]]) -> int:
        expected = 0
        while expected < n:
            for _topic, m in await q.get():
                if m != expected:
                    raise BenchmarkError(f"ceiling_batch: got {m}, expected {expected}")
                expected += 1
        return expected

    async def publish() -> None:
        k = len(topics)
        for start in range(0, n, batch):
            items = [(topics[i % k], i) for i in range(start, min(n, start + batch))]
            for q in queues:
                await q.put(items)

    return await _run_consumers([consume(q) for q in queues], publish, n)


def _bus(subs: int, capacity: int) -> tuple[MessageBus, list[Subscription]]:
    bus = MessageBus(default_capacity=capacity, default_policy=OverflowPolicy.BLOCK)
    return bus, [bus.subscribe("bar.>", name=f"consumer{i}") for i in range(subs)]


def _verify_bus(name: str, bus: MessageBus, n: int) -> None:
    stats = bus.stats()
    if stats.published != n or stats.unrouted != 0:
        raise BenchmarkError(f"{name}: bus counted {stats.published} published, expected {n}")
    for sub in stats.subscriptions.values():
        if sub.delivered != n or sub.dropped != 0 or sub.depth != 0:
            raise BenchmarkError(f"{name}: bad subscription counters {sub}")
        if sub.high_water > sub.capacity:
            raise BenchmarkError(f"{name}: mailbox exceeded its capacity: {sub}")


async def _consume_per_message(sub: Subscription, n: int) -> int:
    expected = 0
    get = sub.get
    while expected < n:
        _topic, m = await get()
        if m != expected:
            raise BenchmarkError(f"{sub.name}: got {m}, expected {expected}")
        expected += 1
    return expected


async def _consume_batches(sub: Subscription, n: int) -> int:
    expected = 0
    get_batch = sub.get_batch
    cap = sub.capacity
    while expected < n:
        for _topic, m in await get_batch(cap):
            if m != expected:
                raise BenchmarkError(f"{sub.name}: got {m}, expected {expected}")
            expected += 1
    return expected


async def _bus_per_message(
    name: str,
    consumer: Callable[[Subscription, int], Coroutine[Any, Any, int]],
    n: int,
    subs: int,
    capacity: int,
    symbols: int,
) -> float:
    topics = _topics(symbols)
    bus, subscriptions = _bus(subs, capacity)

    async def publish() -> None:
        pub = bus.publish
        k = len(topics)
        for i in range(n):
            await pub(topics[i % k], i)

    elapsed = await _run_consumers([consumer(s, n) for s in subscriptions], publish, n)
    _verify_bus(name, bus, n)
    return elapsed


async def bus_publish(n: int, subs: int, capacity: int, symbols: int, batch: int) -> float:
    return await _bus_per_message("bus_publish", _consume_per_message, n, subs, capacity, symbols)


async def bus_publish_get_batch(n: int, subs: int, capacity: int, symbols: int, _: int) -> float:
    name = "bus_publish_get_batch"
    return await _bus_per_message(name, _consume_batches, n, subs, capacity, symbols)


async def bus_batch(n: int, subs: int, capacity: int, symbols: int, batch: int) -> float:
    topics = _topics(symbols)
    bus, subscriptions = _bus(subs, capacity)

    async def publish() -> None:
        pub = bus.publish_batch
        k = len(topics)
        for start in range(0, n, batch):
            await pub([(topics[i % k], i) for i in range(start, min(n, start + batch))])

    elapsed = await _run_consumers([_consume_batches(s, n) for s in subscriptions], publish, n)
    _verify_bus("bus_batch", bus, n)
    return elapsed


VARIANTS: dict[str, Callable[[int, int, int, int, int], Coroutine[Any, Any, float]]] = {
    "ceiling": ceiling,
    "ceiling_put_nowait": ceiling_put_nowait,
    "ceiling_batch": ceiling_batch,
    "bus_publish": bus_publish,
    "bus_publish_get_batch": bus_publish_get_batch,
    "bus_batch": bus_batch,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="messages per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--subscribers", type=int, default=4)
    parser.add_argument("--capacity", type=int, default=1024, help="mailbox / queue capacity")
    parser.add_argument("--batch", type=int, default=256, help="publish_batch size")
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    args = parser.parse_args()

    loop_factory, loop_name = event_loop_factory(args.no_uvloop)

    params = (args.subscribers, args.capacity, args.symbols, args.batch)
    results: dict[str, Any] = {}
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        for name, variant in VARIANTS.items():
            runner.run(variant(max(1, args.n // 10), *params))  # warm-up
            times = []
            for _ in range(args.repeats):
                gc.collect()
                times.append(runner.run(variant(args.n, *params)))
            best = min(times)
            results[name] = {
                "best_s": round(best, 4),
                "median_s": round(statistics.median(times), 4),
                "msgs_per_s": round(args.n / best),
                "deliveries_per_s": round(args.n * args.subscribers / best),
                "median_msgs_per_s": round(args.n / statistics.median(times)),
            }

    ratio = results["bus_publish"]["msgs_per_s"] / results["ceiling"]["msgs_per_s"]
    batch_deliveries = results["bus_batch"]["deliveries_per_s"]
    report = {
        "loop": loop_name,
        "python": sys.version.split()[0],
        "n": args.n,
        "subscribers": args.subscribers,
        "capacity": args.capacity,
        "batch": args.batch,
        "repeats": args.repeats,
        "results": results,
        "ratio_bus_publish_to_ceiling": round(ratio, 3),
        "ratio_bus_publish_to_ceiling_put_nowait": round(
            results["bus_publish"]["msgs_per_s"] / results["ceiling_put_nowait"]["msgs_per_s"], 3
        ),
        "ratio_bus_batch_to_ceiling_batch": round(
            results["bus_batch"]["msgs_per_s"] / results["ceiling_batch"]["msgs_per_s"], 3
        ),
        "targets": {
            "bus_publish_ratio_ge_0.7": ratio >= 0.7,
            "bus_batch_deliveries_per_s_ge_2M": batch_deliveries >= 2_000_000,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
