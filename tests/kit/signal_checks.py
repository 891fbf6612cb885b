"""Checks shared by the per-agent plugin tests.

- `steps_of` groups bars into the steps the engine replays them in.
- `assert_valid_signals` and `assert_warm_up` hold for every calibrated agent's output: valid
  signals, silent through the warm-up, then one signal per symbol and step.
- `feature_values` reads one feature off signals that must all carry it, for the
  agent-specific bounds a test asserts on top.
- `read_back_each_step` feeds steps one at a time and records what the feature store held for
  each bar's symbol right after its step, with that symbol's closes so far, so a test can
  compare every published value with a brute-force recomputation.
- `ew_mean_std` and `ew_vol` are such brute-force references: exponentially weighted moments
  summed from their weights directly, without the agents' recursions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from contracts import Bar, Horizon, Regime, Signal
from engine.features.schema import FeatureSet, FeatureValue
from engine.testing import AgentHarness


def steps_of(bars: Iterable[Bar]) -> list[list[Bar]]:
    """`bars` grouped by event time, oldest step first; a step keeps its bars' input order."""
    by_ts: dict[datetime, list[Bar]] = {}
    for bar in bars:
        by_ts.setdefault(bar.ts_event, []).append(bar)
    return [by_ts[ts] for ts in sorted(by_ts)]


def assert_valid_signals(signals: Iterable[Signal], horizon: Horizon) -> None:
    """Every signal is for `horizon`, with a positive finite sigma, a finite mu, a confidence
    in [0, 1], a `Regime`, and the features it was computed from."""
    for s in signals:
        assert s.horizon is horizon, s
        assert s.sigma > 0.0, s
        assert math.isfinite(s.sigma), s
        assert math.isfinite(s.mu), s
        assert 0.0 <= s.confidence <= 1.0, s
        assert isinstance(s.regime, Regime), s
        assert s.features is not None, s


def assert_warm_up(
    signals: Sequence[Signal], bars: Iterable[Bar], symbols: Iterable[str], *, min_first_step: int
) -> int:
    """Silent while warming up, then a signal for every symbol: there are signals, all for
    `symbols`; the first is at step `min_first_step` or later of `bars` (0-based) and none
    comes before it; each of `symbols` has one at the last step. Returns the first's step."""
    steps = sorted({b.ts_event for b in bars})
    wanted = set(symbols)
    assert signals
    first_step = steps.index(signals[0].ts_event)
    assert first_step >= min_first_step
    assert all(s.ts_event >= signals[0].ts_event for s in signals)
    assert {s.symbol for s in signals} <= wanted
    assert {s.symbol for s in signals if s.ts_event == steps[-1]} == wanted
    return first_step


def feature_values(signals: Iterable[Signal], name: str) -> list[float]:
    """Feature `name` of every signal, in order; each signal must carry it."""
    values: list[float] = []
    for s in signals:
        assert s.features is not None, s
        values.append(s.features[name])
    return values


@dataclass(frozen=True)
class Reading:
    """One bar of a step-by-step run: `closes` are its symbol's closes up to and including it,
    `row` what the feature store held for that symbol once the bar's step was handled."""

    bar: Bar
    closes: list[float]
    row: dict[str, FeatureValue]


async def read_back_each_step(
    harness: AgentHarness,
    steps: Iterable[Sequence[Bar]],
    feature_set: FeatureSet,
    symbols: Sequence[str],
) -> list[Reading]:
    """Feed `steps` one at a time, reading the rows of `symbols` from the harness' feature
    store after each; one `Reading` per bar, in feed order."""
    closes: dict[str, list[float]] = {s: [] for s in symbols}
    readings: list[Reading] = []
    for step in steps:
        await harness.feed(step)
        rows = await harness.features.get_many(feature_set, symbols)
        for bar in step:
            closes[bar.symbol].append(bar.close)
            readings.append(Reading(bar, list(closes[bar.symbol]), rows[bar.symbol]))
    return readings


def ew_mean_std(values: Sequence[float], halflife: float) -> tuple[float, float]:
    """Brute-force EW mean and bias-corrected std: weights 0.5 ** (age / halflife) summed
    directly over the whole sequence (no recursion), as `EwMoments` defines them."""
    lam = 0.5 ** (1.0 / halflife)
    n = len(values)
    weights = [lam ** (n - 1 - k) for k in range(n)]
    w = math.fsum(weights)
    w2 = math.fsum(x * x for x in weights)
    mean = math.fsum(wk * v for wk, v in zip(weights, values, strict=True)) / w
    c = math.fsum(wk * (v - mean) ** 2 for wk, v in zip(weights, values, strict=True))
    return mean, math.sqrt(max(c / (w - w2 / w), 0.0))


def ew_vol(closes: Sequence[float], halflife: float = 42.0, floor: float = 0.003) -> float:
    """EW std of the daily simple returns of `closes` (`ew_mean_std`), floored at `floor`."""
    returns = [b / a - 1.0 for a, b in itertools.pairwise(closes)]
    return max(ew_mean_std(returns, halflife)[1], floor)
