"""Volume-anomaly agent: the direction of today's move where today's volume was abnormally high.

Why: a price move on heavy volume means something different from the same move on a quiet day.
Campbell, Grossman and Wang (1993) show that returns on high-volume days reverse more (the move
was liquidity demand that market makers absorbed at a discount), while Llorente, Michaely,
Saar and Wang (2002) find the opposite sign where trading is informed (the move continues);
Gervais, Kaniel and Mingelgrin (2001) find that unusually high volume itself precedes higher
returns. Which of these dominates is an empirical question per market, so the sign and size of
the effect are estimated walk-forward from the data, never assumed.

Formula, per symbol, at the close of bar t (P = close, V = volume, r = daily simple return):

    m(t), s(t) = EW mean and std of log V over the bars *before* t (half-life 63 bars)
    v(t)       = (log V(t) - m(t)) / s(t)                     (abnormal volume, in stds)
    x(t)       = sign(r(t)) * min(max(v(t), 0), 4)            (direction of a heavy-volume move)
    vol(t)     = EW std of r (half-life 42 bars, floored at 0.3 %)
    R(t)       = P(t + 1) / P(t) - 1                          (the next day's return)
    R / vol = alpha + beta * x + e                            (EW least squares, walk-forward)

so mu = vol * (alpha + beta * x) and sigma = vol * RMS of the model's out-of-sample errors,
over the 1d horizon, from :class:`engine.calibration.ForwardReturnCalibrator` (see there for
n_eff and confidence). beta < 0 is the liquidity (reversal) story, beta > 0 the
informed-trading (continuation) one. Why this form of x: only *abnormally high* volume is the
event the literature studies (a quiet day, v < 0, says nothing about liquidity shocks, so it
maps to 0); the return enters through its sign only, so an earnings-day gap (GOOG's reach
12-20 %, up to ~6 daily sigmas) cannot set the slope on its own, and v is capped at ``clip``
= 4 for the same reason. The unbounded alternative, Llorente et al.'s interaction
v * r / vol, calibrates as well on the GOOG file, but its slope is less often distinguishable
from 0 there (fewer signals with positive confidence). A flat day (r = 0) has x = 0.

Horizon 1d, because the effect the indicator measures is about the *next* day's return
(CGW and LMSW both regress the next day's return on today's volume and return); a 1w horizon
would overlap five samples per forecast and, on the single bundled volume series (2,148 GOOG
bars), leave too few independent samples to size sigma honestly.

``min_samples`` defaults to 250 (one year of one symbol) instead of 1,000: the only bundled
data with volume is one instrument over 8.5 years, so 1,000 pooled samples would wait four
years; at 1d horizon the samples do not overlap and 250 of them already pin the error RMS
(sigma) to within about 5-10 % (fat tails included), while the shrinkage (10 effective
pseudo-samples) keeps the young slope near 0. ``error_halflife_bars`` stays 126 (sigma
follows the present).

Missing and bad data. A bar without volume (``volume is None``, a close-only source such as the
bundled 20-stock file) or with volume 0 (no trades, a halted or stale quote) has no indicator: it
is counted and logged once per symbol as ``"no volume"`` (`skips`), no signal is emitted, and
the volume statistics are not updated (a missing volume is missing, never zero); the close still
updates the return volatility. Abnormal volume needs 20 volume observations (``min_volume_obs``)
and a positive spread before it exists. Bad closes and gaps longer than ``max_gap_days`` are
handled by `engine.calibrated` (skipped / indicators restarted).

Regime: the shared regime model's label, with a partially pooled model per volatility group
(`engine.calibrated`): liquidity provision, the source of the reversal, pays most when
markets are volatile (Nagel 2012, "Evaporating Liquidity", RFS 25(7)).

Everything is O(1) per bar: two EW recursions per symbol and the last two closes.

References: Gervais, Kaniel and Mingelgrin (2001), "The High-Volume Return Premium", Journal
of Finance 56(3), 877-919; Campbell, Grossman and Wang (1993), "Trading Volume and Serial
Correlation in Stock Returns", Quarterly Journal of Economics 108(4), 905-939; Llorente,
Michaely, Saar and Wang (2002), "Dynamic Volume-Return Relation of Individual Stocks", Review
of Financial Studies 15(4), 1005-1047.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import Field, model_validator

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.calibration import EwMoments
from engine.features import FeatureField, FeatureSet, FieldType

VOLUME_ANOMALY_FEATURES = FeatureSet(
    name="volume_anomaly",
    version=1,
    description="Volume-anomaly agent's indicators, per symbol",
    fields=(
        FeatureField(
            "score", FieldType.FLOAT, description="sign of the return x capped excess volume"
        ),
        FeatureField(
            "abnormal_volume", FieldType.FLOAT, description="log volume vs its EW mean, in stds"
        ),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""

NO_VOLUME = "no volume"
"""The skip reason of a bar without a usable volume (None, 0 or not finite)."""


class VolumeAnomalyParams(CalibratedAgentParams):
    volume_halflife: float = Field(
        default=63.0, gt=0, description="Half-life of the log-volume baseline (mean, std), bars"
    )
    min_volume_obs: int = Field(
        default=20, ge=2, description="Volumes seen before abnormal volume is defined"
    )
    clip: float = Field(default=4.0, gt=0, description="Cap of the abnormal volume, in stds")
    min_samples: int = Field(
        default=250, ge=1, description="Realized samples before emitting (one symbol-year)"
    )

    @model_validator(mode="after")
    def _warmup_within_memory(self) -> VolumeAnomalyParams:
        # The baseline's EW weights hold about (1 + lam) / (1 - lam) ~ 2.885 x half-life
        # observations; a warm-up asking for more than it can remember means one of the two was
        # given in the wrong unit.
        lam = 0.5 ** (1.0 / self.volume_halflife)
        window = (1.0 + lam) / (1.0 - lam)
        if self.min_volume_obs > window:
            raise ValueError(
                f"min_volume_obs ({self.min_volume_obs}) exceeds the volume baseline's "
                f"effective window ({window:.1f} observations for volume_halflife "
                f"{self.volume_halflife})"
            )
        return self


class _VolumeState:
    """One symbol's log-volume baseline and this bar's abnormal volume (None: not defined)."""

    __slots__ = ("abnormal", "log_volume")

    def __init__(self, halflife: float) -> None:
        self.log_volume = EwMoments(halflife)
        self.abnormal: float | None = None


class VolumeAnomalyAgent(CalibratedAgent[VolumeAnomalyParams]):
    """One 1d signal per bar per symbol with volume, once baseline, vol and calibration exist."""

    horizon = Horizon.D1
    feature_set = VOLUME_ANOMALY_FEATURES

    async def setup(self) -> None:
        self._abnormal_now: float | None = None

    def history_bars(self) -> int:
        return 2  # today's return

    def new_extra(self, symbol: str) -> _VolumeState:
        return _VolumeState(self.params.volume_halflife)

    async def on_bar(self, bar: Bar) -> None:
        state = self.state_of(bar)
        if state is None:
            return
        extra: _VolumeState = state.extra
        volume = bar.volume
        if volume is None or not (volume > 0.0 and math.isfinite(volume)):
            self.skip(bar.symbol, NO_VOLUME, volume=repr(volume))
            extra.abnormal = None
        else:
            lv = math.log(volume)
            base = extra.log_volume
            spread = base.std
            # measured against the baseline of *earlier* bars: today's volume must not dilute
            # its own surprise
            if base.count >= self.params.min_volume_obs and spread > 0.0:
                extra.abnormal = (lv - base.mean) / spread
            else:
                extra.abnormal = None
            base.update(lv)
        self._abnormal_now = extra.abnormal
        await self.calibrate(bar, state)

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        v: float | None = state.extra.abnormal
        r = state.last_return
        if v is None or r is None:
            return None
        if r == 0.0 or v <= 0.0:
            return 0.0
        heavy = min(v, self.params.clip)
        return heavy if r > 0.0 else -heavy

    def published(self, x: float | tuple[float, ...], vol: float) -> Mapping[str, float] | None:
        # called only for a non-None x, i.e. while the bar being handled has an abnormal volume
        v = self._abnormal_now
        if isinstance(x, tuple) or v is None:
            return None
        return {"score": x, "abnormal_volume": v, "vol_daily": vol}
