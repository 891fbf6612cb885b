"""Topic management: which topics a config uses, creating them, and the start-up check."""

from __future__ import annotations

import pytest

from config import EngineConfig, load_config_text
from engine.kafka.admin import (
    CREATE_HINT,
    CreateResult,
    KafkaUnreachableError,
    TopicAdmin,
    TopicDescription,
    TopicsMissingError,
    TopicSpec,
    differences,
    topic_specs,
    used_topics,
)
from tests.kit.kafka import TansuBroker, create_topics
from tests.kit.prometheus import free_port

ROUTES = """
[[kafka.egress]]
bus_pattern = "signal.>"
topic = "te.signals"

[[kafka.egress]]
bus_pattern = "fill.>"
topic = "te.signals"

[[kafka.ingress]]
topic = "te.external"
"""

REMOTE_AGENT = """
[[agents]]
name = "momentum"
path = "plugins.momentum:TimeSeriesMomentumAgent"
remote = true
"""


def _config(bootstrap: str = "127.0.0.1:9092", body: str = ROUTES, **kafka: str) -> EngineConfig:
    settings = "".join(f"{key} = {value}\n" for key, value in kafka.items())
    text = f'[kafka]\nenabled = true\nbootstrap_servers = ["{bootstrap}"]\n{settings}{body}'
    return load_config_text(text, env={})


# ------------------------------------------------------------------------------------ unit


def test_used_topics_when_routes_and_remote_agent_then_every_topic_with_reason() -> None:
    # Arrange
    cfg = _config(body=ROUTES + REMOTE_AGENT)
    # Act
    used = used_topics(cfg)
    # Assert
    assert used == {
        "te.external": "ingress route",
        "te.signals": "egress route 'signal.>'; egress route 'fill.>'",
        "tradeengine.agents": "remote agents output",
        "tradeengine.dlq": "dead-letter topic",
        "tradeengine.feed": "remote agents feed",
    }


def test_used_topics_when_only_egress_and_remote_agent_disabled_then_no_dlq_or_remote() -> None:
    # Arrange: nothing consumes, so nothing is dead-lettered
    body = '[[kafka.egress]]\nbus_pattern = "signal.>"\ntopic = "out"\n' + REMOTE_AGENT.replace(
        "remote = true", "remote = true\nenabled = false"
    )
    cfg = _config(body=body)
    # Act
    used = used_topics(cfg)
    # Assert
    assert used == {"out": "egress route 'signal.>'"}


def test_topic_specs_when_some_topics_listed_then_listed_specs_plus_defaults_sorted() -> None:
    # Arrange
    listed = """
[[kafka.topics]]
name = "te.signals"
partitions = 3
retention_ms = 86400000

[[kafka.topics]]
name = "archive"
cleanup_policy = "compact"
"""
    cfg = _config(body=ROUTES + listed)
    # Act
    specs = topic_specs(cfg)
    # Assert
    assert specs == [
        TopicSpec("archive", 1, 1, {"cleanup.policy": "compact"}),
        TopicSpec("te.external", 1, 1, {}),
        TopicSpec("te.signals", 3, 1, {"cleanup.policy": "delete", "retention.ms": "86400000"}),
        TopicSpec("tradeengine.dlq", 1, 1, {}),
    ]


def test_differences_when_topic_differs_then_one_phrase_per_difference() -> None:
    # Arrange
    spec = TopicSpec("t", 1, 1, {"retention.ms": "1000", "cleanup.policy": "delete"})
    actual = TopicDescription("t", True, 3, 1, {"retention.ms": "5000"})
    # Act
    found = differences(spec, actual)
    # Assert: cleanup.policy unreported = Kafka's fixed default "delete", so it matches
    assert found == ["has 3 partitions, config says 1", "retention.ms is 5000, config says 1000"]


# ---------------------------------------------------------------------------- real broker


async def test_create_when_called_twice_then_second_call_reports_all_exist(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    specs = [TopicSpec("a.one", 1, 1, {}), TopicSpec("a.two", 2, 1, {"cleanup.policy": "delete"})]
    async with TopicAdmin(_config(kafka_broker.bootstrap).kafka) as admin:
        # Act
        first = await admin.create(specs)
        second = await admin.create(specs)
    # Assert
    assert first == [CreateResult("a.one", "created", ""), CreateResult("a.two", "created", "")]
    assert second == [CreateResult("a.one", "exists", ""), CreateResult("a.two", "exists", "")]


async def test_create_when_spec_has_partitions_and_configs_then_describe_shows_them(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    spec = TopicSpec("b.shaped", 3, 1, {"retention.ms": "60000", "cleanup.policy": "compact"})
    async with TopicAdmin(_config(kafka_broker.bootstrap).kafka) as admin:
        # Act
        await admin.create([spec])
        described = await admin.describe(["b.shaped", "b.missing"])
        listed_after = await admin.describe(["b.missing"])
    # Assert
    assert described == [
        TopicDescription(
            "b.shaped", True, 3, 1, {"retention.ms": "60000", "cleanup.policy": "compact"}
        ),
        TopicDescription("b.missing", False, None, None, {}),
    ]
    assert listed_after == [TopicDescription("b.missing", False, None, None, {})]


async def test_create_when_topic_exists_with_another_shape_then_exists_names_differences(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    await create_topics(kafka_broker.bootstrap, "c.wide", partitions=3)
    spec = TopicSpec("c.wide", 1, 1, {"retention.ms": "1000"})
    async with TopicAdmin(_config(kafka_broker.bootstrap).kafka) as admin:
        # Act
        (result,) = await admin.create([spec])
    # Assert
    assert result.outcome == "exists"
    assert result.detail == (
        "has 3 partitions, config says 1; retention.ms is the broker default, config says 1000"
    )


async def test_ensure_when_a_used_topic_is_missing_then_error_names_topic_reason_and_hint(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange: te.external and the dead-letter topic exist, te.signals does not
    await create_topics(kafka_broker.bootstrap, "te.external", "tradeengine.dlq")
    cfg = _config(kafka_broker.bootstrap)
    async with TopicAdmin(cfg.kafka) as admin:
        # Act
        with pytest.raises(TopicsMissingError) as caught:
            await admin.ensure(cfg)
        # Assert: the check did not create what it checked
        (after,) = await admin.describe(["te.signals"])
    assert caught.value.problems == [
        "kafka topic 'te.signals' does not exist "
        "(needed by: egress route 'signal.>'; egress route 'fill.>')",
        f"to create the missing topics: {CREATE_HINT}",
    ]
    assert "tradeengine topics create --config <file>" in str(caught.value)
    assert "kafka.auto_create_topics = true" in str(caught.value)
    assert not after.exists


async def test_ensure_when_auto_create_then_missing_topics_created_from_specs(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    listed = '\n[[kafka.topics]]\nname = "te.signals"\npartitions = 2\nretention_ms = 3600000\n'
    cfg = _config(kafka_broker.bootstrap, body=ROUTES + listed, auto_create_topics="true")
    await create_topics(kafka_broker.bootstrap, "te.external")
    async with TopicAdmin(cfg.kafka) as admin:
        # Act
        results = await admin.ensure(cfg)
        again = await admin.ensure(cfg)
        described = await admin.describe(["te.signals", "tradeengine.dlq"])
    # Assert
    assert {r.name: r.outcome for r in results} == {
        "te.external": "exists",
        "te.signals": "created",
        "tradeengine.dlq": "created",
    }
    assert {r.outcome for r in again} == {"exists"}
    assert [(d.name, d.partitions) for d in described] == [
        ("te.signals", 2),
        ("tradeengine.dlq", 1),
    ]
    assert described[0].configs["retention.ms"] == "3600000"


async def test_ensure_when_remote_feed_topic_has_three_partitions_then_problem(
    kafka_broker: TansuBroker,
) -> None:
    # Arrange
    await create_topics(kafka_broker.bootstrap, "tradeengine.feed", partitions=3)
    await create_topics(kafka_broker.bootstrap, "tradeengine.agents", "tradeengine.dlq")
    cfg = _config(kafka_broker.bootstrap, body=REMOTE_AGENT)
    async with TopicAdmin(cfg.kafka) as admin:
        # Act
        with pytest.raises(TopicsMissingError) as caught:
            await admin.ensure(cfg)
    # Assert
    assert caught.value.problems == [
        "kafka topic 'tradeengine.feed' (needed by: remote agents feed) has 3 partitions; it "
        "must have exactly 1 (ordering of bars, watermarks and signals depends on it)"
    ]


async def test_start_when_broker_unreachable_then_error_names_bootstrap_servers() -> None:
    # Arrange: a port nothing listens on
    bootstrap = f"127.0.0.1:{free_port()}"
    admin = TopicAdmin(_config(bootstrap).kafka, timeout_s=3.0)
    # Act / Assert
    with pytest.raises(
        KafkaUnreachableError, match=rf"cannot reach the Kafka broker\(s\) {bootstrap}"
    ):
        await admin.start()
    await admin.stop()
