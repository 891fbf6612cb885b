"""Fuzzed ingress through a real broker: random bytes and near-valid records never crash the
bridge; every record ends up on the bus or in the dead-letter topic with a reason (or is a
counted redelivery), and every valid record is on the bus."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.bus import MessageBus
from engine.kafka.bridge import KafkaBridge
from engine.kafka.envelope import H_ERROR_REASON, H_MESSAGE_ID, RejectReason
from engine.kafka.ingress import IngressRoute
from engine.telemetry.logging import get_logger
from tests.kit.kafka import TansuBroker, create_topics

from .helpers import consume_all, headers_of, kafka_config, produce, wait_until
from .test_envelope_fuzz import BASES, header_lists, near_valid

_round = itertools.count()
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def _wire(value: bytes | None, headers: list[tuple[str, bytes | None]]) -> Record:
    # Kafka headers carry bytes; a null header value becomes empty bytes on the wire.
    # aiokafka refuses a record with neither key nor value; a key keeps tombstones testable.
    return b"fuzz", value, [(str(n), v if v is not None else b"") for n, v in headers]


def _valid(n: int) -> Record:
    base = BASES[next(iter(BASES))]
    headers = [(k, f"valid-{n}".encode() if k == H_MESSAGE_ID else v) for k, v in base.headers]
    return base.key, base.value, headers


junk = st.tuples(st.none() | st.binary(max_size=300), header_lists).map(lambda t: _wire(*t))
mutated = near_valid.map(lambda case: _wire(*case[1]))
cases = st.lists(
    st.one_of(junk, mutated, st.integers(0, 10**9).map(_valid)), min_size=1, max_size=25
)


async def _run(bootstrap: str, records: list[Record]) -> None:
    n = next(_round)
    topic, dlq = f"fuzz.in.{n}", f"fuzz.dlq.{n}"
    await create_topics(bootstrap, topic, dlq)
    bus = MessageBus()
    probe = bus.subscribe(">", name="probe", capacity=1_000)
    bridge = KafkaBridge(
        kafka_config(bootstrap, dead_letter_topic=dlq),
        bus=bus,
        log=get_logger("engine"),
        ingress_routes=[IngressRoute(topic)],
        group_id=None,
    )
    async with bridge:
        assert await bridge.wait_ingress_ready(20)
        await produce(bootstrap, topic, records)
        assert bridge.ingress is not None
        stats = bridge.ingress.stats
        ingress = bridge.ingress

        def handled() -> bool:
            # A dead ingress fails the example at once (not after the timeout: shrinking
            # would wait that long for every candidate).
            assert ingress.running, f"the ingress died: {ingress.error!r}"
            return stats.accepted + stats.dead_lettered + stats.duplicates >= len(records)

        await wait_until(handled, timeout_s=10, what="every record handled")
        assert bridge.ingress.running, "the ingress task died"
    dead = await consume_all(bootstrap, dlq, count=stats.dead_lettered, timeout_s=10)
    on_bus: list[Any] = []
    while len(probe):
        on_bus.append(probe.get_nowait()[1])
    # Every record accounted for: bus, dead letters or a counted redelivery.
    assert stats.accepted + stats.dead_lettered + stats.duplicates == len(records)
    assert len(on_bus) == stats.accepted
    assert len(dead) == stats.dead_lettered == stats.rejected_total
    reasons = {r.value for r in RejectReason}
    assert all(headers_of(r)[H_ERROR_REASON].decode() in reasons for r in dead)
    # Every valid record is on the bus: none dead-lettered, each distinct id accepted.
    valid_ids = {
        v for _k, _v, h in records for n, v in h if n == H_MESSAGE_ID and v.startswith(b"valid-")
    }
    assert not [r for r in dead if headers_of(r).get(H_MESSAGE_ID, b"").startswith(b"valid-")]
    assert stats.accepted >= len(valid_ids)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(records=cases)
def test_ingress_when_fuzzed_records_then_no_crash_and_each_on_bus_or_dead_lettered(
    kafka_broker: TansuBroker, records: list[Record]
) -> None:
    # Arrange (generated), Act and Assert in _run
    asyncio.run(_run(kafka_broker.bootstrap, records))
