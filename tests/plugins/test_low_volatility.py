"""LowVolatilityAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts import Horizon
from engine.testing import AgentHarness, make_bar
from plugins.low_volatility import (
    LOW_VOLATILITY_FEATURES,
    LowVolatilityAgent,
    LowVolatilityParams,
)
from tests.calibration import stock_bars
from tests.kit.signal_checks import assert_valid_signals, assert_warm_up, ew_vol, steps_of

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agents leave out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}

SYMBOLS = ["AAPL", "KO", "XOM", "JPM", "PG", "MSFT"]


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; vol needs 20 returns (scores from the next step), the first 1m sample
    # 21 bars more, then min_samples / 5 steps
    symbols = SYMBOLS[:5]
    bars = stock_bars(date(1995, 1, 1), date(1995, 12, 31), symbols=symbols)
    # Act
    async with AgentHarness(
        LowVolatilityAgent, name="low_vol", params={**ALL_SIGNALS, "min_samples": 100}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert_warm_up(signals, bars, symbols, min_first_step=21 + 21 + 100 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.M1)
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_score_equals_brute_force() -> None:
    # Arrange: read the store back at the end of several chunks of steps
    steps = steps_of(stock_bars(date(1995, 1, 1), date(1996, 6, 30), symbols=SYMBOLS))
    checked = 0
    async with AgentHarness(LowVolatilityAgent, name="low_vol", params=ALL_SIGNALS) as harness:
        for end in range(37, len(steps), 37):
            # Act
            await harness.feed([bar for step in steps[end - 37 : end] for bar in step])
            rows = await harness.features.get_many(LOW_VOLATILITY_FEATURES, SYMBOLS)
            # Assert: the score from every vol at the previous step, vol_daily the current one
            before = {
                s: [b.close for st in steps[: end - 1] for b in st if b.symbol == s]
                for s in SYMBOLS
            }
            now = {s: [b.close for st in steps[:end] for b in st if b.symbol == s] for s in SYMBOLS}
            log_vols = {s: math.log(ew_vol(closes)) for s, closes in before.items()}
            centre = sum(log_vols.values()) / len(log_vols)
            for symbol in SYMBOLS:
                row = rows[symbol]
                assert row["score"].ts == steps[end - 1][0].ts_event
                assert row["score"].value == pytest.approx(centre - log_vols[symbol], abs=1e-9)
                assert row["vol_daily"].value == pytest.approx(ew_vol(now[symbol]), rel=1e-9)
                checked += 1
    assert checked >= 8 * len(SYMBOLS)


async def test_feed_when_symbols_differ_in_volatility_then_calmest_scores_highest() -> None:
    # Arrange: six synthetic symbols alternating +-a, with a from 0.5 % to 3 % a day
    t0 = datetime(2020, 1, 1, 21, tzinfo=UTC)
    amplitudes = {f"S{i}": 0.005 * (i + 1) for i in range(6)}
    bars = []
    closes = dict.fromkeys(amplitudes, 100.0)
    for day in range(80):
        for symbol, a in amplitudes.items():
            closes[symbol] *= 1.0 + (a if day % 2 else -a)
            bars.append(make_bar(symbol, t0 + timedelta(days=day), closes[symbol]))
    # Act
    async with AgentHarness(LowVolatilityAgent, name="low_vol", params=ALL_SIGNALS) as harness:
        await harness.feed(bars)
        rows = await harness.features.get_many(LOW_VOLATILITY_FEATURES, list(amplitudes))
    # Assert: scores fall as volatility rises, sum to zero, and equal log(geomean / own)
    scores = [float(rows[s]["score"].value) for s in amplitudes]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(0.0, abs=1e-12)
    assert scores[0] - scores[-1] == pytest.approx(math.log(6.0), rel=1e-3)


async def test_feed_when_step_bars_reordered_or_altered_then_same_scores() -> None:
    # Arrange: the same history, the last step's bars in another order or with other closes
    bars = stock_bars(date(1995, 1, 1), date(1995, 6, 30), symbols=SYMBOLS)
    *history, last = steps_of(bars)
    earlier = [bar for step in history for bar in step]
    variants = [
        last,
        last[::-1],
        last[2:] + last[:2],
        [
            make_bar(b.symbol, b.ts_event, b.close * (2.0 if i % 2 else 0.5))
            for i, b in enumerate(last)
        ],
    ]
    # Act
    scores = []
    for variant in variants:
        async with AgentHarness(LowVolatilityAgent, name="low_vol", params=ALL_SIGNALS) as harness:
            await harness.feed(earlier + variant)
            rows = await harness.features.get_many(LOW_VOLATILITY_FEATURES, SYMBOLS)
        scores.append({s: (rows[s]["score"].ts, rows[s]["score"].value) for s in SYMBOLS})
    # Assert
    assert all(v == scores[0] for v in scores[1:])
    assert all(ts == last[0].ts_event for ts, _ in scores[0].values())


def test_params_when_cross_section_of_one_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="min_symbols"):
        LowVolatilityParams(min_symbols=1)
