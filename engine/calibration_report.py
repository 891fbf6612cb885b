"""Out-of-sample calibration report of an agent's signals against what happened next.

Why it exists: an agent's sigma is a promise ("the return over the horizon will usually be
within mu +- 1.645 sigma"), and the only honest check is to score every emitted signal against
the realized return over its horizon. The issue that introduced the twelve agents asks each
to pass this report on real data; plugin authors can run it on theirs
(``python benchmarks/calibration_report.py`` prints it for the bundled agents).

For every signal (symbol s, bar t, horizon h bars) with a close of s h bars later:

    realized = P_s(t + h) / P_s(t) - 1                 (h bars *of that symbol*, as the agents
                                                        count them)
    z        = (realized - mu) / sigma
    covered  = |z| <= 1.645                            (the central 90 % band)
    IC       = Spearman rank correlation of mu and realized, pooled over all scored signals

A calibrated agent has std(z) near 1 and coverage near 90 %; the mean z shows a bias. IC is
pooled (not the cross-sectional average per date) so single-instrument agents get one too.
Signals whose horizon ends after the data are left out (counted in ``unscored``).
Overlapping horizons make neighbouring z's correlated: the figures are descriptive, not a test
with independent samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from contracts import Bar, Signal

Z_90 = 1.6448536269514722
"""The standard normal's 95th percentile: mu +- Z_90 sigma is the central 90 % band."""


@dataclass(frozen=True, slots=True)
class CalibrationRow:
    agent: str
    horizon: str
    horizon_bars: int
    n: int
    unscored: int
    mean_z: float
    std_z: float
    coverage_90: float
    ic: float

    def as_dict(self) -> dict[str, object]:
        return {
            "agent": self.agent,
            "horizon": self.horizon,
            "n": self.n,
            "mean_z": round(self.mean_z, 3),
            "std_z": round(self.std_z, 3),
            "coverage_90": round(self.coverage_90, 3),
            "ic": round(self.ic, 4),
        }

    def markdown(self) -> str:
        return (
            f"| {self.agent} | {self.horizon} | {self.n:,} | {self.mean_z:+.3f} | "
            f"{self.std_z:.3f} | {self.coverage_90:.1%} | {self.ic:+.4f} |"
        )


MARKDOWN_HEADER = (
    "| agent | horizon | n | mean z | std z | 90 % coverage | IC |\n|---|---|---|---|---|---|---|"
)


class PriceHistory:
    """Each symbol's closes in bar order, to look up the close h bars after a given bar."""

    def __init__(self, bars: Iterable[Bar] = ()) -> None:
        self._closes: dict[str, list[float]] = {}
        self._position: dict[tuple[str, datetime], int] = {}
        for bar in bars:
            self.add(bar)

    def add(self, bar: Bar) -> None:
        closes = self._closes.setdefault(bar.symbol, [])
        self._position[(bar.symbol, bar.ts_event)] = len(closes)
        closes.append(bar.close)

    def forward_return(self, symbol: str, ts: datetime, bars: int) -> float | None:
        """P(t + bars) / P(t) - 1 of `symbol`, or None when t is unknown or t + bars is beyond
        the data."""
        i = self._position.get((symbol, ts))
        if i is None:
            return None
        closes = self._closes[symbol]
        if i + bars >= len(closes):
            return None
        return closes[i + bars] / closes[i] - 1.0


def calibration_report(
    agent: str, signals: Iterable[Signal], prices: PriceHistory
) -> CalibrationRow:
    """Score `signals` (one agent's, one horizon) against `prices` (module docstring)."""
    mus: list[float] = []
    realized: list[float] = []
    zs: list[float] = []
    unscored = 0
    horizon = ""
    horizon_bars = 0
    for sig in signals:
        if not horizon:
            horizon = sig.horizon.value
            horizon_bars = int(sig.horizon.trading_days)
        elif sig.horizon.value != horizon:
            raise ValueError(f"{agent}: mixed horizons {horizon} and {sig.horizon.value}")
        r = prices.forward_return(sig.symbol, sig.ts_event, horizon_bars)
        if r is None:
            unscored += 1
            continue
        mus.append(sig.mu)
        realized.append(r)
        zs.append((r - sig.mu) / sig.sigma)
    n = len(zs)
    if n < 2:
        nan = math.nan
        return CalibrationRow(agent, horizon, horizon_bars, n, unscored, nan, nan, nan, nan)
    z = np.asarray(zs)
    return CalibrationRow(
        agent=agent,
        horizon=horizon,
        horizon_bars=horizon_bars,
        n=n,
        unscored=unscored,
        mean_z=float(z.mean()),
        std_z=float(z.std(ddof=1)),
        coverage_90=float(np.mean(np.abs(z) <= Z_90)),
        ic=spearman(np.asarray(mus), np.asarray(realized)),
    )


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    ra = _ranks(a)
    rb = _ranks(b)
    sa = ra.std()
    sb = rb.std()
    if sa == 0.0 or sb == 0.0:
        return math.nan
    return float(np.mean((ra - ra.mean()) * (rb - rb.mean())) / (sa * sb))


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    # average the ranks of ties
    sorted_x = x[order]
    boundaries = np.flatnonzero(np.diff(sorted_x)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(x)]))
    for s, e in zip(starts, ends, strict=True):
        if e - s > 1:
            ranks[order[s:e]] = (s + e - 1) / 2.0
    return ranks


__all__ = [
    "MARKDOWN_HEADER",
    "Z_90",
    "CalibrationRow",
    "PriceHistory",
    "calibration_report",
    "spearman",
]
