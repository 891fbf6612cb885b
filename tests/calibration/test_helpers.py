"""The small O(1) helpers agents share: RingBuffer, EwMoments, SymbolState."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.calibration import EwMoments, RingBuffer


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=300),
    capacity=st.integers(min_value=1, max_value=40),
)
def test_ring_buffer_when_appending_then_matches_a_list_window(
    values: list[float], capacity: int
) -> None:
    # Arrange
    ring = RingBuffer(capacity)
    # Act
    for v in values:
        ring.append(v)
    # Assert
    window = values[-capacity:]
    assert len(ring) == len(window)
    assert ring.full == (len(values) >= capacity)
    assert [ring.ago(i) for i in range(len(window))] == window[::-1]
    assert ring.sum == pytest.approx(math.fsum(window), abs=1e-6)
    assert ring.mean == pytest.approx(math.fsum(window) / len(window), abs=1e-6)


def test_ring_buffer_when_return_asked_then_uses_the_right_lags() -> None:
    # Arrange
    ring = RingBuffer(6)
    # Act
    for price in (100.0, 101.0, 102.0, 103.0, 104.0, 105.0, 110.0):
        ring.append(price)
    # Assert: stored 101..110; 5 bars back from the latest, and 4 -> 1 bars back
    assert ring.simple_return(5) == pytest.approx(110.0 / 101.0 - 1.0)
    assert ring.simple_return(4, skip=1) == pytest.approx(105.0 / 102.0 - 1.0)
    assert ring.simple_return(6) is None
    with pytest.raises(IndexError):
        ring.ago(6)
    with pytest.raises(ValueError, match="skip"):
        ring.simple_return(3, skip=3)


def test_ring_buffer_when_millions_of_updates_then_sum_does_not_drift() -> None:
    # Arrange
    ring = RingBuffer(50)
    rng = random.Random(0)
    # Act
    for _ in range(200_000):
        ring.append(rng.uniform(1e6, 1e6 + 1.0))
    # Assert
    exact = math.fsum(ring.ago(i) for i in range(50))
    assert ring.sum == pytest.approx(exact, rel=1e-14)


def test_ew_moments_when_fed_then_matches_weighted_formula() -> None:
    # Arrange
    rng = random.Random(1)
    values = [rng.gauss(0.01, 0.02) for _ in range(400)]
    ew = EwMoments(halflife=30.0)
    # Act
    for v in values:
        ew.update(v)
    # Assert: reliability-weighted mean and unbiased variance, computed directly
    lam = 0.5 ** (1 / 30.0)
    w = [lam ** (len(values) - 1 - i) for i in range(len(values))]
    sw, sw2 = sum(w), sum(wi * wi for wi in w)
    mean = sum(wi * v for wi, v in zip(w, values, strict=True)) / sw
    var = sum(wi * (v - mean) ** 2 for wi, v in zip(w, values, strict=True)) / (sw - sw2 / sw)
    assert ew.mean == pytest.approx(mean, rel=1e-9)
    assert ew.variance == pytest.approx(var, rel=1e-9)
    assert ew.std == pytest.approx(math.sqrt(var), rel=1e-9)
    assert ew.n_eff == pytest.approx(sw * sw / sw2)
    assert ew.count == 400


def test_ew_moments_when_constant_or_single_then_zero_variance() -> None:
    # Arrange
    one, flat = EwMoments(10.0), EwMoments(10.0)
    # Act
    one.update(5.0)
    for _ in range(100):
        flat.update(1e8 + 0.1)
    # Assert
    assert one.variance == 0.0
    assert flat.variance == pytest.approx(0.0, abs=1e-12)
    assert flat.mean == pytest.approx(1e8 + 0.1)


def test_symbol_state_when_fed_closes_then_vol_floored_and_available_after_min_obs() -> None:
    # Arrange
    from datetime import UTC, datetime, timedelta

    from engine.calibrated import CalibratedAgentParams, SymbolState

    params = CalibratedAgentParams(min_vol_obs=3, vol_floor=0.01)
    state = SymbolState(params, history=3)
    t0 = datetime(2000, 1, 3, tzinfo=UTC)
    # Act / Assert: three returns are needed before a volatility is trusted
    vols = []
    for i, close in enumerate((100.0, 100.0, 100.0, 100.0, 100.0)):
        state.update(close, t0 + timedelta(days=i))
        vols.append(state.daily_vol())
    assert vols[:3] == [None, None, None]
    assert vols[3:] == [0.01, 0.01]  # flat prices: the floor, never zero
    assert state.closes.ago(0) == 100.0
    assert len(state.closes) == 3
    assert state.last_ts == t0 + timedelta(days=4)
    assert state.last_return == 0.0
