"""`decode` is the engine's door to records written by anyone: it must never raise, and it must
accept a record only when the message really is what the record says.

Two generators: arbitrary bytes with arbitrary (but header-name-aware) headers, which mostly
exercise the header checks, and near-valid records (a valid Signal or Bar with a few
mutations), which get past the headers and exercise the JSON and contract checks.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from contracts import Bar, Contract, Signal
from engine.kafka.envelope import (
    H_BUS_TOPIC,
    H_CONTENT_TYPE,
    H_MESSAGE_ID,
    H_PRODUCER_ID,
    H_RUN_ID,
    H_SCHEMA_VERSION,
    H_TRACEPARENT,
    H_TYPE,
    MESSAGE_TYPES,
    Accepted,
    Envelope,
    Rejected,
    RejectReason,
    decode,
    encode,
)
from tests.contracts import examples

Headers = list[tuple[str, bytes | None]]

HEADER_NAMES = (
    H_TYPE,
    H_SCHEMA_VERSION,
    H_CONTENT_TYPE,
    H_MESSAGE_ID,
    H_PRODUCER_ID,
    H_TRACEPARENT,
    H_BUS_TOPIC,
    H_RUN_ID,
)
PLAUSIBLE_VALUES = (
    b"Signal",
    b"Bar",
    b"Watermark",
    b"1",
    b"2",
    b"application/json",
    b"msg-1",
    b"signal.momentum.AAPL",
    b"watermark.source.replay",
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    b"",
    b"\xff",
)

EXAMPLES = examples()
BASES: dict[type[Contract], Envelope] = {
    cls: encode(
        topic,
        EXAMPLES[cls],
        kafka_topic="tradeengine.in",
        message_id="msg-1",
        producer_id="fuzz",
        run_id="run-1",
    )
    for cls, topic in ((Signal, "signal.momentum.AAPL"), (Bar, "bar.GOOG"))
}
NUMBER = re.compile(rb"(?<=:)-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
NUMBER_REPLACEMENTS = (b"NaN", b"Infinity", b"-Infinity", b"1e999", b'"1.5"', b"true", b"null")


def _check(result: object) -> Accepted | Rejected:
    """What every decode result must satisfy, valid input or not."""
    assert isinstance(result, Accepted | Rejected)
    event("accepted" if isinstance(result, Accepted) else result.reason.value)
    if isinstance(result, Rejected):
        assert result.reason is not RejectReason.STALE_RUN
        assert 0 < len(result.detail) <= 500
    return result


# ------------------------------------------------------------------------------ arbitrary bytes

header_values = st.none() | st.binary(max_size=64) | st.sampled_from(PLAUSIBLE_VALUES)
header_lists = st.lists(
    st.tuples(st.sampled_from(HEADER_NAMES) | st.text(max_size=12), header_values), max_size=12
)


@settings(max_examples=400, deadline=None)
@given(
    value=st.none() | st.binary(max_size=512),
    headers=header_lists,
    allowed=st.none() | st.frozensets(st.sampled_from(sorted(MESSAGE_TYPES)), max_size=3),
    max_bytes=st.integers(min_value=0, max_value=1024),
)
def test_decode_when_random_bytes_and_headers_then_never_raises(
    value: bytes | None, headers: Headers, allowed: frozenset[str] | None, max_bytes: int
) -> None:
    # Arrange (generated)
    # Act
    result = decode(value, headers, allowed_types=allowed, max_bytes=max_bytes)
    # Assert
    _check(result)


# -------------------------------------------------------------------------- near-valid records


@st.composite
def _mutations(draw: st.DrawFn, base: Envelope) -> tuple[bytes, Headers]:
    value = base.value
    headers: Headers = list(base.headers)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(
            st.sampled_from(
                ("drop", "duplicate", "flip", "number", "truncate", "version", "header_value")
            )
        )
        if kind == "drop" and headers:
            del headers[draw(st.integers(0, len(headers) - 1))]
        elif kind == "duplicate" and headers:
            name, old = headers[draw(st.integers(0, len(headers) - 1))]
            headers.append((name, draw(st.just(old) | st.sampled_from(PLAUSIBLE_VALUES))))
        elif kind == "flip" and value:
            at = draw(st.integers(0, len(value) - 1))
            value = value[:at] + bytes([draw(st.integers(0, 255))]) + value[at + 1 :]
        elif kind == "number":
            spans = [m.span() for m in NUMBER.finditer(value)]
            if spans:
                start, end = draw(st.sampled_from(spans))
                value = value[:start] + draw(st.sampled_from(NUMBER_REPLACEMENTS)) + value[end:]
        elif kind == "truncate":
            value = value[: draw(st.integers(0, len(value)))]
        elif kind == "version":
            version = draw(st.sampled_from((b"0", b"2", b"01", b"1.0", b"", b"\xff")))
            headers = [(n, version if n == H_SCHEMA_VERSION else v) for n, v in headers]
        elif kind == "header_value" and headers:
            at = draw(st.integers(0, len(headers) - 1))
            headers[at] = (headers[at][0], draw(header_values))
    return value, headers


near_valid = st.sampled_from(list(BASES.values())).flatmap(
    lambda base: st.tuples(st.just(base), _mutations(base))
)


@settings(max_examples=600, deadline=None)
@given(case=near_valid)
def test_decode_when_valid_record_mutated_then_never_raises_and_accepts_only_valid_messages(
    case: tuple[Envelope, tuple[bytes, Headers]],
) -> None:
    # Arrange (generated)
    _, (value, headers) = case
    # Act
    result = _check(decode(value, headers))
    # Assert
    if isinstance(result, Accepted):
        message: Any = result.message
        cls = type(message)
        assert cls.model_validate_json(value) == message
        assert cls.model_validate_json(message.to_json()) == message
        assert {n: v for n, v in headers if n == H_TYPE}[H_TYPE] == cls.__name__.encode()
