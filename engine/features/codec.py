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

Reads decode thousands of values per step, so decoding is kept cheap: a float or int value is
one `struct` unpack, timestamps come from a small cache of datetimes (a step's values share a
few), and `RowDecoder` decodes a row of scalars in a handful of C calls, falling back to
`decode`, value by value, whenever anything is off (so problems are reported the same way).
The memory backend skips the bytes altogether: `kept_value` makes, from a validated value, what
decoding its encoding would return, and `encode_kept` gives the bytes back when they are wanted.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from typing import Any, Final

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


def stored_ts_us(data: bytes) -> int | None:
    """The event time (microseconds since the epoch) in a stored value's header, read without
    decoding the value (sizes and ages for `tradeengine features`); None without a header."""
    if len(data) < _HEADER.size:
        return None
    ts_us: int = _HEADER.unpack_from(data)[1]
    return ts_us


def ts_to_us(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"feature timestamps must be timezone-aware, got {ts!r}")
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def us_to_ts(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_TS_CACHE: dict[int, datetime] = {}
_TS_CACHE_MAX: Final = 4096


def ts_of_us(us: int) -> datetime:
    """`us_to_ts`, cached (a step's features share a handful of timestamps, and building a
    datetime costs more than the rest of a value's decoding); `CorruptValueError` when `us` is
    out of datetime's range."""
    ts = _TS_CACHE.get(us)
    if ts is None:
        try:
            ts = _EPOCH + timedelta(microseconds=us)
        except OverflowError:
            raise CorruptValueError(f"timestamp {us} out of range") from None
        if len(_TS_CACHE) >= _TS_CACHE_MAX:
            _TS_CACHE.clear()
        _TS_CACHE[us] = ts
    return ts


_FLOAT_VALUE = struct.Struct("<Bqd")
_INT_VALUE = struct.Struct("<Bqq")
_SCALAR_SIZE: Final = _FLOAT_VALUE.size  # == _INT_VALUE.size
# Tuple construction without the named tuple's Python-level __new__ (same object, cheaper).
_new_tuple = tuple.__new__


def encode_finite_float(value: float, ts_us: int) -> bytes:
    """Bytes of a finite float (the writers' fast path; `encode` for anything else)."""
    return _FLOAT_VALUE.pack(TAG_FLOAT, ts_us, value)


def encode_str(value: str, ts_us: int) -> bytes:
    """Bytes of a string already known to fit its field (the writers' fast path)."""
    return _HEADER.pack(TAG_STR, ts_us) + value.encode("utf-8")


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


def kept_value(spec: FeatureField, value: Value, ts: datetime) -> FeatureValue:
    """What ``decode(spec, encode(spec, value, ts_us))`` returns, made without the bytes, for
    an already validated value written at `ts` (`ts_of_us(ts_us)`): the memory backend keeps
    values in this form, so reads need not decode them. Equal in type, dtype, shape, bits and
    `ts`; an array is, like a decoded one, a read-only view of immutable bytes (its own copy,
    so neither the writer nor any reader can change what the store holds)."""
    kind = spec.type
    if kind is FieldType.FLOAT_ARRAY:
        raw = np.ascontiguousarray(value, dtype="<f8").tobytes()
        return _new_tuple(FeatureValue, (np.frombuffer(raw, dtype="<f8"), ts, False))
    if kind is FieldType.STR and type(value) is not str:
        assert isinstance(value, str)
        value = str.__str__(value)  # a subclass (a StrEnum member) decodes as a plain str
    return _new_tuple(FeatureValue, (value, ts, False))


_AS_STORED: Final = {
    float: FeatureField("value", FieldType.FLOAT),
    int: FeatureField("value", FieldType.INT),
    str: FeatureField("value", FieldType.STR),
    np.ndarray: FeatureField("value", FieldType.FLOAT_ARRAY),
}


def encode_kept(value: FeatureValue) -> bytes:
    """The bytes `encode` gives for a value made by `kept_value` (whose Python type names its
    field type): the sizes `tradeengine features` shows for a memory store."""
    return encode(_AS_STORED[type(value.value)], value.value, ts_to_us(value.ts))


def decode(spec: FeatureField, data: bytes, *, stale: bool = False) -> FeatureValue:
    """The value stored in `data`; `CorruptValueError` when it is not a valid `spec` value.

    Whatever the bytes are, nothing but `CorruptValueError` escapes: readers treat it as a
    missing value, so a corrupt value can never crash a stage."""
    try:
        value = _decode(spec, data, stale=stale)
    except CorruptValueError:
        raise
    except Exception as exc:
        raise CorruptValueError(f"undecodable {spec.type.value} value: {exc}") from None
    checked = value.value
    if isinstance(checked, np.ndarray):
        if spec.max_len is not None and checked.size > spec.max_len:
            raise CorruptValueError(f"array of {checked.size} exceeds max_len {spec.max_len}")
        if not np.isfinite(checked).all() and (np.isinf(checked).any() or not spec.allow_nan):
            raise CorruptValueError("array holds infinity or a NaN the feature forbids")
    elif isinstance(checked, float) and checked in (math.inf, -math.inf):
        raise CorruptValueError("infinity stored in a float feature")
    return value


def _decode(spec: FeatureField, data: bytes, *, stale: bool = False) -> FeatureValue:
    kind = spec.type
    if len(data) == _SCALAR_SIZE:  # the common cases first: one unpack, a cached datetime
        tag = data[0]
        if tag == TAG_FLOAT and kind is FieldType.FLOAT:
            _, ts_us, number = _FLOAT_VALUE.unpack(data)
            ts = ts_of_us(ts_us)
            if number != number and not spec.allow_nan:
                raise CorruptValueError("NaN stored in a feature that forbids it")
            return _new_tuple(FeatureValue, (number, ts, stale))
        if tag == TAG_INT and kind is FieldType.INT:
            _, ts_us, integer = _INT_VALUE.unpack(data)
            return _new_tuple(FeatureValue, (integer, ts_of_us(ts_us), stale))
    if len(data) < _HEADER.size:
        raise CorruptValueError(f"{len(data)} bytes is shorter than the header")
    tag, ts_us = _HEADER.unpack_from(data)
    if tag not in _TAGS_OF[kind]:
        raise CorruptValueError(f"type tag {tag} does not match declared type {kind.value}")
    ts = ts_of_us(ts_us)
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
        if len(raw) != size:
            raise CorruptValueError(f"LZ4 block holds {len(raw)} bytes, header says {size}")
        value = np.frombuffer(raw, dtype="<f8")
    if isinstance(value, float) and not spec.allow_nan and value != value:
        raise CorruptValueError("NaN stored in a feature that forbids it")
    return FeatureValue(value=value, ts=ts, stale=stale)


class RowDecoder:
    """Decodes a whole row of float/int features in a few C calls instead of one `decode` each.

    Built once per (feature set, requested names) whose fields are all floats or ints. `decode`
    joins the stored values and unpacks them with one `struct` call; it answers only when every
    value is present, exactly one scalar of its declared type, and no NaN sits in a field that
    forbids it. Otherwise it returns None and the caller decodes value by value with `decode`,
    which names the problem (so a corrupt value is reported exactly as without this path).
    """

    __slots__ = ("_has_float", "_n", "_size", "_struct", "_tags")

    def __init__(self, specs: Sequence[FeatureField]) -> None:
        self._n = len(specs)
        self._size = self._n * _SCALAR_SIZE
        self._struct = struct.Struct(
            "<" + "".join("Bqd" if s.type is FieldType.FLOAT else "Bqq" for s in specs)
        )
        self._tags = tuple(TAG_FLOAT if s.type is FieldType.FLOAT else TAG_INT for s in specs)
        self._has_float = any(s.type is FieldType.FLOAT for s in specs)

    @staticmethod
    def for_specs(specs: Sequence[FeatureField]) -> RowDecoder | None:
        """A decoder for `specs`, or None when one of them is not a float or an int."""
        if not specs or any(s.type not in (FieldType.FLOAT, FieldType.INT) for s in specs):
            return None
        return RowDecoder(specs)

    def decode(self, datas: Sequence[Any], *, stale: bool = False) -> Iterator[FeatureValue] | None:
        """The values of `datas` (aligned with the specs, checked: the iterator cannot fail),
        or None (see the class docstring). Elements that are not bytes (None for an absent
        value, ...) mean None."""
        n = self._n
        if len(datas) != n:
            return None
        try:
            blob = b"".join(datas)
        except TypeError:  # an absent value, or one already decoded
            return None
        # Total right and none longer than one scalar: every one is exactly one scalar.
        if len(blob) != self._size or max(map(len, datas)) != _SCALAR_SIZE:
            return None
        fields = self._struct.unpack(blob)
        if fields[0::3] != self._tags:
            return None
        values = fields[2::3]
        if self._has_float:
            total = sum(values)
            # A NaN or an infinity somewhere makes the sum non-finite: let `decode` sort it
            # out value by value (NaN may be allowed, infinity never is).
            if not math.isfinite(total):
                return None
        stamps = fields[1::3]
        first = stamps[0]
        try:
            if stamps.count(first) == n:  # the usual case: one event time for the row
                ts_all: Iterable[datetime] = repeat(ts_of_us(first), n)
            else:
                ts_all = list(map(ts_of_us, stamps))
        except CorruptValueError:
            return None
        return map(_new_tuple, repeat(FeatureValue, n), zip(values, ts_all, repeat(stale)))


__all__ = [
    "COMPRESS_MIN_BYTES",
    "CorruptValueError",
    "RowDecoder",
    "decode",
    "encode",
    "encode_kept",
    "kept_value",
    "stored_ts_us",
    "ts_of_us",
    "ts_to_us",
    "us_to_ts",
]
