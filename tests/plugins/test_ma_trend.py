"""MovingAverageTrendAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import math
import statistics
from datetime import date

import pytest
from pydantic import ValidationError

from contracts import Horizon
from engine.testing import AgentHarness, daily_bars
from plugins.ma_trend import MA_TREND_FEATURES, MovingAverageTrendAgent, MovingAverageTrendParams
from tests.calibration import stock_bars
from tests.kit.signal_checks import (
    assert_valid_signals,
    assert_warm_up,
    ew_vol,
    read_back_each_step,
    steps_of,
)

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agent leaves out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}


def _brute_score(closes: list[float], fast: int = 50, slow: int = 200) -> float:
    gap = statistics.fmean(closes[-fast:]) / statistics.fmean(closes[-slow:]) - 1.0
    k = math.sqrt(
        sum(((slow - 1 - j) / slow - max(fast - 1 - j, 0) / fast) ** 2 for j in range(slow))
    )
    return gap / (ew_vol(closes) * k)


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; the slow average needs 200 closes, the first 1m sample 21 bars more,
    # then min_samples / 5 steps
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1996, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        MovingAverageTrendAgent, name="ma_trend", params={**ALL_SIGNALS, "min_samples": 100}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert_warm_up(signals, bars, symbols, min_first_step=199 + 21 + 100 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.M1)
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_score_equals_brute_force() -> None:
    # Arrange: step by step, so every published score can be read back
    symbols = ["AAPL", "KO", "XOM"]
    steps = steps_of(stock_bars(date(1995, 1, 1), date(1996, 3, 31), symbols=symbols))
    # Act
    async with AgentHarness(MovingAverageTrendAgent, name="ma_trend", params=ALL_SIGNALS) as h:
        readings = await read_back_each_step(h, steps, MA_TREND_FEATURES, symbols)
    # Assert: nothing before 200 closes, then the brute-force score at this bar
    checked = 0
    for r in readings:
        if len(r.closes) < 200:
            assert "score" not in r.row
            continue
        assert r.row["score"].ts == r.bar.ts_event
        assert r.row["score"].value == pytest.approx(_brute_score(r.closes), rel=1e-9)
        assert r.row["vol_daily"].value == pytest.approx(ew_vol(r.closes), rel=1e-9)
        checked += 1
    assert checked >= 100 * len(symbols)


@pytest.mark.parametrize(("drift", "sign"), [(0.002, 1.0), (-0.002, -1.0)])
async def test_feed_when_steady_trend_then_score_has_its_sign(drift: float, sign: float) -> None:
    # Arrange: a steady trend with a +-1 % daily wiggle, 260 bars
    closes = [100.0 * (1.0 + drift) ** i * (1.01 if i % 2 else 0.99) for i in range(260)]
    # Act
    async with AgentHarness(
        MovingAverageTrendAgent, name="ma_trend", params=ALL_SIGNALS
    ) as harness:
        await harness.feed(daily_bars("AAPL", closes))
        row = await harness.features.get(MA_TREND_FEATURES, "AAPL")
    # Assert: the fast average leads the slow one by about 75 bars of drift
    score = float(row["score"].value)
    assert math.copysign(1.0, score) == sign
    gap = float(row["score"].value) * float(row["vol_daily"].value) * 6.1239
    assert gap == pytest.approx((1.0 + drift) ** 75 - 1.0, rel=0.1)


def test_params_when_fast_not_below_slow_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="fast"):
        MovingAverageTrendParams(fast=200, slow=200)
