"""The telemetry HTTP server over a real socket: Prometheus text, JSON probes, bind errors."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterable

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from structlog.testing import capture_logs

from engine.telemetry.health import ComponentState, HealthRegistry
from engine.telemetry.http import TelemetryServer, TelemetryServerError
from engine.telemetry.logging import get_logger

HOST = "127.0.0.1"


class BrokenCollector:
    """A custom collector whose collection fails, as a buggy exporter would."""

    def collect(self) -> Iterable[Metric]:
        raise RuntimeError("collector exploded")


@pytest.fixture
def registry() -> CollectorRegistry:
    # A fresh registry per test: the global default REGISTRY would leak between tests.
    return CollectorRegistry()


@pytest.fixture
def health() -> HealthRegistry:
    health = HealthRegistry(get_logger("telemetry.health"))
    health.register("pipeline", critical=True, state=ComponentState.RUNNING)
    health.register("agent momentum", critical=False, state=ComponentState.RUNNING)
    return health


@pytest.fixture
async def server(
    registry: CollectorRegistry, health: HealthRegistry
) -> AsyncIterator[TelemetryServer]:
    async with TelemetryServer(
        host=HOST, port=0, registry=registry, health=health, log=get_logger("telemetry.http")
    ) as srv:
        yield srv


@pytest.fixture
async def client(server: TelemetryServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url) as c:
        yield c


async def test_metrics_when_counter_registered_then_prometheus_text(
    registry: CollectorRegistry, server: TelemetryServer, client: httpx.AsyncClient
) -> None:
    # Arrange
    orders = Counter("engine_orders", "Orders sent.", ["venue"], registry=registry)
    orders.labels(venue="paper").inc(3)
    # Act
    response = await client.get("/metrics")
    # Assert
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert "# TYPE engine_orders_total counter" in response.text
    assert 'engine_orders_total{venue="paper"} 3.0' in response.text


async def test_start_when_port_zero_then_bound_port_reported_in_url(
    server: TelemetryServer,
) -> None:
    # Arrange / Act
    port, url = server.port, server.url
    # Assert
    assert port > 0
    assert url == f"http://{HOST}:{port}"


async def test_readyz_when_watermark_processed_then_503_becomes_200(
    health: HealthRegistry, client: httpx.AsyncClient
) -> None:
    # Arrange
    before = await client.get("/readyz")
    # Act
    health.watermark_processed()
    after = await client.get("/readyz")
    # Assert
    assert before.status_code == 503
    assert before.json()["not_ready"] == ["no watermark processed yet"]
    assert after.status_code == 200
    assert after.json()["ready"] is True
    assert after.json()["first_watermark"] is True


async def test_healthz_when_agent_degraded_then_200_naming_it(
    health: HealthRegistry, client: httpx.AsyncClient
) -> None:
    # Arrange
    health.set("agent momentum", ComponentState.FAULTED, "quarantined after 5 failures")
    # Act
    response = await client.get("/healthz")
    # Assert
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "DEGRADED"
    assert body["reason"] == "agent momentum: quarantined after 5 failures"
    assert body["components"]["agent momentum"]["state"] == "FAULTED"


async def test_healthz_when_critical_component_faulted_then_503(
    health: HealthRegistry, client: httpx.AsyncClient
) -> None:
    # Arrange
    health.set("pipeline", ComponentState.FAULTED, "stage crashed")
    # Act
    response = await client.get("/healthz")
    # Assert
    assert response.status_code == 503
    assert response.json()["status"] == "FAULTED"


async def test_get_when_path_unknown_then_404(client: httpx.AsyncClient) -> None:
    # Arrange / Act
    response = await client.get("/nope")
    # Assert
    assert response.status_code == 404


async def test_metrics_when_collector_raises_then_500_and_server_keeps_serving(
    registry: CollectorRegistry, client: httpx.AsyncClient
) -> None:
    # Arrange
    registry.register(BrokenCollector())
    # Act
    with capture_logs() as logs:
        failed = await client.get("/metrics")
    healthz = await client.get("/healthz")
    # Assert
    assert failed.status_code == 500
    assert "collector exploded" in failed.text
    assert healthz.status_code == 200
    assert any(e["event"] == "metrics collection failed" for e in logs)


async def test_start_when_port_in_use_then_server_error_naming_address(
    registry: CollectorRegistry, health: HealthRegistry
) -> None:
    # Arrange
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TelemetryServer(
            host=HOST, port=port, registry=registry, health=health, log=get_logger("t")
        )
        # Act
        with pytest.raises(TelemetryServerError) as raised:
            await server.start()
        # Assert
        message = str(raised.value)
        assert (
            message == f"telemetry.metrics: cannot listen on {HOST}:{port}: address already in use"
        )
        assert "\n" not in message
        await server.stop()  # nothing was started, so this must be a harmless no-op


async def test_start_when_failed_then_port_free_for_a_later_start(
    registry: CollectorRegistry, health: HealthRegistry
) -> None:
    # Arrange
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = TelemetryServer(
            host=HOST, port=port, registry=registry, health=health, log=get_logger("t")
        )
        with pytest.raises(TelemetryServerError):
            await server.start()
    # Act: the blocker is gone, so the same instance can now bind the same port
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url) as c:
            response = await c.get("/healthz")
    finally:
        await server.stop()
    # Assert
    assert server.port == port
    assert response.status_code == 200


async def test_stop_when_called_twice_then_no_error_and_port_released(
    registry: CollectorRegistry, health: HealthRegistry
) -> None:
    # Arrange
    server = TelemetryServer(
        host=HOST, port=0, registry=registry, health=health, log=get_logger("t")
    )
    await server.start()
    port = server.port
    # Act
    await server.stop()
    await server.stop()
    # Assert: the port is free again, so nothing is still listening on it
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, port))


async def test_stop_when_never_started_then_no_error(
    registry: CollectorRegistry, health: HealthRegistry
) -> None:
    # Arrange
    server = TelemetryServer(
        host=HOST, port=0, registry=registry, health=health, log=get_logger("t")
    )
    # Act
    await server.stop()
    # Assert
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.port
