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

Regime (interim, until the shared regime model): price vs its 200-bar SMA (+-2 % band) for the
trend, and the ratio of the 21-bar to the 252-bar half-life EW volatility for calm / volatile /
crisis (:func:`engine.calibration.trend_vol_regime`).

Everything is O(1) per bar: ring buffers and incremental EW statistics; plain float math.

References: Jegadeesh (1990), "Evidence of Predictable Behavior of Security Returns", Journal of
Finance 45(3), 881-898; Lehmann (1990), "Fads, Martingales, and Market Efficiency", Quarterly
Journal of Economics 105(1), 1-28.
"""

from __future__ import annotations

import math

from pydantic import Field

from contracts import Bar, Horizon
from engine.agent import Agent
from engine.calibration import CalibratedAgentParams, SymbolPriceState
from engine.features import FeatureField, FeatureSet, FieldType

_HORIZON = Horizon.W1

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


class ShortTermReversalAgent(Agent[ShortTermReversalParams]):
    """One 1w signal per bar per symbol once the weekly return, vol and calibration are ready."""

    async def on_start(self) -> None:
        p = self.params
        self._states: dict[str, SymbolPriceState] = {}
        self._calibrator = p.calibrator(int(_HORIZON.trading_days))
        self._h_sqrt = math.sqrt(_HORIZON.trading_days)
        self._window_sqrt = math.sqrt(p.lookback)
        await self.features.register(REVERSAL_FEATURES)

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
            past = closes.simple_return(p.lookback)
            if past is not None:
                x = past / (vol * self._window_sqrt)
                await self.features.put(
                    REVERSAL_FEATURES, bar.symbol, {"score": x, "vol_daily": vol}, ts=bar.ts_event
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
            features={"reversal_score": x, "vol_daily": vol, "beta": est.beta, "n_eff": est.n_eff},
        )
