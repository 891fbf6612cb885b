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

Regime (interim, until the shared regime model): price vs its 200-bar SMA (+-2 % band) for the
trend, and the ratio of the 42-bar to the 252-bar half-life EW volatility for calm / volatile /
crisis (:func:`engine.calibration.trend_vol_regime`).

Everything is O(1) per bar: ring buffers and incremental EW statistics; plain float math.

Reference: Moskowitz, Ooi and Pedersen (2012), "Time series momentum", Journal of Financial
Economics 104(2), 228-250; Jegadeesh and Titman (1993) for the 12-1 skip-month convention.
"""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from contracts import Bar, Horizon
from engine.agent import Agent
from engine.calibration import CalibratedAgentParams, SymbolPriceState
from engine.features import FeatureField, FeatureSet, FieldType

_HORIZON = Horizon.M1

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


class TimeSeriesMomentumAgent(Agent[TimeSeriesMomentumParams]):
    """One 1m signal per bar per symbol once momentum, volatility and calibration are ready."""

    async def on_start(self) -> None:
        p = self.params
        self._states: dict[str, SymbolPriceState] = {}
        self._calibrator = p.calibrator(int(_HORIZON.trading_days))
        self._h_sqrt = math.sqrt(_HORIZON.trading_days)
        self._window_sqrt = math.sqrt(p.lookback - p.skip)
        await self.features.register(TSMOM_FEATURES)

    async def on_bar(self, bar: Bar) -> None:
        p = self.params
        state = self._states.get(bar.symbol)
        if state is None:
            state = self._states[bar.symbol] = SymbolPriceState(p, p.lookback + 1)
        close = bar.close
        state.update(close)
        closes = state.closes

        x: float | None = None
        scale = 1.0
        vol = state.daily_vol()
        if vol is not None:
            scale = vol * self._h_sqrt
            mom = closes.simple_return(p.lookback, p.skip)
            if mom is not None:
                x = mom / (vol * self._window_sqrt)
                await self.features.put(
                    TSMOM_FEATURES, bar.symbol, {"score": x, "vol_daily": vol}, ts=bar.ts_event
                )
        est = self._calibrator.update(bar.symbol, x, close, scale=scale)
        if est is None or x is None or vol is None:
            return
        if est.confidence <= 0.0 and not p.emit_zero_confidence:
            # |t| <= 1: the calibration finds no usable relation; a zero-confidence signal
            # would get zero weight in any blend, so saying nothing is equivalent and cheaper.
            return
        self.signal(
            bar.symbol,
            mu=est.mu,
            sigma=est.sigma,
            horizon=_HORIZON,
            confidence=est.confidence,
            regime=state.regime(close, vol),
            features={"tsmom_score": x, "vol_daily": vol, "beta": est.beta, "n_eff": est.n_eff},
        )
