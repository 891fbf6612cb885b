"""Selector: return history alignment, pairwise-complete correlation, greedy diversified top-K."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.models import RiskConfig, SelectorConfig
from engine.stages.selector import (
    AllSelector,
    PenaltySelector,
    ReturnHistory,
    selection_policy_from_config,
)
from tests.stages.factories import make_opportunity


def _history_from_returns(
    returns: dict[str, list[float | None]], lookback: int = 60, min_overlap: int = 5
) -> ReturnHistory:
    """Feed closes so that each symbol gets exactly the given returns (None = no close)."""
    history = ReturnHistory(lookback, min_overlap=min_overlap)
    closes = dict.fromkeys(returns, 100.0)
    history.update(dict(closes))
    n = max(len(r) for r in returns.values())
    for t in range(n):
        step: dict[str, float] = {}
        for symbol, series in returns.items():
            r = series[t] if t < len(series) else None
            if r is None:
                continue
            closes[symbol] *= 1.0 + r
            step[symbol] = closes[symbol]
        history.update(step)
    return history


def _correlated_history(seed: int = 3, n: int = 40) -> ReturnHistory:
    """A and B identical (corr 1), C independent, D = -A (corr -1)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.01, n)
    c = rng.normal(0, 0.01, n)
    return _history_from_returns(
        {"A": list(a), "B": list(a), "C": list(c), "D": list(-a)}, min_overlap=5
    )


def test_update_when_consecutive_closes_then_simple_returns_recorded() -> None:
    # Arrange
    history = ReturnHistory(4, min_overlap=2)
    # Act
    for close in (100.0, 110.0, 99.0):
        history.update({"AAPL": close})
    # Assert
    np.testing.assert_allclose(history.returns("AAPL"), [np.nan, np.nan, 0.1, -0.1])


def test_update_when_symbol_misses_a_step_then_no_return_that_step_nor_across_the_gap() -> None:
    # Arrange
    history = ReturnHistory(5, min_overlap=2)
    # Act
    history.update({"AAPL": 100.0})
    history.update({"AAPL": 101.0})
    history.update({})  # AAPL missing
    history.update({"AAPL": 120.0})  # a two-step move: not a one-step return
    history.update({"AAPL": 132.0})
    # Assert
    np.testing.assert_allclose(
        history.returns("AAPL"), [np.nan, 0.01, np.nan, np.nan, 0.1], rtol=1e-12
    )


def test_update_when_more_steps_than_lookback_then_only_the_window_is_kept() -> None:
    # Arrange
    history = ReturnHistory(3, min_overlap=2)
    # Act
    for i in range(10):
        history.update({"X": 100.0 + i})
    # Assert
    np.testing.assert_allclose(history.returns("X"), [1 / 106, 1 / 107, 1 / 108])


def test_correlation_when_series_have_gaps_then_pairwise_complete_observations_used() -> None:
    # Arrange
    rng = np.random.default_rng(7)
    a = list(rng.normal(0, 0.01, 30))
    b = list(rng.normal(0, 0.01, 30))
    a_gapped: list[float | None] = [None if i % 4 == 0 else r for i, r in enumerate(a)]
    b_gapped: list[float | None] = [None if i % 5 == 1 else r for i, r in enumerate(b)]
    history = _history_from_returns({"A": a_gapped, "B": b_gapped}, min_overlap=5)
    ra, rb = history.returns("A"), history.returns("B")
    common = ~np.isnan(ra) & ~np.isnan(rb)
    expected = np.corrcoef(ra[common], rb[common])[0, 1]
    # Act
    corr = history.correlation(["A", "B"])
    # Assert
    assert common.sum() < 30  # the gaps really remove observations
    assert corr[0, 1] == pytest.approx(expected, abs=1e-9)
    assert corr[1, 0] == pytest.approx(expected, abs=1e-9)
    np.testing.assert_array_equal(np.diag(corr), [1.0, 1.0])


def test_correlation_when_too_few_common_observations_or_unknown_then_one() -> None:
    # Arrange: A has returns only in the first half, B only in the second half
    history = _history_from_returns(
        {"A": [0.01, -0.02, 0.03, 0.01] + [None] * 4, "B": [None] * 4 + [0.02, 0.01, -0.01, 0.0]},
        min_overlap=3,
    )
    # Act
    corr = history.correlation(["A", "B", "NEVER_SEEN"])
    # Assert
    np.testing.assert_array_equal(corr, np.ones((3, 3)))


def test_correlation_when_series_constant_then_unknown_is_one_and_nan_free() -> None:
    # Arrange
    history = _history_from_returns({"FLAT": [0.0] * 10, "MOVE": [0.01, -0.01] * 5})
    # Act
    corr = history.correlation(["FLAT", "MOVE"])
    # Assert
    assert not np.isnan(corr).any()
    assert corr[0, 1] == 1.0


def test_correlation_when_perfect_and_inverse_then_plus_and_minus_one() -> None:
    # Arrange
    history = _correlated_history()
    # Act
    corr = history.correlation(["A", "B", "D"])
    # Assert
    assert corr[0, 1] == pytest.approx(1.0)
    assert corr[0, 2] == pytest.approx(-1.0)


@pytest.mark.parametrize("form", ["multiplicative", "subtractive"])
def test_penalty_select_when_two_names_perfectly_correlated_then_weaker_diversifier_chosen(
    form: str,
) -> None:
    # Arrange: B is almost as good as A but a copy of it; C is weaker and independent
    history = _correlated_history()
    opps = [
        make_opportunity("A", mu=0.0030, sigma=0.01),
        make_opportunity("B", mu=0.0029, sigma=0.01),
        make_opportunity("C", mu=0.0020, sigma=0.01),
    ]
    selector = PenaltySelector(2, 0.5, form=form)  # type: ignore[arg-type]
    # Act
    chosen = selector.select(opps, history)
    # Assert
    assert [o.symbol for o in chosen] == ["A", "C"]


def test_penalty_select_when_no_correlation_penalty_then_plain_top_k_by_score() -> None:
    # Arrange
    history = _correlated_history()
    opps = [
        make_opportunity(s, mu=m, sigma=0.01) for s, m in [("A", 3e-3), ("B", 2.9e-3), ("C", 2e-3)]
    ]
    # Act
    chosen = PenaltySelector(2, 0.0).select(opps, history)
    # Assert
    assert [o.symbol for o in chosen] == ["A", "B"]


def test_penalty_select_when_more_candidates_than_top_k_then_cut_at_k() -> None:
    # Arrange
    history = ReturnHistory(10)
    opps = [make_opportunity(f"S{i}", mu=0.001 * (i + 1), sigma=0.01) for i in range(6)]
    # Act
    chosen = PenaltySelector(3, 0.0).select(opps, history)
    # Assert
    assert [o.symbol for o in chosen] == ["S5", "S4", "S3"]


def test_penalty_select_when_scores_tie_then_smaller_symbol_first() -> None:
    # Arrange
    history = ReturnHistory(10)
    opps = [make_opportunity(s, mu=0.002, sigma=0.01) for s in ("MSFT", "AAPL", "GOOG")]
    # Act
    chosen = PenaltySelector(3, 0.0).select(opps, history)
    # Assert
    assert [o.symbol for o in chosen] == ["AAPL", "GOOG", "MSFT"]


def test_penalty_select_when_penalty_wipes_out_score_then_stops_before_k() -> None:
    # Arrange: unknown correlations count as 1.0, lambda 1 -> nothing after the first pick
    history = ReturnHistory(10)
    opps = [make_opportunity(s, mu=0.002, sigma=0.01) for s in ("A", "B", "C")]
    # Act
    chosen = PenaltySelector(3, 1.0).select(opps, history)
    # Assert
    assert [o.symbol for o in chosen] == ["A"]


def test_penalty_select_when_non_positive_scores_then_excluded() -> None:
    # Arrange
    history = ReturnHistory(10)
    opps = [
        make_opportunity("UP", mu=0.001),
        make_opportunity("DOWN", mu=-0.004),
        make_opportunity("ZERO", mu=0.0),
    ]
    # Act
    chosen = PenaltySelector(5, 0.5).select(opps, history)
    # Assert
    assert [o.symbol for o in chosen] == ["UP"]


def test_penalty_select_when_shorts_allowed_then_long_short_of_correlated_pair_is_a_hedge() -> None:
    # Arrange: long A and short B (corr +1) move against each other -> no penalty for B,
    # while long D (corr -1 with A, i.e. the same bet as short A) is not penalised either.
    history = _correlated_history()
    opps = [
        make_opportunity("A", mu=0.003, sigma=0.01),
        make_opportunity("B", mu=-0.0025, sigma=0.01),
        make_opportunity("C", mu=0.001, sigma=0.01),
    ]
    # Act
    chosen = PenaltySelector(2, 1.0, allow_short=True).select(opps, history)
    # Assert
    assert [o.symbol for o in chosen] == ["A", "B"]


def test_penalty_select_when_shorts_allowed_then_short_of_inverse_name_penalised() -> None:
    # Arrange: long A and short D (D = -A) are the same bet twice
    history = _correlated_history()
    opps = [
        make_opportunity("A", mu=0.003, sigma=0.01),
        make_opportunity("D", mu=-0.0025, sigma=0.01),
        make_opportunity("C", mu=0.001, sigma=0.01),
    ]
    # Act
    chosen = PenaltySelector(2, 1.0, allow_short=True).select(opps, history)
    # Assert
    assert [o.symbol for o in chosen] == ["A", "C"]


def test_all_select_when_candidates_then_every_positive_score_best_first() -> None:
    # Arrange
    opps = [
        make_opportunity("B", mu=0.001, sigma=0.01),
        make_opportunity("A", mu=0.001, sigma=0.01),
        make_opportunity("C", mu=0.004, sigma=0.02),
        make_opportunity("NEG", mu=-0.01, sigma=0.01),
    ]
    # Act
    chosen = AllSelector().select(opps, ReturnHistory(5))
    # Assert
    assert [o.symbol for o in chosen] == ["C", "A", "B"]


def test_selection_policy_from_config_when_dpp_then_not_implemented_with_hint() -> None:
    # Arrange / Act / Assert
    with pytest.raises(NotImplementedError, match="use 'penalty'"):
        selection_policy_from_config(SelectorConfig(policy="dpp"), RiskConfig())


def test_selection_policy_from_config_when_penalty_then_configured_selector() -> None:
    # Arrange
    cfg = SelectorConfig(policy="penalty", top_k=7, correlation_penalty=0.3)
    # Act
    policy = selection_policy_from_config(cfg, RiskConfig(allow_short=True))
    # Assert
    assert isinstance(policy, PenaltySelector)
    assert (policy.top_k, policy.correlation_penalty, policy.allow_short) == (7, 0.3, True)


def test_selection_policy_from_config_when_all_then_all_selector() -> None:
    # Arrange / Act
    policy = selection_policy_from_config(SelectorConfig(policy="all"), RiskConfig())
    # Assert
    assert isinstance(policy, AllSelector)


@settings(max_examples=100, deadline=None)
@given(
    n_steps=st.integers(3, 40),
    lookback=st.integers(3, 15),
    gap_a=st.integers(2, 6),
    gap_b=st.integers(2, 6),
    seed=st.integers(0, 2**16),
)
def test_correlation_when_random_gaps_and_wraparound_then_matches_pairwise_complete_numpy(
    n_steps: int, lookback: int, gap_a: int, gap_b: int, seed: int
) -> None:
    # Arrange
    rng = np.random.default_rng(seed)
    a = [None if i % gap_a == 0 else float(r) for i, r in enumerate(rng.normal(0, 0.01, n_steps))]
    b = [None if i % gap_b == 1 else float(r) for i, r in enumerate(rng.normal(0, 0.01, n_steps))]
    history = _history_from_returns({"A": a, "B": b}, lookback=lookback, min_overlap=3)
    ra, rb = history.returns("A"), history.returns("B")
    common = ~np.isnan(ra) & ~np.isnan(rb)
    # Act
    corr = history.correlation(["A", "B"])
    # Assert
    assert not np.isnan(corr).any()
    if common.sum() < 3:
        assert corr[0, 1] == 1.0
    else:
        expected = np.corrcoef(ra[common], rb[common])[0, 1]
        assert corr[0, 1] == pytest.approx(expected, abs=1e-7)
