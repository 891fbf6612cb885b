"""Model-specific rules, strictness and immutability of the contracts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import (
    ALL_CONTRACTS,
    AgentStatus,
    Bar,
    Contract,
    Contribution,
    DecisionLog,
    Fill,
    Intent,
    Opportunity,
    Quantile,
    Signal,
)

from . import ENVELOPE, HASH, T0, examples, intent_example, signal_example

PLUS_ONE = timezone(timedelta(hours=1))


def _bar(**prices: Any) -> Bar:
    return Bar(**ENVELOPE, symbol="GOOG", **prices)


def _opportunity(*quantiles: tuple[float, float]) -> Opportunity:
    example = examples()[Opportunity]
    return Opportunity(
        **{
            **example.model_dump(),
            "quantiles": tuple(Quantile(level=lv, value=v) for lv, v in quantiles),
        }
    )


def _decision(**fields: Any) -> DecisionLog:
    return DecisionLog(
        **ENVELOPE, decision_id="4" * 32, model_version="v1", config_hash=HASH, **fields
    )


# --- Bar --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prices",
    [
        {"high": 10.0, "close": 11.0},
        {"open": 10.0, "high": 10.5, "low": 9.0, "close": 11.0},
        {"open": 12.0, "high": 11.5, "close": 11.0},
    ],
)
def test_construct_when_bar_high_is_below_another_price_then_rejected(
    prices: dict[str, float],
) -> None:
    # Arrange / Act
    with pytest.raises(ValidationError) as caught:
        _bar(**prices)

    # Assert
    assert "high=" in str(caught.value)


@pytest.mark.parametrize(
    "prices",
    [
        {"low": 12.0, "close": 11.0},
        {"open": 10.0, "high": 13.0, "low": 11.5, "close": 12.0},
        {"open": 9.0, "low": 9.5, "close": 11.0},
    ],
)
def test_construct_when_bar_low_is_above_another_price_then_rejected(
    prices: dict[str, float],
) -> None:
    # Arrange / Act
    with pytest.raises(ValidationError) as caught:
        _bar(**prices)

    # Assert
    assert "low=" in str(caught.value)


def test_construct_when_bar_has_close_only_then_other_prices_are_unknown() -> None:
    # Arrange / Act
    bar = _bar(close=11.0)

    # Assert
    assert bar.is_close_only
    assert (bar.open, bar.high, bar.low, bar.volume) == (None, None, None, None)


def test_construct_when_bar_is_flat_ohlc_then_accepted() -> None:
    # Arrange / Act
    bar = _bar(open=11.0, high=11.0, low=11.0, close=11.0, volume=0.0)

    # Assert
    assert not bar.is_close_only


@pytest.mark.parametrize("field", ["open", "high", "low", "close"])
@pytest.mark.parametrize("price", [0.0, -1.0])
def test_construct_when_bar_price_is_not_positive_then_rejected(field: str, price: float) -> None:
    # Arrange
    prices = {"close": 11.0, field: price}

    # Act
    with pytest.raises(ValidationError) as caught:
        _bar(**prices)

    # Assert
    assert caught.value.errors()[0]["loc"] == (field,)


# --- Opportunity ------------------------------------------------------------------------------


def test_construct_when_quantiles_cross_then_rejected() -> None:
    # Arrange / Act
    with pytest.raises(ValidationError) as caught:
        _opportunity((0.05, 0.02), (0.5, 0.01), (0.95, 0.09))

    # Assert
    assert "quantiles cross" in str(caught.value)


@pytest.mark.parametrize(
    "quantiles",
    [((0.5, 0.0), (0.5, 0.1)), ((0.95, 0.09), (0.05, -0.07))],
    ids=["equal_levels", "decreasing_levels"],
)
def test_construct_when_quantile_levels_do_not_increase_then_rejected(
    quantiles: tuple[tuple[float, float], ...],
) -> None:
    # Arrange / Act
    with pytest.raises(ValidationError) as caught:
        _opportunity(*quantiles)

    # Assert
    assert "quantile levels must increase" in str(caught.value)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.1])
def test_construct_when_quantile_level_outside_open_unit_interval_then_rejected(
    level: float,
) -> None:
    # Arrange / Act
    with pytest.raises(ValidationError) as caught:
        Quantile(level=level, value=0.0)

    # Assert
    assert caught.value.errors()[0]["loc"] == ("level",)


def test_construct_when_quantiles_are_tied_in_value_then_accepted() -> None:
    # Arrange / Act
    opportunity = _opportunity((0.1, 0.0), (0.5, 0.0), (0.9, 0.0))

    # Assert
    assert [q.value for q in opportunity.quantiles] == [0.0, 0.0, 0.0]


def test_construct_when_opportunity_has_no_contributions_then_rejected() -> None:
    # Arrange
    fields = {**examples()[Opportunity].model_dump(), "contributions": ()}

    # Act
    with pytest.raises(ValidationError) as caught:
        Opportunity(**fields)

    # Assert
    assert caught.value.errors()[0]["loc"] == ("contributions",)


# --- Intent -----------------------------------------------------------------------------------


@pytest.mark.parametrize("order_type", ["limit", "stop_limit"])
def test_construct_when_limit_order_has_no_limit_price_then_rejected(order_type: str) -> None:
    # Arrange
    fields = intent_example(order_type=order_type)

    # Act
    with pytest.raises(ValidationError) as caught:
        Intent(**fields)

    # Assert
    assert f"order_type={order_type} requires limit_price" in str(caught.value)


def test_construct_when_limit_order_has_limit_price_then_accepted() -> None:
    # Arrange / Act
    intent = Intent(**intent_example(order_type="limit", limit_price=189.5))

    # Assert
    assert intent.limit_price == 189.5


@pytest.mark.parametrize(
    "expires_at",
    [T0, T0 - timedelta(microseconds=1), T0.astimezone(PLUS_ONE)],
    ids=["equal", "before", "equal_in_other_offset"],
)
def test_construct_when_intent_expires_at_or_before_event_then_rejected(
    expires_at: datetime,
) -> None:
    # Arrange
    fields = intent_example(expires_at=expires_at)

    # Act
    with pytest.raises(ValidationError) as caught:
        Intent(**fields)

    # Assert
    assert "expires_at" in str(caught.value)


# --- DecisionLog ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("intent", {}),
        ("intent", {"reason": "max_weight"}),
        ("intent", {"intent": "INTENT", "reason": "max_weight"}),
        ("denial", {}),
        ("denial", {"intent": "INTENT"}),
        ("denial", {"intent": "INTENT", "reason": "max_weight"}),
        ("no_trade", {"reason": "max_weight"}),
        ("no_trade", {"intent": "INTENT"}),
    ],
)
def test_construct_when_decision_kind_and_payload_mismatch_then_rejected(
    kind: str, payload: dict[str, Any]
) -> None:
    # Arrange
    intent = Intent(**intent_example())
    fields = {key: intent if value == "INTENT" else value for key, value in payload.items()}

    # Act
    with pytest.raises(ValidationError) as caught:
        _decision(kind=kind, **fields)

    # Assert
    assert f"kind={kind}" in str(caught.value)


@pytest.mark.parametrize(
    ("kind", "payload"),
    [("intent", {"intent": "INTENT"}), ("denial", {"reason": "max_weight"}), ("no_trade", {})],
)
def test_construct_when_decision_kind_matches_payload_then_accepted(
    kind: str, payload: dict[str, Any]
) -> None:
    # Arrange
    intent = Intent(**intent_example())
    fields = {key: intent if value == "INTENT" else value for key, value in payload.items()}

    # Act
    decision = _decision(kind=kind, **fields)

    # Assert
    assert decision.kind.value == kind


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1, 2], {"a": 1}])
def test_construct_when_decision_input_is_not_a_finite_scalar_then_rejected(value: Any) -> None:
    # Arrange / Act
    with pytest.raises(ValidationError) as caught:
        _decision(kind="no_trade", inputs={"x": value})

    # Assert
    assert all(error["loc"][:2] == ("inputs", "x") for error in caught.value.errors())


# --- time -------------------------------------------------------------------------------------


def test_construct_when_timestamps_are_in_plus_one_hour_then_normalised_to_utc() -> None:
    # Arrange
    local = datetime(2024, 1, 2, 22, 0, tzinfo=PLUS_ONE)

    # Act
    signal = Signal(**signal_example(ts_event=local, ts_init=local))

    # Assert
    assert signal.ts_event == T0
    assert signal.ts_event.tzinfo is UTC
    assert signal.ts_init.tzinfo is UTC
    assert signal.ts_event.hour == 21
    assert '"ts_event":"2024-01-02T21:00:00Z"' in signal.model_dump_json()


def test_parse_json_when_timestamps_are_in_plus_one_hour_then_normalised_to_utc() -> None:
    # Arrange
    document = json.loads(Signal(**signal_example()).model_dump_json())
    document["ts_event"] = "2024-01-02T22:00:00+01:00"
    document["ts_init"] = "2024-01-02T22:00:00.5+01:00"

    # Act
    signal = Signal.model_validate_json(json.dumps(document))

    # Assert
    assert signal.ts_event == T0
    assert signal.ts_event.utcoffset() == timedelta(0)
    assert signal.ts_init == T0 + timedelta(milliseconds=500)
    assert '"ts_init":"2024-01-02T21:00:00.500000Z"' in signal.model_dump_json()


def test_construct_when_expires_at_has_offset_then_normalised_to_utc() -> None:
    # Arrange
    local = datetime(2024, 1, 3, 22, 0, tzinfo=PLUS_ONE)

    # Act
    intent = Intent(**intent_example(expires_at=local))

    # Assert
    assert intent.expires_at == datetime(2024, 1, 3, 21, 0, tzinfo=UTC)
    assert intent.expires_at.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, 0, 30, tzinfo=PLUS_ONE),
        datetime(9999, 12, 31, 23, 30, tzinfo=timezone(-timedelta(hours=1))),
    ],
    ids=["before_year_1", "after_year_9999"],
)
def test_construct_when_utc_instant_is_out_of_range_then_validation_error(value: datetime) -> None:
    # Arrange / Act
    with pytest.raises(ValidationError) as caught:
        Signal(**signal_example(ts_event=value))

    # Assert
    assert caught.value.errors()[0]["loc"] == ("ts_event",)


def test_construct_when_timestamp_is_a_string_in_python_then_rejected() -> None:
    # Arrange / Act
    with pytest.raises(ValidationError) as caught:
        Signal(**signal_example(ts_event="2024-01-02T21:00:00Z"))

    # Assert
    assert caught.value.errors()[0]["loc"] == ("ts_event",)


# --- strictness -------------------------------------------------------------------------------

FLOAT_FIELDS = [
    (Signal, "mu"),
    (Signal, "sigma"),
    (Signal, "confidence"),
    (Bar, "close"),
    (Bar, "volume"),
    (Opportunity, "mu"),
    (Intent, "quantity"),
    (Intent, "risk_budget"),
    (Fill, "price"),
    (Fill, "fee"),
]


@pytest.mark.parametrize(("model", "field"), FLOAT_FIELDS, ids=lambda v: getattr(v, "__name__", v))
@pytest.mark.parametrize("value", ["0.1", "1", True, False, b"0.1"], ids=repr)
def test_construct_when_float_field_gets_string_or_bool_then_rejected_not_converted(
    model: type[Contract], field: str, value: object
) -> None:
    # Arrange
    fields = {**examples()[model].model_dump(), field: value}

    # Act
    with pytest.raises(ValidationError) as caught:
        model(**fields)

    # Assert
    assert caught.value.errors()[0]["loc"][0] == field
    assert caught.value.errors()[0]["type"] == "float_type"


@pytest.mark.parametrize(("model", "field"), FLOAT_FIELDS, ids=lambda v: getattr(v, "__name__", v))
@pytest.mark.parametrize("token", ['"0.1"', "true", "false", "[0.1]"])
def test_parse_json_when_float_field_gets_string_or_bool_then_rejected_not_converted(
    model: type[Contract], field: str, token: str
) -> None:
    # Arrange
    document = json.loads(examples()[model].model_dump_json())
    document[field] = "__BAD__"
    text = json.dumps(document).replace('"__BAD__"', token)

    # Act
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(text)

    # Assert
    assert caught.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [(Signal, "mu", 1), (Bar, "close", 11), (Fill, "fee", 0)],
    ids=["signal_mu", "bar_close", "fill_fee"],
)
def test_construct_when_float_field_gets_int_then_stored_as_float(
    model: type[Contract], field: str, value: int
) -> None:
    # Arrange
    fields = {**examples()[model].model_dump(), field: value}

    # Act
    message = model(**fields)

    # Assert
    assert type(getattr(message, field)) is float


@pytest.mark.parametrize(
    ("field", "value"), [("failures", "3"), ("failures", True), ("failures", -1)]
)
def test_construct_when_agent_status_failures_is_not_a_count_then_rejected(
    field: str, value: object
) -> None:
    # Arrange
    fields = {**examples()[AgentStatus].model_dump(), field: value}

    # Act
    with pytest.raises(ValidationError) as caught:
        AgentStatus(**fields)

    # Assert
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize("model", ALL_CONTRACTS, ids=lambda m: m.__name__)
def test_construct_when_unknown_field_given_then_rejected(model: type[Contract]) -> None:
    # Arrange
    fields = {**examples()[model].model_dump(), "unexpected": 1}

    # Act
    with pytest.raises(ValidationError) as caught:
        model(**fields)

    # Assert
    assert caught.value.errors()[0]["loc"] == ("unexpected",)
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("model", ALL_CONTRACTS, ids=lambda m: m.__name__)
def test_construct_when_schema_version_is_not_current_then_rejected(model: type[Contract]) -> None:
    # Arrange
    fields = {**examples()[model].model_dump(), "schema_version": 99}

    # Act
    with pytest.raises(ValidationError) as caught:
        model(**fields)

    # Assert
    assert caught.value.errors()[0]["loc"] == ("schema_version",)


# --- immutability -----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_CONTRACTS, ids=lambda m: m.__name__)
def test_assign_when_contract_is_frozen_then_raises(model: type[Contract]) -> None:
    # Arrange
    message = examples()[model]

    # Act
    with pytest.raises(ValidationError) as caught:
        message.trace_id = "f" * 32  # type: ignore[misc]

    # Assert
    assert caught.value.errors()[0]["type"] == "frozen_instance"
    assert message.trace_id == ENVELOPE["trace_id"]


@pytest.mark.parametrize(
    ("part", "field"),
    [
        (Quantile(level=0.5, value=0.0), "value"),
        (
            Contribution(
                agent="a", weight=1.0, mu=0.0, sigma=0.1, confidence=1.0, signal_trace_id="1" * 32
            ),
            "weight",
        ),
    ],
    ids=["quantile", "contribution"],
)
def test_assign_when_nested_part_is_frozen_then_raises(
    part: Quantile | Contribution, field: str
) -> None:
    # Arrange
    before = part.model_dump()

    # Act
    with pytest.raises(ValidationError) as caught:
        setattr(part, field, 2.0)

    # Assert
    assert caught.value.errors()[0]["type"] == "frozen_instance"
    assert part.model_dump() == before


def test_hash_when_contract_is_frozen_then_usable_as_dict_key() -> None:
    # Arrange
    message = examples()[Bar]

    # Act
    index = {message: "bar"}

    # Assert
    assert index[Bar(**message.model_dump())] == "bar"
