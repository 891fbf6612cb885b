"""Bollinger reversion agent: the close's z-score in its 20-bar band, a short-term reversal signal.

Bollinger bands (SMA_20 +- 2 standard deviations) are read by most traders as a mean-reversion
gauge: a close at the upper band is "stretched", at the lower band "cheap". The band position is
the z-score of the close against its own recent distribution, already free of the instrument's
price level and volatility; whether and how strongly it reverts over the following week is left
to the walk-forward calibration.

Formula, per symbol, at the close of bar t (P = close, N = 20):

    m(t)  = mean of P(t - N + 1) .. P(t)                   (the middle band, SMA_N)
    s(t)  = population std of the same N closes           (Bollinger's convention)
    z(t)  = (P(t) - m(t)) / s(t)                           (|z| <= sqrt(N - 1): P is in the window)
    x(t)  = -z(t)                                          (below the band -> positive)
    R(t)  = P(t + 5) / P(t) - 1                            (the 1-week forward return)
    R / (vol * sqrt(5)) = alpha + beta * x + e             (EW least squares, pooled)

x needs no volatility scaling; the forward return is in risk units (vol: EW std of daily returns,
half-life 42 bars, floored at 0.3 %), so one pooled slope serves all symbols. mu = vol * sqrt(5)
* (alpha + beta * x), sigma = vol * sqrt(5) * RMS of the model's out-of-sample errors (half-life
126 bars), over the 1w (5-bar) horizon, from :class:`engine.calibration.ForwardReturnCalibrator`
(n_eff and confidence: see there). The sign convention only makes "reversion" read as beta > 0;
the sign and size of beta are estimated from the data, never assumed. The regime model's
volatility groups get partially pooled coefficients (`engine.calibrated`).

Missing or bad data: a close that is not a finite number > 0 is skipped and counted; a gap of
more than 10 calendar days restarts the symbol (the window refills, no training sample spans the
gap). A window of N identical closes - a stale quote - has no band and no z: nothing is
published or emitted for it (detected exactly, by counting repeated closes, because the rounded
sums of a flat window leave a tiny spurious std); likewise before N closes and 20 returns of
volatility exist, and before the calibrator has `min_samples` realized samples.

O(1) per bar: running sums of the closes and their squares, taken about a shift K (the window's
mean at the last re-sum) so that the variance is not a difference of two huge, nearly equal
numbers; every N closes K is reset and both sums are recomputed exactly (an O(N) pass every N
bars), so rounding never accumulates.

References: Bollinger (2001), "Bollinger on Bollinger Bands", McGraw-Hill; Lento, Gradojevic and
Wright (2007), "Investment information content in Bollinger Bands?", Applied Financial Economics
Letters 3(4), 263-267.
"""

from __future__ import annotations

import math

from pydantic import Field

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.features import FeatureField, FeatureSet, FieldType

BOLLINGER_FEATURES = FeatureSet(
    name="bollinger",
    version=1,
    description="Bollinger reversion agent's indicators, per symbol",
    fields=(
        FeatureField(
            "score", FieldType.FLOAT, description="Minus the close's z-score in its N-bar band"
        ),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class BollingerReversionParams(CalibratedAgentParams):
    window: int = Field(default=20, ge=2, description="Band window N, bars")


class RollingBand:
    """Mean and population std of the last `window` values, O(1) per push (see the module
    docstring for the shifted sums and the periodic exact re-sum)."""

    __slots__ = ("_buf", "_head", "_run", "_s1", "_s2", "_shift", "_since", "_size", "_window")

    def __init__(self, window: int) -> None:
        self._window = window
        self._buf = [0.0] * window
        self._head = 0  # where the next value goes
        self._size = 0
        self._shift = 0.0
        self._s1 = 0.0  # sum of (v - shift)
        self._s2 = 0.0  # sum of (v - shift)^2
        self._since = 0
        self._run = 0  # how many of the latest values are equal to the latest

    @property
    def full(self) -> bool:
        return self._size == self._window

    @property
    def flat(self) -> bool:
        """All values in the window are identical (exact, not up to rounding of the sums)."""
        return self._run >= self._window

    def push(self, value: float) -> None:
        buf = self._buf
        head = self._head
        k = self._shift
        if self._size and buf[head - 1] == value:
            self._run += 1
        else:
            self._run = 1
        if self._size == self._window:
            old = buf[head] - k
            self._s1 -= old
            self._s2 -= old * old
        else:
            self._size += 1
        buf[head] = value
        self._head = head + 1 if head + 1 < self._window else 0
        d = value - k
        self._s1 += d
        self._s2 += d * d
        self._since += 1
        if self._since >= self._window or self._size == 1:
            self._resum()

    def _resum(self) -> None:
        values = self._buf if self._size == self._window else self._buf[: self._size]
        k = math.fsum(values) / self._size
        self._shift = k
        self._s1 = math.fsum(v - k for v in values)
        self._s2 = math.fsum((v - k) * (v - k) for v in values)
        self._since = 0

    @property
    def mean(self) -> float:
        return self._shift + self._s1 / self._size

    @property
    def std(self) -> float:
        n = self._size
        m1 = self._s1 / n
        return math.sqrt(max(self._s2 / n - m1 * m1, 0.0))


def band_z(close: float, mean: float, std: float, window: int) -> float | None:
    """z of the module docstring (None without a spread)."""
    if not std > 0.0:
        return None
    z = (close - mean) / std
    # Exact arithmetic bounds |z| by sqrt(N - 1) (the close is one of the N values); keep the
    # bound under rounding so a near-flat window cannot produce an outlier.
    bound = math.sqrt(window - 1)
    return bound if z > bound else -bound if z < -bound else z


class BollingerReversionAgent(CalibratedAgent[BollingerReversionParams]):
    """One 1w signal per bar per symbol once the band, vol and calibration are ready."""

    horizon = Horizon.W1
    feature_set = BOLLINGER_FEATURES

    def new_extra(self, symbol: str) -> RollingBand:
        return RollingBand(self.params.window)

    def observe(self, bar: Bar, state: SymbolState) -> None:
        # every bar, including those before vol is ready (when `indicator` is not called)
        band: RollingBand = state.extra
        band.push(bar.close)

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        band: RollingBand = state.extra
        if not band.full or band.flat:
            # A flat window (a stale quote) has no band: its "std" would be rounding noise.
            return None
        z = band_z(bar.close, band.mean, band.std, self.params.window)
        return None if z is None else -z
