"""Calendar seasonality agent: turn-of-month and Monday effects on the next day's return.

Features at the close of bar t, describing the *next* trading day d (the first weekday after the
bar's date, UTC), from the calendar only:

    tom(t)    = 1 if d is one of the last ``tom_before`` weekdays of its month or one of the
                first ``tom_after`` weekdays of its month (default: last 1, first 3), else 0
    monday(t) = 1 if d is a Monday (the next session follows a weekend), else 0
    vol(t)    = EW std of daily returns (half-life 42 bars, floored at 0.3 %)
    R(t)      = P(t + 1) / P(t) - 1                                 (the next day's return)
    R / vol   = alpha + b1 * tom + b2 * monday + e                   (EW least squares, pooled)

so mu = vol * (alpha + b1 tom + b2 monday) and sigma = vol * RMS of the model's out-of-sample
errors (half-life ``error_halflife_bars``), over the 1d (1-bar) horizon, from
:class:`engine.calibration.ForwardReturnCalibrator` (see there for n_eff and confidence; with
two features the confidence weighs both slopes jointly, a Wald statistic against k = 2). Two
dummies rather than one per weekday: every extra feature costs in the calibrator's k x k update
and dilutes the joint confidence, and Monday is the day the weekend-effect literature is about.

Why it exists. Equity returns have been concentrated around the turn of the month - Ariel
(1987) found the whole monthly gain of US stocks in the first half of the month, Lakonishok and
Smidt (1988) the turn-of-month and pre-holiday returns over ninety years - and Monday returns
have historically been lower than other days' (French 1980, the weekend effect). Both are
attributed to institutional flows (month-end pay and rebalancing) and to news timing. Whether
they still hold in a given sample is left to the walk-forward regression: the slopes are
estimated from the data, pooled across symbols, never assumed, and the weekend effect in
particular is known to have faded after the 1980s.

Calendar, not data: the features of bar t are decided from the date alone - no peeking at
whether a bar of the next day will exist. Weekdays are treated as trading days (there is no
exchange holiday calendar in the engine): on the day before a holiday the "next day" is the
holiday, so e.g. a Friday before a Monday holiday predicts a Monday while the next session is a
Tuesday, and a month's "first weekday" may be a holiday (New Year's Day). Those are a few
days a year; the regression's errors include them. The R of bar t is the return to the
symbol's next bar, whatever its date (the calibrator counts bars).

Missing and bad data: a close that is not a finite number > 0 is skipped; a gap longer than
``max_gap_days`` restarts the symbol (`engine.calibrated`). The features need no history, so a
symbol only waits for its vol (``min_vol_obs`` returns). Nothing is emitted until the
calibrator has `min_samples` realized samples, nor with zero confidence unless
``emit_zero_confidence``.

Regime: the shared regime model's label (`engine.regime`), with a partially pooled model per
volatility group (calm / volatile / crisis) in the calibrator (`engine.calibrated`).

O(1) per bar: the features are computed once per step (at most ~30 date operations), cached.

References: Ariel (1987), "A Monthly Effect in Stock Returns", Journal of Financial Economics
18(1), 161-174; Lakonishok and Smidt (1988), "Are Seasonal Anomalies Real? A Ninety-Year
Perspective", Review of Financial Studies 1(4), 403-425; French (1980), "Stock Returns and
the Weekend Effect", Journal of Financial Economics 8(1), 55-69.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

from pydantic import Field, model_validator

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, Indicator, SymbolState
from engine.calibration import Estimate
from engine.features import FeatureField, FeatureSet, FieldType

_FEATURES = ("turn_of_month", "monday")

CALENDAR_FEATURES = FeatureSet(
    name="calendar_seasonality",
    version=1,
    description="Calendar seasonality agent's features of the next trading day, per symbol",
    fields=(
        FeatureField(
            "turn_of_month", FieldType.FLOAT, description="1 if the next day is turn-of-month"
        ),
        FeatureField("monday", FieldType.FLOAT, description="1 if the next day is a Monday"),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class CalendarSeasonalityParams(CalibratedAgentParams):
    tom_before: int = Field(
        default=1, ge=0, le=10, description="Last weekdays of a month in the turn-of-month window"
    )
    tom_after: int = Field(
        default=3, ge=0, le=10, description="First weekdays of a month in the turn-of-month window"
    )

    @model_validator(mode="after")
    def _window_not_empty(self) -> CalendarSeasonalityParams:
        if self.tom_before + self.tom_after == 0:
            raise ValueError("tom_before + tom_after must be >= 1: the window would be empty")
        return self


def next_weekday(day: date) -> date:
    """The first Monday-to-Friday date after `day`."""
    nxt = day + timedelta(days=1)
    while nxt.weekday() >= 5:
        nxt += timedelta(days=1)
    return nxt


def calendar_features(day: date, tom_before: int, tom_after: int) -> tuple[float, float]:
    """(turn-of-month, Monday) dummies of the weekday after `day`."""
    d = next_weekday(day)
    # d's position among its month's weekdays, from the start and from the end (1 = first/last)
    from_start = sum(1 for k in range(1, d.day + 1) if d.replace(day=k).weekday() < 5)
    month_end = calendar.monthrange(d.year, d.month)[1]
    from_end = sum(1 for k in range(d.day, month_end + 1) if d.replace(day=k).weekday() < 5)
    tom = from_start <= tom_after or from_end <= tom_before
    return (1.0 if tom else 0.0, 1.0 if d.weekday() == 0 else 0.0)


class CalendarSeasonalityAgent(CalibratedAgent[CalendarSeasonalityParams]):
    """One 1d signal per bar per symbol once vol and the calibration are ready."""

    horizon = Horizon.D1
    feature_set = CALENDAR_FEATURES
    n_features = len(_FEATURES)

    async def setup(self) -> None:
        self._ts: datetime | None = None
        self._features: tuple[float, float] = (0.0, 0.0)

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> Indicator:
        ts = bar.ts_event
        if ts != self._ts:  # once per step: every symbol of a step shares the features
            p = self.params
            day = ts.astimezone(UTC).date()
            self._features = calendar_features(day, p.tom_before, p.tom_after)
            self._ts = ts
        return self._features

    def published(self, x: float | tuple[float, ...], vol: float) -> Mapping[str, float] | None:
        assert isinstance(x, tuple)
        return {"turn_of_month": x[0], "monday": x[1], "vol_daily": vol}

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
