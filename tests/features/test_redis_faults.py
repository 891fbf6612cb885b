"""The Redis backend when Redis is missing, goes away, comes back, or refuses a command."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from config.models import NearCacheConfig, RedisConfig
from engine.features import FeatureField, FeatureSet, FieldType
from engine.features.codec import encode, ts_to_us
from engine.features.redis_store import FeatureStoreUnavailableError, RedisFeatureStore
from engine.features.store import entity_key
from tests.kit import redis_server as redis_kit
from tests.kit.prometheus import free_port
from tests.kit.redis_server import RedisServer, wait_until

redis_server = redis_kit.redis_server

NS = "faults"
TS = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
PRICES = FeatureSet(
    "prices", 1, (FeatureField("close", FieldType.FLOAT), FeatureField("volume", FieldType.INT))
)


class States:
    """Records the store's on_state calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, state: str, reason: str) -> None:
        self.calls.append((state, reason))

    @property
    def names(self) -> list[str]:
        return [state for state, _ in self.calls]


def make_store(
    url: str,
    *,
    on_unavailable: Literal["fail", "degraded"] = "fail",
    near: bool = True,
    password: str | None = None,
    **kwargs: Any,
) -> RedisFeatureStore:
    config = RedisConfig(
        url=url,
        on_unavailable=on_unavailable,
        connect_timeout_s=1.0,
        password=SecretStr(password) if password is not None else None,
    )
    return RedisFeatureStore(
        namespace=NS,
        config=config,
        near_cache=NearCacheConfig(enabled=near),
        retry_initial_s=0.02,
        retry_max_s=0.2,
        **kwargs,
    )


def stored(value: float) -> bytes:
    return encode(PRICES.field("close"), value, ts_to_us(TS))


# ---------------------------------------------------------------------------------- at start


async def test_start_when_redis_unreachable_and_fail_then_error_names_url() -> None:
    # Arrange
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = make_store(url, password="s3cret-never-shown")

    # Act
    with pytest.raises(FeatureStoreUnavailableError) as caught:
        await store.start()
    await store.stop()

    # Assert
    message = str(caught.value)
    assert url in message
    assert "error 111 connecting" in message.lower()
    assert "\n" not in message
    assert "s3cret-never-shown" not in message


async def test_start_when_redis_unreachable_and_degraded_then_running_once_server_appears(
    tmp_path: Path,
) -> None:
    # Arrange
    port = free_port()
    states = States()
    store = make_store(f"redis://127.0.0.1:{port}/0", on_unavailable="degraded", on_state=states)

    # Act
    async with store:
        degraded = (store.state, store.state_reason)
        await store.put(PRICES, "AAPL", {"close": 1.0}, TS)
        await store.register(PRICES)
        async with RedisServer(tmp_path / "redis", port=port) as server:
            await wait_until(lambda: store.state == "RUNNING", what="state RUNNING")
            await store.flush(timeout_s=10)
            raw = server.client()

            # Assert
            assert degraded[0] == "DEGRADED"
            assert "redis unreachable" in degraded[1]
            assert states.names == ["DEGRADED", "RUNNING"]
            assert await raw.hget(entity_key(NS, PRICES, "AAPL"), "close") == stored(1.0)
            assert await store.active_version("prices") == 1, "deferred registration stored"
            assert (await store.get(PRICES, "AAPL"))["close"].value == 1.0
            await wait_until(lambda: store.tracking, what="the invalidation connection")


# ----------------------------------------------------------------------------------- mid-run


async def test_put_when_redis_stopped_mid_use_then_buffered_stale_and_drained_on_restart(
    redis_server: RedisServer,
) -> None:
    # Arrange
    states = States()
    raw = redis_server.client()
    async with make_store(redis_server.url, on_state=states) as store:
        await store.put_many(PRICES, {"AAPL": {"close": 1.0}, "MSFT": {"close": 2.0}}, TS)
        await store.flush()
        await store.get_many(PRICES, ["AAPL", "MSFT"])  # cached
        errors = store.stats.errors

        # Act: Redis goes away; the engine keeps writing and reading
        await redis_server.stop()
        rows = {f"E{i:02d}": {"close": float(i), "volume": i} for i in range(50)}
        await store.put_many(PRICES, rows, TS)
        await store.put(PRICES, "AAPL", {"close": 10.0}, TS)
        during = await store.get_many(PRICES, ["AAPL", "MSFT", "E07", "NEVER"])
        state_during = store.state
        buffered = store.buffered_writes
        with pytest.raises(TimeoutError, match="not stored"):
            await store.flush(timeout_s=0.05)

        # ... and comes back (empty: no persistence)
        await redis_server.restart()
        await wait_until(lambda: store.state == "RUNNING", what="state RUNNING after restart")
        await store.flush(timeout_s=10)

        # Assert
        assert state_during == "DEGRADED"
        assert states.names == ["DEGRADED", "RUNNING"]
        assert buffered == 51
        assert store.stats.errors > errors
        assert during["MSFT"]["close"].value == 2.0
        assert during["MSFT"]["close"].stale
        assert during["AAPL"]["close"].value == 10.0
        assert during["AAPL"]["close"].stale
        assert during["E07"]["volume"].value == 7
        assert during["E07"]["volume"].stale
        assert during["NEVER"] == {}
        for entity, values in rows.items():
            key = entity_key(NS, PRICES, entity)
            assert await raw.hget(key, "close") == stored(values["close"]), entity
        assert await raw.hget(entity_key(NS, PRICES, "AAPL"), "close") == stored(10.0)
        assert store.buffered_writes == 0
        assert store.stats.dropped_writes == 0
        fresh = await store.get(PRICES, "E07")
        assert fresh["close"].value == 7.0
        assert not fresh["close"].stale


async def test_put_when_buffer_overflows_then_oldest_dropped_counted_and_logged(
    tmp_path: Path,
) -> None:
    # Arrange
    port = free_port()
    store = make_store(
        f"redis://127.0.0.1:{port}/0", on_unavailable="degraded", max_buffered_writes=5
    )
    rows = {f"E{i}": {"close": float(i)} for i in range(8)}

    async with store:
        # Act
        with capture_logs() as logs:
            await store.put_many(PRICES, rows, TS)
        dropped_read = await store.get(PRICES, "E0")
        kept_read = await store.get(PRICES, "E7")
        async with RedisServer(tmp_path / "redis", port=port) as server:
            await store.flush(timeout_s=10)
            raw = server.client()

            # Assert
            assert store.stats.dropped_writes == 3
            warnings = [e for e in logs if "write buffer full" in e["event"]]
            assert len(warnings) == 1
            assert warnings[0]["log_level"] == "warning"
            assert (warnings[0]["dropped"], warnings[0]["dropped_total"]) == (3, 3)
            assert warnings[0]["max_buffered_writes"] == 5
            assert dropped_read == {}, "a dropped write is not visible either"
            assert kept_read["close"].stale
            for i in range(8):
                value = await raw.hget(entity_key(NS, PRICES, f"E{i}"), "close")
                assert value == (stored(float(i)) if i >= 3 else None), f"E{i}"


async def test_stop_when_redis_down_then_returns_and_logs_writes_not_stored(
    redis_server: RedisServer,
) -> None:
    # Arrange
    store = make_store(redis_server.url)
    await store.start()
    await redis_server.stop()
    await store.put_many(PRICES, {f"E{i}": {"close": 1.0} for i in range(4)}, TS)

    # Act
    with capture_logs() as logs:
        await store.stop()
        await store.stop()  # idempotent

    # Assert
    lost = [e for e in logs if e["event"] == "feature store stopped with writes not stored"]
    assert len(lost) == 1
    assert lost[0]["not_stored"] == 4
    assert lost[0]["url"] == redis_server.url


async def test_get_when_redis_unreachable_and_no_near_cache_then_missing_not_raised(
    redis_server: RedisServer,
) -> None:
    # Arrange
    async with make_store(redis_server.url, near=False) as store:
        await store.put(PRICES, "AAPL", {"close": 1.0}, TS)
        await store.flush()
        await redis_server.stop()

        # Act
        row = await store.get(PRICES, "AAPL")

        # Assert
        assert row == {}
        assert store.state == "DEGRADED"
        assert store.stats.errors >= 1


# ----------------------------------------------------------------------- refused, unreadable


async def test_put_when_redis_refuses_a_write_then_logged_counted_and_queue_moves_on(
    redis_server: RedisServer,
) -> None:
    # Arrange
    raw = redis_server.client()
    blocked = entity_key(NS, PRICES, "BLOCKED")
    await raw.set(blocked, b"not a hash")
    async with make_store(redis_server.url, near=False) as store:
        # Act
        with capture_logs() as logs:
            await store.put(PRICES, "BLOCKED", {"close": 1.0}, TS)
            await store.put(PRICES, "AAPL", {"close": 2.0}, TS)
            await store.flush(timeout_s=10)

        # Assert
        assert store.stats.errors == 1
        assert store.stats.flushed == 1
        assert store.state == "RUNNING"
        refused = [e for e in logs if e["event"] == "feature write refused by redis, not retried"]
        assert len(refused) == 1
        assert refused[0]["key"] == blocked
        assert "WRONGTYPE" in refused[0]["error"]
        assert await raw.hget(entity_key(NS, PRICES, "AAPL"), "close") == stored(2.0)


async def test_get_when_key_is_not_a_hash_then_reported_counted_and_missing(
    redis_server: RedisServer,
) -> None:
    # Arrange
    raw = redis_server.client()
    await raw.set(entity_key(NS, PRICES, "ODD"), b"not a hash")
    async with make_store(redis_server.url) as store:
        # Act
        with capture_logs() as logs:
            rows = await store.get_many(PRICES, ["ODD", "NOPE"])

        # Assert
        assert rows == {"ODD": {}, "NOPE": {}}
        assert store.stats.corrupt == 1
        reports = [e for e in logs if e["event"] == "feature key unreadable, treated as missing"]
        assert len(reports) == 1
        assert (reports[0]["feature_set"], reports[0]["entity"]) == ("prices:v1", "ODD")


async def test_put_when_ttl_runs_out_during_outage_then_not_stored_and_rest_keeps_its_age(
    redis_server: RedisServer,
) -> None:
    # Arrange
    raw = redis_server.client()
    async with make_store(redis_server.url, near=False) as store:
        await store.put(PRICES, "WARM", {"close": 1.0}, TS)
        await store.flush()
        await redis_server.stop()
        # Act: during the outage, one write with a short TTL and one with a long one
        await store.put(PRICES, "SHORT", {"close": 2.0}, TS, ttl_s=0.2)
        await store.put(PRICES, "LONG", {"close": 3.0}, TS, ttl_s=60.0)
        await wait_until(lambda: store.state == "DEGRADED", what="store DEGRADED")
        await asyncio.sleep(0.4)  # the short TTL runs out while Redis is away
        await redis_server.restart()
        await wait_until(lambda: store.state == "RUNNING", what="state RUNNING after restart")
        await store.flush(timeout_s=10)
        # Assert: the expired write did not come back to life; the other keeps its age
        assert not await raw.exists(entity_key(NS, PRICES, "SHORT"))
        assert store.stats.expired_in_buffer == 1
        ttl_ms = await raw.pttl(entity_key(NS, PRICES, "LONG"))
        assert 0 < ttl_ms <= 59_700
        assert await store.get(PRICES, "SHORT") == {}
    await raw.aclose()
