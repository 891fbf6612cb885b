from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.testing import AgentHarness, daily_bars
from plugins.sma_cross import SmaCrossAgent, SmaCrossParams


async def test_feed_when_uptrend_then_positive_mu_after_warmup() -> None:
    # Arrange: a steady uptrend with a wiggle, so returns have a spread
    closes = [100.0 * 1.01**i * (1.002 if i % 2 else 0.998) for i in range(30)]
    bars = daily_bars("AAPL", closes)
    # Act
    async with AgentHarness(SmaCrossAgent, name="sma", params={"fast": 5, "slow": 20}) as h:
        signals = await h.feed(bars)
    # Assert: nothing during warm-up (20 returns need 21 closes), then one signal per bar
    assert len(signals) == len(bars) - 20
    assert all(s.mu > 0 and s.sigma > 0 for s in signals)
    assert signals[0].trace_id == bars[20].trace_id


async def test_feed_when_downtrend_then_negative_mu() -> None:
    # Arrange
    closes = [100.0 * 0.99**i * (1.002 if i % 2 else 0.998) for i in range(30)]
    # Act
    async with AgentHarness(SmaCrossAgent, name="sma", params={"fast": 5, "slow": 20}) as h:
        signals = await h.feed(daily_bars("AAPL", closes))
    # Assert
    assert signals
    assert all(s.mu < 0 for s in signals)


def test_params_when_fast_not_below_slow_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="fast"):
        SmaCrossParams(fast=50, slow=20)
