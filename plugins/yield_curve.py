"""Yield-curve agent: Treasury slopes and their changes as predictors of 1-month equity returns.

Features, in percentage points, from the latest Treasury yields (macro topics ``macro.<series>``,
decimal yields) known at the close of equity bar t (one snapshot per bar timestamp):

    s1(t) = y10y(t) - y2y(t)          s2(t) = y10y(t) - y3m(t)        (curve slopes)
    d1(t) = s1(t) - s1(t - 21)        d2(t) = s2(t) - s2(t - 21)      (21-bar changes)

For every symbol with bars, with R(t) = P(t + 21) / P(t) - 1 and vol(t) the symbol's EW std of
daily returns (half-life 42 bars):

    R / (vol * sqrt(21)) = alpha + b1 s1 + b2 s2 + b3 d1 + b4 d2 + e   (EW ridge LS, walk-forward)

so mu = vol * sqrt(21) * (alpha + b . x) and sigma = vol * sqrt(21) * RMS of the out-of-sample
errors, over the 1m horizon (:class:`engine.calibration.ForwardReturnCalibrator`, pooled across
symbols by default - the curve is one series for all of them, so pooling is what makes the
sample size usable; ``pooled=False`` gives one model per symbol). The slopes move over years, so
their effective sample is far smaller than the calibrator's overlap-corrected n_eff suggests,
and the two slopes are strongly collinear: the ridge prior is therefore strong (``shrinkage`` =
300 effective pseudo-samples with zero slope). Confidence weighs all four slopes jointly (a Wald
statistic against k = 4) and is usually low - an honest reading of a weak, slow predictor. The
daily vol is floored at 0.3 % (``vol_floor``) so a stale quote cannot shrink the risk unit to ~0.

Missing and stale data. A yield that is missing (a blank in the source) is not published, and is
never treated as zero: the agent keeps each series' latest observation with its time, and the
features of a bar exist only if the 3-month, 2-year and 10-year yields all have an observation
no older than ``max_staleness_days`` calendar days at the bar's time. Otherwise (a series
stopped - the bundled Treasury file ends in March 2017 while stocks run to 2022 - or has a gap)
the agent emits nothing for that bar, logs the transition once, and stores no pseudo-value; a
21-bar change needs both ends present. A yield observation published after the bars of the same
timestamp is used from the next bar timestamp on (never earlier than it was seen).

Regime: the shared regime model's label of each symbol (`engine.regime`), with a partially
pooled model per volatility group (`engine.calibrated`).

O(1) per bar (the 4x4 solve is shared by all symbols of a bar via ``refit_every``).

References: Estrella and Hardouvelis (1991), "The Term Structure as a Predictor of Real Economic
Activity", Journal of Finance 46(2); Fama and French (1989), "Business conditions and expected
returns on stocks and bonds", Journal of Financial Economics 25(1), 23-49.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from pydantic import Field

from contracts import Bar, Horizon, MacroObservation
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, Indicator, SymbolState
from engine.calibration import Estimate
from engine.features import FeatureField, FeatureSet, FieldType

_PP = 100.0  # decimal yield -> percentage points
_FEATURES = ("slope_10y_2y", "slope_10y_3m", "d21_slope_10y_2y", "d21_slope_10y_3m")

CURVE_ENTITY = "UST"
YIELD_CURVE_FEATURES = FeatureSet(
    name="yield_curve",
    version=1,
    description="US Treasury curve slopes and their 21-step changes, once per step",
    fields=tuple(FeatureField(name, FieldType.FLOAT) for name in _FEATURES),
)
"""What this agent publishes to the feature store (entity ``UST``), once per step."""


class YieldCurveParams(CalibratedAgentParams):
    long_series: str = Field(default="10year", description="Macro series of the long yield")
    mid_series: str = Field(default="2year", description="Macro series of the 2-year yield")
    short_series: str = Field(default="3month", description="Macro series of the short yield")
    change_window: int = Field(default=21, ge=1, description="Bars over which slopes change")
    max_staleness_days: float = Field(
        default=7.0, gt=0, description="Oldest usable yield observation, calendar days"
    )
    shrinkage: float = Field(
        default=300.0, ge=0, description="Ridge prior, effective samples (slow features)"
    )


class YieldCurveAgent(CalibratedAgent[YieldCurveParams]):
    """Consumes bars and Treasury yields; emits 1m signals while the curve is fresh."""

    horizon = Horizon.M1
    n_features = len(_FEATURES)

    async def setup(self) -> None:
        p = self.params
        self._series = (p.long_series, p.mid_series, p.short_series)
        self._latest: dict[str, tuple[datetime, float]] = {}
        self._max_age = timedelta(days=p.max_staleness_days)
        self._slopes: deque[tuple[float, float] | None] = deque(maxlen=p.change_window + 1)
        self._features: tuple[float, float, float, float] | None = None
        self._fresh = False
        await self.features.register(YIELD_CURVE_FEATURES)

    async def on_macro(self, observation: MacroObservation) -> None:
        if observation.series in self._series:
            self._latest[observation.series] = (observation.ts_event, observation.value)

    async def begin_step(self, ts: datetime) -> None:
        self._roll_step(ts)
        if self._features is not None:
            await self.features.put(
                YIELD_CURVE_FEATURES,
                CURVE_ENTITY,
                dict(zip(_FEATURES, self._features, strict=True)),
                ts=ts,
            )

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> Indicator:
        return self._features

    def signal_features(
        self, x: float | tuple[float, ...], vol: float, est: Estimate
    ) -> dict[str, float]:
        assert isinstance(x, tuple)
        return {
            **dict(zip(_FEATURES, x, strict=True)),
            "vol_daily": vol,
            "n_eff": est.n_eff,
            "regime_weight": est.regime_weight,
        }

    def _roll_step(self, ts: datetime) -> None:
        """First bar of a new timestamp: snapshot the curve as known now, derive the features."""
        slopes = self._current_slopes(ts)
        self._slopes.append(slopes)
        if (slopes is not None) != self._fresh:
            self._fresh = slopes is not None
            if self._fresh:
                self.log.info("yield curve available", ts=ts.isoformat())
            else:
                self.log.warning(
                    "yield curve missing or stale: emitting nothing until it is fresh",
                    ts=ts.isoformat(),
                    max_staleness_days=self.params.max_staleness_days,
                )
        old = self._slopes[0] if len(self._slopes) == self._slopes.maxlen else None
        if slopes is None or old is None:
            self._features = None
            return
        s1, s2 = slopes
        self._features = (s1, s2, s1 - old[0], s2 - old[1])

    def _current_slopes(self, ts: datetime) -> tuple[float, float] | None:
        values: list[float] = []
        for series in self._series:
            obs = self._latest.get(series)
            if obs is None:
                return None
            obs_ts, value = obs
            if obs_ts > ts or ts - obs_ts > self._max_age:
                return None
            values.append(value)
        y_long, y_mid, y_short = values
        return (_PP * (y_long - y_mid), _PP * (y_long - y_short))
