"""The engine's only source of time.

Agents and stages never read the wall clock: they are handed a `Clock`. In a replay the clock is
advanced by the data (the replay source sets it to each event's timestamp before publishing), so
`ts_init` fields and every time-dependent decision reproduce exactly; live runs use wall time.

`monotonic()` exists for measuring durations (handler budgets, latencies). It is operational
telemetry, never an input to a trading decision, so both clocks return the real monotonic time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """What components may ask about time."""

    def now(self) -> datetime:
        """The current engine time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, for measuring durations only."""
        ...


class LiveClock:
    """Wall-clock time."""

    __slots__ = ()

    def now(self) -> datetime:
        return datetime.now(UTC)

    # The C function itself, not a wrapper: it is read around every agent hook.
    monotonic = staticmethod(time.monotonic)


class ClockError(ValueError):
    """Raised when a replay clock would be moved backwards or given a naive time."""


class ReplayClock:
    """Time advanced explicitly by the data being replayed.

    Moving backwards is an error: it would mean the data is out of order, and silently
    accepting it would break "no look-ahead" guarantees downstream.
    """

    __slots__ = ("_now",)

    def __init__(self, start: datetime) -> None:
        self._now = _require_utc(start)

    def now(self) -> datetime:
        return self._now

    monotonic = staticmethod(time.monotonic)

    def advance_to(self, ts: datetime) -> None:
        ts = _require_utc(ts)
        if ts < self._now:
            raise ClockError(
                f"replay clock cannot move backwards: {ts.isoformat()} < {self._now.isoformat()}"
            )
        self._now = ts


def _require_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        raise ClockError(f"naive datetime {ts.isoformat()}: clocks need timezone-aware UTC")
    return ts.astimezone(UTC)
