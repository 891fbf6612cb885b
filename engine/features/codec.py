"""Bytes of one stored feature value: a small header, then the payload.

Layout (little-endian): ``tag:u8 | ts_us:i64 | payload``

- tag 1 float: ``f64``; tag 2 int: ``i64``; tag 3 str: UTF-8;
- tag 4 float array, raw: ``f64 * n``; tag 5 float array, LZ4 block: ``n:u32 | lz4 bytes``.

Why binary and not JSON: floats round-trip bit for bit (a replay on Redis must decide exactly as
on the memory backend), a history of 250 floats is 2 kB instead of ~5 kB of text, and an array is
handed back as `np.frombuffer` over the (decompressed) bytes, without a copy per element.

Trade-offs made: arrays below `COMPRESS_MIN_BYTES` are stored raw (LZ4's framing and the
decompression call cost more than they save on small arrays); arrays come back read-only (they
are views of the stored bytes); the event time is kept in microseconds since the epoch, UTC.
A value that cannot be decoded raises `CorruptValueError`, which readers report and treat as
missing.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Final

import lz4.block
import numpy as np

from engine.features.schema import FeatureField, FeatureValue, FieldType, Value

COMPRESS_MIN_BYTES: Final = 512

_HEADER = struct.Struct("<Bq")
_F64 = struct.Struct("<d")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

TAG_FLOAT: Final = 1
TAG_INT: Final = 2
TAG_STR: Final = 3
TAG_ARRAY_RAW: Final = 4
TAG_ARRAY_LZ4: Final = 5

_TAGS_OF = {
    FieldType.FLOAT: (TAG_FLOAT,),
    FieldType.INT: (TAG_INT,),
    FieldType.STR: (TAG_STR,),
    FieldType.FLOAT_ARRAY: (TAG_ARRAY_RAW, TAG_ARRAY_LZ4),
}


class CorruptValueError(ValueError):
    """Stored bytes that do not decode as the declared feature."""


def ts_to_us(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"feature timestamps must be timezone-aware, got {ts!r}")
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_ts(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_FLOAT_VALUE = struct.Struct("<Bqd")


def encode(spec: FeatureField, value: Value, ts_us: int) -> bytes:
    """Bytes of an already validated value (see `FeatureSet.validate`)."""
    kind = spec.type
    if kind is FieldType.FLOAT:
        return _FLOAT_VALUE.pack(TAG_FLOAT, ts_us, value)
    if kind is FieldType.INT:
        return _HEADER.pack(TAG_INT, ts_us) + _I64.pack(value)
    if kind is FieldType.STR:
        assert isinstance(value, str)
        return _HEADER.pack(TAG_STR, ts_us) + value.encode("utf-8")
    assert isinstance(value, np.ndarray)
    raw = np.ascontiguousarray(value, dtype="<f8").tobytes()
    if len(raw) < COMPRESS_MIN_BYTES:
        return _HEADER.pack(TAG_ARRAY_RAW, ts_us) + raw
    packed: bytes = lz4.block.compress(raw, store_size=False)
    if len(packed) + _U32.size >= len(raw):  # incompressible (e.g. noisy returns): keep it raw
        return _HEADER.pack(TAG_ARRAY_RAW, ts_us) + raw
    return _HEADER.pack(TAG_ARRAY_LZ4, ts_us) + _U32.pack(len(raw)) + packed


def decode(spec: FeatureField, data: bytes, *, stale: bool = False) -> FeatureValue:
    """The value stored in `data`; `CorruptValueError` when it is not a valid `spec` value."""
    if len(data) < _HEADER.size:
        raise CorruptValueError(f"{len(data)} bytes is shorter than the header")
    tag, ts_us = _HEADER.unpack_from(data)
    if tag not in _TAGS_OF[spec.type]:
        raise CorruptValueError(f"type tag {tag} does not match declared type {spec.type.value}")
    try:
        ts = us_to_ts(ts_us)
    except OverflowError:
        raise CorruptValueError(f"timestamp {ts_us} out of range") from None
    body = memoryview(data)[_HEADER.size :]
    value: Value
    if tag == TAG_FLOAT:
        if len(body) != _F64.size:
            raise CorruptValueError(f"float payload of {len(body)} bytes")
        value = _F64.unpack(body)[0]
    elif tag == TAG_INT:
        if len(body) != _I64.size:
            raise CorruptValueError(f"int payload of {len(body)} bytes")
        value = _I64.unpack(body)[0]
    elif tag == TAG_STR:
        try:
            value = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptValueError(f"str payload is not UTF-8: {exc}") from None
    elif tag == TAG_ARRAY_RAW:
        if len(body) % 8:
            raise CorruptValueError(f"array payload of {len(body)} bytes is not whole float64s")
        value = np.frombuffer(body, dtype="<f8")
    else:
        if len(body) < _U32.size:
            raise CorruptValueError("compressed array without its size")
        (size,) = _U32.unpack_from(body)
        if size % 8 or size > 8 * 10_000_000:
            raise CorruptValueError(f"compressed array claims {size} bytes")
        try:
            raw = lz4.block.decompress(bytes(body[_U32.size :]), uncompressed_size=size)
        except lz4.block.LZ4BlockError as exc:
            raise CorruptValueError(f"LZ4 block does not decompress: {exc}") from None
        value = np.frombuffer(raw, dtype="<f8")
    if isinstance(value, float) and not spec.allow_nan and value != value:
        raise CorruptValueError("NaN stored in a feature that forbids it")
    return FeatureValue(value=value, ts=ts, stale=stale)


__all__ = ["COMPRESS_MIN_BYTES", "CorruptValueError", "decode", "encode", "ts_to_us", "us_to_ts"]
