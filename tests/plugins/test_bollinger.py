"""BollingerReversionAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import math
import random
import statistics
from datetime import date

import pytest
from pydantic import ValidationError

from contracts import Horizon
from engine.testing import AgentHarness, daily_bars
from plugins.bollinger import (
    BOLLINGER_FEATURES,
    BollingerReversionAgent,
    BollingerReversionParams,
    RollingBand,
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


def _brute_z(closes: list[float], window: int = 20) -> float | None:
    """(close - SMA) / population std of the last `window` closes; None for a flat window."""
    last = closes[-window:]
    std = statistics.pstdev(last)
    if std == 0.0:
        return None
    return (closes[-1] - statistics.fmean(last)) / std


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; vol needs 20 returns (the band 20 closes), the first 1w sample 5 bars
    # more, then min_samples / 5 steps
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1995, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        BollingerReversionAgent, name="bollinger", params={**ALL_SIGNALS, "min_samples": 100}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert_warm_up(signals, bars, symbols, min_first_step=20 + 5 + 100 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.W1)
    assert all(abs(v) <= math.sqrt(19.0) for v in feature_values(signals, "score"))
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_score_equals_brute_force() -> None:
    # Arrange: step by step, so every published score can be read back; RRC's stale 1990 quote
    # (flat windows: no band) is in the window
    symbols = ["AAPL", "KO", "RRC"]
    steps = steps_of(stock_bars(date(1990, 1, 1), date(1990, 9, 30), symbols=symbols))
    # Act
    async with AgentHarness(BollingerReversionAgent, name="bollinger", params=ALL_SIGNALS) as h:
        readings = await read_back_each_step(h, steps, BOLLINGER_FEATURES, symbols)
    # Assert: nothing before 20 returns of vol or in a flat window, then -z at this bar
    checked = 0
    for r in readings:
        z = _brute_z(r.closes)
        if len(r.closes) <= 20 or z is None:
            assert "score" not in r.row or r.row["score"].ts < r.bar.ts_event
            continue
        assert r.row["score"].ts == r.bar.ts_event
        assert r.row["score"].value == pytest.approx(-z, rel=1e-9, abs=1e-9)
        checked += 1
    assert checked >= 150 * 2


async def test_feed_when_close_jumps_out_of_a_flat_band_then_score_at_its_bound() -> None:
    # Arrange: 30 equal closes (no band: nothing to say), then one jump up
    *flat_bars, jump = daily_bars("AAPL", [100.0] * 30 + [103.0])
    # Act
    async with AgentHarness(
        BollingerReversionAgent, name="bollinger", params=ALL_SIGNALS
    ) as harness:
        await harness.feed(flat_bars)
        flat = await harness.features.get(BOLLINGER_FEATURES, "AAPL")
        await harness.feed([jump])
        jumped = await harness.features.get(BOLLINGER_FEATURES, "AAPL")
    # Assert: one outlier among N closes sits exactly sqrt(N - 1) stds above their mean, and
    # reversion reads it as negative
    assert "score" not in flat
    assert jumped["score"].value == pytest.approx(-math.sqrt(19.0), rel=1e-12)


def test_band_when_price_level_is_huge_then_matches_two_pass_statistics() -> None:
    # Arrange: closes near 1e7 moving by cents - a naive sum of squares would lose every digit
    rng = random.Random(5)
    values = [1e7 + rng.uniform(-0.05, 0.05) for _ in range(1000)]
    band = RollingBand(20)
    # Act / Assert
    for i, value in enumerate(values):
        band.push(value)
        window = values[max(0, i - 19) : i + 1]
        assert band.mean == pytest.approx(statistics.fmean(window), rel=1e-15)
        assert band.std == pytest.approx(statistics.pstdev(window), rel=1e-6)


def test_params_when_window_below_two_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="window"):
        BollingerReversionParams(window=1)
