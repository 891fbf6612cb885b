"""The health roll-up: which component states fault, degrade or block readiness, and how
changes are logged and announced."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from engine.telemetry.health import ComponentHealth, ComponentState, HealthRegistry
from engine.telemetry.logging import get_logger

S = ComponentState


def _registry(**components: bool) -> HealthRegistry:
    """A registry with each keyword registered as a component (value = critical), RUNNING."""
    health = HealthRegistry(get_logger("telemetry.health"))
    for name, critical in components.items():
        health.register(name, critical=critical, state=S.RUNNING)
    return health


# ---------------------------------------------------------------- registration and errors


def test_register_when_name_taken_then_value_error() -> None:
    # Arrange
    health = _registry(risk=True)
    # Act / Assert
    with pytest.raises(ValueError, match="duplicate component name 'risk'"):
        health.register("risk", critical=False)


def test_set_when_name_unknown_then_key_error_naming_it() -> None:
    # Arrange
    health = _registry(risk=True)
    # Act / Assert
    with pytest.raises(KeyError, match=r"unknown component 'riks'.*registered: risk"):
        health.set("riks", S.FAULTED, "typo")


def test_components_when_registered_then_snapshots_in_registration_order() -> None:
    # Arrange
    health = HealthRegistry(get_logger("telemetry.health"))
    health.register("source", critical=True)
    health.register("agent momentum", critical=False, state=S.RUNNING, reason="warm")
    # Act
    components = health.components()
    # Assert
    assert components == [
        ComponentHealth("source", S.STARTING, "", critical=True, changes=0),
        ComponentHealth("agent momentum", S.RUNNING, "warm", critical=False, changes=0),
    ]


# ---------------------------------------------------------------- overall state


def test_overall_when_all_running_then_running() -> None:
    # Arrange
    health = _registry(source=True, pipeline=True, momentum=False)
    # Act
    state, reason = health.overall()
    # Assert
    assert (state, reason) == (S.RUNNING, "")


def test_overall_when_critical_component_faulted_then_faulted_naming_it() -> None:
    # Arrange
    health = _registry(risk=True, momentum=False)
    health.set("momentum", S.DEGRADED, "slow")
    # Act
    health.set("risk", S.FAULTED, "position limit breached")
    state, reason = health.overall()
    # Assert
    assert state is S.FAULTED
    assert reason == "risk: position limit breached"


def test_overall_when_non_critical_component_faulted_then_degraded_naming_it() -> None:
    # Arrange
    health = _registry(risk=True, **{"agent momentum": False})
    # Act
    health.set("agent momentum", S.FAULTED, "quarantined after 5 failures")
    state, reason = health.overall()
    # Assert
    assert state is S.DEGRADED
    assert reason == "agent momentum: quarantined after 5 failures"


def test_overall_when_several_degraded_then_reason_names_each() -> None:
    # Arrange
    health = _registry(source=True, momentum=False, carry=False)
    # Act
    health.set("source", S.DEGRADED, "lagging 30s")
    health.set("carry", S.FAULTED)
    state, reason = health.overall()
    # Assert
    assert state is S.DEGRADED
    assert reason == "source: lagging 30s; carry: FAULTED"


def test_overall_when_one_starting_and_rest_running_then_starting() -> None:
    # Arrange
    health = _registry(source=True)
    health.register("pipeline", critical=True)
    # Act
    state, reason = health.overall()
    # Assert
    assert state is S.STARTING
    assert "pipeline" in reason


def test_overall_when_all_stopped_then_stopped() -> None:
    # Arrange
    health = _registry(source=True, pipeline=True)
    # Act
    health.set("source", S.STOPPED)
    health.set("pipeline", S.STOPPED)
    state, _ = health.overall()
    # Assert
    assert state is S.STOPPED


def test_overall_when_nothing_registered_then_starting() -> None:
    # Arrange
    health = HealthRegistry(get_logger("telemetry.health"))
    # Act
    state, reason = health.overall()
    # Assert
    assert (state, reason) == (S.STARTING, "no components registered")


# ---------------------------------------------------------------- liveness


def test_liveness_when_critical_faulted_then_503() -> None:
    # Arrange
    health = _registry(risk=True)
    health.set("risk", S.FAULTED, "breaker tripped")
    # Act
    status, body = health.liveness()
    # Assert
    assert status == 503
    assert body["status"] == "FAULTED"
    assert body["reason"] == "risk: breaker tripped"
    assert body["components"]["risk"] == {
        "state": "FAULTED",
        "reason": "breaker tripped",
        "critical": True,
    }


def test_liveness_when_only_non_critical_faulted_then_200_degraded() -> None:
    # Arrange
    health = _registry(risk=True, momentum=False)
    health.set("momentum", S.FAULTED, "quarantined")
    # Act
    status, body = health.liveness()
    # Assert
    assert status == 200
    assert body["status"] == "DEGRADED"
    assert "momentum: quarantined" in body["reason"]


# ---------------------------------------------------------------- readiness


def test_readiness_when_no_watermark_processed_then_503() -> None:
    # Arrange
    health = _registry(source=True, pipeline=True)
    # Act
    status, body = health.readiness()
    # Assert
    assert status == 503
    assert body["ready"] is False
    assert body["first_watermark"] is False
    assert body["not_ready"] == ["no watermark processed yet"]


def test_readiness_when_watermark_processed_and_all_running_then_200() -> None:
    # Arrange
    health = _registry(source=True, pipeline=True)
    # Act
    health.watermark_processed()
    status, body = health.readiness()
    # Assert
    assert status == 200
    assert body["ready"] is True
    assert body["first_watermark"] is True
    assert body["not_ready"] == []
    assert body["status"] == "RUNNING"


def test_is_ready_when_component_starting_then_not_ready_naming_it() -> None:
    # Arrange
    health = _registry(source=True)
    health.register("pipeline", critical=True)
    health.watermark_processed()
    # Act
    ready, reasons = health.is_ready()
    # Assert
    assert ready is False
    assert reasons == ["pipeline: STARTING"]


def test_is_ready_when_component_stopped_then_not_ready() -> None:
    # Arrange
    health = _registry(source=True, pipeline=True)
    health.watermark_processed()
    # Act
    health.set("source", S.STOPPED, "end of replay")
    ready, reasons = health.is_ready()
    # Assert
    assert ready is False
    assert reasons == ["source: STOPPED (end of replay)"]


def test_is_ready_when_critical_faulted_then_not_ready_but_non_critical_fault_is_ready() -> None:
    # Arrange
    health = _registry(risk=True, momentum=False)
    health.watermark_processed()
    health.set("momentum", S.FAULTED, "quarantined")
    ready_with_agent_fault, _ = health.is_ready()
    # Act
    health.set("risk", S.FAULTED, "breaker tripped")
    ready, reasons = health.is_ready()
    # Assert
    assert ready_with_agent_fault is True
    assert ready is False
    assert reasons == ["risk: FAULTED (breaker tripped)"]


def test_readiness_when_degraded_then_still_ready() -> None:
    # Arrange
    health = _registry(source=True)
    health.watermark_processed()
    # Act
    health.set("source", S.DEGRADED, "lagging")
    status, body = health.readiness()
    # Assert
    assert status == 200
    assert body["status"] == "DEGRADED"


def test_watermark_processed_when_called_repeatedly_then_logged_once() -> None:
    # Arrange
    with capture_logs() as logs:
        health = _registry(source=True)
        # Act
        health.watermark_processed()
        health.watermark_processed()
    # Assert
    assert health.first_watermark_seen is True
    assert [e["event"] for e in logs] == ["first watermark processed"]


# ---------------------------------------------------------------- change logging and listeners


def test_set_when_state_changes_then_logged_once_at_matching_level() -> None:
    # Arrange
    with capture_logs() as logs:
        health = _registry(source=True)
        # Act
        health.set("source", S.DEGRADED, "lagging")
        health.set("source", S.DEGRADED, "lagging")  # unchanged: no-op
        health.set("source", S.FAULTED, "disconnected")
        health.set("source", S.RUNNING)
    # Assert
    changes = [e for e in logs if e["event"] == "component state changed"]
    assert [(e["log_level"], e["state"], e["previous"], e["reason"]) for e in changes] == [
        ("warning", "DEGRADED", "RUNNING", "lagging"),
        ("error", "FAULTED", "DEGRADED", "disconnected"),
        ("info", "RUNNING", "FAULTED", ""),
    ]
    assert all(e["component"] == "source" for e in changes)
    assert health.components()[0].changes == 3


def test_set_when_only_reason_changes_then_counted_as_change() -> None:
    # Arrange
    health = _registry(source=True)
    health.set("source", S.DEGRADED, "lagging 10s")
    # Act
    health.set("source", S.DEGRADED, "lagging 60s")
    # Assert
    assert health.components()[0].changes == 2
    assert health.overall() == (S.DEGRADED, "source: lagging 60s")


def test_set_when_state_changes_then_every_listener_called_once() -> None:
    # Arrange
    health = _registry(risk=True)
    first: list[tuple[str, ComponentState, ComponentState, str]] = []
    second: list[tuple[str, ComponentState, ComponentState, str]] = []
    health.add_listener(lambda *args: first.append(args))
    health.add_listener(lambda *args: second.append(args))
    # Act
    health.set("risk", S.FAULTED, "breaker tripped")
    health.set("risk", S.FAULTED, "breaker tripped")
    # Assert
    assert first == [("risk", S.RUNNING, S.FAULTED, "breaker tripped")]
    assert second == first


def test_set_when_listener_raises_then_logged_and_other_listeners_still_called() -> None:
    # Arrange
    calls: list[str] = []

    def broken(*_: object) -> None:
        raise RuntimeError("gauge gone")

    with capture_logs() as logs:
        health = _registry(risk=True)
        health.add_listener(broken)
        health.add_listener(lambda name, *_: calls.append(name))
        # Act
        health.set("risk", S.DEGRADED, "slow")
    # Assert
    assert calls == ["risk"]
    assert health.overall()[0] is S.DEGRADED
    failures = [e for e in logs if e["event"] == "health listener raised"]
    assert len(failures) == 1
    assert isinstance(failures[0]["exc_info"], RuntimeError)
