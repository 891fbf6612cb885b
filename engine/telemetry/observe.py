"""The one interface components need to report a latency, without importing the metrics module.

Components take an optional `LatencyObserver` (None = not measured, and then they skip the
clock reads too), so a component built in a unit test costs exactly what it did before.
"""

from __future__ import annotations

from typing import Protocol


class LatencyObserver(Protocol):
    def observe(self, seconds: float) -> None: ...
