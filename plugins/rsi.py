"""RSI reversion agent: Wilder's relative strength index as a short-term reversal signal.

The RSI is the most used oscillator of technical analysis: "overbought" above 70, "oversold"
below 30, on the premise that a run of gains without losses (or the reverse) tends to give back.
Its bounded, volatility-free form makes it a natural one-number summary of the last few weeks'
up/down balance; whether - and how strongly - extremes revert over the following week is left to
the walk-forward calibration.

Formula, per symbol, at the close of bar t (P = close, n = 14):

    d(t)      = P(t) - P(t - 1),   U = max(d, 0),   D = max(-d, 0)
    G, L      = simple means of U, D over the first n changes, then Wilder's smoothing
                G(t) = G(t - 1) + (U(t) - G(t - 1)) / n    (same for L; an EW mean, alpha = 1/n)
    RSI(t)    = 100 * G / (G + L)
    x(t)      = (50 - RSI) / 50 = (L - G) / (G + L)      in [-1, 1]  (oversold -> positive)
    R(t)      = P(t + 5) / P(t) - 1                      (the 1-week forward return)
    R / (vol * sqrt(5)) = alpha + beta * x + e           (EW least squares, pooled)

x is scale-free and bounded, so it is not volatility-scaled; the forward return is in risk units
(vol: EW std of daily returns, half-life 42 bars, floored at 0.3 %), so one pooled slope serves
all symbols. mu = vol * sqrt(5) * (alpha + beta * x), sigma = vol * sqrt(5) * RMS of the model's
out-of-sample errors (half-life 126 bars), over the 1w (5-bar) horizon, from
:class:`engine.calibration.ForwardReturnCalibrator` (n_eff and confidence: see there). The sign
convention only makes "reversion" read as beta > 0; the sign and size of beta are estimated
from the data, never assumed. The regime model's volatility groups get partially pooled
coefficients (`engine.calibrated`).

Missing or bad data: a close that is not a finite number > 0 is skipped and counted; a gap of
more than 10 calendar days restarts the symbol (the averages re-seed, no training sample spans
the gap). While G + L = 0 (no price change at all since the seed) the RSI is undefined and
nothing is published or emitted; likewise before n changes and 20 returns of volatility exist,
and before the calibrator has `min_samples` realized samples.

O(1) per bar: two running sums while seeding, then two recursions.

References: Wilder (1978), "New Concepts in Technical Trading Systems", Trend Research; Chong and
Ng (2008), "Technical analysis and the London stock exchange: testing the MACD and RSI rules
using the FT30", Applied Economics Letters 15(14), 1111-1114.
"""

from __future__ import annotations

from pydantic import Field

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.features import FeatureField, FeatureSet, FieldType

RSI_FEATURES = FeatureSet(
    name="rsi",
    version=1,
    description="RSI reversion agent's indicators, per symbol",
    fields=(
        FeatureField("score", FieldType.FLOAT, description="(50 - RSI) / 50, in [-1, 1]"),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class RsiReversionParams(CalibratedAgentParams):
    period: int = Field(default=14, ge=2, description="Wilder's RSI period n, bars")


class WilderRsi:
    """Wilder's average gain and loss of one price series, O(1) per close."""

    __slots__ = ("_changes", "_gain", "_loss", "_period", "_prev")

    def __init__(self, period: int) -> None:
        self._period = period
        self._prev: float | None = None
        self._changes = 0
        self._gain = 0.0
        self._loss = 0.0

    def update(self, close: float) -> None:
        prev = self._prev
        self._prev = close
        if prev is None:
            return
        d = close - prev
        up = d if d > 0.0 else 0.0
        down = -d if d < 0.0 else 0.0
        n = self._period
        self._changes += 1
        if self._changes <= n:
            # Wilder seeds with the simple mean of the first n changes
            self._gain += up / n
            self._loss += down / n
        else:
            self._gain += (up - self._gain) / n
            self._loss += (down - self._loss) / n

    def score(self) -> float | None:
        """(50 - RSI) / 50, or None before n changes or while no change has been seen."""
        if self._changes < self._period:
            return None
        total = self._gain + self._loss
        if total <= 0.0:
            return None
        return (self._loss - self._gain) / total


class RsiReversionAgent(CalibratedAgent[RsiReversionParams]):
    """One 1w signal per bar per symbol once the RSI, vol and calibration are ready."""

    horizon = Horizon.W1
    feature_set = RSI_FEATURES

    def new_extra(self, symbol: str) -> WilderRsi:
        return WilderRsi(self.params.period)

    def observe(self, bar: Bar, state: SymbolState) -> None:
        # every bar, including those before vol is ready (when `indicator` is not called)
        rsi: WilderRsi = state.extra
        rsi.update(bar.close)

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        rsi: WilderRsi = state.extra
        return rsi.score()
