"""The wire format between the engine's bus and Kafka: one contract per record, JSON value,
metadata in headers.

Why headers and not a wrapper object around the JSON: a consumer can route, filter (allowed
types) and reject (unknown type, wrong schema version, oversized) a record without parsing its
value, and the value stays exactly `Contract.to_json()`, so the committed JSON Schemas in
`contracts/schemas/` describe what is on the topic and non-Python consumers need no envelope
knowledge to read it.

Trade-offs made here:

- JSON, not Avro/Protobuf: the contracts already validate and serialise themselves with pydantic
  and export JSON Schemas; no schema registry is needed. The ``schema-version`` header is checked
  against the model before the value is parsed, so a producer on another version is dead-lettered
  with a clear reason instead of failing field by field.
- `decode` never raises, whatever the bytes: a poison record must end in the dead-letter topic
  with a reason, never crash the consumer loop (it is fuzzed in tests/kafka). Checks run in a
  fixed order and the first failure wins, so a record always gets one stable reason.
- Only the headers named here are read; foreign headers (tracing baggage, other frameworks'
  metadata, binary or null values) are ignored, so adding a header elsewhere never starts
  dead-lettering. A header this module reads that appears twice with different values is
  refused rather than guessed.
- Non-finite numbers: pydantic's JSON parser accepts the non-standard tokens ``NaN``,
  ``Infinity`` and ``-Infinity`` (and ``1e999`` parses to infinity), so they are not
  ``INVALID_JSON``; the contracts forbid non-finite floats (``allow_inf_nan=False`` everywhere),
  so such a record is ``INVALID_CONTRACT`` ("mu: Input should be a finite number").
- The bus topic is derived from the message (a remote Signal lands on
  ``signal.<agent>.<symbol>`` like a local one); a ``bus-topic`` header must agree with it. A
  `Watermark` does not imply its topic (source, agent or stage watermark), so it needs the header.
- Hot path, decoding: one pass over the headers into a dict, precompiled patterns, dict lookups
  for the type and version, and no topic validation when the header equals the derived topic
  (derived topics are valid by construction).
- Hot path, encoding (every egress record): the value comes from the contract class's pydantic
  serializer directly (the bytes `Contract.to_json` returns, without its str round trip), the
  header pairs that are the same for every record of a contract class or producer are built
  once, the root span id is hashed without an int round trip, and the Envelope is filled
  without the frozen dataclass's per-field ``object.__setattr__``. The output is byte-for-byte
  what the straightforward code gives (tests/kafka compare them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

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
    topics,
)
from engine.bus import validate_topic

__all__ = [
    "CONTENT_TYPE",
    "H_BUS_TOPIC",
    "H_CONTENT_TYPE",
    "H_ERROR_DETAIL",
    "H_ERROR_REASON",
    "H_MESSAGE_ID",
    "H_PRODUCER_ID",
    "H_RUN_ID",
    "H_SCHEMA_VERSION",
    "H_SOURCE_OFFSET",
    "H_SOURCE_PARTITION",
    "H_SOURCE_TOPIC",
    "H_TRACEPARENT",
    "H_TYPE",
    "MESSAGE_TYPES",
    "REQUIRED_HEADERS",
    "Accepted",
    "Envelope",
    "RejectReason",
    "Rejected",
    "canonical_topic",
    "decode",
    "encode",
    "message_key",
    "traceparent",
]

CONTENT_TYPE: Final = "application/json"

H_TYPE: Final = "type"
H_SCHEMA_VERSION: Final = "schema-version"
H_CONTENT_TYPE: Final = "content-type"
H_MESSAGE_ID: Final = "message-id"
H_PRODUCER_ID: Final = "producer-id"
H_TRACEPARENT: Final = "traceparent"
H_BUS_TOPIC: Final = "bus-topic"
H_RUN_ID: Final = "run-id"

# Dead-letter headers, added to the original record's headers.
H_ERROR_REASON: Final = "error-reason"
H_ERROR_DETAIL: Final = "error-detail"
H_SOURCE_TOPIC: Final = "source-topic"
H_SOURCE_PARTITION: Final = "source-partition"
H_SOURCE_OFFSET: Final = "source-offset"

REQUIRED_HEADERS: Final = (H_TYPE, H_SCHEMA_VERSION, H_CONTENT_TYPE, H_MESSAGE_ID)

_READ_HEADERS: Final = frozenset(
    (*REQUIRED_HEADERS, H_PRODUCER_ID, H_TRACEPARENT, H_BUS_TOPIC, H_RUN_ID)
)
"""The headers `decode` reads; every other header is ignored."""

_TYPES: Final[dict[str, type[Contract]]] = {cls.__name__: cls for cls in ALL_CONTRACTS}

MESSAGE_TYPES: Final[Mapping[str, type[Contract]]] = MappingProxyType(_TYPES)
"""Class name (the ``type`` header) -> contract class, for every contract the bridge carries."""


def _schema_version_of(cls: type[Contract]) -> int:
    # Every contract declares `schema_version: Literal[N] = N`; the default is the version.
    version = cls.model_fields["schema_version"].default
    if not isinstance(version, int):
        raise TypeError(f"{cls.__name__}.schema_version has no int default")
    return version


_VERSIONS: Final[dict[str, int]] = {name: _schema_version_of(cls) for name, cls in _TYPES.items()}
_VERSION_TEXT: Final[dict[str, str]] = {name: str(v) for name, v in _VERSIONS.items()}

# fullmatch everywhere: '$' would also accept a trailing newline. ASCII: under IGNORECASE a
# Unicode pattern also matches non-ASCII look-alikes (U+017F long s matches 's').
_MESSAGE_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_TRACEPARENT_RE: Final = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_CONTENT_TYPE_RE: Final = re.compile(
    r"application/json(?:[ \t]*;[ \t]*charset=utf-8)?", re.IGNORECASE | re.ASCII
)
_DECIMAL_RE: Final = re.compile(r"[0-9]{1,18}")

_MAX_DETAIL: Final = 500
_MAX_SHOWN: Final = 80


class RejectReason(StrEnum):
    """Why a record was not accepted; the value is the dead-letter ``error-reason`` header."""

    MISSING_HEADER = "missing_header"
    BAD_HEADER = "bad_header"
    UNKNOWN_TYPE = "unknown_type"
    TYPE_NOT_ALLOWED = "type_not_allowed"
    WRONG_SCHEMA_VERSION = "wrong_schema_version"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    OVERSIZED = "oversized"
    INVALID_JSON = "invalid_json"
    INVALID_CONTRACT = "invalid_contract"
    TOPIC_MISMATCH = "topic_mismatch"
    STALE_RUN = "stale_run"
    """Used by callers (a record of another engine run), never by `decode`."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Kafka record, ready to produce (also what the spool stores)."""

    topic: str
    """The Kafka topic."""
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    message_id: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A valid record: the message and the bus topic to publish it on."""

    bus_topic: str
    message: Contract
    message_id: str
    producer_id: str | None
    run_id: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """An invalid record; `detail` is short human text (at most 500 characters)."""

    reason: RejectReason
    detail: str
    message_id: str | None
    """The record's message id when it had a well-formed one, for logs and the dead letter."""


# ------------------------------------------------------------------------------ keys and topics

_KEY_FIELDS: Final = ("symbol", "agent", "series", "origin", "run_id", "source")
"""Partition key candidates, first str one wins: per-symbol order for market and trading
messages, per-agent / per-series / per-origin / per-run / per-source order for the others."""


def _key_fields_of(cls: type[Contract]) -> tuple[str, ...]:
    return tuple(name for name in _KEY_FIELDS if name in cls.model_fields)


_KEY_FIELDS_OF: Final[dict[type[Contract], tuple[str, ...]]] = {
    cls: _key_fields_of(cls) for cls in ALL_CONTRACTS
}


def message_key(message: Contract) -> bytes | None:
    """The partition key (UTF-8), so messages about one thing stay in order on one partition.

    The message's `symbol` when it has one, else its `agent`, `series`, `origin`, `run_id` or
    `source`; None only when none applies (a portfolio-level DecisionLog)."""
    cls = type(message)
    names = _KEY_FIELDS_OF.get(cls)
    if names is None:
        names = _key_fields_of(cls)
    for name in names:
        value = getattr(message, name)
        if isinstance(value, str) and value:
            return value.encode()
    return None


_TOPIC_OF: Final[dict[type[Contract], Callable[[Any], str | None]]] = {
    Signal: lambda m: topics.signal(m.agent, m.symbol),
    Bar: lambda m: topics.bar(m.symbol),
    MacroObservation: lambda m: topics.macro(m.series),
    SocialPost: lambda m: topics.post(m.source),
    AgentStatus: lambda m: topics.agent_status(m.agent),
    Opportunity: lambda m: topics.opportunity(m.symbol),
    Intent: lambda m: topics.intent(m.symbol),
    Order: lambda m: topics.order(m.symbol),
    Fill: lambda m: topics.fill(m.symbol),
    DecisionLog: lambda m: topics.decision(m.symbol),
    RunControl: lambda m: topics.run_control(),
    # A watermark may be a source's, an agent's or a stage's: the record must say which.
    Watermark: lambda m: None,
}


def canonical_topic(message: Contract) -> str | None:
    """The bus topic the engine itself publishes `message` on; None for a `Watermark` (and an
    unknown contract), whose topic the message does not determine."""
    topic_of = _TOPIC_OF.get(type(message))
    return topic_of(message) if topic_of is not None else None


def _watermark_topics(message: Watermark) -> tuple[str, str, str]:
    return (
        topics.source_watermark(message.origin),
        topics.agent_watermark(message.origin),
        topics.stage_watermark(message.origin),
    )


def traceparent(trace_id: str, span_id: str | None) -> str:
    """The W3C ``traceparent`` of a message (sampled flag set).

    Without a span id the chain's root span id (derived from the trace id, see
    `engine.telemetry.tracing.root_span_id`) is used, so the consumer's spans hang under the
    trace's source span."""
    if span_id is None:
        span_id = _root_span_hex(trace_id)
    return f"00-{trace_id}-{span_id}-01"


_blake2b: Final = hashlib.blake2b
_ZERO_DIGEST: Final = bytes(8)


def _root_span_hex(trace_id: str) -> str:
    """``format(root_span_id(trace_id), "016x")`` without the int round trip: the same blake2b
    digest, as hex (an all-zero digest is span id 1, as there). tests/kafka check they agree."""
    digest = _blake2b(bytes.fromhex(trace_id), digest_size=8).digest()
    return digest.hex() if digest != _ZERO_DIGEST else "0000000000000001"


# ------------------------------------------------------------------------------------- encoding

_CONTENT_TYPE_HEADER: Final = (H_CONTENT_TYPE, CONTENT_TYPE.encode())

_ClassHeaders = tuple[tuple[str, bytes], tuple[str, bytes], tuple[str, bytes]]
"""(type, schema-version, content-type) header pairs of one contract class."""


def _class_headers(cls: type[Contract]) -> _ClassHeaders:
    name = cls.__name__
    version = _VERSION_TEXT[name] if _TYPES.get(name) is cls else str(_schema_version_of(cls))
    return (H_TYPE, name.encode()), (H_SCHEMA_VERSION, version.encode()), _CONTENT_TYPE_HEADER


_CLASS_HEADERS: Final[dict[type[Contract], _ClassHeaders]] = {
    cls: _class_headers(cls) for cls in ALL_CONTRACTS
}


def _serializer_of(cls: type[Contract]) -> Callable[[Any], bytes] | None:
    """The pydantic serializer's ``to_json``, which returns exactly the bytes of
    `Contract.to_json` (``model_dump_json().encode()``: same defaults, no str round trip);
    None for a class that overrides either method."""
    if cls.to_json is not Contract.to_json or cls.model_dump_json is not BaseModel.model_dump_json:
        return None
    return cls.__pydantic_serializer__.to_json


_SERIALIZERS: Final[dict[type[Contract], Callable[[Any], bytes] | None]] = {
    cls: _serializer_of(cls) for cls in ALL_CONTRACTS
}

_PRODUCER_HEADERS: dict[str, tuple[str, bytes]] = {}
"""producer id -> its header pair (an engine has one or two producer ids; bounded anyway)."""


def _slot_setter(name: str) -> Callable[[Envelope, Any], None]:
    setter: Callable[[Envelope, Any], None] = Envelope.__dict__[name].__set__
    return setter


_new_envelope: Final = object.__new__
_set_topic: Final = _slot_setter("topic")
_set_key: Final = _slot_setter("key")
_set_value: Final = _slot_setter("value")
_set_headers: Final = _slot_setter("headers")
_set_message_id: Final = _slot_setter("message_id")
"""The slots of the frozen Envelope, set directly: the same object `Envelope(...)` makes, at a
third of the cost (the generated ``__init__`` goes through ``object.__setattr__`` per field)."""


def encode(
    bus_topic: str,
    message: Contract,
    *,
    kafka_topic: str,
    message_id: str,
    producer_id: str,
    span_id: str | None = None,
    run_id: str | None = None,
) -> Envelope:
    """The record for `message`, published on the bus as `bus_topic`, for Kafka topic
    `kafka_topic`. Header order is fixed (type, schema-version, content-type, message-id,
    producer-id, traceparent, bus-topic[, run-id]) so records are byte-for-byte reproducible."""
    cls = type(message)
    try:
        type_header, version_header, content_header = _CLASS_HEADERS[cls]
        to_json = _SERIALIZERS[cls]
    except KeyError:  # a contract class not in ALL_CONTRACTS (a subclass, a test model)
        type_header, version_header, content_header = _class_headers(cls)
        to_json = _serializer_of(cls)
    producer_header = _PRODUCER_HEADERS.get(producer_id)
    if producer_header is None:
        producer_header = (H_PRODUCER_ID, producer_id.encode())
        if len(_PRODUCER_HEADERS) < 1024:
            _PRODUCER_HEADERS[producer_id] = producer_header
    trace_id = message.trace_id
    if span_id is None:
        span_id = _root_span_hex(trace_id)
    message_id_header = (H_MESSAGE_ID, message_id.encode())
    traceparent_header = (H_TRACEPARENT, f"00-{trace_id}-{span_id}-01".encode())
    bus_topic_header = (H_BUS_TOPIC, bus_topic.encode())
    headers: tuple[tuple[str, bytes], ...] = (
        type_header,
        version_header,
        content_header,
        message_id_header,
        producer_header,
        traceparent_header,
        bus_topic_header,
    )
    if run_id is not None:
        headers += ((H_RUN_ID, run_id.encode()),)
    envelope: Envelope = _new_envelope(Envelope)
    _set_topic(envelope, kafka_topic)
    _set_key(envelope, message_key(message))
    _set_value(envelope, message.to_json() if to_json is None else to_json(message))
    _set_headers(envelope, headers)
    _set_message_id(envelope, message_id)
    return envelope


# ------------------------------------------------------------------------------------- decoding


def _clip(text: str, limit: int = _MAX_DETAIL) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: object) -> str:
    """A header value for a detail: repr (control characters stay visible), shortened."""
    return _clip(repr(value), _MAX_SHOWN)


def _validation_detail(errors: Sequence[ErrorDetails]) -> str:
    # Type mismatches last (stable): a union reports one per member it tried (str, bool, int,
    # ...), which would push the telling "Input should be a finite number" past the first three.
    errors = sorted(errors, key=lambda error: error["type"].endswith("_type"))
    parts = []
    for error in errors[:3]:
        loc = ".".join(str(part) for part in error["loc"])
        parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    more = len(errors) - 3
    if more > 0:
        parts.append(f"(+{more} more)")
    return _clip("; ".join(parts))


def decode(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
    *,
    allowed_types: frozenset[str] | None = None,
    max_bytes: int = 1_048_576,
    bus_prefix: str = "",
) -> Accepted | Rejected:
    """Validate one consumed record; never raises.

    Checks, first failure wins: value present and within `max_bytes`; the headers read here are
    readable UTF-8, the required ones present and not contradicting themselves; message-id
    well-formed; type known and (if `allowed_types`) allowed; schema-version the model's;
    content-type JSON; traceparent well-formed; the value a valid contract; the bus topic
    consistent with the message. `bus_prefix`, when set, is put in front of the bus topic.
    """
    fields: dict[str, str] = {}
    unreadable: str | None = None
    conflict: str | None = None
    try:
        for name, raw in headers:
            if name not in _READ_HEADERS:
                continue
            if raw is None:
                unreadable = unreadable or f"header {name!r} has no value (null)"
                continue
            try:
                text = raw.decode()
            except (UnicodeDecodeError, AttributeError):  # AttributeError: not bytes at all
                unreadable = unreadable or f"header {name!r} is not UTF-8: {_show(raw)}"
                continue
            first = fields.setdefault(name, text)
            if first != text and conflict is None:
                conflict = (
                    f"header {name!r} given twice with different values: "
                    f"{_show(first)} and {_show(text)}"
                )
    except (TypeError, ValueError):  # not a sequence of (name, value) pairs
        return Rejected(
            RejectReason.BAD_HEADER, "headers are not a sequence of (name, value) pairs", None
        )

    raw_id = fields.get(H_MESSAGE_ID)
    message_id = raw_id if raw_id is not None and _MESSAGE_ID_RE.fullmatch(raw_id) else None

    if value is None:
        return Rejected(RejectReason.INVALID_JSON, "empty value (tombstone)", message_id)
    try:
        size = len(value)
    except TypeError:
        return Rejected(RejectReason.INVALID_JSON, f"value is not bytes: {_show(value)}", None)
    if size > max_bytes:
        return Rejected(
            RejectReason.OVERSIZED,
            f"value is {size} bytes, larger than the limit of {max_bytes} bytes",
            message_id,
        )
    if unreadable is not None:
        return Rejected(RejectReason.BAD_HEADER, unreadable, message_id)
    for name in REQUIRED_HEADERS:
        if name not in fields:
            return Rejected(
                RejectReason.MISSING_HEADER, f"required header {name!r} is missing", message_id
            )
    if conflict is not None:
        return Rejected(RejectReason.BAD_HEADER, conflict, message_id)
    if message_id is None:
        return Rejected(
            RejectReason.BAD_HEADER,
            f"header 'message-id' {_show(raw_id)} is not 1-128 of [A-Za-z0-9_.:-]",
            None,
        )

    type_name = fields[H_TYPE]
    cls = _TYPES.get(type_name)
    if cls is None:
        return Rejected(
            RejectReason.UNKNOWN_TYPE, f"unknown message type {_show(type_name)}", message_id
        )
    if allowed_types is not None and type_name not in allowed_types:
        allowed = ", ".join(sorted(allowed_types)) or "none"
        return Rejected(
            RejectReason.TYPE_NOT_ALLOWED,
            _clip(f"type {type_name} is not accepted from this topic (allowed: {allowed})"),
            message_id,
        )
    version = fields[H_SCHEMA_VERSION]
    if version != _VERSION_TEXT[type_name] and not (
        _DECIMAL_RE.fullmatch(version) and int(version) == _VERSIONS[type_name]
    ):
        return Rejected(
            RejectReason.WRONG_SCHEMA_VERSION,
            f"{type_name} schema-version {_show(version)} is not supported "
            f"(supported: {_VERSIONS[type_name]})",
            message_id,
        )
    content_type = fields[H_CONTENT_TYPE]
    if content_type != CONTENT_TYPE and not _CONTENT_TYPE_RE.fullmatch(content_type):
        return Rejected(
            RejectReason.UNSUPPORTED_CONTENT_TYPE,
            f"content-type {_show(content_type)} is not supported (expected {CONTENT_TYPE})",
            message_id,
        )
    trace = fields.get(H_TRACEPARENT)
    if trace is not None and not _TRACEPARENT_RE.fullmatch(trace):
        return Rejected(
            RejectReason.BAD_HEADER,
            f"header 'traceparent' {_show(trace)} is not W3C '00-<32 hex>-<16 hex>-<2 hex>'",
            message_id,
        )

    try:
        message = cls.model_validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        # Bytes that are not UTF-8 are reported by the parser as invalid JSON too.
        reason = (
            RejectReason.INVALID_JSON
            if any(error["type"] == "json_invalid" for error in errors)
            else RejectReason.INVALID_CONTRACT
        )
        return Rejected(reason, _validation_detail(errors), message_id)
    except Exception as exc:  # a validator bug must dead-letter the record, not kill the loop
        return Rejected(
            RejectReason.INVALID_CONTRACT,
            _clip(f"validation failed: {type(exc).__name__}: {exc}"),
            message_id,
        )

    header_topic = fields.get(H_BUS_TOPIC)
    try:
        derived = canonical_topic(message)
    except ValueError as exc:  # unreachable for a validated message; never raise anyway
        return Rejected(RejectReason.INVALID_CONTRACT, _clip(str(exc)), message_id)
    if header_topic is None:
        if derived is None:
            return Rejected(
                RejectReason.MISSING_HEADER,
                f"header 'bus-topic' is required for {type_name} "
                "(its topic does not follow from the message)",
                message_id,
            )
        bus_topic = derived
    elif header_topic == derived:
        bus_topic = derived
    else:
        try:
            validate_topic(header_topic)
        except ValueError as exc:
            return Rejected(
                RejectReason.BAD_HEADER, _clip(f"header 'bus-topic': {exc}"), message_id
            )
        if derived is not None:
            return Rejected(
                RejectReason.TOPIC_MISMATCH,
                _clip(
                    f"bus-topic {_show(header_topic)} does not match the message's topic "
                    f"{derived!r}"
                ),
                message_id,
            )
        if isinstance(message, Watermark):
            expected = _watermark_topics(message)
            if header_topic not in expected:
                return Rejected(
                    RejectReason.TOPIC_MISMATCH,
                    _clip(
                        f"bus-topic {_show(header_topic)} is not a watermark topic of origin "
                        f"{message.origin!r} (expected one of: {', '.join(expected)})"
                    ),
                    message_id,
                )
        bus_topic = header_topic

    if bus_prefix:
        bus_topic = f"{bus_prefix}.{bus_topic}"
    return Accepted(
        bus_topic=bus_topic,
        message=message,
        message_id=message_id,
        producer_id=fields.get(H_PRODUCER_ID),
        run_id=fields.get(H_RUN_ID),
    )
