"""The egress produces through aiokafka's batch API: per-key order and aiokafka's partitioning
on a real multi-partition topic, in-flight accounting in records, and an outage that spools
every unacknowledged record of every batch, in encoding order, before any later message."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from contracts import Signal
from engine.bus import MessageBus
from engine.kafka.bridge import KafkaBridge
from engine.kafka.egress import EgressBridge, EgressRoute
from engine.kafka.envelope import H_MESSAGE_ID, Envelope
from engine.kafka.spool import Spool
from engine.telemetry.logging import get_logger
from tests.kit.kafka import TansuBroker, create_topics

from .helpers import consume_all, headers_of, kafka_config, signal, wait_until

TOPIC = "batching.signals"
SYMBOLS = [f"S{i:03d}" for i in range(96)]


def _sequence(message_id: str) -> int:
    return int(message_id.rpartition("-")[2])


async def test_egress_when_many_keys_over_four_partitions_then_key_order_and_aiokafka_partition(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    await create_topics(kafka_broker.bootstrap, TOPIC, partitions=4)
    bus = MessageBus()
    bridge = KafkaBridge(
        kafka_config(kafka_broker.bootstrap),
        bus=bus,
        log=get_logger("engine"),
        egress_routes=[EgressRoute("signal.>", TOPIC)],
    )
    published: dict[bytes, list[str]] = defaultdict(list)
    """Per key, the trace ids in bus publish order."""
    n = 6_000
    # Act: keys interleaved irregularly, published in bursts of 500, so batches mix keys
    async with bridge:
        egress = bridge.egress
        assert egress is not None
        for i in range(n):
            symbol = SYMBOLS[(i * 7 + i // 13) % len(SYMBOLS)]
            message = signal(symbol, step=i)
            published[symbol.encode()].append(message.trace_id)
            await bus.publish(f"signal.ext_provider.{symbol}", message)
            if i % 500 == 0:
                await asyncio.sleep(0.005)
        await wait_until(lambda: egress.stats.delivered >= n, what="egress delivery")
        stats = egress.stats
        in_flight = egress.in_flight
        producer_id = egress.producer_id
    records = await consume_all(kafka_broker.bootstrap, TOPIC, count=n)
    # Assert: everything delivered once, nothing spooled
    assert stats.delivered == stats.encoded == n
    assert (stats.spooled, stats.outages, stats.send_failures, in_flight) == (0, 0, 0, 0)
    ids = [headers_of(r)[H_MESSAGE_ID].decode() for r in records]
    assert sorted(ids, key=_sequence) == [f"{producer_id}-{i}" for i in range(1, n + 1)]
    # ... every key on one partition, the one aiokafka's default partitioner picks ...
    partitions = sorted({r.partition for r in records})
    assert partitions == [0, 1, 2, 3]
    partitioner = DefaultPartitioner()
    by_key: dict[bytes, list[Any]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key[record.key].append(record)
    assert set(by_key) == set(published)
    for key, recs in by_key.items():
        assert {r.partition for r in recs} == {partitioner(key, partitions, partitions)}
        # ... and in bus publish order
        assert [Signal.model_validate_json(r.value).trace_id for r in recs] == published[key]
        sequences = [_sequence(headers_of(r)[H_MESSAGE_ID].decode()) for r in recs]
        assert sequences == sorted(sequences)


# ------------------------------------------------------------------- a controllable producer


class _Builder:
    """A batch builder like aiokafka's: refuses records once full or closed."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[bytes | None] = []
        self.closed = False

    def append(
        self,
        *,
        timestamp: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> object | None:
        if self.closed or len(self.records) >= self.capacity:
            self.closed = True
            return None
        self.records.append(value)
        return object()

    def close(self) -> None:
        self.closed = True


class _Producer:
    """Batch API double: every `send_batch` future stays pending until the test settles it."""

    def __init__(self, *, capacity: int = 4, partitions: int = 3) -> None:
        self.capacity = capacity
        self.partitions = set(range(partitions))
        self.sent: list[tuple[int, _Builder, asyncio.Future[Any]]] = []
        self.refuse = False

    def create_batch(self) -> _Builder:
        return _Builder(self.capacity)

    async def send_batch(
        self, batch: _Builder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        if self.refuse:
            raise ConnectionError("broker gone")
        assert batch.closed  # the egress hands over complete batches
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent.append((partition, batch, fut))
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions

    async def stop(self) -> None:
        return None


def _egress(producer: _Producer, bus: MessageBus, *, max_in_flight: int) -> EgressBridge:
    async def connect() -> _Producer:
        return producer

    return EgressBridge(
        bus=bus,
        routes=[EgressRoute("signal.>", TOPIC)],
        producer_id="test.0001",
        connect=connect,
        spool=Spool(None, max_messages=10_000),
        log=get_logger("engine"),
        max_in_flight=max_in_flight,
        request_timeout_s=30.0,
        backoff_initial_s=60.0,
        backoff_max_s=60.0,
    )


async def test_egress_when_window_full_then_bounded_in_records_not_batches() -> None:
    # Arrange
    producer = _Producer(capacity=4)
    bus = MessageBus()
    egress = _egress(producer, bus, max_in_flight=10)
    delivered: list[Envelope] = []
    egress.delivery_listeners.append(delivered.extend)
    await egress.start()
    try:
        # Act: 60 messages over 5 keys, nothing acknowledged yet ...
        for i in range(60):
            await bus.publish(f"signal.p.K{i % 5}", signal(f"K{i % 5}", agent="p", step=i))
        await wait_until(lambda: egress.in_flight == 10, what="a full window")
        await asyncio.sleep(0.05)
        window = egress.in_flight
        pending = sum(len(b.records) for _p, b, f in producer.sent if not f.done())
        # ... then one batch acknowledged at a time
        highest = 0
        while egress.stats.delivered < 60:
            fut = next((f for _p, _b, f in producer.sent if not f.done()), None)
            if fut is not None:
                fut.set_result(None)
            await asyncio.sleep(0.001)
            highest = max(highest, egress.in_flight)
    finally:
        await egress.stop(timeout_s=1)
    # Assert: the window counts records (not batches) and never exceeds 10
    assert window == pending == 10
    assert highest <= 10
    assert egress.stats.delivered == 60
    assert sorted(_sequence(e.message_id) for e in delivered) == list(range(1, 61))
    per_key: dict[bytes | None, list[int]] = defaultdict(list)
    for env in delivered:
        per_key[env.key].append(_sequence(env.message_id))
    assert all(seqs == sorted(seqs) for seqs in per_key.values())
    assert all(len(b.records) <= 4 for _p, b, _f in producer.sent)
    assert len(producer.sent) < 60


async def test_egress_when_a_batch_fails_then_every_unacked_record_spooled_in_order_first() -> None:
    # Arrange
    producer = _Producer(capacity=4)
    bus = MessageBus()
    egress = _egress(producer, bus, max_in_flight=1_000)
    delivered: list[Envelope] = []
    egress.delivery_listeners.append(delivered.extend)
    await egress.start()
    try:
        for i in range(30):
            await bus.publish(f"signal.p.K{i % 6}", signal(f"K{i % 6}", agent="p", step=i))
        await wait_until(lambda: egress.stats.encoded == 30 and not egress.queued)
        _partition, first, first_fut = producer.sent[0]
        first_fut.set_result(None)
        # Act: the second batch fails; the broker refuses everything from now on
        producer.refuse = True
        producer.sent[1][2].set_exception(ConnectionError("batch lost"))
        await wait_until(lambda: not egress.healthy, what="DEGRADED")
        for i in range(30, 35):
            await bus.publish(f"signal.p.K{i % 6}", signal(f"K{i % 6}", agent="p", step=i))
        await wait_until(lambda: egress.stats.encoded == 35 and not egress.queued)
        spooled = [_sequence(e.message_id) for e in egress.spool.peek(len(egress.spool))]
        stats = egress.stats
    finally:
        await egress.stop(timeout_s=0.5)
    # Assert: the acknowledged batch was delivered; everything else spooled in encoding order
    acked = [_sequence(e.message_id) for e in delivered]
    assert len(acked) == len(first.records) == 4
    assert spooled == sorted(set(range(1, 36)) - set(acked))
    assert (stats.outages, stats.delivered, stats.spooled) == (1, 4, 31)
