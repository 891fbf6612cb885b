"""The event loop the benchmarks run on: uvloop where it is installed (as `tradeengine run`
uses it), else asyncio's default; ``--no-uvloop`` forces the default."""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import Callable


def loop_factory(no_uvloop: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """(factory for `asyncio.Runner`, None for the default loop; the loop's name and version)."""
    if not no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop, f"uvloop {importlib.metadata.version('uvloop')}"
    return None, "asyncio"
