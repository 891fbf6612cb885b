"""``python -m engine.workers``: an agent worker process (started by the engine, not by hand)."""

from __future__ import annotations

import asyncio
import sys

from engine.gc_policy import run_gc_policy
from engine.workers.host import serve


def main() -> int:
    with run_gc_policy():  # the process exists for one run, as `tradeengine run`'s does
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            return asyncio.run(serve())
        return uvloop.run(serve())


if __name__ == "__main__":
    sys.exit(main())
