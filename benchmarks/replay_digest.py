"""Digests of everything a replay decides, for checking that a performance change changed nothing.

Runs the default config in process over a window and prints JSON: a SHA-256 (first 16 hex) of
every Signal and every Opportunity in bus order (topic + JSON) and of the same set sorted (the
order of agents' signals changes when some run in worker processes), and of the journal's decisions,
orders, fills and snapshots tables, with the counts and the final equity. Run it before and after
a change (e.g. from two git worktrees) and compare: any difference in any digest is a changed
result. Wall time is printed for orientation only (the digest subscribers slow the run down).

    .venv/bin/python benchmarks/replay_digest.py [--start 1995-01-01] [--end 1999-12-31]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _config import add_config_arguments, bench_config  # noqa: E402

from engine.app import Engine, RunOptions  # noqa: E402
from engine.bus import Subscription, SubscriptionClosed  # noqa: E402
from engine.execution.journal import Journal  # noqa: E402
from engine.telemetry.logging import configure_logging  # noqa: E402

TABLES = ("decisions", "orders", "fills", "snapshots")


async def _digest(sub: Subscription, out: dict[str, Any], name: str) -> None:
    digest = hashlib.sha256()
    records: list[bytes] = []
    while True:
        try:
            batch = await sub.get_batch(4096)
        except SubscriptionClosed:
            break
        for topic, message in batch:
            record = topic.encode() + b" " + message.model_dump_json().encode()  # type: ignore[attr-defined]
            digest.update(record)
            records.append(record)
    # Sorted: the same messages in another order. Agents in worker processes publish in
    # another interleaving than in process; what is blended and decided must not change.
    as_set = hashlib.sha256(b"\n".join(sorted(records)))
    out[name] = {
        "count": len(records),
        "digest": digest.hexdigest()[:16],
        "digest_sorted": as_set.hexdigest()[:16],
    }


async def _run(
    start: date | None, end: date | None, config_path: Path, in_process: bool
) -> dict[str, Any]:
    cfg = bench_config(
        config_path, in_process=in_process, env={"TRADEENGINE__TELEMETRY__METRICS__PORT": "0"}
    )
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        engine = Engine(
            cfg,
            options=RunOptions(start=start, end=end, run_dir=run_dir, base_dir=config_path.parent),
        )
        t0 = time.perf_counter()
        engine.prepare()
        async with engine:
            # Unbounded enough for a whole replay: a digest must never drop a message.
            signals = engine.bus.subscribe("signal.>", name="digest-signals", capacity=1 << 22)
            opportunities = engine.bus.subscribe(
                "opportunity.>", name="digest-opportunities", capacity=1 << 22
            )
            tasks = [
                asyncio.create_task(_digest(signals, out, "signals")),
                asyncio.create_task(_digest(opportunities, out, "opportunities")),
            ]
            completed = await engine.run()
            await asyncio.sleep(0)  # let the digests take the last deliveries
            signals.close()
            opportunities.close()
            await asyncio.gather(*tasks)
        summary = engine.summary(completed=completed)
        journal = Journal(run_dir / "journal.sqlite")
        out["journal"] = {t: journal.table_digest(t)[:16] for t in TABLES}
    out["completed"] = completed
    out["signals_emitted"] = summary.signals
    out["final_equity"] = round(summary.performance.final_equity, 2)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=date.fromisoformat, default=None)
    parser.add_argument("--end", type=date.fromisoformat, default=None)
    add_config_arguments(parser)
    args = parser.parse_args()
    configure_logging("error", "json")
    report = asyncio.run(_run(args.start, args.end, args.config, args.in_process))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
