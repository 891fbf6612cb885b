"""Config helpers for tests that build engines in-process."""

from __future__ import annotations

from config import EngineConfig


def on_free_port(cfg: EngineConfig) -> EngineConfig:
    """`cfg` with the telemetry HTTP server on any free port (0), so tests never collide with
    each other, a second test process or an engine running on the default port."""
    metrics = cfg.telemetry.metrics.model_copy(update={"port": 0})
    telemetry = cfg.telemetry.model_copy(update={"metrics": metrics})
    return cfg.model_copy(update={"telemetry": telemetry})
