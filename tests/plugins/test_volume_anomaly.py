"""VolumeAnomalyAgent on the bundled GOOG daily OHLCV file (real data), through the harness."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from contracts import Bar, Horizon
from engine.testing import AgentHarness, make_bar
from plugins.volume_anomaly import (
    NO_VOLUME,
    VOLUME_ANOMALY_FEATURES,
    VolumeAnomalyAgent,
    VolumeAnomalyParams,
)
from tests.calibration import bar_ts
from tests.calibration.ohlcv import GOOG_SYMBOL, goog_bars, goog_table
from tests.kit.signal_checks import assert_valid_signals, assert_warm_up, ew_mean_std

# These tests study the calibrated output itself, so they ask for every signal, including
# the zero-confidence ones the agent leaves out by default.
ALL_SIGNALS = {"emit_zero_confidence": True}


async def test_feed_when_warming_up_then_silent_until_calibrated_then_valid_signals() -> None:
    # Arrange: 2004-08 .. 2007: baseline and vol need 20 bars, the calibrator 100 samples more
    bars = goog_bars(end=date(2007, 12, 31))
    params = {**ALL_SIGNALS, "min_samples": 100}
    # Act
    async with AgentHarness(VolumeAnomalyAgent, name="volume", params=params) as harness:
        signals = await harness.feed(bars)
    # Assert
    first = assert_warm_up(signals, bars, [GOOG_SYMBOL], min_first_step=20 + 100)
    assert_valid_signals(signals, Horizon.D1)
    # one bar a step, so `first` is also the bar's index; once calibrated, every bar gets a signal
    assert len(signals) == len(bars) - first
    assert harness.stats.failed == 0
    assert harness.agent.skips == {}


async def test_feed_when_real_goog_then_published_indicator_equals_brute_force() -> None:
    # Arrange: one bar per step, the store read back after each; recomputed from the raw rows
    rows = [r for r in goog_table() if r[0] <= date(2005, 9, 30)]
    bars = goog_bars(end=date(2005, 9, 30))
    p = VolumeAnomalyParams()
    published: list[tuple[float, float, float] | None] = []
    # Act
    async with AgentHarness(VolumeAnomalyAgent, name="volume", params={}) as harness:
        for bar in bars:
            await harness.feed([bar])
            row = await harness.features.get(VOLUME_ANOMALY_FEATURES, GOOG_SYMBOL)
            if row and row["score"].ts == bar.ts_event:
                published.append(
                    (row["score"].value, row["abnormal_volume"].value, row["vol_daily"].value)
                )
            else:
                published.append(None)
    # Assert
    closes = [r[4] for r in rows]
    log_volumes = [math.log(r[5]) for r in rows]
    checked = 0
    for t in range(len(rows)):
        returns = [closes[k] / closes[k - 1] - 1.0 for k in range(1, t + 1)]
        if t < p.min_volume_obs or len(returns) < p.min_vol_obs:
            assert published[t] is None
            continue
        mean, spread = ew_mean_std(log_volumes[:t], p.volume_halflife)
        v = (log_volumes[t] - mean) / spread
        vol = max(ew_mean_std(returns, p.vol_halflife)[1], p.vol_floor)
        r = returns[-1]
        x = 0.0 if r == 0.0 or v <= 0.0 else math.copysign(min(v, p.clip), r)
        got = published[t]
        assert got is not None, t
        assert got[0] == pytest.approx(x, rel=1e-9, abs=1e-12)
        assert got[1] == pytest.approx(v, rel=1e-9, abs=1e-12)
        assert got[2] == pytest.approx(vol, rel=1e-9)
        checked += 1
    assert checked > 250
    assert any(g is not None and g[0] > 0 for g in published)
    assert any(g is not None and g[0] < 0 for g in published)


def _bar(day: int, close: float, volume: float | None) -> Bar:
    ts = datetime(2020, 1, 1, 21, tzinfo=UTC) + timedelta(days=day)
    return make_bar("XYZ", ts, close, volume=volume)


async def test_feed_when_heavy_volume_on_up_down_and_quiet_days_then_sign_follows_the_move() -> (
    None
):
    # Arrange: 30 days of alternating ordinary volumes, then a heavy up day, a heavy down day
    # and a quiet up day
    params = {"min_vol_obs": 5, "min_volume_obs": 5, "volume_halflife": 10.0}
    closes = [100.0 * (1.0 + 0.01 * (-1) ** i) for i in range(30)]
    warmup = [_bar(i, c, 1e6 * (1.2 if i % 2 else 0.8)) for i, c in enumerate(closes)]
    heavy_up = _bar(30, closes[-1] * 1.02, 5e6)
    heavy_down = _bar(31, closes[-1] * 1.0, 5e6)
    quiet_up = _bar(32, closes[-1] * 1.01, 2e5)
    scores: list[float] = []
    # Act
    async with AgentHarness(VolumeAnomalyAgent, name="volume", params=params) as harness:
        await harness.feed(warmup)
        for bar in (heavy_up, heavy_down, quiet_up):
            await harness.feed([bar])
            row = await harness.features.get(VOLUME_ANOMALY_FEATURES, "XYZ")
            assert row["score"].ts == bar.ts_event
            scores.append(row["score"].value)
    # Assert: heavy volume scores the direction of the move, capped at 4; a quiet day scores 0
    assert 0.0 < scores[0] <= 4.0
    assert -4.0 <= scores[1] < 0.0
    assert scores[2] == 0.0


async def test_feed_when_close_only_bars_then_no_signals_and_skips_counted() -> None:
    # Arrange: the GOOG closes without volume (what the close-only 20-stock file gives)
    bars = goog_bars(end=date(2006, 6, 30), alter=lambda b: make_bar(b.symbol, b.ts_event, b.close))
    # Act
    async with AgentHarness(
        VolumeAnomalyAgent, name="volume", params={**ALL_SIGNALS, "min_samples": 20}
    ) as harness:
        signals = await harness.feed(bars)
        row = await harness.features.get(VOLUME_ANOMALY_FEATURES, GOOG_SYMBOL)
    # Assert
    assert signals == []
    assert row == {}
    assert harness.agent.skips == {NO_VOLUME: len(bars)}
    assert harness.stats.failed == 0


async def test_feed_when_zero_volume_bar_then_no_indicator_for_it_and_baseline_unchanged() -> None:
    # Arrange: a day without trades (volume 0) in the middle of real data
    zero_ts = bar_ts(date(2005, 6, 1))
    bars = goog_bars(
        end=date(2005, 6, 30),
        alter=lambda b: (
            make_bar(b.symbol, b.ts_event, b.close, volume=0.0) if b.ts_event == zero_ts else b
        ),
    )
    # Act
    async with AgentHarness(VolumeAnomalyAgent, name="volume", params={}) as harness:
        await harness.feed([b for b in bars if b.ts_event < zero_ts])
        before = await harness.features.get(VOLUME_ANOMALY_FEATURES, GOOG_SYMBOL)
        await harness.feed([b for b in bars if b.ts_event == zero_ts])
        during = await harness.features.get(VOLUME_ANOMALY_FEATURES, GOOG_SYMBOL)
        baseline = harness.agent.states[GOOG_SYMBOL].extra.log_volume.count
        await harness.feed([b for b in bars if b.ts_event > zero_ts])
        after = await harness.features.get(VOLUME_ANOMALY_FEATURES, GOOG_SYMBOL)
    # Assert: nothing written for the zero-volume bar, which the baseline does not see; the
    # next bar publishes again
    assert during["score"].ts == before["score"].ts < zero_ts
    assert after["score"].ts > zero_ts
    assert baseline == sum(1 for b in bars if b.ts_event < zero_ts)
    assert harness.agent.skips == {NO_VOLUME: 1}


def test_params_when_warmup_longer_than_baseline_memory_then_rejected() -> None:
    # Arrange / Act / Assert: a 5-bar half-life remembers ~14 volumes, not 50
    with pytest.raises(ValidationError, match="min_volume_obs"):
        VolumeAnomalyParams(volume_halflife=5.0, min_volume_obs=50)
