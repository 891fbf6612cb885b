"""Cross-sectional momentum agent: 12-1 month momentum ranked across the universe, calibrated.

Formula, at step t (all bars with one timestamp), for every symbol i whose state is current
(a bar within ``max_gap_days``) and holds ``lookback`` closes (P = close):

    mom_i(t) = P_i(t - 21) / P_i(t - 252) - 1                  (12-1 month momentum)
    rank_i   = position of mom_i among the n symbols' moms, 0 .. n - 1 (ties: average rank)
    x_i(t)   = 2 * rank_i / (n - 1) - 1                        (in [-1, 1]; best = +1)
    vol_i(t) = EW std of i's daily returns (half-life 42 bars, floored at 0.3 %)
    R_i(t)   = P_i(t + 21) / P_i(t) - 1                        (the 1-month forward return)
    R / (vol * sqrt(21)) = alpha + beta * x + e                 (EW least squares, pooled)

so mu = vol * sqrt(21) * (alpha + beta * x) and sigma = vol * sqrt(21) * RMS of the model's
out-of-sample errors (half-life 126 bars), over the 1m (21-bar) horizon, from
:class:`engine.calibration.ForwardReturnCalibrator` (see there for n_eff and confidence). Only
the relative standing matters: a symbol's x says how it did against the others over the past
year excluding the last month, which is what Jegadeesh and Titman's winner-minus-loser
portfolios buy and sell. A rank (rather than a z-score of returns) is robust to one symbol's
extreme year and has the same spread at every step. Nothing is ranked with fewer than
``min_symbols`` eligible symbols.

When the ranking is computed (the cross-sectional pitfall). Bars of one timestamp reach the
agent one after another, and there is no "step complete" hook; a rank computed as they arrive
would mix this step's closes of some symbols with the previous closes of others, and depend on
the publish order. Because the skip is >= 1 bar, every mom_i(t) is fully determined by closes
at or before t - 1: in the state as it stood at the end of the previous step, P(t - 21) is the
close ``skip - 1`` bars back and P(t - 252) the one ``lookback - 1`` back. So the ranking is
computed once, when the first bar of a new timestamp arrives and *before* that bar is recorded,
from the states as they were at the end of the previous step, and used for every bar of step
t: it uses no close of step t and is independent of the order of the step's bars (both tested).
Ranking ~20 symbols once per step is O(N log N) per step, not per bar or per window.

Pooling and dependence. x sums to zero across the ranked symbols at every step, so the
market's common move drops out of the slope's estimate; what remains correlated across symbols
is industry co-movement, far below the ~0.2-0.35 average correlation of these stocks' raw
monthly returns. The calibrator's ``cross_correlation`` (used for n_eff and confidence) is
therefore 0.1 here instead of the base's 0.3.

Missing and bad data: "bars" are a symbol's own bars (as the calibrator counts them), so a
symbol with a missing day reaches a day further back. A close that is not a finite number > 0
is skipped (the symbol keeps its previous state and is still ranked). A symbol whose last bar is
older than ``max_gap_days`` is left out of the ranking, and its next bar restarts it (new
history, pending forecasts dropped, `engine.calibrated`), so it is ranked again once it has
``lookback`` closes. The daily vol is floored at 0.3 % (``vol_floor``) so a stale quote cannot
shrink the risk unit to ~0. Nothing is emitted until the calibrator has `min_samples` realized
samples, nor with zero confidence unless ``emit_zero_confidence``.

Regime: the shared regime model's label (`engine.regime`), with a partially pooled model per
volatility group (calm / volatile / crisis): momentum crashes in volatile rebounds (Daniel and
Moskowitz 2016), and per-regime coefficients and error RMS let the data say so.

O(1) per bar (a dictionary look-up of the step's rank) plus O(N log N) once per step.

References: Jegadeesh and Titman (1993), "Returns to Buying Winners and Selling Losers:
Implications for Stock Market Efficiency", Journal of Finance 48(1), 65-91; Daniel and
Moskowitz (2016), "Momentum crashes", Journal of Financial Economics 122(2), 221-247.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field, model_validator

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.features import FeatureField, FeatureSet, FieldType

XSMOM_FEATURES = FeatureSet(
    name="xsmom",
    version=1,
    description="Cross-sectional momentum agent's indicators, per symbol",
    fields=(
        FeatureField(
            "score", FieldType.FLOAT, description="Rank of 12-1 momentum, scaled to [-1, 1]"
        ),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class CrossSectionalMomentumParams(CalibratedAgentParams):
    cross_correlation: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Assumed avg. correlation across pooled symbols (x sums to 0 per step)",
    )
    lookback: int = Field(default=252, ge=2, description="Momentum window start, bars ago")
    skip: int = Field(
        default=21,
        ge=1,
        description="Most recent bars left out of momentum (>= 1: no close of the step is used)",
    )
    min_symbols: int = Field(default=5, ge=2, description="Eligible symbols needed for a rank")

    @model_validator(mode="after")
    def _skip_below_lookback(self) -> CrossSectionalMomentumParams:
        if self.skip >= self.lookback:
            raise ValueError(f"skip ({self.skip}) must be smaller than lookback ({self.lookback})")
        return self


def _scaled_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each key's rank of its value, 0 (lowest) .. n - 1, ties sharing their average rank,
    scaled to [-1, 1]; needs at least 2 values."""
    order = sorted(values, key=values.__getitem__)
    n = len(order)
    scale = 2.0 / (n - 1)
    out: dict[str, float] = {}
    i = 0
    while i < n:
        j = i
        value = values[order[i]]
        while j + 1 < n and values[order[j + 1]] == value:
            j += 1
        x = (i + j) * 0.5 * scale - 1.0
        for k in range(i, j + 1):
            out[order[k]] = x
        i = j + 1
    return out


class CrossSectionalMomentumAgent(CalibratedAgent[CrossSectionalMomentumParams]):
    """One 1m signal per bar per ranked symbol once the calibration is ready."""

    horizon = Horizon.M1
    feature_set = XSMOM_FEATURES

    def history_bars(self) -> int:
        # At the end of step t - 1 the oldest close needed, P(t - lookback), is lookback - 1 back.
        return self.params.lookback

    async def setup(self) -> None:
        self._stale_after = timedelta(days=self.params.max_gap_days)
        self._ranks: dict[str, float] = {}

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        return self._ranks.get(bar.symbol)

    async def begin_step(self, ts: datetime) -> None:
        """First bar of a new timestamp: rank the universe's 12-1 momentum from the states as
        they stood at the end of the previous step."""
        p = self.params
        max_gap = self._stale_after
        back, recent = p.lookback - 1, p.skip - 1
        moms: dict[str, float] = {}
        for symbol, state in self.states.items():
            last = state.last_ts
            if last is None or ts - last > max_gap:
                continue  # stale: its next bar restarts it (`state_of`)
            mom = state.closes.simple_return(back, recent)
            if mom is not None:
                moms[symbol] = mom
        self._ranks = _scaled_ranks(moms) if len(moms) >= max(p.min_symbols, 2) else {}
