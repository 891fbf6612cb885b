"""Donchian breakout agent: the close's place in its prior N-bar channel, calibrated walk-forward.

The channel breakout (buy a new N-day high, sell a new N-day low) is the rule of Donchian's
1960s funds and of the Turtles (N = 20 and 55), and the backbone of a century of trend
following. The data here are closes only, so the channel is built from closes. The indicator is
the rule's continuous version: how far up or down the channel the close is, with a breakout
pinned at the edge.

Formula, per symbol, at the close of bar t (P = close):

    H(t) = max P(t - N) .. P(t - 1),  L(t) = min P(t - N) .. P(t - 1)   (N = 55 *previous* closes)
    x(t) = clip((P(t) - (H + L) / 2) / ((H - L) / 2), -1, 1)           (+1: breakout up,
                                                                         -1: breakout down)
    (a flat channel, H = L, gives x = sign(P(t) - H))
    R(t) = P(t + 21) / P(t) - 1                                          (1-month forward return)
    R / (vol * sqrt(21)) = alpha + beta * x + e                          (EW least squares, pooled)

x is already scale-free and bounded, so it needs no volatility scaling; the forward return is in
risk units (vol: EW std of daily returns, half-life 42 bars, floored at 0.3 %), so one pooled
slope serves all symbols. mu = vol * sqrt(21) * (alpha + beta * x), sigma = vol * sqrt(21) * RMS
of the model's out-of-sample errors (half-life 126 bars), over the 1m horizon, from
:class:`engine.calibration.ForwardReturnCalibrator` (n_eff and confidence: see there). The sign
of beta is estimated (trend following expects beta > 0), never assumed. The regime model's
volatility groups get partially pooled coefficients (`engine.calibrated`).

Missing or bad data: a close that is not a finite number > 0 is skipped and counted; a gap of
more than 10 calendar days restarts the symbol (the channel refills from scratch, no training
sample spans the gap). Nothing is published or emitted before N previous closes and 20 returns
of volatility exist, nor before the calibrator has `min_samples` realized samples.

O(1) per bar (amortized): the rolling max and min are monotonic deques - each close is pushed and
popped at most once per deque, the front is the extreme of the window.

References: Donchian (1960), "High Finance in Copper", Financial Analysts Journal 16(6), 133-142
(the channel rule); Hurst, Ooi and Pedersen (2017), "A Century of Evidence on Trend-Following
Investing", Journal of Portfolio Management 44(1), 15-29.
"""

from __future__ import annotations

from collections import deque

from pydantic import Field

from contracts import Bar, Horizon
from engine.calibrated import CalibratedAgent, CalibratedAgentParams, SymbolState
from engine.features import FeatureField, FeatureSet, FieldType

DONCHIAN_FEATURES = FeatureSet(
    name="donchian",
    version=1,
    description="Donchian breakout agent's indicators, per symbol",
    fields=(
        FeatureField(
            "score",
            FieldType.FLOAT,
            description="Close's position in the prior N-bar close channel, in [-1, 1]",
        ),
        FeatureField("vol_daily", FieldType.FLOAT, description="EW daily volatility"),
    ),
)
"""What this agent publishes to the feature store for other agents, stages and dashboards."""


class DonchianBreakoutParams(CalibratedAgentParams):
    window: int = Field(default=55, ge=2, description="Channel length N, previous closes")


class DonchianChannel:
    """The max and min of the last `window` values pushed, O(1) amortized per push.

    Each deque holds (index, value) with values monotone from the front (the extreme) to the
    back; a new value first removes the entries it dominates, which can never be the extreme
    again while it is in the window.
    """

    __slots__ = ("_count", "_hi", "_lo", "_window")

    def __init__(self, window: int) -> None:
        self._window = window
        self._count = 0
        self._hi: deque[tuple[int, float]] = deque()
        self._lo: deque[tuple[int, float]] = deque()

    @property
    def full(self) -> bool:
        return self._count >= self._window

    @property
    def high(self) -> float:
        return self._hi[0][1]

    @property
    def low(self) -> float:
        return self._lo[0][1]

    def push(self, value: float) -> None:
        i = self._count
        hi, lo = self._hi, self._lo
        while hi and hi[-1][1] <= value:
            hi.pop()
        hi.append((i, value))
        while lo and lo[-1][1] >= value:
            lo.pop()
        lo.append((i, value))
        oldest = i - self._window  # the index that just left the window
        if hi[0][0] <= oldest:
            hi.popleft()
        if lo[0][0] <= oldest:
            lo.popleft()
        self._count = i + 1


def channel_position(close: float, high: float, low: float) -> float:
    """x of the module docstring: the close's place in [low, high] scaled to [-1, 1], clipped."""
    if high <= low:
        return float((close > high) - (close < high))
    x = (2.0 * close - high - low) / (high - low)
    return 1.0 if x > 1.0 else -1.0 if x < -1.0 else x


class DonchianBreakoutAgent(CalibratedAgent[DonchianBreakoutParams]):
    """One 1m signal per bar per symbol once the channel, vol and calibration are ready."""

    horizon = Horizon.M1
    feature_set = DONCHIAN_FEATURES

    def new_extra(self, symbol: str) -> DonchianChannel:
        return DonchianChannel(self.params.window)

    async def on_bar(self, bar: Bar) -> None:
        state = self.state_of(bar)
        if state is None:
            return
        channel: DonchianChannel = state.extra
        try:
            # The breakout is judged against the *previous* closes (`indicator`) ...
            await self.calibrate(bar, state)
        finally:
            # ... and only then does this close join - on every bar, whether or not vol was
            # ready for `indicator` to be called.
            channel.push(bar.close)

    def indicator(self, bar: Bar, state: SymbolState, vol: float) -> float | None:
        channel: DonchianChannel = state.extra
        if not channel.full:
            return None
        return channel_position(bar.close, channel.high, channel.low)
