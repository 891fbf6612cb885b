"""The calibration table of the twelve bundled agents on the bundled real data.

Runs each agent on its full real data exactly as `tests/agents/test_calibration_report.py`
does (same registry, same harness, same scoring) and prints a Markdown table - every calibrated
forecast, then the part emitted by default (positive confidence) - followed by the same rows as
JSON. Takes about two minutes.

    .venv/bin/python benchmarks/calibration_report.py [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.calibration_report import (  # noqa: E402
    MARKDOWN_HEADER,
    PriceHistory,
    calibration_report,
)
from engine.telemetry.logging import configure_logging  # noqa: E402
from tests.agents import SPECS, full_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="agents to report (default: all twelve)")
    args = parser.parse_args()
    configure_logging("error", "json")
    names = args.names or [spec.name for spec in SPECS]
    rows = []
    emitted_rows = []
    for name in names:
        t0 = time.perf_counter()
        run = full_run(name)
        prices = PriceHistory(run.bars)
        rows.append(calibration_report(name, run.signals, prices))
        emitted_rows.append(
            calibration_report(name, [s for s in run.signals if s.confidence > 0.0], prices)
        )
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    print("Every calibrated forecast:\n")
    print(MARKDOWN_HEADER)
    for row in rows:
        print(row.markdown())
    print("\nEmitted by default (confidence > 0):\n")
    print(MARKDOWN_HEADER)
    for row in emitted_rows:
        print(row.markdown())
    print()
    print(
        json.dumps(
            {
                "every_forecast": [r.as_dict() for r in rows],
                "emitted": [r.as_dict() for r in emitted_rows],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
