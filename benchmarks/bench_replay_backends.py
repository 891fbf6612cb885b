"""The full default replay on the memory feature store, then on a real redis-server.

Prints JSON: wall time of each, the journal digests (orders, fills, snapshots) and whether
they are identical, and the Redis client's counters. The Redis run is expected to be slower
(every step writes and reads back the market features over a socket); the decisions must not
differ at all.

    .venv/bin/python benchmarks/bench_replay_backends.py [--start DATE] [--end DATE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import EngineConfig, load_config  # noqa: E402
from engine.app import Engine, RunOptions  # noqa: E402
from engine.telemetry.logging import configure_logging  # noqa: E402
from tests.kit.redis_server import RedisServer  # noqa: E402

TABLES = ("orders", "fills", "snapshots")


async def _run(cfg: EngineConfig, run_dir: Path, start: date | None, end: date | None) -> Any:
    engine = Engine(cfg, options=RunOptions(start=start, end=end, run_dir=run_dir, base_dir=ROOT))
    engine.prepare()
    t0 = time.perf_counter()
    async with engine:
        await engine.run()
    wall = time.perf_counter() - t0
    assert engine.journal is not None
    assert engine.features is not None
    summary = engine.summary(completed=True)
    return {
        "wall_s": round(wall, 2),
        "final_equity": round(summary.performance.final_equity, 2),
        "digests": {
            t: engine.journal.table_digest(t)[:16] for t in ("orders", "fills", "snapshots")
        },
        "store": asdict(engine.features.stats),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, default=None)
    parser.add_argument("--end", type=date.fromisoformat, default=None)
    args = parser.parse_args()
    configure_logging("error", "json")
    base = load_config(ROOT / "engine.toml", env={"TRADEENGINE__TELEMETRY__METRICS__PORT": "0"})
    with tempfile.TemporaryDirectory() as tmp:
        memory = await _run(base, Path(tmp) / "memory", args.start, args.end)
        async with RedisServer(Path(tmp) / "redis-server") as server:
            fs = base.feature_store
            redis_cfg = fs.redis.model_copy(update={"url": server.url})
            cfg = base.model_copy(
                update={
                    "feature_store": fs.model_copy(update={"backend": "redis", "redis": redis_cfg})
                }
            )
            on_redis = await _run(cfg, Path(tmp) / "redis", args.start, args.end)
    print(
        json.dumps(
            {
                "benchmark": "default replay, memory vs redis feature store",
                "memory": memory,
                "redis": on_redis,
                "identical_decisions": memory["digests"] == on_redis["digests"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
