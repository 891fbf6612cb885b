"""Low-volatility agent: a symbol's vol against the cross-section's, calibrated walk-forward.

Formula, at step t (all bars with one timestamp), for every symbol i whose state is current
(a bar within ``max_gap_days``) and whose volatility is trusted (``min_vol_obs`` returns):

    vol_i(t)  = EW std of i's daily simple returns (half-life 42 bars, floored at 0.3 %)
    x_i(t)    = mean_j log vol_j(t - 1) - log vol_i(t - 1)     (j over the n eligible symbols)
    R_i(t)    = P_i(t + 21) / P_i(t) - 1                       (the 1-month forward return)
    R / (vol_i(t) * sqrt(21)) = alpha + beta * x + e           (EW least squares, pooled)

so mu = vol * sqrt(21) * (alpha + beta * x) and sigma = vol * sqrt(21) * RMS of the model's
out-of-sample errors (half-life 126 bars), over the 1m (21-bar) horizon, from
:class:`engine.calibration.ForwardReturnCalibrator` (see there for n_eff and confidence).
x is minus the log of the symbol's vol relative to the universe's geometric mean vol: x = +0.5
means about 40 % calmer than the typical symbol, x < 0 riskier. Nothing is scored with fewer
than ``min_symbols`` eligible symbols.

Why it exists. Risk and return are not proportional in the data: stocks with high volatility
have earned less than a risk premium would ask for, and low-volatility stocks more - the
low-volatility anomaly (Ang et al. 2006, idiosyncratic and total volatility; Baker et al. 2011,
who trace it to benchmarked managers' limits to arbitrage). Volatility-managed portfolios
(Moreira and Muir 2017) exploit the time-series side of the same fact. In the risk units of the
regression (returns divided by the symbol's own vol) the anomaly says beta > 0: a calm stock's
risk-adjusted return is higher. Here the sign and size of beta are estimated walk-forward from
the data, pooled across symbols, never assumed (on the 20 bundled large caps it is weak and its
sign changes over the decades; the calibration then widens sigma and lowers confidence).

When the cross-section is taken. Bars of one timestamp arrive one after another and there is
no "step complete" hook, so the scores of step t are computed once, when its first bar arrives
and *before* that bar is recorded, from every symbol's vol as it stood at the end of step t - 1,
and used for all bars of step t: they never mix this step's closes of some symbols with the
previous closes of others, and do not depend on the publish order. A one-bar lag of a 42-bar
vol is immaterial for a 1-month forecast. The scale of the regression is the current vol.

Pooling and dependence. x sums to zero across symbols at every step, so the market's common
move drops out of the slope's estimate; what remains correlated across symbols is industry
co-movement, far below the ~0.2-0.35 average correlation of these stocks' raw monthly returns.
The calibrator's ``cross_correlation`` (used for n_eff and confidence) is therefore 0.1 here
instead of the base's 0.3.

Missing and bad data: a close that is not a finite number > 0 is skipped (the symbol keeps its
previous state and stays in the cross-section); a symbol whose last bar is older than
``max_gap_days`` is left out of the cross-section, and its next bar restarts it (new vol,
pending forecasts dropped, `engine.calibrated`). The vol floor keeps a quote stuck for weeks
(RRC in early 1990) from putting log(~0) in x. Nothing is emitted until the calibrator has
`min_samples` realized samples, nor with zero confidence unless ``emit_zero_confidence``.

Regime: the shared regime model's label (`engine.regime`), with a partially pooled model per
volatility group (calm / volatile / crisis) in the calibrator (`engine.calibrated`).

O(1) per bar (a dictionary look-up of the step's score) plus O(N) once per step for N symbols;
no per-symbol state beyond the base class's.

References: Ang, Hodrick, Xing and Zhang (2006), "The Cross-Section of Volatility and Expected
Returns", Journal of Finance 61(1), 259-299; Baker, Bradley and Wurgler (2011), "Benchmarks as
Limits to Arbitrage: Understanding the Low-Volatility Anomaly", Financial Analysts Journal
67(1), 40-54; Moreira and Muir (2017), "Volatility-Managed Portfolios", Journal of Finance
72(4), 1611-1644.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from pydantic import Field

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.features import FeatureField, FeatureSet, FieldType

LOW_VOLATILITY_FEATURES = FeatureSet(
    name="low_volatility",
    version=1,
    description="Low-volatility agent's indicators, per symbol",
    fields=(
        FeatureField(
            "score",
            FieldType.FLOAT,
            description="-log(vol / geometric mean vol of the universe), previous step",
        ),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class LowVolatilityParams(CalibratedAgentParams):
    cross_correlation: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Assumed avg. correlation across pooled symbols (x sums to 0 per step)",
    )
    min_symbols: int = Field(
        default=5, ge=2, description="Symbols with a trusted vol needed for a cross-section"
    )


class LowVolatilityAgent(CalibratedAgent[LowVolatilityParams]):
    """One 1m signal per bar per symbol once the cross-section and the calibration are ready."""

    horizon = Horizon.M1
    feature_set = LOW_VOLATILITY_FEATURES

    async def setup(self) -> None:
        self._stale_after = timedelta(days=self.params.max_gap_days)
        self._scores: dict[str, float] = {}

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        return self._scores.get(bar.symbol)

    async def begin_step(self, ts: datetime) -> None:
        """First bar of a new timestamp: score the cross-section as it stood at the end of the
        previous step (identical for every bar of this step, whatever their order)."""
        max_gap = self._stale_after
        log_vols: dict[str, float] = {}
        for symbol, state in self.states.items():
            last = state.last_ts
            if last is None or ts - last > max_gap:
                continue  # stale: its next bar restarts it (`state_of`)
            vol = state.daily_vol()
            if vol is not None:
                log_vols[symbol] = math.log(vol)
        if len(log_vols) < self.params.min_symbols:
            self._scores = {}
            return
        centre = math.fsum(log_vols.values()) / len(log_vols)
        self._scores = {symbol: centre - lv for symbol, lv in log_vols.items()}
