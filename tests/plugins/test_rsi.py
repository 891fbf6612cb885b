"""RsiReversionAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import itertools
from datetime import date

import pytest
from pydantic import ValidationError

from contracts import Horizon
from engine.testing import AgentHarness, daily_bars
from plugins.rsi import RSI_FEATURES, RsiReversionAgent, RsiReversionParams
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


def _brute_rsi(closes: list[float], n: int = 14) -> float | None:
    """Wilder's RSI in closed form: the seed (simple mean of the first n gains / losses) decayed
    by (1 - 1/n) per later change, plus each later change weighted 1/n (1 - 1/n)^age."""
    changes = [b - a for a, b in itertools.pairwise(closes)]
    if len(changes) < n:
        return None
    later = changes[n:]
    decay = 1.0 - 1.0 / n

    def average(part: list[float]) -> float:
        seed = sum(part[:n]) / n
        tail = sum(v * decay ** (len(later) - 1 - i) for i, v in enumerate(part[n:])) / n
        return seed * decay ** len(later) + tail

    gain = average([max(d, 0.0) for d in changes])
    loss = average([max(-d, 0.0) for d in changes])
    if gain + loss == 0.0:
        return None
    return 100.0 * gain / (gain + loss)


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; vol needs 20 returns (the RSI 14), the first 1w sample 5 bars more,
    # then min_samples / 5 steps
    symbols = ["AAPL", "KO", "XOM", "JPM", "PG"]
    bars = stock_bars(date(1995, 1, 1), date(1995, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        RsiReversionAgent, name="rsi", params={**ALL_SIGNALS, "min_samples": 100}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert_warm_up(signals, bars, symbols, min_first_step=20 + 5 + 100 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.W1)
    assert all(-1.0 <= v <= 1.0 for v in feature_values(signals, "score"))
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_score_equals_brute_force() -> None:
    # Arrange: step by step, so every published score can be read back; RRC's stale 1990 quote
    # (weeks without a change) is in the window
    symbols = ["AAPL", "KO", "RRC"]
    steps = steps_of(stock_bars(date(1990, 1, 1), date(1990, 9, 30), symbols=symbols))
    # Act
    async with AgentHarness(RsiReversionAgent, name="rsi", params=ALL_SIGNALS) as h:
        readings = await read_back_each_step(h, steps, RSI_FEATURES, symbols)
    # Assert: nothing before 20 returns of vol, then (50 - RSI) / 50 at this bar
    checked = 0
    for r in readings:
        rsi = _brute_rsi(r.closes)
        if len(r.closes) <= 20 or rsi is None:
            assert "score" not in r.row or r.row["score"].ts < r.bar.ts_event
            continue
        assert r.row["score"].ts == r.bar.ts_event
        assert r.row["score"].value == pytest.approx((50.0 - rsi) / 50.0, abs=1e-9)
        checked += 1
    assert checked >= 150 * 2


@pytest.mark.parametrize(("step", "expected"), [(0.5, -1.0), (-0.5, 1.0)])
async def test_feed_when_prices_only_rise_or_fall_then_rsi_at_its_extreme(
    step: float, expected: float
) -> None:
    # Arrange: 40 closes moving one way only (RSI 100: overbought; 0: oversold)
    closes = [100.0 + step * i for i in range(40)]
    # Act
    async with AgentHarness(RsiReversionAgent, name="rsi", params=ALL_SIGNALS) as harness:
        await harness.feed(daily_bars("AAPL", closes))
        row = await harness.features.get(RSI_FEATURES, "AAPL")
    # Assert: reversion reads an overbought market as negative, an oversold one as positive
    assert row["score"].value == expected


async def test_feed_when_price_never_changes_then_nothing_published() -> None:
    # Arrange: a stale quote: the RSI is 0 / 0
    closes = [100.0] * 40
    # Act
    async with AgentHarness(RsiReversionAgent, name="rsi", params=ALL_SIGNALS) as harness:
        signals = await harness.feed(daily_bars("AAPL", closes))
        row = await harness.features.get(RSI_FEATURES, "AAPL")
    # Assert
    assert signals == []
    assert "score" not in row


def test_params_when_period_below_two_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="period"):
        RsiReversionParams(period=1)
