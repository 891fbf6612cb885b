"""What observability costs: the default replay with telemetry off, on, and on with the SDK.

Variants. ``off`` and ``on`` run as ABBA pairs (off, on, on, off, ...) so drift on this shared
machine hits both alike, and the overhead is the median of the per-pair ratios, in wall time
and in process CPU time; ``sdk`` runs after them (it is several times slower and would
disturb the pairs):

- ``off``: ``metrics.enabled = false`` and ``tracing.enabled = false`` (no histograms observed,
  no HTTP server, no loop-lag probe, tracing API with the no-op provider). The ceiling.
- ``on``: the defaults: metrics registry + histograms + /metrics served and scraped once a
  second over HTTP (as Prometheus would, but 5x more often), tracing enabled without an
  exporter (the OpenTelemetry API's no-op provider). Target: <= 10 % over ``off``.
- ``sdk``: as ``on`` plus the OpenTelemetry SDK recording every trace (sampling ratio 1.0)
  and exporting over OTLP/HTTP to a local collector stub in another process (it accepts and
  discards), through the SDK's batch processor. Reported, no target.

Prints JSON: per-variant wall times, medians, the overhead ratios and the span counts.

    .venv/bin/python benchmarks/bench_telemetry.py [--pairs N] [--sdk-runs N] [--start D] [--end D]
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
import timeit
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import generate_latest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import EngineConfig, load_config  # noqa: E402
from engine.app import Engine, RunOptions  # noqa: E402
from engine.telemetry.logging import configure_logging  # noqa: E402
from engine.telemetry.metrics import LatencyHistogram  # noqa: E402

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


def _variant(
    base: EngineConfig, name: str, collector_port: int, sdk_ratio: float = 1.0
) -> EngineConfig:
    telemetry = base.telemetry
    metrics = telemetry.metrics.model_copy(update={"port": 0, "enabled": name != "off"})
    tracing = telemetry.tracing.model_copy(
        update={
            "enabled": name != "off",
            "sampling_ratio": sdk_ratio if name == "sdk" else 1.0,
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
        cpu0 = time.process_time()
        async with engine:
            async with _scraper(engine, 1.0) as scrapes:
                completed = await engine.run()
            replay_s = time.perf_counter() - t0
            cpu_s = time.process_time() - cpu0
        wall = time.perf_counter() - t0  # includes flushing the span queue at stop
        tracing = engine.telemetry.tracing
        summary = engine.summary(completed=completed)
        accounted = _accounted_cost(engine, len(scrapes)) if engine.telemetry.port else None
        assert engine.journal is not None
        digest = engine.journal.table_digest("fills")
    return {
        "replay_s": round(replay_s, 3),
        "replay_cpu_s": round(cpu_s, 3),
        "wall_s": round(wall, 3),
        "steps": summary.steps,
        "fills": summary.fills,
        "fills_digest": digest[:16],
        "scrapes": len(scrapes),
        "spans_exported": tracing.spans_exported if tracing is not None else 0,
        "export_failures": tracing.export_failures if tracing is not None else 0,
        "accounted": accounted,
    }


def _accounted_cost(engine: Engine, scrapes: int) -> dict[str, float]:
    """The `on` variant's added work, timed in isolation: every histogram observation the run
    made times the cost of one, plus every scrape times the cost of rendering one. Unlike the
    wall-time difference, this does not drown in the machine's noise."""
    metrics = engine.telemetry.metrics
    observations = sum(
        hist.count
        for family in (metrics.agent_handler, metrics.stage, metrics.journal_write)
        for hist in family.series.values()
    )
    probe = LatencyHistogram()
    n = 200_000
    t0 = time.perf_counter()
    for _ in range(n):
        probe.observe(3e-5)
    # each observation also reads the monotonic clock once more than with metrics off
    clock_reads = timeit.timeit(time.monotonic, number=n)
    observe_s = (time.perf_counter() - t0 + clock_reads) / n
    t0 = time.perf_counter()
    for _ in range(20):
        generate_latest(metrics.registry)
    render_s = (time.perf_counter() - t0) / 20
    return {
        "observations": observations,
        "observe_us": round(observe_s * 1e6, 3),
        "scrape_render_ms": round(render_s * 1e3, 3),
        "scrapes": scrapes,
        "total_s": round(observations * observe_s + scrapes * render_s, 4),
    }


def _start_collector(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", COLLECTOR_STUB, str(port)])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="ABBA off/on pairs")
    parser.add_argument("--sdk-runs", type=int, default=1)
    parser.add_argument("--sdk-ratio", type=float, default=1.0, help="sampling ratio of sdk")
    parser.add_argument("--start", type=date.fromisoformat, default=None)
    parser.add_argument("--end", type=date.fromisoformat, default=None)
    args = parser.parse_args()
    configure_logging("error", "json")
    base = load_config(ROOT / "engine.toml", env={})
    port = _free_port()
    collector = _start_collector(port)
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": [], "sdk": []}
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or collector.poll() is not None:
                raise RuntimeError("the OTLP collector stub did not start")
            await asyncio.sleep(0.1)
        for i in range(args.pairs):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            pair = {}
            for name in order:
                pair[name] = await _run(_variant(base, name, port), args.start, args.end)
                runs[name].append(pair[name])
            ratios.append(pair["on"]["replay_s"] / pair["off"]["replay_s"])
            cpu_ratios.append(pair["on"]["replay_cpu_s"] / pair["off"]["replay_cpu_s"])
        for _ in range(args.sdk_runs):
            sdk = _variant(base, "sdk", port, args.sdk_ratio)
            runs["sdk"].append(await _run(sdk, args.start, args.end))
    finally:
        collector.terminate()
        collector.wait(timeout=10)
    digests = {r["fills_digest"] for rs in runs.values() for r in rs}
    median = {n: statistics.median(r["replay_s"] for r in rs) for n, rs in runs.items() if rs}
    median_wall = {n: statistics.median(r["wall_s"] for r in rs) for n, rs in runs.items() if rs}
    result: dict[str, Any] = {
        "benchmark": "telemetry overhead on the default replay",
        "pairs": args.pairs,
        "period": [str(args.start or "all"), str(args.end or "all")],
        "median_replay_s": median,
        "overhead_on_vs_off_median_of_pairs": round(statistics.median(ratios) - 1, 4),
        "overhead_on_vs_off_cpu_median_of_pairs": round(statistics.median(cpu_ratios) - 1, 4),
        "overhead_on_vs_off_per_pair": [round(r - 1, 4) for r in ratios],
        "accounted_on_cost_vs_off_median": round(
            statistics.median(r["accounted"]["total_s"] for r in runs["on"]) / median["off"], 4
        ),
        "target_on_vs_off": 0.10,
        "same_fills_in_every_run": len(digests) == 1,
    }
    if runs["sdk"]:
        result["sdk_sampling_ratio"] = args.sdk_ratio
        result["overhead_sdk_vs_off_median"] = round(median["sdk"] / median["off"] - 1, 4)
        result["sdk_wall_incl_span_flush_s"] = median_wall["sdk"]
    result["runs"] = runs
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
