"""Ingress against a real broker: bad input dead-lettered with its reason, counted and logged
once per burst; redeliveries dropped; own messages never re-ingested; backpressure pauses."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from structlog.testing import capture_logs

from config.enums import OverflowPolicy
from contracts import Signal
from engine.bus import MessageBus
from engine.kafka.bridge import KafkaBridge
from engine.kafka.egress import EgressRoute
from engine.kafka.envelope import (
    H_ERROR_DETAIL,
    H_ERROR_REASON,
    H_MESSAGE_ID,
    H_SOURCE_TOPIC,
    encode,
)
from engine.kafka.ingress import IngressRoute
from engine.telemetry.logging import get_logger
from tests.kit.kafka import TansuBroker, create_topics

from .helpers import consume_all, headers_of, kafka_config, produce, signal, wait_until

TOPIC = "ext.signals"
DLQ = "tradeengine.dlq"

Headers = list[tuple[str, bytes]]


def _valid(sig: Signal, message_id: str) -> tuple[bytes | None, bytes, Headers]:
    env = encode(
        f"signal.{sig.agent}.{sig.symbol}",
        sig,
        kafka_topic=TOPIC,
        message_id=message_id,
        producer_id="external.1",
    )
    return env.key, env.value, list(env.headers)


def _replace(headers: Headers, name: str, value: bytes | None) -> Headers:
    out = [(k, v) for k, v in headers if k != name]
    if value is not None:
        out.append((name, value))
    return out


def _bad_records() -> list[tuple[str, tuple[bytes | None, bytes, Headers]]]:
    """(expected reason, record) for each kind of bad input the issue names; every record has
    its own message id (a dedup hit must not hide a rejection)."""
    cases: list[tuple[str, tuple[bytes | None, bytes, Headers]]] = []

    def add(reason: str, value: bytes | None = None, **header_changes: bytes | None) -> None:
        key, valid_value, headers = _valid(signal(), f"bad-{len(cases)}")
        for name, new in header_changes.items():
            headers = _replace(headers, name.replace("_", "-"), new)
        cases.append((reason, (key, valid_value if value is None else value, headers)))

    _key, value, _headers = _valid(signal(), "template")
    nan_value = json.loads(value)
    nan_value["mu"] = "__NAN__"
    add("unknown_type", type=b"Prophecy")
    add("wrong_schema_version", schema_version=b"7")
    add("invalid_json", b'{"mu": 0.01, "sigma": ')
    add("invalid_contract", json.dumps(nan_value).replace('"__NAN__"', "NaN").encode())
    add("oversized", b" " * 3_000 + value)
    for name in ("type", "schema_version", "content_type", "message_id"):
        add("missing_header", **{name: None})
    return cases


def _bridge(broker: TansuBroker, bus: MessageBus, **kafka: object) -> KafkaBridge:
    cfg = kafka_config(broker.bootstrap, **kafka)
    return KafkaBridge(
        cfg,
        bus=bus,
        log=get_logger("engine"),
        ingress_routes=[IngressRoute(TOPIC)],
        group_id="ingress-test",
    )


async def test_ingress_when_bad_records_then_each_dead_lettered_with_reason_and_counted(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    await create_topics(kafka_broker.bootstrap, TOPIC, DLQ)
    bus = MessageBus()
    probe = bus.subscribe("signal.>", name="probe", capacity=100)
    bad = _bad_records()
    good = _valid(signal("MSFT"), "good-1")
    consumer_cfg = kafka_config(kafka_broker.bootstrap).consumer.model_copy(
        update={"max_message_bytes": 2_048}
    )
    bridge = _bridge(kafka_broker, bus, consumer=consumer_cfg)
    # Act
    async with bridge:
        assert await bridge.wait_ingress_ready(20)
        await produce(kafka_broker.bootstrap, TOPIC, [r for _, r in bad] + [good])
        assert bridge.ingress is not None
        ingress = bridge.ingress
        await wait_until(
            lambda: ingress.stats.dead_lettered + ingress.stats.accepted == len(bad) + 1,
            what="all records handled",
        )
        dead = await consume_all(kafka_broker.bootstrap, DLQ, count=len(bad))
    # Assert: the good one on the bus, every bad one in the DLQ with its reason, counted
    delivered = []
    while len(probe):
        delivered.append(probe.get_nowait()[1])
    assert [type(m).__name__ for m in delivered] == ["Signal"]
    assert delivered[0].symbol == "MSFT"
    assert len(dead) == len(bad)
    reasons = [headers_of(r)[H_ERROR_REASON].decode() for r in dead]
    assert Counter(reasons) == Counter(reason for reason, _ in bad)
    for record in dead:
        headers = headers_of(record)
        assert headers[H_SOURCE_TOPIC] == TOPIC.encode()
        assert headers[H_ERROR_DETAIL]
    assert ingress.stats.rejected == dict(Counter(reason for reason, _ in bad))
    assert ingress.stats.dead_lettered == len(bad)
    assert ingress.stats.accepted == 1


async def test_ingress_when_burst_of_one_bad_kind_then_logged_once_with_count(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    await create_topics(kafka_broker.bootstrap, TOPIC, DLQ)
    bus = MessageBus()
    key, _value, headers = _valid(signal(), "x")
    flood = [
        (key, b"not json %d" % i, _replace(headers, H_MESSAGE_ID, f"junk-{i}".encode()))
        for i in range(60)
    ]
    bridge = _bridge(kafka_broker, bus)
    # Act
    with capture_logs() as logs:
        async with bridge:
            assert await bridge.wait_ingress_ready(20)
            await produce(kafka_broker.bootstrap, TOPIC, flood)
            assert bridge.ingress is not None
            ingress = bridge.ingress
            await wait_until(lambda: ingress.stats.dead_lettered == 60, what="60 dead letters")
    # Assert
    first = [e for e in logs if e["event"] == "kafka record rejected; dead-lettered"]
    ended = [e for e in logs if e["event"] == "kafka records rejected (burst ended)"]
    assert len(first) == 1
    assert first[0]["reason"] == "invalid_json"
    assert sum(e["records"] for e in ended) == 60
    assert ingress.stats.rejected == {"invalid_json": 60}


async def test_ingress_when_same_message_id_delivered_twice_then_on_bus_once(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    await create_topics(kafka_broker.bootstrap, TOPIC, DLQ)
    bus = MessageBus()
    probe = bus.subscribe("signal.>", name="probe", capacity=100)
    record = _valid(signal(), "dup-1")
    bridge = _bridge(kafka_broker, bus)
    # Act
    async with bridge:
        assert await bridge.wait_ingress_ready(20)
        await produce(kafka_broker.bootstrap, TOPIC, [record, record, record])
        assert bridge.ingress is not None
        ingress = bridge.ingress
        await wait_until(
            lambda: ingress.stats.accepted + ingress.stats.duplicates == 3, what="3 records"
        )
    # Assert
    assert len(probe) == 1
    assert ingress.stats.duplicates == 2


async def test_bridge_when_ingress_reads_its_own_egress_topic_then_never_reingests(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange: one bridge produces signal.> to TOPIC and also consumes TOPIC
    await create_topics(kafka_broker.bootstrap, TOPIC, DLQ)
    bus = MessageBus()
    probe = bus.subscribe("signal.>", name="probe", capacity=100)
    cfg = kafka_config(kafka_broker.bootstrap)
    bridge = KafkaBridge(
        cfg,
        bus=bus,
        log=get_logger("engine"),
        egress_routes=[EgressRoute("signal.>", TOPIC)],
        ingress_routes=[IngressRoute(TOPIC)],
        group_id="own-test",
    )
    # Act
    async with bridge:
        assert await bridge.wait_ingress_ready(20)
        for i in range(5):
            await bus.publish(f"signal.ext_provider.S{i}", signal(f"S{i}"))
        assert bridge.ingress is not None
        ingress = bridge.ingress
        await wait_until(lambda: ingress.stats.own_skipped == 5, what="own records seen")
    # Assert: the 5 local publishes only, no echo
    assert len(probe) == 5
    assert ingress.stats.accepted == 0


async def test_ingress_when_mailbox_full_then_fetching_pauses_and_nothing_is_lost(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange: a 4-slot block mailbox that nobody reads until all records are produced
    await create_topics(kafka_broker.bootstrap, TOPIC, DLQ)
    bus = MessageBus()
    probe = bus.subscribe("signal.>", name="slow", capacity=4, policy=OverflowPolicy.BLOCK)
    records = [_valid(signal(f"S{i}"), f"bp-{i}") for i in range(50)]
    bridge = _bridge(kafka_broker, bus)
    # Act
    async with bridge:
        assert await bridge.wait_ingress_ready(20)
        await produce(kafka_broker.bootstrap, TOPIC, records)
        assert bridge.ingress is not None
        ingress = bridge.ingress
        await wait_until(lambda: ingress.stats.pauses >= 1, what="a pause")
        paused_at = ingress.stats.accepted
        received = []
        while len(received) < 50:
            _topic, message = await probe.get()
            received.append(message)
    # Assert: it waited for the consumer (4 in the mailbox + 1 parked), then everything came
    assert paused_at <= 5
    assert [m.symbol for m in received] == [f"S{i}" for i in range(50)]


async def test_ingress_when_restarted_then_resumes_after_what_reached_the_bus_only(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange: the first bridge's bus takes 3 records and then stays full
    await create_topics(kafka_broker.bootstrap, TOPIC, DLQ)
    records = [_valid(signal(f"S{i}"), f"resume-{i}") for i in range(10)]
    first_bus = MessageBus()
    stuck = first_bus.subscribe("signal.>", name="stuck", capacity=3, policy=OverflowPolicy.BLOCK)
    first = _bridge(kafka_broker, first_bus)
    async with first:
        assert await first.wait_ingress_ready(20)
        await produce(kafka_broker.bootstrap, TOPIC, records)
        assert first.ingress is not None
        ingress = first.ingress
        await wait_until(lambda: ingress.stats.pauses >= 1, what="the first bridge to block")
        on_first_bus = ingress.stats.accepted
    # Act: a second bridge in the same consumer group
    second_bus = MessageBus()
    probe = second_bus.subscribe("signal.>", name="probe", capacity=100)
    second = _bridge(kafka_broker, second_bus)
    async with second:
        assert await second.wait_ingress_ready(20)
        await wait_until(lambda: len(probe) >= 10 - on_first_bus, what="the rest")
        await asyncio.sleep(0.5)  # nothing more may come
    # Assert: exactly the records the first bus never took, in order
    assert on_first_bus == len(stuck) == 3
    rest = [probe.get_nowait()[1].symbol for _ in range(len(probe))]
    assert rest == [f"S{i}" for i in range(3, 10)]
