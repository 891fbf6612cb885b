"""Shared test helpers: stepping the loop deterministically and draining mailboxes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from engine.bus import Delivery, Subscription

T = TypeVar("T")


async def settle(steps: int = 10) -> None:
    """Let every ready task run until it blocks (no timers, no I/O: steps, not time)."""
    for _ in range(steps):
        await asyncio.sleep(0)


async def finish(coro: Coroutine[Any, Any, T], max_steps: int = 200_000) -> T:
    """Run `coro` to completion within a budget of loop steps.

    A lost wake-up or a deadlock then fails the test instead of hanging it, without any
    reference to wall-clock time.
    """
    task = asyncio.ensure_future(coro)
    for _ in range(max_steps):
        if task.done():
            return task.result()
        await asyncio.sleep(0)
    task.cancel()
    raise AssertionError(f"not done after {max_steps} loop steps: deadlock or lost wake-up")


def drain(sub: Subscription) -> list[Delivery]:
    """Take everything currently queued, without waiting."""
    items = []
    while sub.depth:
        items.append(sub.get_nowait())
    return items
