"""Moving-average trend agent: the fast/slow SMA gap in risk units, calibrated walk-forward.

The moving-average rule is the oldest trend filter in practice (price above its 200-day
average: stay in; below: step aside) and the one Brock, Lakonishok and LeBaron tested on a
century of the Dow. Here the rule's *continuous* version is the indicator, and the data, not the
rule, decide how much of the gap carries forward.

Formula, per symbol, at the close of bar t (P = close, r = daily simple return):

    SMA_n(t) = mean of P(t - n + 1) .. P(t)                   (fast n = 50, slow n = 200)
    gap(t)   = SMA_fast(t) / SMA_slow(t) - 1
    k        = sqrt(sum_j w_j^2),  w_j = (slow - 1 - j)+ / slow - (fast - 1 - j)+ / fast
    x(t)     = gap(t) / (vol(t) * k)                          (the gap in units of its own risk)
    R(t)     = P(t + 21) / P(t) - 1                           (the 1-month forward return)
    R / (vol * sqrt(21)) = alpha + beta * x + e               (EW least squares, pooled)

To first order the gap is sum_j w_j r(t - j) (w_j: the share of the fast window's closes a
return j bars ago moved, minus the slow window's share), so with i.i.d. returns of daily
volatility vol its standard deviation is vol * k (k ~ 6.1 for 50/200): x is about unit-variance
in every symbol and regime, and one pooled slope serves all. vol is the EW std of daily returns
(half-life 42 bars), floored at 0.3 % so a stale quote cannot divide by ~0.
mu = vol * sqrt(21) * (alpha + beta * x) and sigma = vol * sqrt(21) * RMS of the model's
out-of-sample errors (half-life 126 bars), over the 1m (21-bar) horizon, from
:class:`engine.calibration.ForwardReturnCalibrator` (n_eff and confidence: see there). The sign
of beta is estimated (trend continuation predicts beta > 0), never assumed. The regime model's
volatility groups get partially pooled coefficients (`engine.calibrated`).

Calibration memory: one year (``halflife_bars = 252``, the base default is three). The
moving-average rules' predictive power is unstable - Sullivan, Timmermann and White (1999) found
the Brock et al. rules' edge gone after 1986 - so the slope is re-learned from the last year or
so and the agent falls silent (zero confidence: |t| <= 1) when it is gone. On the bundled 20
stocks (1990-2022) the 50/200 gap has no lasting slope at 1m: with a three-year memory |t|
exceeds 1 on under 1 % of bars (a few hundred signals, clustered in two episodes); with one year,
on about 4 % (about 7,000 signals), with the same calibrated sigma.

Missing or bad data: a close that is not a finite number > 0 is skipped and counted; a gap of
more than 10 calendar days restarts the symbol (both averages refill from scratch, no training
sample spans the gap). Nothing is published or emitted before `slow` closes and 20 returns of
volatility exist, nor before the calibrator has `min_samples` realized samples.

O(1) per bar: two ring buffers with running sums (re-summed exactly once per window, so
rounding never drifts); k is computed once at start.

References: Brock, Lakonishok and LeBaron (1992), "Simple Technical Trading Rules and the
Stochastic Properties of Stock Returns", Journal of Finance 47(5), 1731-1764; Faber (2007),
"A Quantitative Approach to Tactical Asset Allocation", Journal of Wealth Management 9(4), 69-79;
Sullivan, Timmermann and White (1999), "Data-Snooping, Technical Trading Rule Performance, and
the Bootstrap", Journal of Finance 54(5), 1647-1691.
"""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.calibration import RingBuffer
from engine.features import FeatureField, FeatureSet, FieldType

MA_TREND_FEATURES = FeatureSet(
    name="ma_trend",
    version=1,
    description="Moving-average trend agent's indicators, per symbol",
    fields=(
        FeatureField(
            "score", FieldType.FLOAT, description="SMA_fast / SMA_slow - 1 in units of its risk"
        ),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class MovingAverageTrendParams(CalibratedAgentParams):
    fast: int = Field(default=50, ge=1, description="Fast SMA window, bars (1: the close itself)")
    slow: int = Field(default=200, ge=2, description="Slow SMA window, bars")
    halflife_bars: float = Field(
        default=252.0, gt=0, description="Calibration memory, bars (the rules' edge comes and goes)"
    )

    @model_validator(mode="after")
    def _fast_below_slow(self) -> MovingAverageTrendParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


def gap_risk_factor(fast: int, slow: int) -> float:
    """k of the module docstring: the std of SMA_fast / SMA_slow - 1 per unit of daily vol
    under i.i.d. returns (first order)."""
    total = 0.0
    for j in range(slow - 1):
        w = (slow - 1 - j) / slow - max(fast - 1 - j, 0) / fast
        total += w * w
    return math.sqrt(total)


class MovingAverageTrendAgent(CalibratedAgent[MovingAverageTrendParams]):
    """One 1m signal per bar per symbol once both averages, vol and calibration are ready."""

    horizon = Horizon.M1
    feature_set = MA_TREND_FEATURES

    def history_bars(self) -> int:
        return self.params.slow

    def new_extra(self, symbol: str) -> RingBuffer:
        # the fast window's closes: state.closes (the slow window) has no second running sum
        return RingBuffer(self.params.fast)

    async def setup(self) -> None:
        self._k = gap_risk_factor(self.params.fast, self.params.slow)

    def observe(self, bar: Bar, state: SymbolState) -> None:
        # every bar, including those before vol is ready (when `indicator` is not called)
        fast: RingBuffer = state.extra
        fast.append(bar.close)

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        slow = state.closes
        if not slow.full:
            return None
        fast: RingBuffer = state.extra
        return (fast.mean / slow.mean - 1.0) / (vol * self._k)
