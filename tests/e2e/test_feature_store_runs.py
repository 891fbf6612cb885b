"""Full engine runs on the Redis feature store: same decisions as memory, and survival of an
outage mid-run. Every test talks to a real redis-server started on a free port."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from config import EngineConfig
from engine.app import Engine, RunOptions
from engine.features.market import MARKET
from engine.features.store import entity_key
from tests.kit.config import on_free_port
from tests.kit.redis_server import RedisServer, wait_until

from .conftest import ROOT, default_config, replay


def _decisions(rows: list[Any]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        decision = json.loads(row["json"])
        decision.pop("config_hash")
        out.append(decision)
    return out


def _on_redis(cfg: EngineConfig, url: str, *, near_cache: bool = False) -> EngineConfig:
    fs = cfg.feature_store
    return cfg.model_copy(
        update={
            "feature_store": fs.model_copy(
                update={
                    "backend": "redis",
                    "namespace": "e2e",
                    "redis": fs.redis.model_copy(update={"url": url}),
                    "near_cache": fs.near_cache.model_copy(update={"enabled": near_cache}),
                }
            )
        }
    )


@pytest.mark.parametrize("near_cache", [False, True], ids=["no-near-cache", "near-cache"])
async def test_replay_when_backend_is_redis_then_decisions_identical_to_memory(
    tmp_path: Path, redis_server: RedisServer, near_cache: bool
) -> None:
    # Arrange
    start, end = date(2005, 1, 1), date(2007, 12, 31)
    base = default_config()
    # Act
    memory = await replay(base, tmp_path / "run_memory", start, end)
    on_redis = await replay(
        _on_redis(base, redis_server.url, near_cache=near_cache), tmp_path / "run_redis", start, end
    )
    # Assert: every journal table byte-identical (the config hash ignores no trading setting,
    # but the backend is part of it, so decisions are compared without their hash)
    for table in ("orders", "fills", "snapshots"):
        assert memory.engine.journal is not None
        assert on_redis.engine.journal is not None
        assert on_redis.engine.journal.table_digest(table) == memory.engine.journal.table_digest(
            table
        )
    # decisions carry the config hash, and the backend is part of the config: compare the
    # decisions themselves without it
    assert _decisions(on_redis.rows("SELECT json FROM decisions")) == _decisions(
        memory.rows("SELECT json FROM decisions")
    )
    assert on_redis.engine.pipeline is not None
    assert on_redis.engine.pipeline.stats.intents > 0
    # the store's metrics and the drift evaluated at stop are exported
    metrics = generate_latest(on_redis.engine.telemetry.metrics.registry).decode()
    reads = re.search(r'tradeengine_feature_store_reads_total\{backend="redis"\} (\S+)', metrics)
    assert reads is not None
    assert float(reads.group(1)) > 100
    # (drift of an in-engine agent's features, and of a worker agent's, reported by its worker)
    assert 'tradeengine_feature_drift_psi{feature="score",feature_set="donchian:v1"}' in metrics
    assert 'tradeengine_feature_drift_psi{feature="score",feature_set="tsmom:v1"}' in metrics
    assert "tradeengine_feature_store_read_duration_seconds_count" in metrics
    # and the features really are in Redis, under the namespaced, versioned key layout
    raw = redis_server.client()
    try:
        key = entity_key("e2e", MARKET, "AAPL")
        assert await raw.exists(key)
        assert set(await raw.hkeys(key)) == {b"close", b"returns", b"vol_20d"}
        assert await raw.exists("e2e:fs:donchian:v1:AAPL")
        # momentum runs in a worker process (engine.toml): its features stay in the worker,
        # which runs ahead of the engine and must not show it values from its future
        assert not await raw.exists("e2e:fs:tsmom:v1:AAPL")
    finally:
        await raw.aclose()


async def test_replay_when_redis_stops_mid_run_then_keeps_trading_degraded_and_drains_after(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    # Arrange: near cache on, so reads during the outage are served (marked stale)
    cfg = _on_redis(on_free_port(default_config()), redis_server.url, near_cache=True)
    engine = Engine(
        cfg,
        options=RunOptions(
            start=date(2005, 1, 1), end=date(2007, 12, 31), run_dir=tmp_path / "run", base_dir=ROOT
        ),
    )
    engine.prepare()
    seen: list[str] = []
    outage: list[asyncio.Task[None]] = []

    def on_step(step: int, _ts: object) -> None:
        # stop the server a few months in, bring it back a few months later
        if step == 100:
            outage.append(asyncio.ensure_future(redis_server.stop()))
        elif step == 300:
            outage.append(asyncio.ensure_future(redis_server.restart()))

    async with engine, httpx.AsyncClient() as client:
        assert engine.telemetry.server is not None
        url = f"{engine.telemetry.server.url}/healthz"

        async def watch() -> None:
            while True:
                body = (await client.get(url)).json()
                seen.append(body["components"]["feature_store"]["state"])
                await asyncio.sleep(0.01)

        watcher = asyncio.create_task(watch())
        # Act
        completed = await engine.run(on_step=on_step)
        await asyncio.gather(*outage)
        store = engine.features
        assert store is not None
        await wait_until(lambda: store.buffered_writes == 0, what="buffer drained", timeout_s=30)
        await wait_until(lambda: store.state == "RUNNING", what="store RUNNING", timeout_s=30)
        watcher.cancel()
        final = (await client.get(url)).json()
    # Assert: the run went on through the outage, health showed it, nothing was lost
    assert completed
    assert engine.pipeline is not None
    assert engine.pipeline.snapshots[-1].ts.date() == date(2007, 12, 31)  # traded to the end
    assert "DEGRADED" in seen
    assert seen.index("DEGRADED") > 0  # it was RUNNING before the outage
    assert final["components"]["feature_store"]["state"] == "RUNNING"
    assert store.stats.errors > 0
    assert store.stats.dropped_writes == 0
    assert store.stats.flushed == store.stats.writes
    raw = redis_server.client()
    try:
        last_ts = engine.pipeline.snapshots[-1].ts
        rows = await store.get_many(MARKET, ["AAPL", "MSFT"], ["close"])
        assert rows["AAPL"]["close"].ts == last_ts
        assert await raw.exists(entity_key("e2e", MARKET, "AAPL"))
    finally:
        await raw.aclose()


def test_run_when_redis_unreachable_at_start_then_exit_2_naming_the_url(tmp_path: Path) -> None:
    # Arrange: a port nobody listens on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "TRADEENGINE__FEATURE_STORE__BACKEND": "redis",
        "TRADEENGINE__FEATURE_STORE__REDIS__URL": f"redis://127.0.0.1:{port}/0",
        "TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD": "hunter2-canary",
    }
    # Act
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "run",
            "--config",
            str(ROOT / "engine.toml"),
            "--paper",
            "--start",
            "2005-01-01",
            "--end",
            "2005-01-31",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    # Assert: one clear line, nothing written, no password anywhere
    assert result.returncode == 2
    assert f"redis://127.0.0.1:{port}/0" in result.stderr
    assert "feature_store.redis" in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2-canary" not in result.stderr + result.stdout
    assert not (tmp_path / "run").exists()
