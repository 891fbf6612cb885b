"""The memory backend keeps values decoded (`codec.kept_value`) instead of as bytes: what it
hands back must be exactly what decoding the bytes would give, and as safe to share."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Any

import numpy as np
import pytest

from engine.features import FeatureField, FeatureSet, FieldType
from engine.features.codec import (
    COMPRESS_MIN_BYTES,
    decode,
    encode,
    encode_kept,
    kept_value,
    ts_of_us,
    ts_to_us,
)
from engine.features.schema import FeatureError, FeatureValue
from engine.features.store import MemoryFeatureStore, entity_key

TS = datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=UTC)
SET = FeatureSet(
    "kept",
    1,
    (
        FeatureField("x", FieldType.FLOAT),
        FeatureField("gap", FieldType.FLOAT, allow_nan=True),
        FeatureField("n", FieldType.INT),
        FeatureField("s", FieldType.STR, max_len=64),
        FeatureField("a", FieldType.FLOAT_ARRAY, allow_nan=True),
    ),
)


class Label(StrEnum):
    UP = "up"


def _same(got: FeatureValue, want: FeatureValue) -> None:
    assert type(got.value) is type(want.value)
    assert got.ts == want.ts
    assert got.ts.tzinfo == want.ts.tzinfo
    assert got.stale == want.stale
    if isinstance(want.value, np.ndarray):
        assert isinstance(got.value, np.ndarray)
        assert got.value.dtype == want.value.dtype
        assert got.value.shape == want.value.shape
        assert got.value.tobytes() == want.value.tobytes()
        assert got.value.flags.writeable == want.value.flags.writeable
    elif isinstance(want.value, float):
        assert struct.pack("<d", got.value) == struct.pack("<d", want.value)  # type: ignore[arg-type]
    else:
        assert got.value == want.value


ARRAYS: list[Any] = [
    np.array([], dtype=np.float64),
    np.array([1.0, math.nan, -0.0]),
    np.arange(10.0),
    np.zeros(COMPRESS_MIN_BYTES),  # compressible: stored LZ4
    np.random.default_rng(1).normal(size=400),  # incompressible: stored raw
    np.arange(20.0)[::2],  # not contiguous
    np.arange(5, dtype=np.float32),  # converted by validation
    [1.0, 2.0],
]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x", 1.5),
        ("x", -0.0),
        ("x", 5e-324),
        ("gap", math.nan),
        ("n", -(2**63)),
        ("n", 7),
        ("s", "calm"),
        ("s", "über"),
        ("s", Label.UP),
        *[("a", a) for a in ARRAYS],
    ],
)
def test_kept_value_when_made_then_equals_decoded_encoding(name: str, value: Any) -> None:
    # Arrange
    checked = SET.validate("E", {name: value})[name]
    spec = SET.field(name)
    ts_us = ts_to_us(TS)

    # Act
    kept = kept_value(spec, checked, ts_of_us(ts_us))

    # Assert
    encoded = encode(spec, checked, ts_us)
    _same(kept, decode(spec, encoded))
    assert encode_kept(kept) == encoded


async def test_memory_get_when_array_written_then_read_only_copy_and_equal_rows() -> None:
    # Arrange
    store = MemoryFeatureStore(namespace="t")
    source = np.array([1.0, 2.0, math.nan])
    await store.put_many(SET, {"E": {"a": source, "x": 1.0, "s": Label.UP}}, TS)

    # Act
    source[0] = 99.0  # the writer's array changes after the write
    first = await store.get(SET, "E")
    second = await store.get_many(SET, ["E"], ("a", "x"))

    # Assert
    array = first["a"].value
    assert isinstance(array, np.ndarray)
    assert array.tobytes() == np.array([1.0, 2.0, math.nan]).tobytes()
    assert not array.flags.writeable
    with pytest.raises(ValueError, match="WRITEABLE"):
        array.flags.writeable = True
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 5.0
    again = second["E"]["a"].value
    assert isinstance(again, np.ndarray)
    assert again is not array  # each read its own array object, as decoding gave
    array.shape = (3, 1)  # so reshaping one changes no other
    assert again.shape == (3,)
    assert (await store.get(SET, "E", ["a"]))["a"].value.shape == (3,)  # type: ignore[union-attr]
    assert type(first["s"].value) is str
    first["x"] = first["a"]  # a caller changing its row does not change the store
    assert second["E"]["x"].value == 1.0
    assert (await store.get(SET, "E", ["x"]))["x"].value == 1.0


async def test_memory_list_sets_when_values_kept_then_sizes_of_their_encoding() -> None:
    # Arrange
    store = MemoryFeatureStore(namespace="t")
    await store.register(SET)
    values = {"x": 1.0, "n": 3, "s": "calm", "a": np.zeros(200)}
    await store.put(SET, "E", values, TS)

    # Act
    (info,) = await store.list_sets()

    # Assert
    ts_us = ts_to_us(TS)
    size = sum(len(encode(SET.field(k), v, ts_us)) for k, v in SET.validate("E", values).items())
    assert (info.entities, info.bytes, info.newest_ts) == (1, size, TS)
    assert store.keys() == [entity_key("t", SET, "E")]


async def test_memory_get_when_read_under_another_declaration_then_checked_like_bytes() -> None:
    # Arrange: two declarations of one set version that disagree (a writer and a reader out of
    # step); values kept under one are not trusted under the other.
    writer = FeatureSet(
        "kept",
        1,
        (
            FeatureField("x", FieldType.FLOAT, allow_nan=True),
            FeatureField("y", FieldType.FLOAT),
            FeatureField("z", FieldType.FLOAT),
        ),
    )
    reader = FeatureSet(
        "kept",
        1,
        (
            FeatureField("x", FieldType.FLOAT),
            FeatureField("y", FieldType.INT),
            FeatureField("z", FieldType.FLOAT),
        ),
    )
    same = FeatureSet("kept", 1, writer.fields)
    store = MemoryFeatureStore(namespace="t")
    await store.put_many(writer, {"E": {"x": math.nan, "y": 1.0, "z": 2.0}}, TS)

    # Act
    read = await store.get(reader, "E")
    equal = await store.get(same, "E")

    # Assert
    assert list(read) == ["z"]
    assert read["z"].value == 2.0
    assert store.stats.corrupt == 2
    assert list(equal) == ["x", "y", "z"]


async def test_memory_get_when_row_also_holds_raw_bytes_then_arrays_still_not_shared() -> None:
    # Arrange: a kept array, and a value put as bytes behind the store's back
    store = MemoryFeatureStore(namespace="t")
    await store.put_many(SET, {"E": {"a": np.array([1.0, 2.0]), "x": 1.0}}, TS)
    store._data[entity_key("t", SET, "E")]["n"] = encode(SET.field("n"), 7, ts_to_us(TS))
    # Act
    first = await store.get(SET, "E")
    second = await store.get(SET, "E")
    # Assert
    assert first["n"].value == 7
    array = first["a"].value
    assert isinstance(array, np.ndarray)
    assert array is not second["a"].value
    array.shape = (2, 1)
    assert second["a"].value.shape == (2,)  # type: ignore[union-attr]


async def test_memory_put_when_event_time_out_of_range_in_utc_then_feature_error() -> None:
    # Arrange
    store = MemoryFeatureStore(namespace="t")
    year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    # Act / Assert
    with pytest.raises(FeatureError, match="out of range"):
        await store.put_many(SET, {"E": {"x": 1.0}}, year_one)
    with pytest.raises(FeatureError, match="out of range"):
        await store.put(SET, "E", {"x": 1.0}, year_one)
    assert store.keys() == []
