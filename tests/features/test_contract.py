"""One contract for every feature-store backend: memory, Redis, and Redis behind its near cache.

Each test runs three times (the `backend` fixture): the in-process `MemoryFeatureStore` (the
reference), `RedisFeatureStore` against a real `redis-server` started for the test, and the same
with the near cache enabled. Backend-specific observations (raw bytes, TTLs, round trips) go
through the small `Backend` adapter, so the assertions themselves are shared.
"""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lz4.block
import numpy as np
import pytest
import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from structlog.testing import capture_logs

from config.models import NearCacheConfig, RedisConfig
from engine.features import FeatureError, FeatureField, FeatureSet, FieldType
from engine.features.redis_store import CLIENT_NAME, RedisFeatureStore
from engine.features.store import (
    FeatureStore,
    MemoryFeatureStore,
    UnknownFeatureSetError,
    entity_key,
)
from tests.kit.redis_server import RedisServer, wait_until

NS = "contract"
TS = datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=UTC)

PRICES = FeatureSet(
    "prices",
    1,
    (
        FeatureField("close", FieldType.FLOAT),
        FeatureField("gap", FieldType.FLOAT, allow_nan=True),
        FeatureField("volume", FieldType.INT),
        FeatureField("venue", FieldType.STR, max_len=16),
        FeatureField("history", FieldType.FLOAT_ARRAY, max_len=50_000),
        FeatureField("holes", FieldType.FLOAT_ARRAY, allow_nan=True),
    ),
)
PRICES_V2 = FeatureSet(
    "prices",
    2,
    (FeatureField("close", FieldType.FLOAT), FeatureField("spread", FieldType.FLOAT)),
)
OTHER = FeatureSet("other", 1, (FeatureField("x", FieldType.FLOAT),))


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


@dataclass
class Backend:
    """One backend under test, and how to look underneath it."""

    name: str
    store: FeatureStore
    server: RedisServer | None = None
    raw: redis.Redis | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def reader(self) -> FeatureStore:
        """A store that never wrote anything itself: reads come from the backend's storage
        (for memory, there is no other process: the store itself)."""
        if self.server is None:
            return self.store
        assert isinstance(self.store, RedisFeatureStore)
        other = RedisFeatureStore(
            namespace=NS,
            config=RedisConfig(url=self.server.url, connect_timeout_s=2.0),
            near_cache=NearCacheConfig(enabled=self.store.near_cache_enabled),
        )
        return await self._stack.enter_async_context(other)

    async def write_raw(self, key: str, name: str, data: bytes) -> None:
        """Overwrite one stored field with raw bytes, behind the store's back."""
        if isinstance(self.store, MemoryFeatureStore):
            self.store._data.setdefault(key, {})[name] = data
            return
        assert self.raw is not None
        await self.raw.hset(key, name, data)
        if isinstance(self.store, RedisFeatureStore):
            store = self.store
            await wait_until(lambda: not store.is_cached(key), what=f"invalidation of {key}")

    async def ttl_s(self, key: str) -> float | None:
        """Remaining TTL of a stored key (None: no TTL or no key)."""
        if isinstance(self.store, MemoryFeatureStore):
            return self.store.ttl_s(key)
        assert self.raw is not None
        pttl = await self.raw.pttl(key)
        return pttl / 1000 if pttl >= 0 else None

    async def exists(self, key: str) -> bool:
        if isinstance(self.store, MemoryFeatureStore):
            live = self.store.keys()
            return key in live
        assert self.raw is not None
        return bool(await self.raw.exists(key))

    async def count_round_trips(
        self, monkeypatch: pytest.MonkeyPatch, action: Callable[[], Awaitable[Any]]
    ) -> tuple[int, dict[str, int]] | None:
        """(writes to the socket by the store's pooled connections, commands executed by the
        server by name) during `action`; None for the memory backend (no wire)."""
        if self.raw is None:
            await action()
            return None
        before = await self._commandstats()
        sends: list[int] = []
        original = AbstractConnection.send_packed_command

        async def counting(
            conn: AbstractConnection, command: Any, check_health: bool = True
        ) -> None:
            if conn.client_name == CLIENT_NAME:
                sends.append(1)
            await original(conn, command, check_health)

        with monkeypatch.context() as patch:
            patch.setattr(AbstractConnection, "send_packed_command", counting)
            await action()
        after = await self._commandstats()
        return len(sends), {k: after[k] - before.get(k, 0) for k in after}

    async def _commandstats(self) -> dict[str, int]:
        assert self.raw is not None
        info = await self.raw.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}

    async def aclose(self) -> None:
        await self._stack.aclose()


@pytest.fixture(params=["memory", "redis", "redis-near-cache"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        async with MemoryFeatureStore(namespace=NS) as store:
            yield Backend("memory", store)
        return
    async with RedisServer(tmp_path / "redis") as server:
        config = RedisConfig(url=server.url, connect_timeout_s=2.0)
        near = NearCacheConfig(enabled=request.param == "redis-near-cache")
        async with RedisFeatureStore(namespace=NS, config=config, near_cache=near) as store:
            b = Backend(request.param, store, server, server.client())
            try:
                yield b
            finally:
                await b.aclose()


# ------------------------------------------------------------------------------- round trips

FLOATS = [0.0, -0.0, 5e-324, 2.2250738585072009e-308, 1.7976931348623157e308, -math.pi, 1e-300]
INTS = [0, -1, 2**63 - 1, -(2**63), 123456789]
STRS = ["", "NYSE", "Zürich ✓", "x" * 16]
rng = np.random.default_rng(7)
ARRAYS = [
    np.array([], dtype=np.float64),
    np.array([-0.0, 5e-324, 1.0, -1.5]),  # small: stored raw
    np.arange(20_000, dtype=np.float64),  # large, compressible: LZ4
    rng.standard_normal(5_000),  # large, noisy: stored raw
]


async def test_get_when_all_four_types_put_then_values_round_trip_bit_exact(
    backend: Backend,
) -> None:
    # Arrange
    rows: dict[str, dict[str, Any]] = {}
    for i, x in enumerate(FLOATS):
        rows[f"F{i}"] = {"close": x, "gap": x}
    rows["NAN"] = {"gap": math.nan, "holes": np.array([1.0, math.nan, -0.0])}
    for i, n in enumerate(INTS):
        rows[f"I{i}"] = {"volume": n}
    for i, s in enumerate(STRS):
        rows[f"S{i}"] = {"venue": s}
    for i, a in enumerate(ARRAYS):
        rows[f"A{i}"] = {"history": a}

    # Act
    await backend.store.put_many(PRICES, rows, TS)
    await backend.store.flush()
    own = await backend.store.get_many(PRICES, list(rows))
    stored = await (await backend.reader()).get_many(PRICES, list(rows))

    # Assert
    for got in (own, stored):
        for i, x in enumerate(FLOATS):
            assert bits(got[f"F{i}"]["close"].value) == bits(x)  # type: ignore[arg-type]
            assert bits(got[f"F{i}"]["gap"].value) == bits(x)  # type: ignore[arg-type]
        assert math.isnan(got["NAN"]["gap"].value)  # type: ignore[arg-type]
        holes = got["NAN"]["holes"].value
        assert isinstance(holes, np.ndarray)
        assert holes.tobytes() == np.array([1.0, math.nan, -0.0]).tobytes()
        for i, n in enumerate(INTS):
            assert got[f"I{i}"]["volume"].value == n
            assert type(got[f"I{i}"]["volume"].value) is int
        for i, s in enumerate(STRS):
            assert got[f"S{i}"]["venue"].value == s
        for i, a in enumerate(ARRAYS):
            value = got[f"A{i}"]["history"].value
            assert isinstance(value, np.ndarray)
            assert value.dtype == np.float64
            assert value.tobytes() == a.tobytes()


async def test_get_when_put_not_yet_flushed_then_own_write_is_visible(backend: Backend) -> None:
    # Arrange
    await backend.store.put(PRICES, "AAPL", {"close": 1.0}, TS)
    await backend.store.flush()

    # Act
    await backend.store.put(PRICES, "AAPL", {"close": 2.0}, TS + timedelta(seconds=1))
    row = await backend.store.get(PRICES, "AAPL", ["close"])

    # Assert
    assert row["close"].value == 2.0
    assert row["close"].ts == TS + timedelta(seconds=1)
    assert not row["close"].stale


async def test_get_many_when_many_entities_then_one_round_trip(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    entities = [f"E{i:03d}" for i in range(100)]
    await backend.store.put_many(
        PRICES, {e: {"close": float(i), "volume": i} for i, e in enumerate(entities)}, TS
    )
    await backend.store.flush()
    reader = await backend.reader()
    await reader.get(OTHER, "WARMUP")  # the pooled connection exists before counting
    rows: dict[str, Any] = {}

    async def read() -> None:
        rows.update(await reader.get_many(PRICES, entities, ["close", "volume"]))

    # Act
    counted = await backend.count_round_trips(monkeypatch, read)

    # Assert
    assert [rows[e]["volume"].value for e in entities] == list(range(100))
    if counted is not None:
        sends, commands = counted
        assert sends == 1, "get_many of 100 entities must be one write to the socket"
        assert commands.get("hmget") == 100
        assert commands.get("hgetall", 0) == 0


async def test_get_when_entity_or_feature_absent_then_absent_from_row(backend: Backend) -> None:
    # Arrange
    await backend.store.put(PRICES, "AAPL", {"close": 1.0}, TS)
    await backend.store.flush()
    reader = await backend.reader()

    # Act
    rows = await reader.get_many(PRICES, ["AAPL", "NOPE"])
    one = await reader.get(PRICES, "AAPL", ["volume"])

    # Assert
    assert set(rows) == {"AAPL", "NOPE"}
    assert set(rows["AAPL"]) == {"close"}
    assert rows["NOPE"] == {}
    assert one == {}


async def test_get_when_value_put_then_it_carries_its_event_ts(backend: Backend) -> None:
    # Arrange
    older = TS - timedelta(days=3, microseconds=1)
    await backend.store.put(PRICES, "AAPL", {"close": 1.0}, older)
    await backend.store.put(PRICES, "AAPL", {"volume": 7}, TS)
    await backend.store.flush()

    # Act
    row = await (await backend.reader()).get(PRICES, "AAPL")

    # Assert
    assert row["close"].ts == older
    assert row["volume"].ts == TS
    assert not row["close"].stale
    assert not row["volume"].stale


# ------------------------------------------------------------------------------- bad input

BAD_WRITES: list[tuple[str, str, dict[str, Any], str]] = [
    ("unknown feature", "AAPL", {"nope": 1.0}, "'nope'"),
    ("wrong type", "AAPL", {"close": "1.0"}, "'close'"),
    ("bool for int", "AAPL", {"volume": True}, "'volume'"),
    ("NaN where forbidden", "AAPL", {"close": math.nan}, "'close'"),
    ("infinity", "AAPL", {"gap": math.inf}, "'gap'"),
    ("oversized str", "AAPL", {"venue": "x" * 17}, "'venue'"),
    ("oversized array", "AAPL", {"history": np.zeros(50_001)}, "'history'"),
    ("NaN in array", "AAPL", {"history": np.array([1.0, math.nan])}, "'history'"),
    ("2-D array", "AAPL", {"history": np.zeros((2, 2))}, "'history'"),
    ("bad entity", "bad entity!", {"close": 1.0}, "'bad entity!'"),
]


@pytest.mark.parametrize(
    ("entity", "values", "named"),
    [case[1:] for case in BAD_WRITES],
    ids=[case[0] for case in BAD_WRITES],
)
async def test_put_when_value_invalid_then_feature_error_names_set_entity_and_field(
    backend: Backend, entity: str, values: dict[str, Any], named: str
) -> None:
    # Arrange
    writes = backend.store.stats.writes

    # Act
    with pytest.raises(FeatureError) as caught:
        await backend.store.put_many(PRICES, {"MSFT": {"close": 1.0}, entity: values}, TS)

    # Assert
    message = str(caught.value)
    assert "prices:v1" in message
    assert repr(entity) in message
    assert named in message
    assert backend.store.stats.writes == writes, "nothing of a rejected batch is queued"
    await backend.store.flush()
    assert await backend.store.get(PRICES, "MSFT") == {}


async def test_get_when_feature_unknown_then_feature_error_names_set_and_field(
    backend: Backend,
) -> None:
    # Act
    with pytest.raises(FeatureError) as caught:
        await backend.store.get(PRICES, "AAPL", ["close", "nope"])

    # Assert
    assert "prices:v1" in str(caught.value)
    assert "'nope'" in str(caught.value)


async def test_get_when_entity_invalid_then_feature_error_names_set_and_entity(
    backend: Backend,
) -> None:
    # Act
    with pytest.raises(FeatureError) as caught:
        await backend.store.get_many(PRICES, ["AAPL", "no spaces"])

    # Assert
    assert "prices:v1" in str(caught.value)
    assert "'no spaces'" in str(caught.value)


# -------------------------------------------------------------------------------- versions


async def test_put_when_v1_and_v2_written_then_they_coexist_under_separate_keys(
    backend: Backend,
) -> None:
    # Arrange
    await backend.store.put(PRICES, "AAPL", {"close": 1.0}, TS)
    await backend.store.put(PRICES_V2, "AAPL", {"close": 2.0, "spread": 0.1}, TS)
    await backend.store.flush()
    reader = await backend.reader()

    # Act
    v1 = await reader.get(PRICES, "AAPL")
    v2 = await reader.get(PRICES_V2, "AAPL")

    # Assert
    assert v1["close"].value == 1.0
    assert set(v1) == {"close"}
    assert v2["close"].value == 2.0
    assert v2["spread"].value == 0.1
    assert await backend.exists(entity_key(NS, PRICES, "AAPL"))
    assert await backend.exists(entity_key(NS, PRICES_V2, "AAPL"))
    assert entity_key(NS, PRICES, "AAPL") != entity_key(NS, PRICES_V2, "AAPL")


async def test_register_when_two_versions_then_first_active_until_promoted(
    backend: Backend,
) -> None:
    # Arrange
    store = backend.store
    await store.register(PRICES)
    await store.register(PRICES_V2)
    await store.register(OTHER)
    await store.put_many(PRICES, {"AAPL": {"close": 1.0}, "MSFT": {"close": 2.0}}, TS)
    await store.put(PRICES, "AAPL", {"volume": 3}, TS + timedelta(minutes=5))
    await store.flush()

    # Act
    before = await store.list_sets()
    await store.promote("prices", 2)
    after = {(i.name, i.version): i for i in await store.list_sets()}

    # Assert
    assert [(i.name, i.version, i.active) for i in before] == [
        ("other", 1, True),
        ("prices", 1, True),
        ("prices", 2, False),
    ]
    v1 = next(i for i in before if (i.name, i.version) == ("prices", 1))
    assert v1.entities == 2
    assert v1.bytes > 0
    assert v1.newest_ts == TS + timedelta(minutes=5)
    assert v1.declaration == PRICES.describe()
    empty = next(i for i in before if (i.name, i.version) == ("prices", 2))
    assert (empty.entities, empty.newest_ts) == (0, None)
    assert after[("prices", 2)].active
    assert not after[("prices", 1)].active
    assert await store.active_version("prices") == 2
    assert await store.active_version("other") == 1
    assert await store.active_version("never") is None


async def test_promote_when_version_not_registered_then_unknown_feature_set_error(
    backend: Backend,
) -> None:
    # Arrange
    await backend.store.register(PRICES)

    # Act
    with pytest.raises(UnknownFeatureSetError, match="prices:v7"):
        await backend.store.promote("prices", 7)

    # Assert
    assert await backend.store.active_version("prices") == 1


async def test_register_when_same_set_registered_again_then_active_version_kept(
    backend: Backend,
) -> None:
    # Arrange
    await backend.store.register(PRICES)
    await backend.store.register(PRICES_V2)
    await backend.store.promote("prices", 2)

    # Act
    await backend.store.register(PRICES)

    # Assert
    assert await backend.store.active_version("prices") == 2


# ------------------------------------------------------------------------------------- TTL


async def test_put_when_ttl_set_then_value_expires_by_itself(backend: Backend) -> None:
    # Arrange
    key = entity_key(NS, PRICES, "AAPL")
    kept = entity_key(NS, PRICES, "MSFT")
    await backend.store.put(PRICES, "MSFT", {"close": 2.0}, TS)

    # Act
    await backend.store.put(PRICES, "AAPL", {"close": 1.0}, TS, ttl_s=0.3)
    await backend.store.flush()
    ttl = await backend.ttl_s(key)
    seen = await backend.store.get(PRICES, "AAPL")

    # Assert
    assert ttl is not None
    assert 0 < ttl <= 0.3
    assert seen["close"].value == 1.0
    assert await backend.ttl_s(kept) is None
    await wait_until(lambda: _gone(backend, key), what=f"{key} to expire")
    assert await backend.store.get(PRICES, "AAPL") == {}
    assert (await backend.store.get(PRICES, "MSFT"))["close"].value == 2.0
    assert await backend.exists(kept)


async def _gone(backend: Backend, key: str) -> bool:
    return not await backend.exists(key)


async def test_put_when_set_declares_default_ttl_then_keys_get_it(backend: Backend) -> None:
    # Arrange
    short = FeatureSet("short", 1, (FeatureField("x", FieldType.FLOAT),), default_ttl_s=60.0)

    # Act
    await backend.store.put(short, "AAPL", {"x": 1.0}, TS)
    await backend.store.flush()
    ttl = await backend.ttl_s(entity_key(NS, short, "AAPL"))

    # Assert
    assert ttl is not None
    assert 59.0 < ttl <= 60.0


# --------------------------------------------------------------------------------- corrupt

CORRUPT: list[tuple[str, bytes]] = [
    ("too short", b"\x01\x00"),
    ("wrong type tag", b"\x03" + b"\x00" * 8 + b"abc"),
    ("truncated float", b"\x01" + b"\x00" * 8 + b"\x00\x00\x00"),
    ("forbidden NaN", b"\x01" + b"\x00" * 8 + struct.pack("<d", math.nan)),
]


@pytest.mark.parametrize("data", [c[1] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
async def test_get_when_stored_bytes_corrupt_then_reported_counted_and_missing(
    backend: Backend, data: bytes
) -> None:
    # Arrange
    key = entity_key(NS, PRICES, "AAPL")
    await backend.store.put(PRICES, "AAPL", {"close": 1.0, "volume": 5}, TS)
    await backend.store.flush()
    await backend.write_raw(key, "close", data)
    corrupt = backend.store.stats.corrupt

    # Act
    with capture_logs() as logs:
        row = await backend.store.get(PRICES, "AAPL")

    # Assert
    assert set(row) == {"volume"}
    assert row["volume"].value == 5
    assert backend.store.stats.corrupt == corrupt + 1
    reports = [e for e in logs if e["event"] == "corrupt feature value treated as missing"]
    assert len(reports) == 1
    assert reports[0]["log_level"] == "warning"
    assert (reports[0]["feature_set"], reports[0]["entity"], reports[0]["field"]) == (
        "prices:v1",
        "AAPL",
        "close",
    )


# ------------------------------------------------------------------------- wide feature sets

WIDE_FIELDS = [
    FeatureField(f"f{i:02d}", FieldType.FLOAT if i % 3 else FieldType.INT, allow_nan=i % 2 == 0)
    for i in range(40)
]
WIDE = FeatureSet(
    "wide",
    1,
    (
        *WIDE_FIELDS,
        FeatureField("label", FieldType.STR),
        FeatureField("hist", FieldType.FLOAT_ARRAY),
    ),
)
"""More than 32 fields: whole-row reads on Redis take the HGETALL path."""


async def test_get_when_wide_set_read_whole_then_partial_out_of_order_rows_exact(
    backend: Backend,
) -> None:
    # Arrange: rows written in two partial puts, in reverse field order, with a gap
    first = {f"f{i:02d}": (i if i % 3 == 0 else i * 0.5) for i in range(39, 9, -1)}
    second = {"f00": 0, "f01": -0.0, "f04": math.nan, "label": "x", "hist": np.array([1.0, 2.0])}
    await backend.store.put(WIDE, "W1", first, TS)
    await backend.store.put(WIDE, "W1", second, TS)
    await backend.store.put(WIDE, "W2", {"f05": 5.5}, TS)
    await backend.store.flush()
    # Act
    rows = await (await backend.reader()).get_many(WIDE, ["W1", "W2", "W3"])
    one = await (await backend.reader()).get(WIDE, "W1")
    # Assert
    expected = {**first, **second}
    assert set(rows["W1"]) == set(expected)
    for name, value in expected.items():
        got = rows["W1"][name].value
        if isinstance(value, np.ndarray):
            assert np.array_equal(got, value)
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(got)
        elif isinstance(value, str):
            assert got == value
        else:
            assert got == value
            assert type(got) is type(value)
            assert math.copysign(1.0, got) == math.copysign(1.0, value)  # -0.0 stays -0.0
    assert set(rows["W2"]) == {"f05"}
    assert rows["W3"] == {}
    assert one.keys() == rows["W1"].keys()


async def test_get_when_wide_row_holds_a_corrupt_value_then_only_that_field_missing(
    backend: Backend,
) -> None:
    # Arrange
    values = {f"f{i:02d}": (i if i % 3 == 0 else float(i)) for i in range(40)}
    await backend.store.put(WIDE, "W9", values, TS)
    await backend.store.flush()
    await backend.write_raw(entity_key(NS, WIDE, "W9"), "f07", b"\x01garbage")
    # Act
    with capture_logs() as logs:
        row = await (await backend.reader()).get(WIDE, "W9")
    # Assert
    assert set(row) == set(values) - {"f07"}
    assert row["f08"].value == 8.0
    assert any(
        e["event"] == "corrupt feature value treated as missing" and e["field"] == "f07"
        for e in logs
    )


CORRUPT_OTHER: list[tuple[str, str, bytes]] = [
    (
        "lz4 shorter than its header says",
        "history",
        b"\x05"
        + b"\x00" * 8
        + struct.pack("<I", 24)
        + lz4.block.compress(b"abc", store_size=False),
    ),
    ("lz4 garbage", "history", b"\x05" + b"\x00" * 8 + struct.pack("<I", 16) + b"\xff" * 5),
    ("raw array not whole float64s", "history", b"\x04" + b"\x00" * 8 + b"abc"),
    ("infinity in an array", "history", b"\x04" + b"\x00" * 8 + struct.pack("<d", math.inf)),
    ("NaN in a NaN-free array", "history", b"\x04" + b"\x00" * 8 + struct.pack("<d", math.nan)),
    ("str not UTF-8", "venue", b"\x03" + b"\x00" * 8 + b"\xff\xfe"),
    ("infinity in a float", "close", b"\x01" + b"\x00" * 8 + struct.pack("<d", math.inf)),
]


@pytest.mark.parametrize(
    ("field_name", "data"), [c[1:] for c in CORRUPT_OTHER], ids=[c[0] for c in CORRUPT_OTHER]
)
async def test_get_many_when_array_or_str_bytes_corrupt_then_missing_never_raises(
    backend: Backend, field_name: str, data: bytes
) -> None:
    # Arrange
    good = {"close": 1.0, "venue": "NYSE", "history": np.arange(3, dtype=np.float64)}
    await backend.store.put_many(PRICES, {"AAPL": good, "MSFT": good}, TS)
    await backend.store.flush()
    await backend.write_raw(entity_key(NS, PRICES, "AAPL"), field_name, data)
    # Act
    with capture_logs() as logs:
        rows = await backend.store.get_many(PRICES, ["AAPL", "MSFT"])
    # Assert: only the corrupt field is missing; the other entity is untouched
    assert set(rows["AAPL"]) == set(good) - {field_name}
    assert set(rows["MSFT"]) == set(good)
    assert any(e["event"] == "corrupt feature value treated as missing" for e in logs)


FLOAT_SET = FeatureSet(
    name="floats",
    version=1,
    fields=(
        FeatureField("score", FieldType.FLOAT),
        FeatureField("gap", FieldType.FLOAT, allow_nan=True),
        FeatureField("label", FieldType.STR, max_len=8),
    ),
)
"""Floats and a string: writes take the store's fast path for finite floats and short strings."""

BAD_FLOAT_WRITES: list[tuple[str, str, dict[str, Any], str]] = [
    ("unknown feature", "AAPL", {"score": 1.0, "nope": 1.0}, "'nope'"),
    ("string", "AAPL", {"score": "1.0"}, "'score'"),
    ("NaN where forbidden", "AAPL", {"score": math.nan}, "'score'"),
    ("infinity", "AAPL", {"gap": -math.inf}, "'gap'"),
    ("bad entity", "bad entity!", {"score": 1.0}, "'bad entity!'"),
    ("no values", "AAPL", {}, "no values"),
    ("oversized str", "AAPL", {"label": "x" * 9}, "'label'"),
    ("multi-byte str over the byte limit", "AAPL", {"label": "é" * 5}, "'label'"),
    ("float for str", "AAPL", {"label": 1.0}, "'label'"),
]


@pytest.mark.parametrize(
    ("entity", "values", "named"),
    [case[1:] for case in BAD_FLOAT_WRITES],
    ids=[case[0] for case in BAD_FLOAT_WRITES],
)
async def test_put_many_when_scalar_row_invalid_then_same_error_as_validating_path(
    backend: Backend, entity: str, values: dict[str, Any], named: str
) -> None:
    # Arrange
    await backend.store.register(FLOAT_SET)
    writes = backend.store.stats.writes
    # Act
    with pytest.raises(FeatureError) as caught:
        await backend.store.put_many(FLOAT_SET, {"MSFT": {"score": 1.0}, entity: values}, TS)
    # Assert
    assert "floats:v1" in str(caught.value)
    assert named in str(caught.value)
    assert backend.store.stats.writes == writes


async def test_put_many_when_scalar_rows_then_round_trip_bit_exact_with_nan_and_ints(
    backend: Backend,
) -> None:
    # Arrange: fast-path rows, a NaN where allowed and an int (both take the validating path)
    await backend.store.register(FLOAT_SET)
    rows = {
        "AAPL": {"score": 0.1 + 0.2, "gap": -1e-300, "label": "calm"},
        "MSFT": {"score": 5, "gap": math.nan},
    }
    # Act
    await backend.store.put_many(FLOAT_SET, rows, TS)
    await backend.store.flush()
    got = await backend.store.get_many(FLOAT_SET, ["AAPL", "MSFT"])
    # Assert
    assert got["AAPL"]["score"].value == 0.1 + 0.2
    assert got["AAPL"]["gap"].value == -1e-300
    assert got["AAPL"]["score"].ts == TS
    assert got["AAPL"]["label"].value == "calm"
    assert got["MSFT"]["score"].value == 5.0
    assert type(got["MSFT"]["score"].value) is float
    assert math.isnan(got["MSFT"]["gap"].value)
