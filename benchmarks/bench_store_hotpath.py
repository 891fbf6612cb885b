"""The feature-store calls of one replay step, timed per call on the embedded backend.

What a default replay does each step (8,313 of them for 1990-2022), with realistic rows:

- ``agent_put_many``: an agent's indicator rows, 20 symbols x 2 finite floats, with the drift
  monitor's sampled write observer installed (as the engine does); 10 agents per step.
- ``regime_put_many``: the regime service's labels, 21 entities x (str + 3 floats, NaN allowed).
- ``market_put_many``: the pipeline's market rows, 20 symbols x (close, 60 trailing returns with
  NaN gaps, vol_20d).
- ``market_get_many``: the pipeline's read back of (returns, vol_20d) for 12 symbols.
- ``regime_get_many``: the label read of 13 entities (the pipeline's and the regime reader's).
- ``step``: all of the above in the order of one step (10 agent writes).

Coroutines are driven with ``send(None)`` (the memory backend never suspends), so the figures
are the store's own CPU cost, without an event loop. Each figure is the best of ``--repeat``
timings of ``--number`` calls, in microseconds per call (best-of: the machine is noisy, and the
minimum is the figure least disturbed by other processes).

Ceiling, measured in the same run: the same calls on a bare dict of dicts (``raw_dict_us``:
rows merged with ``dict.update``, reads by key lookups; no validation, keys, timestamps or
observer), the least any in-process store could do; ``over_raw`` is the store's multiple of it.

    .venv/bin/python benchmarks/bench_store_hotpath.py [--number 2000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.app import _sampled  # noqa: E402
from engine.features import FeatureField, FeatureSet, FieldType  # noqa: E402
from engine.features.drift import DriftMonitor  # noqa: E402
from engine.features.market import MARKET, realized_vols  # noqa: E402
from engine.features.store import MemoryFeatureStore  # noqa: E402
from engine.regime import MARKET_ENTITY, REGIME  # noqa: E402
from engine.telemetry.logging import get_logger  # noqa: E402

SYMBOLS = [f"SYM{i:02d}" for i in range(20)]
AGENT = FeatureSet(
    "bench_agent",
    1,
    (FeatureField("score", FieldType.FLOAT), FeatureField("vol_daily", FieldType.FLOAT)),
)


def _drive(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the store suspended: not the memory backend's hot path")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    rng = np.random.default_rng(7)
    store = MemoryFeatureStore(namespace="bench")
    drift = DriftMonitor(window=500, psi_threshold=0.2, ks_threshold=0.1, log=get_logger("bench"))
    store.write_observer = _sampled(drift.observe, 10)
    ts0 = datetime(2000, 1, 3, tzinfo=UTC)
    steps = [ts0 + timedelta(days=i) for i in range(64)]
    step_i = [0]

    def ts() -> datetime:
        step_i[0] += 1
        return steps[step_i[0] % len(steps)]

    agent_rows = [
        {s: {"score": float(rng.normal()), "vol_daily": float(rng.uniform(0.005, 0.03))}}
        for s in SYMBOLS
    ]
    agent_batch = {s: row[s] for row in agent_rows for s in row}
    regime_rows = {
        e: {
            "label": "calm_up",
            "vol_daily": float(rng.uniform(0.005, 0.03)),
            "vol_ratio": float("nan") if i % 7 == 0 else float(rng.uniform(0.5, 2)),
            "trend_z": float(rng.normal()),
        }
        for i, e in enumerate([*SYMBOLS, MARKET_ENTITY])
    }
    trailing = rng.normal(0, 0.01, (20, 60))
    trailing[::5, :25] = np.nan  # symbols with a short history
    vols = realized_vols(trailing)

    def market_rows() -> dict[str, dict[str, object]]:
        return {
            s: {"close": 100.0 + i, "returns": trailing[i], "vol_20d": float(vols[i])}
            for i, s in enumerate(SYMBOLS)
        }

    wanted = SYMBOLS[:12]
    labels_of = [*wanted, MARKET_ENTITY]

    def agent_put() -> None:
        _drive(store.put_many(AGENT, agent_batch, ts=ts()))

    def regime_put() -> None:
        _drive(store.put_many(REGIME, regime_rows, ts=ts()))

    def market_put() -> None:
        _drive(store.put_many(MARKET, market_rows(), ts=ts()))

    def market_get() -> None:
        _drive(store.get_many(MARKET, wanted, ("returns", "vol_20d")))

    def regime_get() -> None:
        _drive(store.get_many(REGIME, labels_of, ("label",)))

    def step() -> None:
        t = ts()
        _drive(store.put_many(REGIME, regime_rows, ts=t))
        for _ in range(10):
            _drive(store.put_many(AGENT, agent_batch, ts=t))
        _drive(store.put_many(MARKET, market_rows(), ts=t))
        _drive(store.get_many(MARKET, wanted, ("returns", "vol_20d")))
        _drive(store.get_many(REGIME, labels_of, ("label",)))
        _drive(store.get_many(REGIME, labels_of, ("label",)))

    # Rows the reads find (written once before timing).
    regime_put()
    market_put()
    cases: dict[str, Callable[[], None]] = {
        "agent_put_many": agent_put,
        "regime_put_many": regime_put,
        "market_put_many": market_put,
        "market_get_many": market_get,
        "regime_get_many": regime_get,
        "step": step,
    }
    raw: dict[str, dict[str, dict[str, object]]] = {}

    def raw_put(table: str, rows: dict[str, dict[str, object]]) -> None:
        hashes = raw.setdefault(table, {})
        for entity, values in rows.items():
            hashes.setdefault(entity, {}).update(values)

    def raw_get(table: str, entities: list[str], names: tuple[str, ...]) -> None:
        hashes = raw[table]
        {e: {n: hashes[e][n] for n in names if n in hashes[e]} for e in entities}

    def raw_step() -> None:
        raw_put("regime", regime_rows)
        for _ in range(10):
            raw_put("agent", agent_batch)
        raw_put("market", market_rows())
        raw_get("market", wanted, ("returns", "vol_20d"))
        raw_get("regime", labels_of, ("label",))
        raw_get("regime", labels_of, ("label",))

    raw_step()
    ceilings: dict[str, Callable[[], None]] = {
        "agent_put_many": lambda: raw_put("agent", agent_batch),
        "regime_put_many": lambda: raw_put("regime", regime_rows),
        "market_put_many": lambda: raw_put("market", market_rows()),
        "market_get_many": lambda: raw_get("market", wanted, ("returns", "vol_20d")),
        "regime_get_many": lambda: raw_get("regime", labels_of, ("label",)),
        "step": raw_step,
    }
    out: dict[str, float] = {}
    raw_us: dict[str, float] = {}
    for name, fn in cases.items():
        number = max(1, args.number // 10) if name == "step" else args.number
        for table, f in ((out, fn), (raw_us, ceilings[name])):  # alternated: same conditions
            best = min(timeit.repeat(f, number=number, repeat=args.repeat))
            table[name] = round(best / number * 1e6, 2)
    over = {name: round(out[name] / raw_us[name], 1) for name in out}
    print(
        json.dumps(
            {
                "us_per_call": out,
                "raw_dict_us": raw_us,
                "over_raw": over,
                "number": args.number,
                "repeat": args.repeat,
            }
        )
    )


if __name__ == "__main__":
    main()
