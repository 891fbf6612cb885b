"""Short-term reversal agent: volatility-scaled 1-week return, calibrated walk-forward.

Formula, per symbol, at the close of bar t (P = close, r = daily simple return):

    ret5(t)  = P(t) / P(t - 5) - 1                            (the past week's return)
    vol(t)   = EW std of r over past bars (half-life 21 bars)
    x(t)     = ret5(t) / (vol(t) * sqrt(5))                   (last week's move in risk units)
    R(t)     = P(t + 5) / P(t) - 1                            (the 1-week forward return)
    R / (vol * sqrt(5)) = alpha + beta * x + e                (EW least squares, pooled)

so mu = vol * sqrt(5) * (alpha + beta * x) and sigma = vol * sqrt(5) * RMS of the model's
out-of-sample errors (half-life 126 bars), over the 1w (5-bar) horizon, from
:class:`engine.calibration.ForwardReturnCalibrator` (see there for n_eff and confidence). The
literature finds beta < 0 (last week's losers bounce, winners give back: liquidity provision and
over-reaction); here the sign and size are estimated from the data, pooled across symbols, never
assumed. Nothing is emitted until the calibrator has `min_samples` realized samples.
The daily vol is floored at 0.3 % (``vol_floor``): a quote stuck for weeks (RRC in early 1990)
would otherwise divide by ~0 and turn one ordinary move into a 1000-sigma training sample.

Regime: the shared regime model's label (`engine.regime`). The calibration keeps a partially
pooled model per volatility group (calm / volatile / crisis): reversal profits are liquidity
provision, which pays most when markets are volatile (Nagel 2012), and the per-regime
coefficients and error RMS let the data say so (`tests/plugins/test_regime_awareness.py`).

Everything is O(1) per bar: ring buffers and incremental EW statistics; plain float math.

References: Jegadeesh (1990), "Evidence of Predictable Behavior of Security Returns", Journal of
Finance 45(3), 881-898; Lehmann (1990), "Fads, Martingales, and Market Efficiency", Quarterly
Journal of Economics 105(1), 1-28; Nagel (2012), "Evaporating Liquidity", Review of Financial
Studies 25(7), 2005-2039.
"""

from __future__ import annotations

import math

from pydantic import Field

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.features import FeatureField, FeatureSet, FieldType

REVERSAL_FEATURES = FeatureSet(
    name="reversal",
    version=1,
    description="Short-term reversal agent's indicators, per symbol",
    fields=(
        FeatureField("score", FieldType.FLOAT, description="1-week return in units of its risk"),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class ShortTermReversalParams(CalibratedAgentParams):
    lookback: int = Field(default=5, ge=1, description="Past-return window, bars")
    vol_halflife: float = Field(default=21.0, gt=0, description="EW volatility half-life, bars")


class ShortTermReversalAgent(CalibratedAgent[ShortTermReversalParams]):
    """One 1w signal per bar per symbol once the weekly return, vol and calibration are ready."""

    horizon = Horizon.W1
    feature_set = REVERSAL_FEATURES

    def history_bars(self) -> int:
        return self.params.lookback + 1

    async def setup(self) -> None:
        self._window_sqrt = math.sqrt(self.params.lookback)

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        past = state.closes.simple_return(self.params.lookback)
        if past is None:
            return None
        return past / (vol * self._window_sqrt)
