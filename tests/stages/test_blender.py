"""Blend policies: horizon scaling, precision weights, conservative sigma, quantiles, tail risk."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from config.models import BlenderConfig, RiskConfig
from contracts import Horizon, Opportunity, Regime, Signal
from engine.stages.blender import (
    PassthroughBlender,
    PrecisionBlender,
    blend_policy_from_config,
    normal_tail_risk,
    scale_to_horizon,
)
from tests.stages.factories import T0, make_signal

NOW = T0


def _blend(
    blender: PrecisionBlender | PassthroughBlender, signals: list[Signal]
) -> Opportunity | None:
    return blender.blend("AAPL", signals, step=T0, now=NOW, trace_id="f" * 32)


def test_scale_to_horizon_when_daily_to_weekly_then_mu_linear_sigma_sqrt() -> None:
    # Arrange / Act
    mu, sigma = scale_to_horizon(0.001, 0.02, Horizon.D1, Horizon.W1)
    # Assert
    assert mu == pytest.approx(0.005)
    assert sigma == pytest.approx(0.02 * math.sqrt(5))


def test_blend_when_signal_on_other_horizon_then_scaled_to_common_horizon() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    sig = make_signal("a", mu=0.021, sigma=0.0458, horizon=Horizon.M1)
    # Act
    opp = _blend(blender, [sig])
    # Assert
    assert opp is not None
    assert opp.horizon is Horizon.D1
    assert opp.mu == pytest.approx(0.021 / 21)
    assert opp.sigma == pytest.approx(0.0458 / math.sqrt(21))
    assert opp.contributions[0].mu == pytest.approx(0.001)


def test_blend_when_two_signals_then_weights_proportional_to_confidence_over_variance() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    a = make_signal("a", mu=0.002, sigma=0.01, confidence=1.0)
    b = make_signal("b", mu=-0.001, sigma=0.02, confidence=0.5)
    # Act
    opp = _blend(blender, [a, b])
    # Assert: raw weights 1/1e-4 = 10000 and 0.5/4e-4 = 1250 -> 8/9 and 1/9
    assert opp is not None
    weights = {c.agent: c.weight for c in opp.contributions}
    assert weights["a"] == pytest.approx(8 / 9)
    assert weights["b"] == pytest.approx(1 / 9)
    assert opp.mu == pytest.approx(8 / 9 * 0.002 + 1 / 9 * -0.001)


def test_blend_when_two_signals_then_sigma_is_weighted_mean_plus_disagreement() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    a = make_signal("a", mu=0.002, sigma=0.01)
    b = make_signal("b", mu=-0.001, sigma=0.02)
    # Act
    opp = _blend(blender, [a, b])
    # Assert
    assert opp is not None
    w_a, w_b = 0.8, 0.2
    mu = w_a * 0.002 + w_b * -0.001
    expected = math.sqrt(
        (w_a * 0.01 + w_b * 0.02) ** 2 + w_a * (0.002 - mu) ** 2 + w_b * (-0.001 - mu) ** 2
    )
    assert opp.sigma == pytest.approx(expected)


def test_blend_when_agents_agree_exactly_then_sigma_not_shrunk_by_their_number() -> None:
    # Arrange: five copies of one view must not look sqrt(5) times more certain
    blender = PrecisionBlender(Horizon.D1)
    signals = [make_signal(f"agent_{i}", mu=0.001, sigma=0.02) for i in range(5)]
    # Act
    opp = _blend(blender, signals)
    # Assert
    assert opp is not None
    assert opp.sigma == pytest.approx(0.02)
    assert opp.mu == pytest.approx(0.001)


def test_blend_when_agents_disagree_then_sigma_exceeds_each_claim() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    signals = [make_signal("a", mu=0.03, sigma=0.01), make_signal("b", mu=-0.03, sigma=0.01)]
    # Act
    opp = _blend(blender, signals)
    # Assert
    assert opp is not None
    assert opp.mu == pytest.approx(0.0)
    assert opp.sigma == pytest.approx(math.sqrt(0.01**2 + 0.03**2))


def test_blend_when_one_confidence_zero_then_its_weight_is_zero_and_it_is_listed() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    a = make_signal("a", mu=0.002, sigma=0.01, confidence=0.7)
    b = make_signal("b", mu=-0.05, sigma=0.01, confidence=0.0)
    # Act
    opp = _blend(blender, [a, b])
    # Assert
    assert opp is not None
    assert {c.agent: c.weight for c in opp.contributions} == {"a": 1.0, "b": 0.0}
    assert opp.mu == pytest.approx(0.002)
    assert opp.sigma == pytest.approx(0.01)


def test_blend_when_all_confidences_zero_then_none() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    signals = [make_signal("a", confidence=0.0), make_signal("b", confidence=0.0)]
    # Act
    opp = _blend(blender, signals)
    # Assert
    assert opp is None


def test_blend_when_no_signals_then_none() -> None:
    # Arrange / Act / Assert
    assert _blend(PrecisionBlender(Horizon.D1), []) is None


def test_blend_when_signal_of_other_symbol_then_value_error() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    # Act / Assert
    with pytest.raises(ValueError, match="MSFT"):
        _blend(blender, [make_signal("a", symbol="MSFT")])


def test_blend_when_quantiles_requested_then_normal_quantiles_at_levels() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1, quantile_levels=(0.1, 0.5, 0.9))
    # Act
    opp = _blend(blender, [make_signal("a", mu=0.001, sigma=0.02)])
    # Assert
    assert opp is not None
    assert [q.level for q in opp.quantiles] == [0.1, 0.5, 0.9]
    z = NormalDist().inv_cdf(0.9)
    assert [q.value for q in opp.quantiles] == pytest.approx(
        [0.001 - 0.02 * z, 0.001, 0.001 + 0.02 * z]
    )


def test_blend_when_cvar_alpha_set_then_normal_var_and_cvar_as_positive_losses() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1, cvar_alpha=0.975)
    # Act
    opp = _blend(blender, [make_signal("a", mu=0.0, sigma=0.01)])
    # Assert
    assert opp is not None
    z = NormalDist().inv_cdf(0.975)
    assert opp.var == pytest.approx(0.01 * z)
    assert opp.cvar == pytest.approx(0.01 * NormalDist().pdf(z) / 0.025)
    assert opp.cvar is not None
    assert opp.var is not None
    assert opp.cvar > opp.var


def test_normal_tail_risk_when_tail_is_still_a_gain_then_floored_at_zero() -> None:
    # Arrange / Act
    var, cvar = normal_tail_risk(0.5, 0.01, 0.975)
    # Assert
    assert (var, cvar) == (0.0, 0.0)


def test_blend_when_weights_differ_then_regime_and_trace_of_largest_weight_signal() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    weak = make_signal("a", sigma=0.04, regime=Regime.CRISIS)
    strong = make_signal("b", sigma=0.01, regime=Regime.CALM_UPTREND)
    # Act
    opp = _blend(blender, [weak, strong])
    # Assert
    assert opp is not None
    assert opp.regime is Regime.CALM_UPTREND
    assert opp.trace_id == strong.trace_id
    assert opp.blender == "precision"
    assert opp.model_version == "precision-v0"
    assert opp.ts_event == T0


def test_blend_when_input_order_differs_then_identical_opportunity_sorted_by_agent() -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.D1)
    signals = [
        make_signal("zeta", mu=0.003, sigma=0.03, confidence=0.3),
        make_signal("alpha", mu=-0.001, sigma=0.011, confidence=0.9),
        make_signal("mid", mu=0.0005, sigma=0.02, confidence=0.6),
    ]
    # Act
    forward = _blend(blender, signals)
    backward = _blend(blender, list(reversed(signals)))
    # Assert
    assert forward is not None
    assert backward is not None
    assert forward.to_json() == backward.to_json()
    assert [c.agent for c in forward.contributions] == ["alpha", "mid", "zeta"]
    assert [c.signal_trace_id for c in forward.contributions] == [
        signals[1].trace_id,
        signals[2].trace_id,
        signals[0].trace_id,
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-0.2, 0.2),
            st.floats(1e-4, 0.5),
            st.sampled_from(list(Horizon)),
            st.floats(0.0, 1.0),
        ),
        min_size=1,
        max_size=6,
    )
)
# Found by hypothesis: a subnormal confidence once underflowed to an all-zero weight.
@example([(0.0, 0.5, Horizon.H1, 5e-324)])
def test_blend_when_random_signals_then_valid_non_crossing_and_sigma_at_least_weighted_mean(
    raw: list[tuple[float, float, Horizon, float]],
) -> None:
    # Arrange
    blender = PrecisionBlender(Horizon.W1)
    signals = [
        make_signal(f"a{i}", mu=mu, sigma=sigma, horizon=h, confidence=c)
        for i, (mu, sigma, h, c) in enumerate(raw)
    ]
    # Act
    opp = _blend(blender, signals)
    # Assert
    if all(c == 0.0 for *_, c in raw):
        assert opp is None
        return
    assert opp is not None  # the Opportunity validator rejects crossing quantiles
    values = [q.value for q in opp.quantiles]
    assert values == sorted(values)
    assert math.fsum(c.weight for c in opp.contributions) == pytest.approx(1.0)
    weighted_sigma = math.fsum(c.weight * c.sigma for c in opp.contributions)
    assert opp.sigma >= weighted_sigma * (1 - 1e-12)
    assert min(c.mu for c in opp.contributions) - 1e-12 <= opp.mu
    assert opp.mu <= max(c.mu for c in opp.contributions) + 1e-12


def test_passthrough_when_single_signal_then_same_view_scaled_to_common_horizon() -> None:
    # Arrange
    blender = PassthroughBlender(Horizon.D1)
    sig = make_signal("sma", mu=0.005, sigma=0.03, horizon=Horizon.W1, regime=Regime.CALM_RANGE)
    # Act
    opp = _blend(blender, [sig])
    # Assert
    assert opp is not None
    assert opp.mu == pytest.approx(0.001)
    assert opp.sigma == pytest.approx(0.03 / math.sqrt(5))
    assert opp.trace_id == sig.trace_id
    assert opp.regime is Regime.CALM_RANGE
    assert opp.blender == "passthrough"


def test_passthrough_when_several_signals_then_highest_confidence_one_wins() -> None:
    # Arrange
    blender = PassthroughBlender(Horizon.D1)
    low = make_signal("a", mu=0.01, sigma=0.01, confidence=0.4)
    high = make_signal("b", mu=-0.002, sigma=0.05, confidence=0.9)
    # Act
    opp = _blend(blender, [low, high])
    # Assert
    assert opp is not None
    assert (opp.mu, opp.sigma, opp.trace_id) == (-0.002, 0.05, high.trace_id)
    assert {c.agent: c.weight for c in opp.contributions} == {"a": 0.0, "b": 1.0}


def test_passthrough_when_best_confidence_zero_then_none() -> None:
    # Arrange / Act / Assert
    assert _blend(PassthroughBlender(Horizon.D1), [make_signal("a", confidence=0.0)]) is None


def test_blend_policy_from_config_when_lightgbm_then_not_implemented_with_hint() -> None:
    # Arrange
    cfg = BlenderConfig(policy="lightgbm")
    # Act / Assert
    with pytest.raises(NotImplementedError, match="use 'precision'"):
        blend_policy_from_config(cfg, RiskConfig())


def test_blend_policy_from_config_when_precision_then_uses_common_horizon_and_alpha() -> None:
    # Arrange
    cfg = BlenderConfig(policy="precision", common_horizon=Horizon.W1)
    # Act
    policy = blend_policy_from_config(cfg, RiskConfig(cvar_alpha=0.99))
    # Assert
    assert isinstance(policy, PrecisionBlender)
    assert policy.common_horizon is Horizon.W1
    assert policy.cvar_alpha == 0.99


def test_blend_policy_from_config_when_passthrough_then_passthrough() -> None:
    # Arrange / Act
    policy = blend_policy_from_config(BlenderConfig(policy="passthrough"), RiskConfig())
    # Assert
    assert isinstance(policy, PassthroughBlender)


@pytest.mark.parametrize("levels", [(0.5, 0.25), (0.0, 0.5), (0.5, 1.0), (0.3, 0.3)])
def test_precision_blender_when_bad_quantile_levels_then_value_error(
    levels: tuple[float, ...],
) -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match="quantile levels"):
        PrecisionBlender(Horizon.D1, quantile_levels=levels)
