"""Moving-average crossover agent: the classic single-rule strategy as a plugin.

Formula: with fast and slow simple moving averages of the close, the signal's direction is
sign(SMA_fast - SMA_slow). Its size and uncertainty come from the trailing daily simple returns
r over the slow window: mu = direction * |mean(r)| and sigma = stdev(r), over a 1-day horizon.
Everything uses closes up to and including the current bar only (no look-ahead).

This estimate is a heuristic, not a calibrated forecast, so confidence is kept low (0.2);
calibrated agents use walk-forward estimation instead. Reference: Brock, Lakonishok and
LeBaron (1992), "Simple Technical Trading Rules and the Stochastic Properties of Stock Returns".
"""

from __future__ import annotations

import itertools
import statistics
from collections import defaultdict, deque

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import Bar
from engine.agent import Agent


class SmaCrossParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    fast: int = Field(default=20, ge=2, description="Fast SMA window, in bars")
    slow: int = Field(default=50, ge=3, description="Slow SMA window, in bars")
    confidence: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> SmaCrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


class SmaCrossAgent(Agent[SmaCrossParams]):
    """Emits one 1-day signal per bar once `slow + 1` closes of a symbol are known."""

    async def on_start(self) -> None:
        self._closes: dict[str, deque[float]] = defaultdict(
            lambda: deque(maxlen=self.params.slow + 1)
        )

    async def on_bar(self, bar: Bar) -> None:
        closes = self._closes[bar.symbol]
        closes.append(bar.close)
        p = self.params
        if len(closes) <= p.slow:
            return  # not enough history yet: emit nothing rather than a guess
        prices = list(closes)
        returns = [b / a - 1.0 for a, b in itertools.pairwise(prices)]
        sigma = statistics.stdev(returns)
        if sigma <= 0.0:
            return  # a flat series carries no information about risk
        fast = statistics.fmean(prices[-p.fast :])
        slow = statistics.fmean(prices[-p.slow :])
        direction = (fast > slow) - (fast < slow)
        self.signal(
            bar.symbol,
            mu=direction * abs(statistics.fmean(returns)),
            sigma=sigma,
            horizon="1d",
            confidence=p.confidence,
            features={"sma_fast": fast, "sma_slow": slow},
        )
