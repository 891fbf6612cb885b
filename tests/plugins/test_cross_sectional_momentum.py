"""CrossSectionalMomentumAgent on real daily closes (20 US large caps), through the real harness."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts import Bar, Horizon
from engine.testing import AgentHarness, make_bar
from plugins.cross_sectional_momentum import (
    XSMOM_FEATURES,
    CrossSectionalMomentumAgent,
    CrossSectionalMomentumParams,
)
from tests.calibration import stock_bars
from tests.kit.signal_checks import (
    assert_valid_signals,
    assert_warm_up,
    feature_values,
    steps_of,
)

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agents leave out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}

SYMBOLS = ["AAPL", "KO", "XOM", "JPM", "PG", "MSFT", "AMD"]


def _reference_scores(
    steps: list[list[Bar]], t: int, lookback: int = 252, skip: int = 21
) -> dict[str, float]:
    """The scaled ranks of step t, recomputed from the raw closes: momentum
    P(t - skip) / P(t - lookback) - 1 of every symbol (full panel), ranked by sorting the
    (momentum, symbol) pairs, ties not expected on real data."""
    closes: dict[str, list[float]] = {bar.symbol: [] for bar in steps[0]}
    for step in steps[: t + 1]:
        for bar in step:
            closes[bar.symbol].append(bar.close)
    moms = sorted((c[t - skip] / c[t - lookback] - 1.0, s) for s, c in closes.items())
    n = len(moms)
    return {s: -1.0 + 2.0 * rank / (n - 1) for rank, (_, s) in enumerate(moms)}


async def test_feed_when_warming_up_then_silent_until_history_then_valid_signals() -> None:
    # Arrange: 5 symbols; ranks need 252 closes up to the previous step, the first 1m sample
    # 21 bars more, then min_samples / 5 steps
    symbols = SYMBOLS[:5]
    bars = stock_bars(date(1995, 1, 1), date(1997, 6, 30), symbols=symbols)
    # Act
    async with AgentHarness(
        CrossSectionalMomentumAgent, name="xsmom", params={**ALL_SIGNALS, "min_samples": 200}
    ) as harness:
        signals = await harness.feed(bars)
    # Assert
    assert_warm_up(signals, bars, symbols, min_first_step=252 + 21 + 200 // len(symbols) - 1)
    assert_valid_signals(signals, Horizon.M1)
    assert all(-1.0 <= v <= 1.0 for v in feature_values(signals, "score"))
    assert harness.stats.failed == 0


async def test_feed_when_real_data_then_published_rank_equals_brute_force() -> None:
    # Arrange: read the store back at the end of chunks of steps, from the first ranked step on
    steps = steps_of(stock_bars(date(1995, 1, 1), date(1996, 12, 31), symbols=SYMBOLS))
    checked = 0
    async with AgentHarness(
        CrossSectionalMomentumAgent, name="xsmom", params=ALL_SIGNALS
    ) as harness:
        await harness.feed([bar for step in steps[:252] for bar in step])
        empty = await harness.features.get_many(XSMOM_FEATURES, SYMBOLS)
        fed = 252
        for end in range(253, len(steps), 29):
            # Act
            await harness.feed([bar for step in steps[fed:end] for bar in step])
            fed = end
            rows = await harness.features.get_many(XSMOM_FEATURES, SYMBOLS)
            # Assert
            expected = _reference_scores(steps, end - 1)
            for symbol in SYMBOLS:
                assert rows[symbol]["score"].ts == steps[end - 1][0].ts_event
                assert rows[symbol]["score"].value == pytest.approx(expected[symbol], abs=1e-12)
                checked += 1
    assert not any("score" in row for row in empty.values())  # 251 closes before step 251
    assert checked >= 8 * len(SYMBOLS)


@pytest.mark.parametrize(("lookback", "skip"), [(252, 21), (63, 1)])
async def test_feed_when_step_bars_shuffled_or_their_closes_altered_then_same_ranking(
    lookback: int, skip: int
) -> None:
    # Arrange: the same history; the last step's bars in other orders, or with other closes
    # (the ranking of step t must use no close of step t; with skip = 1 the latest close
    # before the step is in the momentum, so using a step-t close would change the ranks)
    bars = stock_bars(date(1995, 1, 1), date(1996, 3, 31), symbols=SYMBOLS)
    *history, last = steps_of(bars)
    earlier = [bar for step in history for bar in step]
    variants = [
        last,
        last[::-1],
        last[3:] + last[:3],
        [last[i] for i in (4, 0, 6, 2, 5, 1, 3)],
        [
            make_bar(b.symbol, b.ts_event, b.close * (3.0 if i % 2 else 0.3))
            for i, b in enumerate(last)
        ],
        [
            make_bar(b.symbol, b.ts_event, b.close * (0.3 if i % 2 else 3.0))
            for i, b in enumerate(last[::-1])
        ],
    ]
    params = {**ALL_SIGNALS, "lookback": lookback, "skip": skip}
    # Act
    rankings = []
    for variant in variants:
        async with AgentHarness(
            CrossSectionalMomentumAgent, name="xsmom", params=params
        ) as harness:
            await harness.feed(earlier + variant)
            rows = await harness.features.get_many(XSMOM_FEATURES, SYMBOLS)
        rankings.append({s: (rows[s]["score"].ts, rows[s]["score"].value) for s in SYMBOLS})
    # Assert
    assert all(r == rankings[0] for r in rankings[1:])
    assert all(ts == last[0].ts_event for ts, _ in rankings[0].values())
    expected = _reference_scores([*history, last], len(history), lookback, skip)
    assert {s: v for s, (_, v) in rankings[0].items()} == pytest.approx(expected, abs=1e-12)


async def test_feed_when_symbols_trend_at_different_rates_then_fastest_ranks_top() -> None:
    # Arrange: five synthetic symbols with steady trends from -0.2 % to +0.2 % a day and a
    # small wiggle (so vol is not floored to a constant); short windows keep the test small
    t0 = datetime(2020, 1, 1, 21, tzinfo=UTC)
    drifts = {f"S{i}": 0.001 * (i - 2) for i in range(5)}
    closes = dict.fromkeys(drifts, 100.0)
    bars = []
    for day in range(60):
        for symbol, drift in drifts.items():
            closes[symbol] *= 1.0 + drift + (0.01 if day % 2 else -0.01)
            bars.append(make_bar(symbol, t0 + timedelta(days=day), closes[symbol]))
    params = {**ALL_SIGNALS, "lookback": 30, "skip": 5}
    # Act
    async with AgentHarness(CrossSectionalMomentumAgent, name="xsmom", params=params) as harness:
        await harness.feed(bars)
        rows = await harness.features.get_many(XSMOM_FEATURES, list(drifts))
    # Assert: evenly spaced ranks from the weakest trend (-1) to the strongest (+1)
    assert [rows[s]["score"].value for s in drifts] == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])


def test_params_when_skip_not_below_lookback_then_rejected() -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValidationError, match="skip"):
        CrossSectionalMomentumParams(lookback=21, skip=21)


def test_params_when_skip_zero_then_rejected() -> None:
    # Arrange / Act / Assert: a zero skip would need the step's own closes to rank
    with pytest.raises(ValidationError, match="skip"):
        CrossSectionalMomentumParams(skip=0)
