"""Property tests of the Signal contract: every valid Signal survives JSON unchanged, and every
invalid one is rejected with an error that names the field (and shows the bad value)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts import Signal

from . import HEX, feature_names, naive_datetimes, signal_example, signal_kwargs, signals

MAX_SHOWN_REPR = 48  # pydantic shortens longer input reprs in its messages with "..."


@dataclass(frozen=True)
class BadValue:
    """One invalid value for one field, as a Python object and as a raw JSON token."""

    field: str
    python: Any
    json_token: str
    python_repr: str | None  # what the error message must show; None when not printable
    json_repr: str | None


def _shown(text: str) -> str | None:
    return text if text.isprintable() and len(text) <= MAX_SHOWN_REPR else None


def _float_case(field: str, value: float) -> BadValue:
    token = {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, json.dumps(value))
    return BadValue(field, value, token, repr(value), repr(value))


NON_FINITE = st.sampled_from((math.nan, math.inf, -math.inf))
not_positive = st.floats(max_value=0.0, allow_nan=False) | st.sampled_from((0.0, -0.0))
# (-0.0 is a valid confidence: it equals 0.0, so the negative range starts below it)
outside_unit = st.floats(max_value=-5e-324) | st.floats(min_value=1.0, exclude_min=True)


@st.composite
def bad_trace_ids(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(("short", "long", "upper", "non_hex", "zeros")))
    if kind == "short":
        return draw(st.text(HEX, max_size=31))
    if kind == "long":
        return draw(st.text(HEX, min_size=33, max_size=40))
    if kind == "zeros":
        return "0" * 32
    chars = draw(st.lists(st.sampled_from(HEX), min_size=32, max_size=32))
    position = draw(st.integers(0, 31))
    if kind == "upper":
        chars[position] = draw(st.sampled_from("ABCDEF"))
    else:
        chars[position] = draw(st.characters(codec="utf-8").filter(lambda c: c not in HEX))
    return "".join(chars)


def _string_case(field: str, value: str) -> BadValue:
    return BadValue(field, value, json.dumps(value), _shown(repr(value)), _shown(repr(value)))


def _naive_case(field: str, value: datetime) -> BadValue:
    iso = value.isoformat()
    return BadValue(field, value, json.dumps(iso), _shown(repr(value)), _shown(repr(iso)))


@st.composite
def _feature_case(draw: st.DrawFn) -> BadValue:
    name = draw(feature_names)
    value = draw(NON_FINITE)
    token = {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, "NaN")
    return BadValue(
        "features",
        {name: value},
        "{" + json.dumps(name) + ": " + token + "}",
        repr(value),
        repr(value),
    )


@st.composite
def _extra_case(draw: st.DrawFn) -> BadValue:
    name = draw(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True))
    name = name if name not in Signal.model_fields else name + "_extra"
    value = draw(st.integers(-1000, 1000))
    return BadValue(name, value, json.dumps(value), repr(value), repr(value))


bad_values = st.one_of(
    st.builds(_float_case, st.just("mu"), NON_FINITE),
    st.builds(_float_case, st.just("sigma"), NON_FINITE | not_positive),
    st.builds(_float_case, st.just("confidence"), NON_FINITE | outside_unit),
    _feature_case(),
    st.builds(_naive_case, st.sampled_from(("ts_event", "ts_init")), naive_datetimes),
    _extra_case(),
    st.builds(_string_case, st.just("trace_id"), bad_trace_ids()),
)

# A float that does not fit in a double is read as inf and rejected like one.
OVERFLOW_TOKENS = st.sampled_from(("1e999", "-1e999", "1.5e400"))


def _assert_rejected(exc: ValidationError, field: str, shown: str | None) -> None:
    errors = exc.errors()
    assert errors, "a ValidationError must list at least one error"
    assert all(error["loc"][0] == field for error in errors), errors
    message = str(exc)
    assert field in message
    if shown is not None:
        assert shown in message, f"{shown!r} not shown in:\n{message}"


def _json_with(kwargs: dict[str, Any], field: str, token: str) -> str:
    document = Signal(**kwargs).model_dump(mode="json")
    document[field] = "__BAD_VALUE__"
    return json.dumps(document).replace('"__BAD_VALUE__"', token)


@given(signals)
def test_roundtrip_when_signal_is_valid_then_json_is_lossless_and_stable(signal: Signal) -> None:
    # Arrange
    first = signal.model_dump_json()

    # Act
    again = Signal.model_validate_json(first)
    second = again.model_dump_json()
    third = Signal.model_validate_json(second).model_dump_json()

    # Assert
    assert again == signal
    assert second == first
    assert third == second
    assert Signal.from_json(signal.to_json()) == signal


@given(signal_kwargs())
def test_construct_when_signal_is_valid_then_values_are_kept_and_times_are_utc(
    kwargs: dict[str, Any],
) -> None:
    # Arrange
    expected_mu = kwargs["mu"]

    # Act
    signal = Signal(**kwargs)

    # Assert
    assert signal.mu == expected_mu
    assert math.copysign(1.0, signal.mu) == math.copysign(1.0, expected_mu)
    assert signal.ts_event == kwargs["ts_event"]
    assert signal.ts_event.utcoffset() is not None
    assert signal.ts_event.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert signal.ts_init.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@given(signal_kwargs(), bad_values)
def test_construct_when_a_field_is_invalid_then_error_names_field_and_value(
    kwargs: dict[str, Any], bad: BadValue
) -> None:
    # Arrange
    invalid = {**kwargs, bad.field: bad.python}

    # Act
    with pytest.raises(ValidationError) as caught:
        Signal(**invalid)

    # Assert
    _assert_rejected(caught.value, bad.field, bad.python_repr)


@given(signal_kwargs(), bad_values)
def test_parse_json_when_a_field_is_invalid_then_error_names_field_and_value(
    kwargs: dict[str, Any], bad: BadValue
) -> None:
    # Arrange
    document = _json_with(kwargs, bad.field, bad.json_token)

    # Act
    with pytest.raises(ValidationError) as caught:
        Signal.model_validate_json(document)

    # Assert
    _assert_rejected(caught.value, bad.field, bad.json_repr)


@given(signal_kwargs(), st.sampled_from(("mu", "sigma", "confidence")), OVERFLOW_TOKENS)
def test_parse_json_when_number_overflows_a_double_then_rejected_as_infinite(
    kwargs: dict[str, Any], field: str, token: str
) -> None:
    # Arrange
    document = _json_with(kwargs, field, token)

    # Act
    with pytest.raises(ValidationError) as caught:
        Signal.model_validate_json(document)

    # Assert
    _assert_rejected(caught.value, field, "inf")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_parse_json_when_feature_value_is_not_finite_then_error_names_feature(token: str) -> None:
    # Arrange
    document = _json_with(signal_example(), "features", '{"rsi_14": ' + token + "}")

    # Act
    with pytest.raises(ValidationError) as caught:
        Signal.model_validate_json(document)

    # Assert
    assert [error["loc"] for error in caught.value.errors()] == [("features", "rsi_14")]
    assert "features.rsi_14" in str(caught.value)
