"""DonchianBreakoutAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import itertools
import math
import random
from datetime import date

import pytest
from pydantic import ValidationError

from contracts import Horizon
from engine.testing import AgentHarness, daily_bars
from plugins.donchian import (
    DONCHIAN_FEATURES,
    DonchianBreakoutAgent,
    DonchianBreakoutParams,
    DonchianChannel,
)
from tests.calibration import stock_bars
from tests.kit.signal_checks import (
    assert_valid_signals,
    assert_warm_up,
    feature_values,
    read_back_each_step,
    steps_of,
)

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agent leaves out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}


def _brute_position(closes: list[float], window: int = 55) -> float:
    """The close's place in the channel of the `window` closes before it, clipped to [-1, 1]."""
    *before, close = closes[-window - 1 :]
    high, low = max(before), min(before)
    if high == low:
        return float((close > high) - (close < high))
    return max(-1.0, min(1.0, (close - (high + low) / 2.0) / ((high - low) / 2.0)))


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; the channel needs 55 previous closes, the first 1m sample 21 bars
    # more, then min_samples / 5 steps
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1995, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        DonchianBreakoutAgent, name="donchian", params={**ALL_SIGNALS, "min_samples": 100}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert_warm_up(signals, bars, symbols, min_first_step=55 + 21 + 100 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.M1)
    assert all(-1.0 <= v <= 1.0 for v in feature_values(signals, "score"))
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_score_equals_brute_force() -> None:
    # Arrange: step by step, so every published score can be read back
    symbols = ["AAPL", "KO", "XOM", "RRC"]
    steps = steps_of(stock_bars(date(1990, 1, 1), date(1990, 12, 31), symbols=symbols))
    # Act
    async with AgentHarness(DonchianBreakoutAgent, name="donchian", params=ALL_SIGNALS) as h:
        readings = await read_back_each_step(h, steps, DONCHIAN_FEATURES, symbols)
    # Assert: nothing before 55 previous closes, then the brute-force position
    checked = 0
    for r in readings:
        if len(r.closes) <= 55:
            assert "score" not in r.row
            continue
        assert r.row["score"].ts == r.bar.ts_event
        assert r.row["score"].value == pytest.approx(_brute_position(r.closes), abs=1e-12)
        checked += 1
    assert checked >= 150 * len(symbols)


async def test_feed_when_close_breaks_out_then_score_at_channel_edge() -> None:
    # Arrange: 60 closes oscillating in [95, 105], then a new high, a mid-channel close, a new low
    base = [100.0 + 5.0 * math.sin(i / 3.0) for i in range(60)]
    high, low = max(base[-55:]), min(base[-55:])
    probes = {"up": high * 1.01, "mid": (high + low) / 2.0, "down": low * 0.99}
    scores: dict[str, float] = {}
    for name, close in probes.items():
        # Act
        async with AgentHarness(
            DonchianBreakoutAgent, name="donchian", params=ALL_SIGNALS
        ) as harness:
            await harness.feed(daily_bars("AAPL", [*base, close]))
            row = await harness.features.get(DONCHIAN_FEATURES, "AAPL")
        scores[name] = float(row["score"].value)
    # Assert
    assert scores["up"] == 1.0
    assert scores["mid"] == pytest.approx(0.0, abs=1e-12)
    assert scores["down"] == -1.0


def test_channel_when_random_walk_with_ties_then_extremes_equal_brute_force() -> None:
    # Arrange: a walk on a coarse grid, so equal values (ties in the deques) are common
    rng = random.Random(3)
    values = [float(v) for v in itertools.accumulate(rng.choice((-1, 0, 1)) for _ in range(2000))]
    channel = DonchianChannel(20)
    # Act / Assert
    for i, value in enumerate(values):
        channel.push(value)
        window = values[max(0, i - 19) : i + 1]
        assert channel.high == max(window)
        assert channel.low == min(window)
        assert channel.full == (i >= 19)


def test_params_when_window_below_two_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="window"):
        DonchianBreakoutParams(window=1)
