"""Session-wide test settings."""

from __future__ import annotations

import os

# Engines started as subprocesses by the tests inherit this: their /metrics server binds any
# free port instead of the default 9464, so parallel runs and a live engine never collide.
# (In-process engines use tests.kit.config.on_free_port.)
os.environ.setdefault("TRADEENGINE__TELEMETRY__METRICS__PORT", "0")
