"""The seeded id generator: reproducible, W3C-shaped, never all-zero."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from contracts import IdGenerator
from contracts.base import SpanId, TraceId

TRACE_ID = re.compile(r"[0-9a-f]{32}")
SPAN_ID = re.compile(r"[0-9a-f]{16}")
seeds = st.integers(min_value=-(2**70), max_value=2**70)


def _sequence(generator: IdGenerator, length: int = 30) -> list[str]:
    out: list[str] = []
    for i in range(length):
        kind = i % 3
        if kind == 0:
            out.append(generator.trace_id())
        elif kind == 1:
            out.append(generator.span_id())
        else:
            out.append(generator.message_id())
    return out


@given(seeds)
def test_generate_when_same_seed_then_same_sequence(seed: int) -> None:
    # Arrange
    first, second = IdGenerator(seed), IdGenerator(seed)

    # Act
    a, b = _sequence(first), _sequence(second)

    # Assert
    assert a == b


def test_generate_when_seeds_differ_then_sequences_differ() -> None:
    # Arrange
    first, second = IdGenerator(1), IdGenerator(2)

    # Act
    a, b = _sequence(first), _sequence(second)

    # Assert
    assert a != b


def test_generate_when_seed_is_fixed_then_sequence_matches_recorded_ids() -> None:
    # Arrange: ids recorded with seed 42; a replay recorded today must reproduce them tomorrow
    generator = IdGenerator(42)

    # Act
    ids = [generator.trace_id(), generator.span_id(), generator.message_id()]

    # Assert
    assert ids == [
        "bdd640fb06671ad11c80317fa3b1799d",
        "3eb13b9046685257",
        "1a3d1fa7bc8960a923b8c1e9392456de",
    ]


def test_generate_when_many_ids_then_no_repeats() -> None:
    # Arrange
    generator = IdGenerator(7)

    # Act
    ids = [generator.trace_id() for _ in range(10_000)]

    # Assert
    assert len(set(ids)) == len(ids)


@given(seeds)
def test_generate_when_any_seed_then_ids_match_w3c_patterns(seed: int) -> None:
    # Arrange
    generator = IdGenerator(seed)
    trace_adapter, span_adapter = TypeAdapter(TraceId), TypeAdapter(SpanId)

    # Act
    trace, span, message = generator.trace_id(), generator.span_id(), generator.message_id()

    # Assert
    assert TRACE_ID.fullmatch(trace)
    assert TRACE_ID.fullmatch(message)
    assert SPAN_ID.fullmatch(span)
    assert trace_adapter.validate_python(trace) == trace
    assert trace_adapter.validate_python(message) == message
    assert span_adapter.validate_python(span) == span


def test_generate_when_seed_is_none_then_ids_are_valid_and_unseeded() -> None:
    # Arrange
    first, second = IdGenerator(None), IdGenerator(None)

    # Act
    a, b = first.trace_id(), second.trace_id()

    # Assert
    assert TRACE_ID.fullmatch(a)
    assert a != b


class _ZerosFirst:
    """A stand-in random source that returns zero twice before a real value."""

    def __init__(self) -> None:
        self.calls = 0

    def getrandbits(self, bits: int) -> int:
        self.calls += 1
        return 0 if self.calls <= 2 else 5


@pytest.mark.parametrize(
    ("method", "expected"),
    [("trace_id", f"{5:032x}"), ("span_id", f"{5:016x}"), ("message_id", f"{5:032x}")],
)
def test_generate_when_random_source_yields_zero_then_id_is_never_all_zero(
    method: str, expected: str
) -> None:
    # Arrange
    generator = IdGenerator(0)
    source = _ZerosFirst()
    generator._random = source  # type: ignore[assignment]

    # Act
    value = getattr(generator, method)()

    # Assert
    assert value == expected
    assert source.calls == 3
    assert value.strip("0") != ""
