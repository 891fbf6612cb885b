"""The full default replay (1990-2022, 20 stocks, yield curves, every enabled agent), timed.

Prints JSON: wall time and steps/s, bars/s, signals/s of the whole engine, against a ceiling
measured in the same run on the same machine: the replay feed alone (same events, same
validation, one draining subscriber, no agents or stages). The ratio says what the trading
path costs on top of reading and publishing the data. Per agent: events handled, signals and
handler time p50/p99/mean from the engine's own metrics. Target (issue 6, all applicable agents
on): the whole replay < 60 s.

    .venv/bin/python benchmarks/bench_replay.py [--start DATE] [--end DATE] [--profile]
        [--config engine.toml] [--in-process] [--compare-in-process]

The default config runs seven agents in a worker process (``worker = 1``). --in-process puts
every agent on the engine's loop instead; --compare-in-process runs both, one after the other
in the same invocation, and reports the ratio (the machine is shared: compare within a run).
Each agent row says where it ran ("engine" or "worker k"); worker agents' handler times come
from the histograms their worker reports. --profile adds a cProfile run of the engine's own
process and a breakdown of where its time goes (own time grouped by component), which the
closing notes of performance work quote.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any

from _loop import loop_factory as event_loop_factory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _config import add_config_arguments, bench_config  # noqa: E402

from config import load_config  # noqa: E402
from contracts import IdGenerator  # noqa: E402
from engine.app import Engine, RunOptions  # noqa: E402
from engine.bus import MessageBus, SubscriptionClosed  # noqa: E402
from engine.clock import ReplayClock  # noqa: E402
from engine.gc_policy import run_gc_policy  # noqa: E402
from engine.sources.replay import ReplayFeed, load_source  # noqa: E402
from engine.telemetry.logging import configure_logging  # noqa: E402

GROUPS = (
    ("plugins/", "agents (plugins)"),
    ("engine/calibration", "agents (calibration)"),
    ("engine/supervisor", "agent supervisor"),
    ("engine/agent.py", "agent API (signal building)"),
    ("engine/stages/blender", "blender"),
    ("engine/stages/selector", "selector"),
    ("engine/stages/risk", "risk"),
    ("engine/pipeline", "pipeline"),
    ("engine/execution", "execution + journal"),
    ("engine/sources", "replay source"),
    ("engine/bus", "bus"),
    ("contracts/", "contracts (validators)"),
    ("pydantic", "pydantic (validation)"),
    ("sqlite3", "sqlite"),
    ("numpy", "numpy"),
    ("asyncio", "event loop"),
    ("uvloop", "event loop"),
)


async def _engine_run(
    start: date | None, end: date | None, config_path: Path, in_process: bool
) -> dict[str, Any]:
    # Telemetry as configured (on), but /metrics on a free port so a running engine or a
    # parallel benchmark never collides with this one.
    cfg = bench_config(
        config_path, in_process=in_process, env={"TRADEENGINE__TELEMETRY__METRICS__PORT": "0"}
    )
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(
            cfg,
            options=RunOptions(
                start=start, end=end, run_dir=Path(tmp) / "run", base_dir=config_path.parent
            ),
        )
        t0 = time.perf_counter()
        engine.prepare()
        with run_gc_policy():  # as `tradeengine run` does
            async with engine:
                completed = await engine.run()
        wall = time.perf_counter() - t0
        summary = engine.summary(completed=completed)
        agents = _agent_handlers(engine)
        stages = {
            name: {
                "p50_us": round(hist.quantile(0.5) * 1e6, 1),
                "p99_us": round(hist.quantile(0.99) * 1e6, 1),
                "total_s": round(hist.total, 2),
            }
            for (name,), hist in sorted(engine.telemetry.metrics.stage.series.items())
            if hist.count
        }
    return {
        "wall_s": round(wall, 3),
        "steps": summary.steps,
        "bars": summary.bars,
        "signals": summary.signals,
        "opportunities": summary.opportunities,
        "intents": summary.intents,
        "fills": summary.fills,
        "steps_per_s": round(summary.steps / wall),
        "bars_per_s": round(summary.bars / wall),
        "signals_per_s": round(summary.signals / wall),
        "final_equity": round(summary.performance.final_equity, 2),
        "agents": agents,
        "stages": stages,
    }


def _agent_handlers(engine: Engine) -> dict[str, dict[str, Any]]:
    """Per agent: events handled, signals, and the handler time from the engine's own
    ``tradeengine_agent_handler_duration_seconds`` histogram (p50/p99 interpolated inside the
    buckets as Prometheus' histogram_quantile does; the mean is exact)."""
    out: dict[str, dict[str, Any]] = {}
    supervisor = engine.supervisor
    assert supervisor is not None
    series = engine.telemetry.metrics.agent_handler.series
    views: dict[str, Any] = dict(supervisor.runners)
    if engine.workers is not None:  # agents in worker processes report the same histograms
        views.update(engine.workers.agents)
    for name, runner in sorted(views.items()):
        hist = series.get((name,))
        row: dict[str, Any] = {
            "process": f"worker {runner.worker}" if hasattr(runner, "worker") else "engine",
            "handled": runner.stats.handled,
            "signals": runner.stats.signals,
        }
        if hist is not None and hist.count:
            row["handler_p50_us"] = round(hist.quantile(0.5) * 1e6, 1)
            row["handler_p99_us"] = round(hist.quantile(0.99) * 1e6, 1)
            row["handler_mean_us"] = round(hist.total / hist.count * 1e6, 1)
            row["handler_total_s"] = round(hist.total, 2)
        out[name] = row
    return out


async def _feed_only(start: date | None, end: date | None, config_path: Path) -> dict[str, Any]:
    cfg = load_config(config_path, env={})
    t0 = time.perf_counter()
    base = config_path.parent
    sources = [load_source(s, base_dir=base, start=start, end=end) for s in cfg.sources]
    bus = MessageBus()
    sub = bus.subscribe(">", name="drain", capacity=4096)
    received = 0

    async def drain() -> None:
        nonlocal received
        while True:
            try:
                received += len(await sub.get_batch(4096))
            except SubscriptionClosed:
                return

    task = asyncio.create_task(drain())
    feed = ReplayFeed(sources, bus=bus, clock=ReplayClock(sources[0].first_ts), ids=IdGenerator(0))
    stats = await feed.run()
    sub.close()
    await task
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 3),
        "steps": stats.steps,
        "messages": received,
        "steps_per_s": round(stats.steps / wall),
        "bars_per_s": round(stats.bars / wall),
    }


def _breakdown(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile)
    total = 0.0
    groups: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        label = next((g for key, g in GROUPS if key in filename), "other")
        if filename == "~":
            label = "builtins (C)"
        groups[label] += tottime
    return {k: round(v / total, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, default=None)
    parser.add_argument("--end", type=date.fromisoformat, default=None)
    parser.add_argument("--profile", action="store_true", help="add a cProfile breakdown")
    parser.add_argument("--no-uvloop", action="store_true")
    add_config_arguments(parser)
    parser.add_argument(
        "--compare-in-process",
        action="store_true",
        help="also run the same config with every agent in process and report the ratio",
    )
    args = parser.parse_args()
    configure_logging("warning", "json")
    runner_factory, loop_name = event_loop_factory(args.no_uvloop)
    report: dict[str, Any] = {"loop": loop_name, "python": sys.version.split()[0]}
    with asyncio.Runner(loop_factory=runner_factory) as runner:
        report["ceiling_feed_only"] = runner.run(_feed_only(args.start, args.end, args.config))
        report["engine"] = runner.run(
            _engine_run(args.start, args.end, args.config, args.in_process)
        )
        if args.compare_in_process and not args.in_process:
            # The same config with every agent on the engine's loop, in the same invocation:
            # what the worker processes save on this machine at this moment.
            report["engine_in_process"] = runner.run(
                _engine_run(args.start, args.end, args.config, True)
            )
            report["engine_over_in_process"] = round(
                report["engine"]["wall_s"] / report["engine_in_process"]["wall_s"], 3
            )
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            runner.run(_engine_run(args.start, args.end, args.config, args.in_process))
            profile.disable()
            report["profile_share_of_own_time"] = _breakdown(profile)
    engine_wall = report["engine"]["wall_s"]
    report["engine_over_feed_only"] = round(engine_wall / report["ceiling_feed_only"]["wall_s"], 2)
    report["target_full_replay_under_60s"] = engine_wall < 60.0 if args.start is None else None
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
