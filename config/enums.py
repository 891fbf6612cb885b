"""Enumerations shared by the settings models and the engine components they configure.

They live in `config` (not `engine`) because the dependency direction is
`engine -> config -> contracts`: the bus reads `OverflowPolicy` from here, never the reverse.
"""

from __future__ import annotations

from enum import StrEnum


class OverflowPolicy(StrEnum):
    """What a full bus mailbox does with the next message."""

    BLOCK = "block"
    """Backpressure: the publisher waits until the subscriber makes room (the trading path)."""
    DROP_OLDEST = "drop_oldest"
    """Evict the oldest queued message and count it as dropped."""
    CONFLATE = "conflate"
    """Keep only the latest message per key (by default the topic); replaced ones count as
    dropped."""


class TradingMode(StrEnum):
    """Which venue orders go to."""

    PAPER = "paper"
    LIVE = "live"


class ClockKind(StrEnum):
    """Where time comes from: the data being replayed, or the wall clock."""

    REPLAY = "replay"
    LIVE = "live"
