"""Run control: the engine announcing the start and end of a run to processes outside it.

Why it exists: a remote agent (``tradeengine agent run``) reads a Kafka topic that outlives any
one run. It must not feed an agent the leftovers of an earlier run, and the engine must not
take a stale agent's watermark as progress. The engine therefore announces each run with a
`RunControl` (a fresh `run_id`), repeats the announcement until every remote agent has joined,
and closes the run with ``event = "ended"``. Everything a remote agent sends back carries the
run id, so the engine can refuse what belongs to another run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from contracts.base import Contract, Name


class RunControl(Contract):
    """The start (``started``) or end (``ended``) of engine run `run_id`."""

    schema_version: Literal[1] = 1
    run_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
    event: Literal["started", "ended"]
    engine: Name
    agents: tuple[Name, ...] = ()
    """The remote agents the run waits for."""


__all__ = ["RunControl"]
