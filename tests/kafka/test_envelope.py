"""The Kafka wire format: every contract round-trips, and every bad record is rejected with the
right reason and a detail that says what was wrong (first failing check wins)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from config.models import KAFKA_MESSAGE_TYPES
from contracts import (
    ALL_CONTRACTS,
    AgentStatus,
    Bar,
    Contract,
    DecisionLog,
    Fill,
    Intent,
    MacroObservation,
    Opportunity,
    Order,
    RunControl,
    Signal,
    SocialPost,
    Watermark,
)
from engine.kafka.envelope import (
    CONTENT_TYPE,
    H_BUS_TOPIC,
    H_CONTENT_TYPE,
    H_MESSAGE_ID,
    H_PRODUCER_ID,
    H_RUN_ID,
    H_SCHEMA_VERSION,
    H_TRACEPARENT,
    H_TYPE,
    MESSAGE_TYPES,
    REQUIRED_HEADERS,
    Accepted,
    Envelope,
    Rejected,
    RejectReason,
    canonical_topic,
    decode,
    encode,
    message_key,
    traceparent,
)
from engine.telemetry.tracing import root_span_id
from tests.contracts import TRACE, examples, signal_example

Headers = list[tuple[str, bytes | None]]

MESSAGE_ID = "msg-0001"
PRODUCER = "engine-a"
SPAN = "00f067aa0ba902b7"
TRACEPARENT_RE = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

EXAMPLES = examples()

BUS_TOPICS: dict[type[Contract], str] = {
    Bar: "bar.GOOG",
    MacroObservation: "macro.10year",
    SocialPost: "post.reddit",
    Watermark: "watermark.source.replay",
    Signal: "signal.momentum.AAPL",
    Opportunity: "opportunity.AAPL",
    Intent: "intent.AAPL",
    Order: "order.AAPL",
    Fill: "fill.AAPL",
    DecisionLog: "decision._portfolio",  # the example's DecisionLog has no symbol
    AgentStatus: "agent.status.momentum",
    RunControl: "run.control",
}


def _encode(message: Contract | None = None, **overrides: Any) -> Envelope:
    message = EXAMPLES[Signal] if message is None else message
    kwargs: dict[str, Any] = {
        "kafka_topic": "tradeengine.signals",
        "message_id": MESSAGE_ID,
        "producer_id": PRODUCER,
        **overrides,
    }
    bus_topic = kwargs.pop("bus_topic", BUS_TOPICS[type(message)])
    return encode(bus_topic, message, **kwargs)


def _signal_headers() -> Headers:
    return list(_encode().headers)


def _set(headers: Headers, name: str, value: bytes | None) -> Headers:
    return [(n, value if n == name else v) for n, v in headers]


def _drop(headers: Headers, name: str) -> Headers:
    return [(n, v) for n, v in headers if n != name]


def _rejected(result: Accepted | Rejected) -> Rejected:
    assert isinstance(result, Rejected), f"expected a rejection, got {result}"
    return result


def _accepted(result: Accepted | Rejected) -> Accepted:
    assert isinstance(result, Accepted), f"expected acceptance, got {result}"
    return result


# --------------------------------------------------------------------------------- the registry


def test_message_types_when_compared_with_config_then_same_set() -> None:
    # Arrange / Act
    names = set(MESSAGE_TYPES)
    # Assert
    assert names == set(KAFKA_MESSAGE_TYPES)
    assert set(MESSAGE_TYPES.values()) == set(ALL_CONTRACTS)
    assert all(MESSAGE_TYPES[cls.__name__] is cls for cls in ALL_CONTRACTS)


# --------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", list(EXAMPLES), ids=lambda cls: cls.__name__)
def test_decode_when_contract_encoded_then_same_message_on_same_topic(cls: type[Contract]) -> None:
    # Arrange
    message = EXAMPLES[cls]
    envelope = _encode(message, run_id="seed0-1a2b3c4d-0001")
    # Act
    result = decode(envelope.value, envelope.headers)
    # Assert
    accepted = _accepted(result)
    assert accepted.message == message
    assert type(accepted.message) is cls
    assert accepted.bus_topic == BUS_TOPICS[cls]
    assert accepted.message_id == MESSAGE_ID
    assert accepted.producer_id == PRODUCER
    assert accepted.run_id == "seed0-1a2b3c4d-0001"
    assert envelope.value == message.to_json()
    assert envelope.topic == "tradeengine.signals"
    assert envelope.message_id == MESSAGE_ID


@pytest.mark.parametrize(
    "cls", [c for c in EXAMPLES if c is not Watermark], ids=lambda cls: cls.__name__
)
def test_decode_when_no_bus_topic_header_then_message_topic_used(cls: type[Contract]) -> None:
    # Arrange
    envelope = _encode(EXAMPLES[cls])
    # Act
    result = decode(envelope.value, _drop(list(envelope.headers), H_BUS_TOPIC))
    # Assert
    assert _accepted(result).bus_topic == BUS_TOPICS[cls]


@pytest.mark.parametrize("kind", ["source", "agent", "stage"])
def test_decode_when_watermark_with_any_watermark_kind_then_accepted_on_that_topic(
    kind: str,
) -> None:
    # Arrange
    envelope = _encode(EXAMPLES[Watermark], bus_topic=f"watermark.{kind}.replay")
    # Act
    result = decode(envelope.value, envelope.headers)
    # Assert
    assert _accepted(result).bus_topic == f"watermark.{kind}.replay"


def test_decode_when_optional_headers_absent_then_producer_and_run_id_none() -> None:
    # Arrange
    headers = _drop(_drop(_signal_headers(), H_PRODUCER_ID), H_TRACEPARENT)
    # Act
    result = decode(_encode().value, headers)
    # Assert
    accepted = _accepted(result)
    assert accepted.producer_id is None
    assert accepted.run_id is None


def test_decode_when_bus_prefix_set_then_prefix_put_in_front_of_topic() -> None:
    # Arrange
    envelope = _encode()
    # Act
    result = decode(envelope.value, envelope.headers, bus_prefix="remote.east")
    # Assert
    assert _accepted(result).bus_topic == "remote.east.signal.momentum.AAPL"


def test_decode_when_type_in_allowed_types_then_accepted() -> None:
    # Arrange
    envelope = _encode()
    # Act
    result = decode(envelope.value, envelope.headers, allowed_types=frozenset({"Signal", "Bar"}))
    # Assert
    assert _accepted(result).message == EXAMPLES[Signal]


def test_decode_when_foreign_headers_null_or_binary_then_ignored() -> None:
    # Arrange
    headers = [("x-baggage", None), ("x-binary", b"\xff\xfe"), *_signal_headers()]
    headers.append((H_MESSAGE_ID, MESSAGE_ID.encode()))  # a repeat with the same value is fine
    # Act
    result = decode(_encode().value, headers)
    # Assert
    assert _accepted(result).message_id == MESSAGE_ID


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
def test_decode_when_json_content_type_variant_then_accepted(content_type: str) -> None:
    # Arrange
    headers = _set(_signal_headers(), H_CONTENT_TYPE, content_type.encode())
    # Act
    result = decode(_encode().value, headers)
    # Assert
    _accepted(result)


def test_decode_when_value_exactly_at_limit_then_accepted() -> None:
    # Arrange
    envelope = _encode()
    # Act
    result = decode(envelope.value, envelope.headers, max_bytes=len(envelope.value))
    # Assert
    _accepted(result)


# ------------------------------------------------------------------------------------ encoding


def test_encode_when_called_then_headers_in_fixed_order_as_utf8() -> None:
    # Arrange
    message = EXAMPLES[Signal]
    # Act
    envelope = _encode(message, span_id=SPAN)
    # Assert
    assert envelope.headers == (
        (H_TYPE, b"Signal"),
        (H_SCHEMA_VERSION, b"1"),
        (H_CONTENT_TYPE, CONTENT_TYPE.encode()),
        (H_MESSAGE_ID, MESSAGE_ID.encode()),
        (H_PRODUCER_ID, PRODUCER.encode()),
        (H_TRACEPARENT, f"00-{TRACE}-{SPAN}-01".encode()),
        (H_BUS_TOPIC, b"signal.momentum.AAPL"),
    )
    assert envelope.key == b"AAPL"


def test_encode_when_run_id_given_then_run_id_header_last() -> None:
    # Arrange / Act
    envelope = _encode(run_id="run-7")
    # Assert
    assert envelope.headers[-1] == (H_RUN_ID, b"run-7")
    assert [name for name, _ in envelope.headers].count(H_RUN_ID) == 1


def test_traceparent_when_span_given_then_w3c_with_sampled_flag() -> None:
    # Arrange / Act
    value = traceparent(TRACE, SPAN)
    # Assert
    assert value == f"00-{TRACE}-{SPAN}-01"


def test_traceparent_when_no_span_then_root_span_of_trace() -> None:
    # Arrange
    expected_span = format(root_span_id(TRACE), "016x")
    # Act
    value = traceparent(TRACE, None)
    # Assert
    assert value == f"00-{TRACE}-{expected_span}-01"
    assert TRACEPARENT_RE.fullmatch(value)


@pytest.mark.parametrize(
    ("cls", "key"),
    [
        (Bar, b"GOOG"),
        (MacroObservation, b"10year"),
        (SocialPost, b"reddit"),
        (Watermark, b"replay"),
        (Signal, b"AAPL"),
        (Opportunity, b"AAPL"),
        (Intent, b"AAPL"),
        (Order, b"AAPL"),
        (Fill, b"AAPL"),
        (AgentStatus, b"momentum"),
        (RunControl, b"seed0-1a2b3c4d-0001"),
        (DecisionLog, None),  # the example is portfolio-level: no symbol
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else repr(v),
)
def test_message_key_when_contract_then_its_routing_field(
    cls: type[Contract], key: bytes | None
) -> None:
    # Arrange
    message = EXAMPLES[cls]
    # Act
    result = message_key(message)
    # Assert
    assert result == key


def test_message_key_when_decision_has_symbol_then_symbol() -> None:
    # Arrange
    message = EXAMPLES[DecisionLog].model_copy(update={"symbol": "BRK.B"})
    # Act / Assert
    assert message_key(message) == b"BRK.B"
    assert canonical_topic(message) == "decision.BRK_B"


def test_canonical_topic_when_each_contract_then_engine_topic_or_none_for_watermark() -> None:
    # Arrange / Act
    found = {cls: canonical_topic(message) for cls, message in EXAMPLES.items()}
    # Assert
    assert found == {cls: None if cls is Watermark else t for cls, t in BUS_TOPICS.items()}


def test_canonical_topic_when_symbol_has_dot_then_segment_encoded() -> None:
    # Arrange
    message = Signal(**signal_example(symbol="BRK.B"))
    # Act / Assert
    assert canonical_topic(message) == "signal.momentum.BRK_B"
    assert message_key(message) == b"BRK.B"


# ---------------------------------------------------------------------------------- rejections

SIGNAL_JSON = EXAMPLES[Signal].to_json()
Case = tuple[bytes | None, Headers, dict[str, Any]]


def _case(
    value: bytes | None = SIGNAL_JSON,
    headers: Headers | None = None,
    **kwargs: Any,
) -> Case:
    return value, _signal_headers() if headers is None else headers, kwargs


def _watermark_case(bus_topic: str | None) -> Case:
    envelope = _encode(EXAMPLES[Watermark])
    headers: Headers = list(envelope.headers)
    headers = (
        _drop(headers, H_BUS_TOPIC)
        if bus_topic is None
        else _set(headers, H_BUS_TOPIC, bus_topic.encode())
    )
    return envelope.value, headers, {}


REJECTIONS: dict[str, tuple[Case, RejectReason, str]] = {
    # The bad inputs named by the issue.
    "unknown type": (
        _case(headers=_set(_signal_headers(), H_TYPE, b"Signul")),
        RejectReason.UNKNOWN_TYPE,
        "unknown message type 'Signul'",
    ),
    "wrong schema version": (
        _case(headers=_set(_signal_headers(), H_SCHEMA_VERSION, b"2")),
        RejectReason.WRONG_SCHEMA_VERSION,
        "Signal schema-version '2' is not supported (supported: 1)",
    ),
    "invalid JSON": (
        _case(value=b'{"trace_id": '),
        RejectReason.INVALID_JSON,
        "Invalid JSON",
    ),
    "NaN mu": (
        _case(value=SIGNAL_JSON.replace(b'"mu":0.01', b'"mu":NaN')),
        RejectReason.INVALID_CONTRACT,
        "mu: Input should be a finite number",
    ),
    "oversized": (
        _case(max_bytes=100),
        RejectReason.OVERSIZED,
        f"value is {len(SIGNAL_JSON)} bytes, larger than the limit of 100 bytes",
    ),
    **{
        f"missing {name}": (
            _case(headers=_drop(_signal_headers(), name)),
            RejectReason.MISSING_HEADER,
            f"required header {name!r} is missing",
        )
        for name in REQUIRED_HEADERS
    },
    # The other checks.
    "tombstone": (_case(value=None), RejectReason.INVALID_JSON, "empty value (tombstone)"),
    "value not UTF-8": (
        _case(value=b"\xff\xfe{}"),
        RejectReason.INVALID_JSON,
        "Invalid JSON",
    ),
    "infinite mu": (
        _case(value=SIGNAL_JSON.replace(b'"mu":0.01', b'"mu":-Infinity')),
        RejectReason.INVALID_CONTRACT,
        "mu: Input should be a finite number",
    ),
    "overflowing mu": (
        _case(value=SIGNAL_JSON.replace(b'"mu":0.01', b'"mu":1e999')),
        RejectReason.INVALID_CONTRACT,
        "mu: Input should be a finite number",
    ),
    "mu as string": (
        _case(value=SIGNAL_JSON.replace(b'"mu":0.01', b'"mu":"0.01"')),
        RejectReason.INVALID_CONTRACT,
        "mu: Input should be a valid number",
    ),
    "missing field": (
        _case(value=SIGNAL_JSON.replace(b'"sigma":0.05,', b"")),
        RejectReason.INVALID_CONTRACT,
        "sigma: Field required",
    ),
    "JSON of another type": (
        _case(value=EXAMPLES[Bar].to_json()),
        RejectReason.INVALID_CONTRACT,
        "agent: Field required",
    ),
    "null header": (
        _case(headers=_set(_signal_headers(), H_TYPE, None)),
        RejectReason.BAD_HEADER,
        "header 'type' has no value (null)",
    ),
    "header not UTF-8": (
        _case(headers=_set(_signal_headers(), H_PRODUCER_ID, b"\xc3\x28")),
        RejectReason.BAD_HEADER,
        "header 'producer-id' is not UTF-8",
    ),
    "required header twice, different values": (
        _case(headers=[*_signal_headers(), (H_TYPE, b"Bar")]),
        RejectReason.BAD_HEADER,
        "header 'type' given twice with different values: 'Signal' and 'Bar'",
    ),
    "message id with space": (
        _case(headers=_set(_signal_headers(), H_MESSAGE_ID, b"msg 1")),
        RejectReason.BAD_HEADER,
        "header 'message-id' 'msg 1' is not 1-128 of [A-Za-z0-9_.:-]",
    ),
    "message id with trailing newline": (
        _case(headers=_set(_signal_headers(), H_MESSAGE_ID, b"msg1\n")),
        RejectReason.BAD_HEADER,
        "header 'message-id'",
    ),
    "message id too long": (
        _case(headers=_set(_signal_headers(), H_MESSAGE_ID, b"m" * 129)),
        RejectReason.BAD_HEADER,
        "is not 1-128 of",
    ),
    "empty message id": (
        _case(headers=_set(_signal_headers(), H_MESSAGE_ID, b"")),
        RejectReason.BAD_HEADER,
        "header 'message-id' ''",
    ),
    "type not allowed": (
        _case(allowed_types=frozenset({"Bar", "Watermark"})),
        RejectReason.TYPE_NOT_ALLOWED,
        "type Signal is not accepted from this topic (allowed: Bar, Watermark)",
    ),
    "schema version not a number": (
        _case(headers=_set(_signal_headers(), H_SCHEMA_VERSION, b"v1")),
        RejectReason.WRONG_SCHEMA_VERSION,
        "schema-version 'v1' is not supported (supported: 1)",
    ),
    "schema version with sign": (
        _case(headers=_set(_signal_headers(), H_SCHEMA_VERSION, b"+1")),
        RejectReason.WRONG_SCHEMA_VERSION,
        "(supported: 1)",
    ),
    "content type text": (
        _case(headers=_set(_signal_headers(), H_CONTENT_TYPE, b"text/plain")),
        RejectReason.UNSUPPORTED_CONTENT_TYPE,
        "content-type 'text/plain' is not supported (expected application/json)",
    ),
    "content type other charset": (
        _case(
            headers=_set(_signal_headers(), H_CONTENT_TYPE, b"application/json; charset=latin-1")
        ),
        RejectReason.UNSUPPORTED_CONTENT_TYPE,
        "charset=latin-1",
    ),
    "traceparent malformed": (
        _case(headers=_set(_signal_headers(), H_TRACEPARENT, b"00-abc-def-01")),
        RejectReason.BAD_HEADER,
        "header 'traceparent' '00-abc-def-01' is not W3C",
    ),
    "bus topic with wildcard": (
        _case(headers=_set(_signal_headers(), H_BUS_TOPIC, b"signal.*.AAPL")),
        RejectReason.BAD_HEADER,
        "header 'bus-topic': invalid topic 'signal.*.AAPL'",
    ),
    "bus topic with empty segment": (
        _case(headers=_set(_signal_headers(), H_BUS_TOPIC, b"signal..AAPL")),
        RejectReason.BAD_HEADER,
        "segments must be non-empty",
    ),
    "bus topic of another symbol": (
        _case(headers=_set(_signal_headers(), H_BUS_TOPIC, b"signal.momentum.MSFT")),
        RejectReason.TOPIC_MISMATCH,
        "bus-topic 'signal.momentum.MSFT' does not match the message's topic "
        "'signal.momentum.AAPL'",
    ),
    "watermark on a non-watermark topic": (
        _watermark_case("bar.replay"),
        RejectReason.TOPIC_MISMATCH,
        "bus-topic 'bar.replay' is not a watermark topic of origin 'replay' (expected one of: "
        "watermark.source.replay, watermark.agent.replay, watermark.stage.replay)",
    ),
    "watermark of another origin": (
        _watermark_case("watermark.agent.momentum"),
        RejectReason.TOPIC_MISMATCH,
        "is not a watermark topic of origin 'replay'",
    ),
    "watermark without bus topic": (
        _watermark_case(None),
        RejectReason.MISSING_HEADER,
        "header 'bus-topic' is required for Watermark",
    ),
}


def test_rejection_table_when_listed_then_covers_every_reason_decode_uses() -> None:
    # Arrange
    used_by_callers_only = {RejectReason.STALE_RUN}
    # Act
    covered = {reason for _, reason, _ in REJECTIONS.values()}
    # Assert
    assert covered == set(RejectReason) - used_by_callers_only


@pytest.mark.parametrize(("case", "reason", "detail"), REJECTIONS.values(), ids=list(REJECTIONS))
def test_decode_when_bad_record_then_rejected_with_reason_and_detail(
    case: Case, reason: RejectReason, detail: str
) -> None:
    # Arrange
    value, headers, kwargs = case
    # Act
    result = decode(value, headers, **kwargs)
    # Assert
    rejected = _rejected(result)
    assert rejected.reason is reason
    assert detail in rejected.detail
    assert len(rejected.detail) <= 500


def test_decode_when_message_id_well_formed_then_rejection_carries_it() -> None:
    # Arrange
    headers = _set(_signal_headers(), H_TYPE, b"Nope")
    # Act
    rejected = _rejected(decode(SIGNAL_JSON, headers))
    # Assert
    assert rejected.message_id == MESSAGE_ID


def test_decode_when_message_id_malformed_then_rejection_has_none() -> None:
    # Arrange
    headers = _set(_signal_headers(), H_MESSAGE_ID, b"bad id")
    # Act
    rejected = _rejected(decode(SIGNAL_JSON, headers))
    # Assert
    assert rejected.message_id is None


def test_decode_when_several_checks_fail_then_first_in_order_wins() -> None:
    # Arrange: oversized, a null header, no type and a wrong version all at once
    headers = _set(_drop(_signal_headers(), H_TYPE), H_SCHEMA_VERSION, None)
    # Act
    oversized = _rejected(decode(SIGNAL_JSON, headers, max_bytes=10))
    tombstone = _rejected(decode(None, headers, max_bytes=10))
    bad_header = _rejected(decode(SIGNAL_JSON, headers))
    # Assert
    assert oversized.reason is RejectReason.OVERSIZED
    assert tombstone.reason is RejectReason.INVALID_JSON
    assert bad_header.reason is RejectReason.BAD_HEADER


def test_decode_when_huge_header_and_many_errors_then_detail_at_most_500_chars() -> None:
    # Arrange
    garbage = json.dumps({f"field_{i}": "x" * 200 for i in range(50)}).encode()
    headers = _set(_signal_headers(), H_TYPE, b"T" * 10_000)
    # Act
    unknown = _rejected(decode(SIGNAL_JSON, headers))
    invalid = _rejected(decode(garbage, _signal_headers()))
    # Assert
    assert unknown.reason is RejectReason.UNKNOWN_TYPE
    assert len(unknown.detail) <= 500
    assert invalid.reason is RejectReason.INVALID_CONTRACT
    assert len(invalid.detail) <= 500
    assert "more)" in invalid.detail


def _float_paths(node: object, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of every float in a parsed JSON document."""
    if isinstance(node, float):
        yield path
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from _float_paths(child, (*path, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _float_paths(child, (*path, index))


def _replaced(document: Any, path: tuple[Any, ...], value: object) -> Any:
    if not path:
        return value
    copy: Any = dict(document) if isinstance(document, dict) else list(document)
    copy[path[0]] = _replaced(document[path[0]], path[1:], value)
    return copy


NON_FINITE_CASES = [
    (cls, path, token)
    for cls, message in EXAMPLES.items()
    for path in _float_paths(json.loads(message.to_json()))
    for token in ("nan", "inf", "-inf")
]


@pytest.mark.parametrize(
    ("cls", "path", "token"),
    NON_FINITE_CASES,
    ids=[f"{c.__name__}.{'.'.join(map(str, p))}={t}" for c, p, t in NON_FINITE_CASES],
)
def test_decode_when_any_float_is_non_finite_then_invalid_contract(
    cls: type[Contract], path: tuple[Any, ...], token: str
) -> None:
    # Arrange: json.dumps writes NaN / Infinity / -Infinity, which pydantic's parser accepts
    envelope = _encode(EXAMPLES[cls])
    document = _replaced(json.loads(envelope.value), path, float(token))
    value = json.dumps(document).encode()
    # Act
    result = decode(value, envelope.headers)
    # Assert
    rejected = _rejected(result)
    assert rejected.reason is RejectReason.INVALID_CONTRACT
    assert "finite number" in rejected.detail


def test_non_finite_cases_when_collected_then_every_contract_with_floats_covered() -> None:
    # Arrange
    expected = {Bar, MacroObservation, Signal, Opportunity, Intent, Order, Fill, DecisionLog}
    # Act
    covered = {cls for cls, _, _ in NON_FINITE_CASES}
    # Assert
    assert covered == expected
