"""Market features the pipeline writes and the selector/risk read back."""

from __future__ import annotations

import math

import numpy as np

from engine.features.market import realized_vol, realized_vols
from engine.stages.selector import ReturnHistory, StoredReturns


def test_realized_vol_when_enough_returns_then_annualised_sample_std_of_last_20() -> None:
    # Arrange
    rng = np.random.default_rng(3)
    returns = np.concatenate([[np.nan] * 5, rng.normal(0, 0.01, 40)])
    # Act
    vol = realized_vol(returns)
    # Assert
    expected = float(np.std(returns[-20:], ddof=1)) * math.sqrt(252)
    assert math.isclose(vol, expected, rel_tol=1e-12)


def test_realized_vols_when_gaps_in_window_then_std_of_the_valid_ones_per_row() -> None:
    # Arrange
    rng = np.random.default_rng(5)
    matrix = rng.normal(0, 0.01, (3, 30))
    matrix[1, -5:] = np.nan
    matrix[2, -20:-1] = np.nan  # one valid return left: too few
    # Act
    vols = realized_vols(matrix)
    # Assert
    assert math.isclose(vols[0], float(np.std(matrix[0, -20:], ddof=1)) * math.sqrt(252))
    assert math.isclose(vols[1], float(np.std(matrix[1, -20:-5], ddof=1)) * math.sqrt(252))
    assert math.isnan(vols[2])


def test_realized_vol_when_fewer_than_two_returns_then_nan() -> None:
    # Act / Assert
    assert math.isnan(realized_vol(np.array([np.nan, 0.01])))


def test_correlation_when_read_back_from_stored_rows_then_equals_in_process_history() -> None:
    # Arrange: 6 symbols, 80 steps, gaps (missing closes) and one symbol joining late
    rng = np.random.default_rng(11)
    history = ReturnHistory(60)
    symbols = [f"S{i}" for i in range(6)]
    prices = dict.fromkeys(symbols, 100.0)
    for t in range(80):
        closes = {}
        for i, s in enumerate(symbols):
            prices[s] *= 1 + rng.normal(0, 0.01)
            if (i == 5 and t < 50) or rng.random() < 0.05:
                continue
            closes[s] = prices[s]
        history.update(closes)
    stored = StoredReturns(
        {s: history.returns(s) for s in history.symbols()},
        lookback=history.lookback,
        min_overlap=history.min_overlap,
    )
    # Act
    expected = history.correlation(symbols)
    actual = stored.correlation(symbols)
    # Assert: bit-identical, so a run reading the store decides like one that does not
    assert np.array_equal(expected, actual)
