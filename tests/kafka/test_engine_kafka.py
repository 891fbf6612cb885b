"""The engine with its Kafka bridge on a real broker, checked with an independent client (kcat):
what the engine produces is valid JSON with every header, and a Signal produced with kcat is
ingested and reaches the blender (its contribution is in the blended opportunity)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from config import EngineConfig
from config.models import KafkaEgressRoute, KafkaIngressRoute
from contracts import Opportunity, Signal
from engine.app import StartupError
from engine.kafka.envelope import (
    CONTENT_TYPE,
    H_BUS_TOPIC,
    H_CONTENT_TYPE,
    H_MESSAGE_ID,
    H_PRODUCER_ID,
    H_SCHEMA_VERSION,
    H_TRACEPARENT,
    H_TYPE,
)
from tests.e2e.conftest import default_config, replay
from tests.kit.kafka import Kcat, TansuBroker, create_topics

from .helpers import kafka_config

SIGNALS = "tradeengine.signals"
OPPORTUNITIES = "tradeengine.opportunities"
EXTERNAL = "external.signals"
TRACEPARENT = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$"


def engine_with_kafka(broker: TansuBroker, tmp_path: Path, **kafka: object) -> EngineConfig:
    """The default engine with three agents that emit early (speed) and the bridge on `broker`."""
    cfg = default_config(run_dir=str(tmp_path / "runs"))
    keep = {"calendar", "rsi", "xs_momentum"}
    agents = [a.model_copy(update={"enabled": a.name in keep}) for a in cfg.agents]
    return cfg.model_copy(
        update={"agents": agents, "kafka": kafka_config(broker.bootstrap, **kafka)}
    )


async def test_replay_when_egress_on_then_kcat_reads_every_signal_as_valid_json_with_all_headers(
    kafka_broker: TansuBroker, kcat: Kcat, tmp_path: Path
) -> None:
    # Arrange
    cfg = engine_with_kafka(
        kafka_broker,
        tmp_path,
        auto_create_topics=True,
        egress=[KafkaEgressRoute(bus_pattern="signal.>", topic=SIGNALS)],
    )
    # Act
    result = await replay(cfg, tmp_path / "run", date(2003, 1, 1), date(2005, 6, 30))
    bridge = result.engine.kafka
    assert bridge is not None
    assert bridge.egress is not None
    produced = result.engine.summary(completed=True).signals
    records = kcat.consume(kafka_broker.bootstrap, SIGNALS, count=produced)
    # Assert
    assert result.completed
    assert produced > 100
    assert bridge.egress.stats.delivered == produced
    assert len(records) == produced
    ids = set()
    for record in records:
        headers = dict(record["headers"])
        signal = Signal.model_validate_json(record["payload"])
        assert record["key"] == signal.symbol
        assert headers[H_TYPE] == "Signal"
        assert headers[H_SCHEMA_VERSION] == "1"
        assert headers[H_CONTENT_TYPE] == CONTENT_TYPE
        assert headers[H_PRODUCER_ID] == bridge.producer_id
        assert headers[H_BUS_TOPIC] == f"signal.{signal.agent}.{signal.symbol}"
        assert headers[H_TRACEPARENT].split("-")[1] == signal.trace_id
        ids.add(headers[H_MESSAGE_ID])
    assert len(ids) == produced


async def test_kcat_signal_when_produced_for_a_replay_step_then_blended_into_that_opportunity(
    kafka_broker: TansuBroker, kcat: Kcat, tmp_path: Path
) -> None:
    # Arrange: an external provider's signal for AAPL on 2005-06-30, produced before the run
    # with kcat; the engine ingests EXTERNAL and publishes its opportunities to Kafka.
    await create_topics(kafka_broker.bootstrap, EXTERNAL, OPPORTUNITIES, "tradeengine.dlq")
    step = datetime(2005, 6, 30, 21, 0, tzinfo=UTC)
    external = {
        "trace_id": "ab" * 16,
        "ts_event": step.isoformat(),
        "ts_init": step.isoformat(),
        "schema_version": 1,
        "agent": "ext_provider",
        "symbol": "AAPL",
        "mu": 0.02,
        "sigma": 0.04,
        "horizon": "1w",
        "confidence": 0.9,
    }
    kcat.produce(
        kafka_broker.bootstrap,
        EXTERNAL,
        json.dumps(external).encode(),
        key=b"AAPL",
        headers=[
            ("type", "Signal"),
            ("schema-version", "1"),
            ("content-type", "application/json"),
            ("message-id", "ext-provider-0001"),
        ],
    )
    cfg = engine_with_kafka(
        kafka_broker,
        tmp_path,
        ingress=[KafkaIngressRoute(topic=EXTERNAL, types=["Signal"])],
        egress=[KafkaEgressRoute(bus_pattern="opportunity.>", topic=OPPORTUNITIES)],
    )
    # Act
    result = await replay(cfg, tmp_path / "run", date(2004, 1, 1), date(2005, 9, 30))
    bridge = result.engine.kafka
    assert bridge is not None
    assert bridge.egress is not None
    assert bridge.ingress is not None
    records = kcat.consume(
        kafka_broker.bootstrap, OPPORTUNITIES, count=bridge.egress.stats.delivered
    )
    # Assert
    assert result.completed
    assert bridge.ingress.stats.accepted == 1
    blender = result.engine.blender
    assert blender is not None
    assert blender.stats.late_signals == 0
    opportunities = [Opportunity.model_validate_json(r["payload"]) for r in records]
    at_step = [o for o in opportunities if o.symbol == "AAPL" and o.ts_event == step]
    assert len(at_step) == 1
    agents = {c.agent for c in at_step[0].contributions}
    assert "ext_provider" in agents
    external_part = next(c for c in at_step[0].contributions if c.agent == "ext_provider")
    assert external_part.confidence == 0.9  # the blender rescales mu/sigma to its horizon
    assert external_part.mu > 0
    assert external_part.signal_trace_id == "ab" * 16
    others = [o for o in opportunities if o.ts_event != step]
    assert all("ext_provider" not in {c.agent for c in o.contributions} for o in others)


async def test_start_when_configured_topic_missing_and_no_auto_create_then_clear_startup_error(
    kafka_broker: TansuBroker, tmp_path: Path
) -> None:
    # Arrange
    cfg = engine_with_kafka(
        kafka_broker,
        tmp_path,
        auto_create_topics=False,
        egress=[KafkaEgressRoute(bus_pattern="signal.>", topic="never.created")],
    )
    # Act
    with pytest.raises(StartupError) as caught:
        await replay(cfg, tmp_path / "run", date(2005, 1, 1), date(2005, 1, 31))
    # Assert
    text = str(caught.value)
    assert "never.created" in text
    assert "tradeengine topics create" in text
