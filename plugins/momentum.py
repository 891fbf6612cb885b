"""Time-series momentum agent: volatility-scaled 12-1 month momentum, calibrated walk-forward.

Formula, per symbol, at the close of bar t (P = close, r = daily simple return):

    mom(t)   = P(t - 21) / P(t - 252) - 1                      (12-1 month momentum)
    vol(t)   = EW std of r over past bars (centre of mass ~60 bars, half-life 42)
    x(t)     = mom(t) / (vol(t) * sqrt(231))                  (momentum in units of its own risk)
    R(t)     = P(t + 21) / P(t) - 1                           (the 1-month forward return)
    R / (vol * sqrt(21)) = alpha + beta * x + e               (EW least squares, pooled)

so mu = vol * sqrt(21) * (alpha + beta * x) and sigma = vol * sqrt(21) * RMS of the model's
out-of-sample errors (half-life 126 bars), both over the 1m (21-bar) horizon, from
:class:`engine.calibration.ForwardReturnCalibrator` (see there for n_eff and confidence). The
regression is pooled across symbols in risk units, so the data, not an assumption, sets how
strongly past trend carries forward; the most recent month is skipped as in the literature (it
tends to reverse). Nothing is emitted until the calibrator has `min_samples` realized samples.
The daily vol is floored at 0.3 % (``vol_floor``): a quote stuck for weeks (RRC in early 1990)
would otherwise divide by ~0 and turn one ordinary move into a 1000-sigma training sample.

Regime: the shared regime model's label (`engine.regime`). The calibration keeps a partially
pooled model per volatility group (calm / volatile / crisis): momentum is known to fail in
volatile rebounds ("momentum crashes", Daniel and Moskowitz 2016), and the per-regime
coefficients and error RMS let the data say so (`tests/plugins/test_regime_awareness.py`).

Everything is O(1) per bar: ring buffers and incremental EW statistics; plain float math.

References: Moskowitz, Ooi and Pedersen (2012), "Time series momentum", Journal of Financial
Economics 104(2), 228-250; Jegadeesh and Titman (1993) for the 12-1 skip-month convention;
Daniel and Moskowitz (2016), "Momentum crashes", Journal of Financial Economics 122(2), 221-247.
"""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.features import FeatureField, FeatureSet, FieldType

TSMOM_FEATURES = FeatureSet(
    name="tsmom",
    version=1,
    description="Time-series momentum agent's indicators, per symbol",
    fields=(
        FeatureField("score", FieldType.FLOAT, description="12-1 momentum in units of its risk"),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class TimeSeriesMomentumParams(CalibratedAgentParams):
    lookback: int = Field(default=252, ge=2, description="Momentum window start, bars ago")
    skip: int = Field(default=21, ge=0, description="Most recent bars left out of momentum")

    @model_validator(mode="after")
    def _skip_below_lookback(self) -> TimeSeriesMomentumParams:
        if self.skip >= self.lookback:
            raise ValueError(f"skip ({self.skip}) must be smaller than lookback ({self.lookback})")
        return self


class TimeSeriesMomentumAgent(CalibratedAgent[TimeSeriesMomentumParams]):
    """One 1m signal per bar per symbol once momentum, volatility and calibration are ready."""

    horizon = Horizon.M1
    feature_set = TSMOM_FEATURES

    def history_bars(self) -> int:
        return self.params.lookback + 1

    async def setup(self) -> None:
        p = self.params
        self._window_sqrt = math.sqrt(p.lookback - p.skip)

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        p = self.params
        mom = state.closes.simple_return(p.lookback, p.skip)
        if mom is None:
            return None
        return mom / (vol * self._window_sqrt)
