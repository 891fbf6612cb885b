"""Shared builders of the Kafka tests: configs for a test broker, records, consumers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from config.models import (
    KafkaConfig,
    KafkaConsumerConfig,
    KafkaProducerConfig,
    KafkaSpoolConfig,
)
from contracts import Signal

T0 = datetime(2024, 1, 2, 21, 0, tzinfo=UTC)
_ids = itertools.count(1)


def kafka_config(bootstrap: str, **overrides: Any) -> KafkaConfig:
    """An enabled bridge config for a local test broker: short timeouts, quick group joins
    (tansu answers a join after session_timeout / 2) and fast reconnects."""
    fields: dict[str, Any] = {
        "enabled": True,
        "bootstrap_servers": [bootstrap],
        "producer": KafkaProducerConfig(request_timeout_ms=1_500, linger_ms=2),
        "consumer": KafkaConsumerConfig(
            session_timeout_ms=1_500, heartbeat_interval_ms=500, auto_offset_reset="earliest"
        ),
        "spool": KafkaSpoolConfig(reconnect_backoff_initial_s=0.05, reconnect_backoff_max_s=0.5),
    }
    fields.update(overrides)
    return KafkaConfig(**fields)


def signal(
    symbol: str = "AAPL", *, agent: str = "ext_provider", mu: float = 0.01, step: int = 0
) -> Signal:
    n = next(_ids)
    ts = T0 + timedelta(days=step)
    return Signal(
        trace_id=f"{n:032x}",
        ts_event=ts,
        ts_init=ts,
        agent=agent,
        symbol=symbol,
        mu=mu,
        sigma=0.05,
        horizon="1d",
        confidence=0.5,
    )


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
) -> None:
    """Produce (key, value, headers) records with a plain producer and wait for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4_000_000)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key, headers=list(headers))
            for key, value, headers in records
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str,
    topic: str,
    *,
    count: int | None,
    timeout_s: float = 20.0,
    idle_s: float = 2.0,
) -> list[Any]:
    """Records of every partition of `topic`, from the beginning: the first `count`, or with
    `count` None everything there is (until nothing new came for `idle_s`; tansu's end offsets
    cannot be trusted, see benchmarks/bench_kafka.py)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        last_new = loop.time()
        while (count is None or len(out) < count) and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
            if batch:
                last_new = loop.time()
            elif count is None and loop.time() - last_new > idle_s:
                break
        return out
    finally:
        await consumer.stop()


async def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = ""
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def headers_of(record: Any) -> dict[str, bytes]:
    return dict(record.headers)
