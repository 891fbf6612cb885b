"""Market-data contracts: what sources put on the bus.

A `Bar` may be close-only (the bundled 20-stock file has closes only): open/high/low/volume are
then `None`, never a made-up copy of the close, so a consumer can tell "unknown" from "flat".
Missing macro values are not published at all rather than published as zero.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import Field, model_validator

from contracts.base import (
    Contract,
    FiniteFloat,
    Name,
    NonNegativeFloat,
    PositiveFloat,
    StrictInt,
    Symbol,
)
from contracts.enums import BarInterval


class Bar(Contract):
    """An OHLCV bar; `ts_event` is the bar's close time."""

    schema_version: Literal[1] = 1
    symbol: Symbol
    interval: BarInterval = BarInterval.D1
    open: PositiveFloat | None = None
    high: PositiveFloat | None = None
    low: PositiveFloat | None = None
    close: PositiveFloat
    volume: NonNegativeFloat | None = None
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")

    @model_validator(mode="after")
    def _check_range(self) -> Self:
        if self.high is None and self.low is None:
            return self  # nothing to order (close-only bars: every replayed daily close)
        known = [p for p in (self.open, self.close, self.low, self.high) if p is not None]
        if self.high is not None and self.high < max(known):
            raise ValueError(f"high={self.high} is below another price of the bar ({max(known)})")
        if self.low is not None and self.low > min(known):
            raise ValueError(f"low={self.low} is above another price of the bar ({min(known)})")
        return self

    @property
    def is_close_only(self) -> bool:
        return self.open is None and self.high is None and self.low is None


class MacroObservation(Contract):
    """One observation of a macro series (e.g. a Treasury yield, decimal: 0.0783 = 7.83 %)."""

    schema_version: Literal[1] = 1
    series: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    value: FiniteFloat
    unit: str = Field(default="", max_length=32)
    source: str = Field(default="", max_length=64)


class SocialPost(Contract):
    """A social-media post (e.g. Reddit) with the symbols it mentions."""

    schema_version: Literal[1] = 1
    source: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    post_id: str = Field(min_length=1, max_length=128)
    channel: str = Field(default="", max_length=128, description="e.g. the subreddit")
    author: str | None = Field(default=None, max_length=128)
    title: str = Field(default="", max_length=1_000)
    text: str = Field(default="", max_length=40_000)
    symbols: tuple[Symbol, ...] = ()
    score: StrictInt = 0
    url: str | None = Field(default=None, max_length=2_048)


class Watermark(Contract):
    """Promise from `origin` that it has published everything with `ts_event <= ts_event` of this.

    Sources publish one after all events of a timestamp; the agent runtime forwards an agent's
    own watermark once the agent has handled everything before it, so the blender knows when
    every agent is done with a step.
    """

    schema_version: Literal[1] = 1
    origin: Name

    @property
    def ts(self) -> datetime:
        return self.ts_event
