"""`tradeengine features ls|describe|promote` against a real redis-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.models import NearCacheConfig, RedisConfig
from engine.features import FeatureField, FeatureSet, FieldType
from engine.features.redis_store import RedisFeatureStore
from tests.kit.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[2]
V1 = FeatureSet("prices", 1, (FeatureField("close", FieldType.FLOAT),))
V2 = FeatureSet(
    "prices", 2, (FeatureField("close", FieldType.FLOAT), FeatureField("volume", FieldType.INT))
)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "features", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={
            **os.environ,
            "TRADEENGINE__FEATURE_STORE__BACKEND": "redis",
            "TRADEENGINE__FEATURE_STORE__NAMESPACE": "clitest",
            "TRADEENGINE__FEATURE_STORE__REDIS__URL": url,
        },
        timeout=60,
    )


@pytest.fixture
async def populated(redis_server: RedisServer) -> str:  # noqa: F811
    store = RedisFeatureStore(
        namespace="clitest",
        config=RedisConfig(url=redis_server.url),
        near_cache=NearCacheConfig(),
    )
    await store.start()
    try:
        await store.register(V1)
        await store.register(V2)
        ts = datetime(2024, 1, 2, 21, tzinfo=UTC)
        await store.put_many(V1, {"AAPL": {"close": 190.0}, "MSFT": {"close": 370.0}}, ts=ts)
        await store.put(V2, "AAPL", {"close": 191.0, "volume": 1_000}, ts=ts)
        await store.flush()
    finally:
        await store.stop()
    return redis_server.url


def test_ls_when_two_versions_stored_then_each_listed_with_entities_and_active_mark(
    populated: str,
) -> None:
    # Act
    result = _cli(populated, "ls")
    # Assert
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["SET", "VER", "ACTIVE", "ENTITIES", "BYTES"]
    rows = {r[1]: r for r in (line.split() for line in lines[1:]) if r[0] == "prices"}
    v1, v2 = rows["1"], rows["2"]
    assert v1[1:4] == ["1", "*", "2"]  # version 1 is active (registered first), 2 entities
    assert v2[1:3] == ["2", "1"]  # version 2: not active, 1 entity
    assert "2024-01-02T21:00:00+00:00" in result.stdout


def test_promote_when_version_registered_then_describe_shows_it_active(populated: str) -> None:
    # Act
    promoted = _cli(populated, "promote", "prices", "2")
    described = _cli(populated, "describe", "prices")
    # Assert
    assert promoted.returncode == 0, promoted.stderr
    body = json.loads(described.stdout)
    assert body["version"] == 2
    assert body["active"] is True
    assert [f["name"] for f in body["fields"]] == ["close", "volume"]
    assert body["entities"] == 1


def test_promote_when_version_unknown_then_exit_2_naming_it(populated: str) -> None:
    # Act
    result = _cli(populated, "promote", "prices", "7")
    # Assert
    assert result.returncode == 2
    assert "prices:v7" in result.stderr
    assert "Traceback" not in result.stderr


def test_ls_when_redis_unreachable_then_exit_2_naming_the_url() -> None:
    # Arrange: a port nobody listens on
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Act
    result = _cli(f"redis://127.0.0.1:{port}/0", "ls")
    # Assert
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
