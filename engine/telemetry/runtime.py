"""Everything observability needs at run time, built from ``[telemetry]`` by the composition root.

One object owns the metrics registry, the health registry, the tracer and the HTTP server, so
the engine starts and stops them as one service and hands components only the part they use
(a histogram, the chain tracer, a health callback).

Trade-offs made:
- The metrics registry and health registry exist even with ``metrics.enabled = false``: they are
  plain in-memory objects, the engine's own summary and tests read them, and components never
  need to ask whether telemetry is on. Only the HTTP server and the loop-lag probe are skipped.
- ``start()`` binds the port and builds the exporter *before* the run directory exists, so a
  port in use or a missing SDK is a start-up error that leaves nothing behind.
- An exporter that cannot reach its collector is a DEGRADED ``tracing`` component and a log
  line, never an exception in the trading path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from config.models import TelemetryConfig
from engine.lifecycle import AsyncService
from engine.telemetry.health import ComponentState, HealthRegistry
from engine.telemetry.http import TelemetryServer, TelemetryServerError
from engine.telemetry.logging import get_logger, redactor
from engine.telemetry.metrics import EngineMetrics, LoopLagProbe
from engine.telemetry.tracing import ChainTracer, Tracing, TracingSetupError, build_tracing

TRACING_COMPONENT = "tracing"


class TelemetrySetupError(Exception):
    """Telemetry cannot start as configured (port in use, SDK missing); one line."""


class Telemetry(AsyncService):
    """Metrics, health, tracing and the HTTP endpoints of one engine."""

    def __init__(
        self,
        config: TelemetryConfig,
        *,
        version: str,
        config_hash: str,
        mode: str,
        span_exporter: Any = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.log = get_logger("telemetry")
        self.metrics = EngineMetrics(version=version, config_hash=config_hash, mode=mode)
        self.health = HealthRegistry(
            get_logger("engine").bind(subsystem="health"), redact=redactor(secrets)
        )
        self.metrics.sources.health = self.health
        self._span_exporter = span_exporter
        self.tracing: Tracing | None = None
        self.server: TelemetryServer | None = None
        self._lag: LoopLagProbe | None = None

    @property
    def chain(self) -> ChainTracer | None:
        """The chain tracer, or None while spans are not recorded (then callers skip it)."""
        if self.tracing is None or not self.tracing.chain.recording:
            return None
        return self.tracing.chain

    def span_id_for(self, trace_id: str) -> str | None:
        return self.tracing.chain.span_id_for(trace_id) if self.tracing is not None else None

    @property
    def port(self) -> int | None:
        """The bound HTTP port (None when the server is disabled or did not start)."""
        try:
            return self.server.port if self.server is not None else None
        except RuntimeError:  # the server never bound
            return None

    async def start(self) -> None:
        cfg = self.config
        tracing_cfg = cfg.tracing
        recording = tracing_cfg.enabled and (
            tracing_cfg.otlp_endpoint is not None or self._span_exporter is not None
        )
        if recording:
            self.health.register(TRACING_COMPONENT, critical=False)
        try:
            self.tracing = build_tracing(
                enabled=tracing_cfg.enabled,
                sampling_ratio=tracing_cfg.sampling_ratio,
                otlp_endpoint=tracing_cfg.otlp_endpoint,
                otlp_protocol=tracing_cfg.otlp_protocol,
                otlp_timeout_s=tracing_cfg.otlp_timeout_s,
                log=self.log,
                exporter=self._span_exporter,
                # An injected exporter (tests, debugging) gets every span synchronously.
                simple_processor=self._span_exporter is not None,
                on_export_state=self._on_export_state if recording else None,
            )
        except TracingSetupError as exc:
            raise TelemetrySetupError(str(exc)) from exc
        # Binds the exporter's state reports to this loop (they come from the SDK's thread).
        await self.tracing.start()
        self.metrics.sources.tracing = self.tracing
        if recording:
            self.health.set(TRACING_COMPONENT, ComponentState.RUNNING, "exporting spans")
        if cfg.metrics.enabled:
            self.server = TelemetryServer(
                host=cfg.metrics.host,
                port=cfg.metrics.port,
                registry=self.metrics.registry,
                health=self.health,
                log=self.log,
            )
            try:
                await self.server.start()
            except TelemetryServerError as exc:
                await self.tracing.stop()
                raise TelemetrySetupError(str(exc)) from exc
            self._lag = LoopLagProbe(
                self.metrics.loop_lag.labels(),
                interval_s=cfg.metrics.event_loop_lag_interval_s,
            )
            await self._lag.start()
            self.log.info(
                "telemetry endpoints listening",
                metrics=f"{self.server.url}/metrics",
                healthz=f"{self.server.url}/healthz",
                readyz=f"{self.server.url}/readyz",
            )

    def _on_export_state(self, ok: bool, reason: str) -> None:
        if ok:
            self.health.set(TRACING_COMPONENT, ComponentState.RUNNING, "exporting spans")
        else:
            self.health.set(
                TRACING_COMPONENT, ComponentState.DEGRADED, f"span export failing: {reason}"
            )

    async def stop(self) -> None:
        """Stop the probe, flush spans, close the server; each step runs even if one fails."""
        if self._lag is not None:
            await self._lag.stop()
            self._lag = None
        if self.tracing is not None:
            try:
                await self.tracing.stop()
            except Exception as exc:
                self.log.error("tracing failed to shut down cleanly", exc_info=exc)
            known = {c.name: c for c in self.health.components()}
            if TRACING_COMPONENT in known:
                self.health.set(TRACING_COMPONENT, ComponentState.STOPPED, "stopped")
        if self.server is not None:
            await self.server.stop()


__all__ = ["TRACING_COMPONENT", "Telemetry", "TelemetrySetupError"]
