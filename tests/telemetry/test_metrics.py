"""The engine's metrics: histogram semantics and the scrape-time collector."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.bus import MessageBus
from engine.telemetry.health import ComponentState, HealthRegistry
from engine.telemetry.logging import get_logger
from engine.telemetry.metrics import LATENCY_BUCKETS, EngineMetrics, LatencyHistogram


def _samples(metrics: EngineMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_observe_when_value_equals_a_bound_then_counted_in_that_bucket_like_prometheus_le() -> None:
    # Arrange
    hist = LatencyHistogram((0.001, 0.01))
    # Act
    for value in (0.0005, 0.001, 0.002, 0.01, 3.0):
        hist.observe(value)
    # Assert
    assert hist.cumulative() == [("0.001", 2.0), ("0.01", 4.0), ("+Inf", 5.0)]
    assert hist.count == 5
    assert hist.total == pytest.approx(3.0135)


def test_buckets_when_defined_then_span_microseconds_to_seconds() -> None:
    # Assert
    assert LATENCY_BUCKETS[0] <= 1e-5
    assert LATENCY_BUCKETS[-1] >= 1.0
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_scrape_when_histograms_observed_then_exported_with_sum_count_and_buckets() -> None:
    # Arrange
    metrics = EngineMetrics(version="1.0", config_hash="ab" * 32, mode="paper")
    metrics.agent_handler.labels("momentum").observe(2e-5)
    metrics.agent_handler.labels("momentum").observe(3e-3)
    # Act
    samples = _samples(metrics)
    # Assert
    name = "tradeengine_agent_handler_duration_seconds"
    assert samples[(f"{name}_count", (("agent", "momentum"),))] == 2
    assert samples[(f"{name}_sum", (("agent", "momentum"),))] == pytest.approx(0.00302)
    assert samples[(f"{name}_bucket", (("agent", "momentum"), ("le", "2.5e-05")))] == 1
    assert samples[(f"{name}_bucket", (("agent", "momentum"), ("le", "+Inf")))] == 2
    # every stage exists from the start, so dashboards have a series before the first step
    assert samples[("tradeengine_stage_duration_seconds_count", (("stage", "risk"),))] == 0


def test_scrape_when_two_engines_in_one_process_then_registries_are_separate() -> None:
    # Arrange
    a = EngineMetrics(version="1", config_hash="a" * 64, mode="paper")
    b = EngineMetrics(version="1", config_hash="b" * 64, mode="paper")
    # Act
    a.stage.labels("risk").observe(0.5)
    # Assert
    assert _samples(a)[("tradeengine_stage_duration_seconds_count", (("stage", "risk"),))] == 1
    assert _samples(b)[("tradeengine_stage_duration_seconds_count", (("stage", "risk"),))] == 0


async def test_scrape_when_bus_has_traffic_then_counts_by_kind_and_subscription() -> None:
    # Arrange
    metrics = EngineMetrics(version="1", config_hash="c" * 64, mode="paper")
    bus = MessageBus(default_capacity=2)
    metrics.sources.bus = bus
    sub = bus.subscribe(["signal.>"], name="test.sub", capacity=2)
    # Act
    await bus.publish("signal.momentum.AAPL", 1)
    await bus.publish("signal.momentum.MSFT", 2)
    await bus.publish("bar.stocks.AAPL", 3)  # nobody listens: unrouted
    samples = _samples(metrics)
    # Assert
    assert samples[("tradeengine_bus_published_messages_total", (("kind", "signal"),))] == 2
    assert samples[("tradeengine_bus_unrouted_messages_total", (("kind", "bar"),))] == 1
    assert samples[("tradeengine_bus_mailbox_depth_messages", (("subscription", "test.sub"),))] == 2
    assert (
        samples[("tradeengine_bus_mailbox_capacity_messages", (("subscription", "test.sub"),))] == 2
    )
    sub.close()


def test_scrape_when_component_changes_state_then_state_gauge_and_ready_follow() -> None:
    # Arrange
    metrics = EngineMetrics(version="1", config_hash="d" * 64, mode="paper")
    health = HealthRegistry(get_logger("engine"))
    metrics.sources.health = health
    health.register("risk", critical=True)
    # Act
    health.set("risk", ComponentState.RUNNING)
    health.watermark_processed()
    running = _samples(metrics)
    health.set("risk", ComponentState.FAULTED, "boom")
    faulted = _samples(metrics)
    # Assert
    key = "tradeengine_component_state"
    assert running[(key, (("component", "risk"), ("state", "RUNNING")))] == 1
    assert running[("tradeengine_ready", ())] == 1
    assert faulted[(key, (("component", "risk"), ("state", "RUNNING")))] == 0
    assert faulted[(key, (("component", "risk"), ("state", "FAULTED")))] == 1
    assert faulted[("tradeengine_ready", ())] == 0
    assert faulted[("tradeengine_component_state_changes_total", (("component", "risk"),))] == 2


def test_quantile_when_observations_then_interpolated_inside_the_bucket_like_prometheus() -> None:
    # Arrange: 100 observations in (5, 10] us and 100 in (100, 250] us
    hist = LatencyHistogram()
    for _ in range(100):
        hist.observe(7e-6)
        hist.observe(200e-6)
    # Act / Assert: rank 100 of 200 is the top of the first filled bucket; rank 198 is 98 %
    # of the way through the second
    assert hist.quantile(0.5) == pytest.approx(10e-6)
    assert hist.quantile(0.99) == pytest.approx(100e-6 + 0.98 * 150e-6)
    assert math.isnan(LatencyHistogram().quantile(0.5))
    with pytest.raises(ValueError, match="q must be"):
        hist.quantile(1.5)
