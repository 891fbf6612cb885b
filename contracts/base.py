"""The base every message contract derives from, and the constrained field types they share.

Why pydantic and not msgspec: the engine validates only where data enters (sources, plugin
outputs, Kafka ingress, config), so the ~2 us validate/dump cost is paid rarely, and pydantic
gives JSON Schema export and field-naming error messages for free.

Trade-offs made here:
- Numbers are `strict` (no "1.5" strings or booleans silently turned into floats) and must be
  finite: a NaN that slipped into a sizing formula would be a silent, expensive bug.
- Timestamps must be timezone-aware; they are normalised to UTC so equal instants compare and
  serialise equally (a replay is reproduced byte for byte).
- Enums are accepted by value in Python too (not strict), because plugin authors write
  `horizon="1d"`; the schema still lists the allowed values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _aware_utc(value: datetime) -> datetime:
    """Reject naive datetimes; normalise aware ones to UTC (one validator: it runs per field of
    every message, so the common already-UTC case returns at once)."""
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None or tz.utcoffset(value) is None:
        raise ValueError("naive datetime: a timezone is required (use UTC)")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00: the UTC instant is before year 1
        raise ValueError("datetime out of range once converted to UTC") from None


_ZERO_IDS = frozenset({"0" * 32, "0" * 16})


def _not_all_zero(value: str) -> str:
    # The pattern already guarantees fixed-length lowercase hex, so all-zero is one set lookup.
    if value in _ZERO_IDS:
        raise ValueError("an all-zero id is invalid (W3C trace context)")
    return value


UtcDatetime = Annotated[
    datetime,
    Field(strict=True),
    AfterValidator(_aware_utc),
]
"""A timezone-aware datetime, stored in UTC. Naive datetimes are rejected, never assumed UTC."""


TraceId = Annotated[
    str,
    Field(pattern=r"^[0-9a-f]{32}$", description="W3C trace-id: 32 lowercase hex characters"),
    AfterValidator(_not_all_zero),
]
SpanId = Annotated[
    str,
    Field(pattern=r"^[0-9a-f]{16}$", description="W3C span-id: 16 lowercase hex characters"),
    AfterValidator(_not_all_zero),
]

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]
NonNegativeFloat = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]
Probability = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1)]
StrictInt = Annotated[int, Field(strict=True)]

Symbol = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9^][A-Za-z0-9._/:^=-]{0,31}$",
        description="Instrument symbol, e.g. AAPL, BRK.B, EUR/USD, ^GSPC",
    ),
]
Name = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="Component name: lowercase letters, digits and underscores",
    ),
]
FeatureName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

JsonScalar = str | bool | StrictInt | FiniteFloat | None


class Contract(BaseModel):
    """A versioned, immutable message.

    Subclasses declare `schema_version: Literal[N] = N`; the committed JSON Schemas in
    `contracts/schemas/` are checked against the models, and a schema change without a version
    bump fails the test suite.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        validate_default=True,
        str_strip_whitespace=False,
    )

    trace_id: TraceId
    ts_event: UtcDatetime = Field(description="When it happened (market time), UTC")
    ts_init: UtcDatetime = Field(description="When this object was made, from the engine clock")

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: str | bytes | bytearray) -> Any:
        return cls.model_validate_json(data)
