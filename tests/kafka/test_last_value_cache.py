"""The optional last-value cache: after a run, Redis holds the latest produced record of every
(topic, key) with a TTL — the same bytes a consumer reads last from Kafka for that key."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from config.models import KafkaEgressRoute, LastValueCacheConfig
from tests.e2e.conftest import replay
from tests.kit.kafka import TansuBroker
from tests.kit.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)

from .helpers import consume_all
from .test_engine_kafka import SIGNALS, engine_with_kafka


async def test_replay_when_last_value_cache_on_then_redis_holds_latest_record_per_key_with_ttl(
    kafka_broker: TansuBroker,
    redis_server: RedisServer,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    # Arrange
    cfg = engine_with_kafka(
        kafka_broker,
        tmp_path,
        auto_create_topics=True,
        egress=[KafkaEgressRoute(bus_pattern="signal.>", topic=SIGNALS)],
        last_value_cache=LastValueCacheConfig(enabled=True, ttl_s=600, key_prefix="lvc-test"),
    )
    fs = cfg.feature_store
    cfg = cfg.model_copy(
        update={
            "feature_store": fs.model_copy(
                update={"redis": fs.redis.model_copy(update={"url": redis_server.url})}
            )
        }
    )
    # Act
    result = await replay(cfg, tmp_path / "run", date(2003, 1, 1), date(2004, 6, 30))
    bridge = result.engine.kafka
    assert bridge is not None
    assert bridge.egress is not None
    records = await consume_all(
        kafka_broker.bootstrap, SIGNALS, count=bridge.egress.stats.delivered
    )
    # Assert: per key, the last record read from Kafka is what Redis holds
    latest: dict[bytes, bytes] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        latest[record.key] = record.value
    assert len(latest) > 5
    client = redis_server.client()
    for key, value in latest.items():
        redis_key = b"lvc-test:" + SIGNALS.encode() + b":" + key
        assert await client.get(redis_key) == value
        assert 0 < await client.pttl(redis_key) <= 600_000
    assert bridge.lvc is not None
    assert bridge.lvc.writes >= len(latest)
