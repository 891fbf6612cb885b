"""The Redis backend's near cache stays correct when another process writes.

Invalidations are Redis' server-assisted client-side caching (BCAST on the namespace prefix);
these tests write through a second client and read through the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from config.models import NearCacheConfig, RedisConfig
from engine.features import FeatureField, FeatureSet, FieldType
from engine.features.redis_store import TRACKING_CLIENT_NAME, RedisFeatureStore
from engine.features.store import entity_key
from tests.kit import redis_server as redis_kit
from tests.kit.redis_server import RedisServer, wait_until

redis_server = redis_kit.redis_server

NS = "nc"
TS = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
PRICES = FeatureSet(
    "prices", 1, (FeatureField("close", FieldType.FLOAT), FeatureField("volume", FieldType.INT))
)
KEY = entity_key(NS, PRICES, "AAPL")


class FakeClock:
    """Monotonic seconds the test advances by hand (ages near-cache entries)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_store(server: RedisServer, *, near: bool = True, **kwargs: Any) -> RedisFeatureStore:
    return RedisFeatureStore(
        namespace=NS,
        config=RedisConfig(url=server.url, connect_timeout_s=2.0),
        near_cache=NearCacheConfig(enabled=near, fallback_ttl_s=1.0),
        **kwargs,
    )


@pytest.fixture
async def writer(redis_server: RedisServer) -> AsyncIterator[RedisFeatureStore]:
    """Another process' client (no near cache)."""
    async with make_store(redis_server, near=False) as store:
        yield store


async def write_and_wait(
    writer: RedisFeatureStore, reader: RedisFeatureStore, value: float
) -> None:
    """`writer` stores `value`; returns once `reader` has received the invalidation."""
    before = reader.stats.invalidations
    await writer.put(PRICES, "AAPL", {"close": value}, TS)
    await writer.flush()
    await wait_until(
        lambda: reader.stats.invalidations > before, what=f"invalidation of write {value}"
    )


async def test_get_when_second_client_overwrites_many_times_then_no_stale_read(
    redis_server: RedisServer, writer: RedisFeatureStore
) -> None:
    # Arrange
    async with make_store(redis_server) as reader:
        await writer.put(PRICES, "AAPL", {"close": -1.0}, TS)
        await writer.flush()
        assert (await reader.get(PRICES, "AAPL"))["close"].value == -1.0
        hits, misses = reader.stats.hits, reader.stats.misses
        stale: list[tuple[float, Any]] = []

        # Act
        for i in range(200):
            await write_and_wait(writer, reader, float(i))
            first = (await reader.get(PRICES, "AAPL"))["close"].value
            second = (await reader.get(PRICES, "AAPL"))["close"].value
            if first != float(i) or second != float(i):
                stale.append((float(i), (first, second)))

        # Assert
        assert stale == []
        assert reader.stats.misses - misses == 200, "each invalidation forces one fetch"
        assert reader.stats.hits - hits == 200, "the read after it is served from the cache"
        assert reader.tracking


async def test_get_when_read_fill_races_an_invalidation_then_old_value_not_cached(
    redis_server: RedisServer, writer: RedisFeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    async with make_store(redis_server) as reader:
        await write_and_wait(writer, reader, 1.0)
        original = reader._roundtrip
        raced: list[bool] = []

        async def fetch_then_lose_the_race(commands: Any, **kwargs: Any) -> list[Any]:
            replies = await original(commands, **kwargs)
            if not raced and commands[0][0] == "HMGET":
                raced.append(True)
                # The old value is on its way back; the newer write and its invalidation
                # arrive before the fill.
                await write_and_wait(writer, reader, 2.0)
            return replies

        monkeypatch.setattr(reader, "_roundtrip", fetch_then_lose_the_race)

        # Act
        raced_read = await reader.get(PRICES, "AAPL")
        next_read = await reader.get(PRICES, "AAPL")

        # Assert
        assert raced == [True]
        assert raced_read["close"].value == 1.0, "the read was served before the write"
        assert next_read["close"].value == 2.0, "the raced value must not have been cached"


async def test_get_when_read_fill_races_own_put_then_own_value_kept(
    redis_server: RedisServer, writer: RedisFeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    async with make_store(redis_server) as store:
        await write_and_wait(writer, store, 1.0)
        original = store._roundtrip
        raced: list[bool] = []

        async def fetch_then_lose_the_race(commands: Any, **kwargs: Any) -> list[Any]:
            replies = await original(commands, **kwargs)
            if not raced and commands[0][0] == "HMGET":
                raced.append(True)
                # Our own newer write is stored while the old value is on its way back, and
                # its invalidation is late (held back here): only the put itself can stop
                # the old value from being cached over the write-through.
                with monkeypatch.context() as patch:
                    patch.setattr(store, "_invalidate", lambda key: None)
                    await store.put(PRICES, "AAPL", {"close": 2.0}, TS)
                    await store.flush()
            return replies

        monkeypatch.setattr(store, "_roundtrip", fetch_then_lose_the_race)

        # Act
        await store.get(PRICES, "AAPL")
        next_read = await store.get(PRICES, "AAPL")

        # Assert
        assert raced == [True]
        assert next_read["close"].value == 2.0


@pytest.mark.parametrize("stored_during_read", [False, True], ids=["after", "during"])
async def test_get_when_read_overlaps_own_queued_write_then_old_value_not_cached(
    redis_server: RedisServer,
    writer: RedisFeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    stored_during_read: bool,
) -> None:
    # Arrange
    async with make_store(redis_server) as store:
        await write_and_wait(writer, store, 1.0)
        original = store._roundtrip
        release = asyncio.Event()

        async def hold_writes(commands: Any, **kwargs: Any) -> list[Any]:
            if commands[0][0] == "HSET":
                await release.wait()
                return await original(commands, **kwargs)
            replies = await original(commands, **kwargs)
            if stored_during_read and not release.is_set():
                # The pre-write value is on its way back when our write is acknowledged.
                release.set()
                await store.flush()
            return replies

        monkeypatch.setattr(store, "_roundtrip", hold_writes)
        # Our own invalidations are late (held back): only the write's own bookkeeping can
        # stop the pre-write value read below from being cached.
        monkeypatch.setattr(store, "_invalidate", lambda key: None)

        # Act
        await store.put(PRICES, "AAPL", {"close": 2.0}, TS)  # queued, not yet in Redis
        during = await store.get(PRICES, "AAPL")  # Redis still holds close=1.0
        release.set()
        await store.flush()
        after = await store.get(PRICES, "AAPL")

        # Assert
        assert during["close"].value == 2.0, "own queued write overlays the stored value"
        assert after["close"].value == 2.0


async def test_get_when_own_put_then_cache_serves_it_before_and_after_flush(
    redis_server: RedisServer, writer: RedisFeatureStore
) -> None:
    # Arrange
    async with make_store(redis_server) as store:
        await writer.put(PRICES, "AAPL", {"close": 1.0, "volume": 1}, TS)
        await writer.flush()
        await store.get(PRICES, "AAPL")

        # Act
        await store.put(PRICES, "AAPL", {"close": 5.0}, TS + timedelta(seconds=1))
        before_flush = await store.get(PRICES, "AAPL")
        await store.flush()
        after_flush = await store.get(PRICES, "AAPL")

        # Assert
        assert before_flush["close"].value == 5.0
        assert before_flush["volume"].value == 1
        assert after_flush["close"].value == 5.0
        assert after_flush["volume"].value == 1


async def test_get_when_cache_enabled_then_hits_and_misses_counted(
    redis_server: RedisServer, writer: RedisFeatureStore
) -> None:
    # Arrange
    await writer.put_many(PRICES, {"AAPL": {"close": 1.0}, "MSFT": {"close": 2.0}}, TS)
    await writer.flush()
    async with make_store(redis_server) as reader:
        # Act
        await reader.get_many(PRICES, ["AAPL", "MSFT"])  # 2 misses
        await reader.get_many(PRICES, ["AAPL", "MSFT", "NOPE"])  # 2 hits, 1 miss
        await reader.get(PRICES, "NOPE")  # known absent: a hit
        await reader.get(PRICES, "AAPL", ["close"])  # subset of a cached entry: a hit

        # Assert
        assert (reader.stats.hits, reader.stats.misses) == (4, 3)
        assert reader.near_cache_size == 3


async def test_get_when_near_cache_full_then_oldest_entry_evicted(
    redis_server: RedisServer, writer: RedisFeatureStore
) -> None:
    # Arrange
    store = RedisFeatureStore(
        namespace=NS,
        config=RedisConfig(url=redis_server.url),
        near_cache=NearCacheConfig(enabled=True, max_entries=2),
    )
    async with store:
        # Act
        await store.get_many(PRICES, ["A", "B", "C"])

        # Assert
        assert store.near_cache_size == 2
        assert not store.is_cached(entity_key(NS, PRICES, "A"))
        assert store.is_cached(entity_key(NS, PRICES, "C"))


async def test_get_when_tracking_refused_then_entries_expire_after_fallback_ttl(
    redis_server: RedisServer, writer: RedisFeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange
    async def refuse(self: RedisFeatureStore, conn: AbstractConnection, client_id: int) -> None:
        raise ResponseError("NOPERM this user has no permissions to run the 'client' command")

    monkeypatch.setattr(RedisFeatureStore, "_enable_tracking", refuse)
    clock = FakeClock()
    await writer.put(PRICES, "AAPL", {"close": 1.0}, TS)
    await writer.flush()
    with capture_logs() as logs:
        async with make_store(redis_server, clock=clock) as reader:
            await reader.get(PRICES, "AAPL")  # filled at t=0

            # Act
            await writer.put(PRICES, "AAPL", {"close": 2.0}, TS)
            await writer.flush()
            clock.now += 0.9
            within_ttl = await reader.get(PRICES, "AAPL")
            clock.now += 0.2
            after_ttl = await reader.get(PRICES, "AAPL")
            clock.now += 5.0
            await reader.get(PRICES, "AAPL")

    # Assert
    assert within_ttl["close"].value == 1.0, "served from the cache within fallback_ttl_s"
    assert after_ttl["close"].value == 2.0, "not served once older than fallback_ttl_s"
    assert not reader.tracking
    warnings = [e for e in logs if "refused client tracking" in e["event"]]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["fallback_ttl_s"] == 1.0


async def test_get_when_invalidation_connection_lost_then_ttl_fallback_and_flush_on_reconnect(
    redis_server: RedisServer, writer: RedisFeatureStore
) -> None:
    # Arrange
    clock = FakeClock()
    raw = redis_server.client()
    await writer.put_many(PRICES, {"AAPL": {"close": 1.0}, "MSFT": {"close": 2.0}}, TS)
    await writer.flush()
    # retry_initial_s keeps the invalidation connection down for 2 s: the window under test.
    store = make_store(redis_server, clock=clock, retry_initial_s=2.0, retry_max_s=2.0)
    async with store:
        await store.get_many(PRICES, ["AAPL", "MSFT"])
        clients = await raw.client_list()
        tracking_ids = [c["id"] for c in clients if c["name"] == TRACKING_CLIENT_NAME]
        assert len(tracking_ids) == 1

        # Act
        await raw.client_kill_filter(_id=tracking_ids[0])
        await wait_until(lambda: not store.tracking, what="the lost invalidation connection")
        clock.now += 0.5
        young = await store.get(PRICES, "AAPL")  # entry younger than fallback_ttl_s
        hits = store.stats.hits
        clock.now += 1.0
        await store.get(PRICES, "MSFT")  # older than fallback_ttl_s: fetched again
        old_hit = store.stats.hits - hits
        await wait_until(lambda: store.tracking_connects == 2, what="the reconnect")

        # Assert
        assert young["close"].value == 1.0
        assert old_hit == 0
        assert store.tracking
        assert store.near_cache_size == 0, "invalidations may have been missed: cache flushed"
        before = store.stats.invalidations
        await writer.put(PRICES, "AAPL", {"close": 3.0}, TS)
        await writer.flush()
        await wait_until(lambda: store.stats.invalidations > before, what="invalidations")
        assert (await store.get(PRICES, "AAPL"))["close"].value == 3.0


async def test_get_when_flushall_by_someone_else_then_whole_cache_dropped(
    redis_server: RedisServer, writer: RedisFeatureStore
) -> None:
    # Arrange
    raw = redis_server.client()
    await writer.put_many(PRICES, {"AAPL": {"close": 1.0}, "MSFT": {"close": 2.0}}, TS)
    await writer.flush()
    async with make_store(redis_server) as store:
        await store.get_many(PRICES, ["AAPL", "MSFT"])
        before = store.stats.invalidations

        # Act (the engine never does this; an operator might)
        await raw.flushdb()
        await wait_until(lambda: store.stats.invalidations > before, what="flush invalidation")
        rows = await store.get_many(PRICES, ["AAPL", "MSFT"])

        # Assert
        assert rows == {"AAPL": {}, "MSFT": {}}
