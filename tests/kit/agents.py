"""Stub agents that exercise the supervisor: well-behaved, flaky, broken, slow."""

from __future__ import annotations

import asyncio
import os
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from contracts import Bar
from engine.agent import Agent, NoParams


class EchoParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sigma: float = Field(default=0.02, gt=0)
    horizon: str = "1d"


class EchoAgent(Agent[EchoParams]):
    """Emits one signal per bar: mu = 0.001, sigma from params."""

    async def on_bar(self, bar: Bar) -> None:
        self.signal(
            bar.symbol,
            mu=0.001,
            sigma=self.params.sigma,
            horizon=self.params.horizon,
            confidence=0.5,
        )


class FlakyAgent(Agent[NoParams]):
    """Raises on every 3rd bar it sees (after emitting a signal, which must be discarded)."""

    seen = 0

    async def on_bar(self, bar: Bar) -> None:
        self.seen += 1
        self.signal(bar.symbol, mu=0.0, sigma=0.01, horizon="1d", confidence=0.5)
        if self.seen % 3 == 0:
            raise RuntimeError(f"flaky failure on bar {self.seen}")


class BrokenAgent(Agent[NoParams]):
    """Raises on every bar."""

    async def on_bar(self, bar: Bar) -> None:
        raise ValueError("permanently broken")


class BrokenStartAgent(Agent[NoParams]):
    async def on_start(self) -> None:
        raise ConnectionError("cannot reach warm-up store")

    async def on_bar(self, bar: Bar) -> None:  # pragma: no cover - never reached
        raise AssertionError("a quarantined agent must not get bars")


class SlowParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    delay_s: float = 0.05


class SlowAgent(Agent[SlowParams]):
    """Takes `delay_s` per bar (simulates a handler over its time budget)."""

    async def on_bar(self, bar: Bar) -> None:
        await asyncio.sleep(self.params.delay_s)
        self.signal(bar.symbol, mu=0.0, sigma=0.01, horizon="1d", confidence=0.5)


class InvalidSignalAgent(Agent[NoParams]):
    """Emits a signal with sigma=0, which the contract rejects."""

    async def on_bar(self, bar: Bar) -> None:
        self.signal(bar.symbol, mu=0.0, sigma=0.0, horizon="1d", confidence=0.5)


class NotAnAgent:
    pass


class HangingStartAgent(Agent[NoParams]):
    """on_start never returns (e.g. waits on a service that never answers)."""

    async def on_start(self) -> None:
        await asyncio.Event().wait()


LEAKED_SECRET_ENV = "TRADEENGINE__FEATURE_STORE__REDIS__PASSWORD"


class LeakyAgent(Agent[NoParams]):
    """Fails on every bar with an error that echoes a credential, as a client library refusing
    authentication might: the engine must mask it in logs and health reasons."""

    async def on_bar(self, bar: Bar) -> None:
        secret = os.environ.get(LEAKED_SECRET_ENV, "")
        raise ConnectionError(f"AUTH failed for password {secret!r} at redis://cache:6379")


class BrokenStepEndAgent(EchoAgent):
    """Echoes every bar, and its end-of-step hook always raises."""

    async def on_step_end(self, ts: datetime) -> None:
        raise RuntimeError(f"step end failed at {ts.isoformat()}")
