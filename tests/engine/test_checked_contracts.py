"""The checked builders: the cheap path builds exactly the validated model, or declines."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from contracts import Bar, BarInterval, Horizon, Opportunity, Regime, Signal, Watermark
from contracts.trading import Contribution, Quantile
from engine.checked_contracts import (
    CheckedBars,
    CheckedOpportunities,
    CheckedSignals,
    CheckedWatermarks,
    _unchanged,
    fingerprint,
)

TS = datetime(2001, 5, 4, 21, tzinfo=UTC)
TRACE = "0af7651916cd43dd8448eb211c80319c"


def _kwargs(**overrides: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "trace_id": TRACE,
        "ts_event": TS,
        "ts_init": TS + timedelta(seconds=1),
        "symbol": "AAPL",
        "mu": 0.01,
        "sigma": 0.05,
        "horizon": Horizon("1m"),
        "confidence": 0.5,
        "regime": Regime.CALM_UPTREND,
        "features": {"score": 0.3, "vol_daily": 0.012},
    }
    kw.update(overrides)
    return kw


def _validated(agent: str, kw: dict[str, Any]) -> Signal:
    features = kw["features"]
    return Signal(
        agent=agent, **{**kw, "features": dict(features) if features is not None else None}
    )


def _taught(agent: str = "momentum") -> CheckedSignals:
    checked = CheckedSignals(agent)
    checked.learn(_validated(agent, _kwargs()))
    return checked


def _assert_same(fast: BaseModel, slow: BaseModel) -> None:
    assert fast == slow
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump_json() == slow.model_dump_json()
    assert list(fast.__dict__) == list(slow.__dict__)
    assert [type(v) for v in fast.__dict__.values()] == [type(v) for v in slow.__dict__.values()]


def test_build_when_names_seen_validated_then_equals_the_validated_signal() -> None:
    # Arrange
    checked = _taught()
    kw = _kwargs(mu=-0.02, confidence=1.0, features={"vol_daily": 0.02})
    # Act
    fast = checked.build(**kw)
    # Assert
    assert fast is not None
    _assert_same(fast, _validated("momentum", kw))


def test_build_when_symbol_never_validated_then_declines() -> None:
    # Arrange
    checked = _taught()
    # Act
    result = checked.build(**_kwargs(symbol="MSFT"))
    # Assert
    assert result is None


def test_build_when_a_feature_name_never_validated_then_declines() -> None:
    # Arrange
    checked = _taught()
    # Act
    result = checked.build(**_kwargs(features={"score": 0.1, "new_name": 0.2}))
    # Assert
    assert result is None


def test_build_when_features_none_then_equals_the_validated_signal() -> None:
    # Arrange
    checked = _taught()
    kw = _kwargs(features=None)
    # Act
    fast = checked.build(**kw)
    # Assert
    assert fast is not None
    _assert_same(fast, _validated("momentum", kw))


@pytest.mark.parametrize(
    "override",
    [
        {"mu": math.nan},
        {"mu": math.inf},
        {"mu": 1},  # int: strict float, the model decides
        {"mu": np.float64(0.01)},
        {"sigma": 0.0},
        {"sigma": -0.1},
        {"sigma": math.inf},
        {"confidence": 1.5},
        {"confidence": -0.0001},
        {"confidence": math.nan},
        {"horizon": "1m"},  # by value: the model coerces it
        {"regime": "calm_uptrend"},
        {"ts_event": datetime(2001, 5, 4, 21)},  # naive
        {"ts_init": datetime(2001, 5, 4, 23, tzinfo=timezone(timedelta(hours=2)))},
        {"trace_id": "0" * 32},
        {"trace_id": TRACE.upper()},
        {"trace_id": TRACE[:-1]},
        {"features": {"score": math.nan}},
        {"features": {"score": 1}},
        {"features": {"score": True}},
    ],
)
def test_build_when_a_value_is_not_provably_valid_then_declines(override: dict[str, Any]) -> None:
    # Arrange
    checked = _taught()
    # Act
    result = checked.build(**_kwargs(**override))
    # Assert
    assert result is None


def test_learn_when_signal_of_another_agent_then_teaches_nothing() -> None:
    # Arrange
    checked = CheckedSignals("momentum")
    checked.learn(_validated("reversal", _kwargs()))
    # Act
    result = checked.build(**_kwargs())
    # Assert
    assert result is None


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    mu=finite,
    sigma=st.floats(min_value=5e-324, allow_infinity=False),
    confidence=st.floats(min_value=0.0, max_value=1.0),
    horizon=st.sampled_from(list(Horizon)),
    regime=st.sampled_from(list(Regime)),
    score=finite,
    with_features=st.booleans(),
)
def test_build_when_valid_values_then_identical_to_validation(
    mu: float,
    sigma: float,
    confidence: float,
    horizon: Horizon,
    regime: Regime,
    score: float,
    with_features: bool,
) -> None:
    # Arrange
    checked = _taught()
    kw = _kwargs(
        mu=mu,
        sigma=sigma,
        confidence=confidence,
        horizon=horizon,
        regime=regime,
        features={"score": score, "vol_daily": 0.01} if with_features else None,
    )
    # Act
    fast = checked.build(**kw)
    # Assert
    assert fast is not None
    _assert_same(fast, _validated("momentum", kw))


def test_watermark_build_when_after_first_then_equals_the_validated_watermark() -> None:
    # Arrange
    checked = CheckedWatermarks("momentum")
    first = checked.build(TRACE, TS, TS)
    # Act
    later = checked.build(TRACE, TS + timedelta(days=1), TS + timedelta(days=1))
    # Assert
    expected = Watermark(
        trace_id=TRACE,
        ts_event=TS + timedelta(days=1),
        ts_init=TS + timedelta(days=1),
        origin="momentum",
    )
    assert first == Watermark(trace_id=TRACE, ts_event=TS, ts_init=TS, origin="momentum")
    _assert_same(later, expected)


def test_watermark_build_when_origin_invalid_then_validation_error_every_time() -> None:
    # Arrange
    checked = CheckedWatermarks("Not A Name")
    # Act / Assert
    for _ in range(2):
        with pytest.raises(ValidationError):
            checked.build(TRACE, TS, TS)


def test_watermark_build_when_time_not_utc_then_validated_and_normalised() -> None:
    # Arrange
    checked = CheckedWatermarks("momentum")
    checked.build(TRACE, TS, TS)
    plus_two = timezone(timedelta(hours=2))
    # Act
    wm = checked.build(TRACE, TS.astimezone(plus_two), TS)
    # Assert
    assert wm.ts_event.tzinfo is UTC
    assert wm.ts_event == TS


def _opportunity_inputs(**overrides: Any) -> dict[str, Any]:
    signals = [
        _validated("momentum", _kwargs()),
        _validated("reversal", _kwargs(trace_id="1" * 32, mu=-0.01, confidence=0.0)),
    ]
    inputs: dict[str, Any] = {
        "trace_id": TRACE,
        "ts_event": TS,
        "ts_init": TS + timedelta(seconds=1),
        "symbol": "AAPL",
        "horizon": Horizon("1m"),
        "mu": 0.004,
        "sigma": 0.06,
        "quantiles": [(0.05, -0.0947), (0.5, 0.004), (0.95, 0.1027)],
        "contributions": [(signals[0], 1.0, 0.01, 0.05), (signals[1], 0.0, -0.01, 0.05)],
        "regime": Regime.CALM_UPTREND,
        "var": 0.0947,
        "cvar": 0.12,
        "blender": "precision",
        "model_version": "precision-1",
    }
    inputs.update(overrides)
    return inputs


def _validated_opportunity(inputs: dict[str, Any]) -> Opportunity:
    return Opportunity(
        **{k: v for k, v in inputs.items() if k not in ("quantiles", "contributions")},
        quantiles=[{"level": lv, "value": v} for lv, v in inputs["quantiles"]],
        contributions=[
            {
                "agent": s.agent,
                "weight": w,
                "mu": m,
                "sigma": sig,
                "confidence": s.confidence,
                "signal_trace_id": s.trace_id,
            }
            for s, w, m, sig in inputs["contributions"]
        ],
    )


def _taught_opportunities() -> CheckedOpportunities:
    checked = CheckedOpportunities()
    checked.learn(_validated_opportunity(_opportunity_inputs()))
    return checked


def test_opportunity_build_when_nothing_learned_then_declines() -> None:
    # Arrange
    checked = CheckedOpportunities()
    # Act
    result = checked.build(**_opportunity_inputs())
    # Assert
    assert result is None


def test_opportunity_build_when_learned_then_equals_the_validated_opportunity() -> None:
    # Arrange
    checked = _taught_opportunities()
    inputs = _opportunity_inputs(mu=-0.02, var=None, cvar=0.0)
    # Act
    fast = checked.build(**inputs)
    # Assert
    assert fast is not None
    slow = _validated_opportunity(inputs)
    _assert_same(fast, slow)
    for fast_part, slow_part in zip(
        fast.contributions + fast.quantiles, slow.contributions + slow.quantiles, strict=True
    ):
        assert fast_part.model_fields_set == slow_part.model_fields_set
        assert list(fast_part.__dict__) == list(slow_part.__dict__)


@pytest.mark.parametrize(
    "override",
    [
        {"mu": math.nan},
        {"sigma": 0.0},
        {"var": -0.1},
        {"cvar": math.inf},
        {"blender": "other"},
        {"model_version": "precision-2"},
        {"quantiles": [(0.05, 0.2), (0.5, 0.004), (0.95, 0.1027)]},  # crossing
        {"quantiles": [(0.05, -math.inf), (0.5, 0.004), (0.95, 0.1027)]},
        {"quantiles": [(0.05, -0.0947), (0.5, 0.004), (0.95, math.inf)]},
        {"trace_id": "0" * 32},
        {"quantiles": [(0.1, -0.0947), (0.5, 0.004), (0.95, 0.1027)]},  # other levels
        {"quantiles": [(0.5, 0.004), (0.95, 0.1027)]},
        {"contributions": []},
        {"horizon": "1m"},
        {"ts_event": datetime(2001, 5, 4, 21)},
    ],
)
def test_opportunity_build_when_not_provably_valid_then_declines(
    override: dict[str, Any],
) -> None:
    # Arrange
    checked = _taught_opportunities()
    # Act
    result = checked.build(**_opportunity_inputs(**override))
    # Assert
    assert result is None


@pytest.mark.parametrize("field", ["weight", "mu", "sigma"])
def test_opportunity_build_when_a_contribution_value_invalid_then_declines(field: str) -> None:
    # Arrange
    checked = _taught_opportunities()
    sig, weight, mu, sigma = _opportunity_inputs()["contributions"][0]
    bad = {"weight": (sig, math.nan, mu, sigma), "mu": (sig, weight, 1, sigma)}.get(
        field, (sig, weight, mu, 0.0)
    )
    # Act
    result = checked.build(**_opportunity_inputs(contributions=[bad]))
    # Assert
    assert result is None


def _close_bar_kwargs(**overrides: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {
        "trace_id": TRACE,
        "ts_event": TS,
        "ts_init": TS,
        "symbol": "AAPL",
        "interval": BarInterval.D1,
        "close": 101.5,
        "currency": "USD",
    }
    kw.update(overrides)
    return kw


def test_close_bar_when_symbol_seen_then_equals_the_validated_bar() -> None:
    # Arrange
    checked = CheckedBars()
    checked.close_bar(**_close_bar_kwargs())
    kw = _close_bar_kwargs(ts_event=TS + timedelta(days=1), close=99.25)
    # Act
    fast = checked.close_bar(**kw)
    # Assert
    _assert_same(fast, Bar(**kw))


@pytest.mark.parametrize(
    "override",
    [
        {"close": 0.0},
        {"close": -1.0},
        {"close": math.nan},
        {"close": math.inf},
        {"currency": "usd"},
        {"symbol": "not a symbol"},
    ],
)
def test_close_bar_when_invalid_then_validation_error_as_before(override: dict[str, Any]) -> None:
    # Arrange
    checked = CheckedBars()
    checked.close_bar(**_close_bar_kwargs())
    # Act / Assert
    with pytest.raises(ValidationError):
        checked.close_bar(**_close_bar_kwargs(**override))


def test_close_bar_when_time_not_utc_then_validated_and_normalised() -> None:
    # Arrange
    checked = CheckedBars()
    checked.close_bar(**_close_bar_kwargs())
    # Act
    bar = checked.close_bar(
        **_close_bar_kwargs(ts_event=TS.astimezone(timezone(timedelta(hours=-5))))
    )
    # Assert
    assert bar.ts_event.tzinfo is UTC
    assert bar.ts_event == TS


@pytest.mark.parametrize(
    "model", [Signal, Watermark, Bar, Opportunity, Contribution, Quantile], ids=lambda m: m.__name__
)
def test_fingerprint_when_contract_is_the_one_pinned_then_its_builder_is_on(
    model: type[BaseModel],
) -> None:
    # Arrange / Act
    on = _unchanged(model)
    # Assert: a failure means the contract changed - re-check its builder in
    # engine/checked_contracts.py against the new rules, then update `_PINNED`.
    assert on, f"{model.__name__} changed: fingerprint is now {fingerprint(model)}"
