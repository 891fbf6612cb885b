"""What observability costs: the default replay with telemetry off, on, and on with the SDK.

Variants, run interleaved (off, on, sdk, off, on, sdk, ...) so machine noise hits all alike:

- ``off``: ``metrics.enabled = false`` and ``tracing.enabled = false`` (no histograms observed,
  no HTTP server, no loop-lag probe, tracing API with the no-op provider). The ceiling.
- ``on``: the defaults: metrics registry + histograms + /metrics served and scraped once a
  second over HTTP (as Prometheus would, but 5x more often), tracing enabled without an
  exporter (the OpenTelemetry API's no-op provider). Target: <= 10 % over ``off``.
- ``sdk``: as ``on`` plus the OpenTelemetry SDK recording every trace (sampling ratio 1.0)
  and exporting over OTLP/HTTP to a local collector stub in another process (it accepts and
  discards), through the SDK's batch processor. Reported, no target.

Prints JSON: per-variant wall times, medians, the overhead ratios and the span counts.

    .venv/bin/python benchmarks/bench_telemetry.py [--rounds N] [--start DATE] [--end DATE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import EngineConfig, load_config  # noqa: E402
from engine.app import Engine, RunOptions  # noqa: E402
from engine.telemetry.logging import configure_logging  # noqa: E402

COLLECTOR_STUB = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    received = {"requests": 0, "bytes": 0}

    async def traces(request):
        body = await request.read()
        received["requests"] += 1
        received["bytes"] += len(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", traces)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _variant(base: EngineConfig, name: str, collector_port: int) -> EngineConfig:
    telemetry = base.telemetry
    metrics = telemetry.metrics.model_copy(update={"port": 0, "enabled": name != "off"})
    tracing = telemetry.tracing.model_copy(
        update={
            "enabled": name != "off",
            "sampling_ratio": 1.0,
            "otlp_endpoint": f"http://127.0.0.1:{collector_port}" if name == "sdk" else None,
            "otlp_protocol": "http/protobuf",
        }
    )
    return base.model_copy(
        update={"telemetry": telemetry.model_copy(update={"metrics": metrics, "tracing": tracing})}
    )


@contextlib.asynccontextmanager
async def _scraper(engine: Engine, interval_s: float) -> AsyncIterator[list[int]]:
    """Scrape /metrics every `interval_s` while the replay runs; yields the scrape sizes."""
    sizes: list[int] = []
    port = engine.telemetry.port
    if port is None:
        yield sizes
        return

    async def loop() -> None:
        async with httpx.AsyncClient() as client:
            while True:
                await asyncio.sleep(interval_s)
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
                response.raise_for_status()
                sizes.append(len(response.content))

    task = asyncio.create_task(loop())
    try:
        yield sizes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _run(cfg: EngineConfig, start: date | None, end: date | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(
            cfg, options=RunOptions(start=start, end=end, run_dir=Path(tmp) / "run", base_dir=ROOT)
        )
        engine.prepare()
        t0 = time.perf_counter()
        async with engine:
            async with _scraper(engine, 1.0) as scrapes:
                completed = await engine.run()
            replay_s = time.perf_counter() - t0
        wall = time.perf_counter() - t0  # includes flushing the span queue at stop
        tracing = engine.telemetry.tracing
        summary = engine.summary(completed=completed)
        assert engine.journal is not None
        digest = engine.journal.table_digest("fills")
    return {
        "replay_s": round(replay_s, 3),
        "wall_s": round(wall, 3),
        "steps": summary.steps,
        "fills": summary.fills,
        "fills_digest": digest[:16],
        "scrapes": len(scrapes),
        "spans_exported": tracing.spans_exported if tracing is not None else 0,
        "export_failures": tracing.export_failures if tracing is not None else 0,
    }


def _start_collector(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", COLLECTOR_STUB, str(port)])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start", type=date.fromisoformat, default=None)
    parser.add_argument("--end", type=date.fromisoformat, default=None)
    args = parser.parse_args()
    configure_logging("error", "json")
    base = load_config(ROOT / "engine.toml", env={})
    port = _free_port()
    collector = _start_collector(port)
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or collector.poll() is not None:
                raise RuntimeError("the OTLP collector stub did not start")
            await asyncio.sleep(0.1)
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": [], "sdk": []}
        for _ in range(args.rounds):
            for name in runs:
                runs[name].append(await _run(_variant(base, name, port), args.start, args.end))
    finally:
        collector.terminate()
        collector.wait(timeout=10)
    digests = {r["fills_digest"] for rs in runs.values() for r in rs}
    median = {name: statistics.median(r["replay_s"] for r in rs) for name, rs in runs.items()}
    median_wall = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    print(
        json.dumps(
            {
                "benchmark": "telemetry overhead on the default replay",
                "rounds": args.rounds,
                "period": [str(args.start or "all"), str(args.end or "all")],
                "median_replay_s": median,
                "median_wall_s_incl_span_flush": median_wall,
                "overhead_on_vs_off": round(median["on"] / median["off"] - 1, 4),
                "overhead_sdk_vs_off": round(median["sdk"] / median["off"] - 1, 4),
                "overhead_sdk_wall_vs_off": round(median_wall["sdk"] / median_wall["off"] - 1, 4),
                "target_on_vs_off": 0.10,
                "same_fills_in_every_run": len(digests) == 1,
                "runs": runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
