"""Every bus topic name the engine uses, built by functions so no name is typed twice.

Topics are dotted; a segment never contains '.', '*', '>' or whitespace. Symbols may contain '.'
(BRK.B), so segments are encoded by replacing '.' with '_'; the message itself always carries the
exact symbol, the topic is only for routing. Wildcards for subscriptions: '*' one segment,
'>' the rest.
"""

from __future__ import annotations

import re

_BAD = re.compile(r"[\s*>]")


def segment(value: str) -> str:
    """Encode one topic segment."""
    if not value:
        raise ValueError("topic segment must not be empty")
    if _BAD.search(value):
        raise ValueError(f"topic segment {value!r} contains whitespace, '*' or '>'")
    return value.replace(".", "_")


def bar(symbol: str) -> str:
    return f"bar.{segment(symbol)}"


def macro(series: str) -> str:
    return f"macro.{segment(series)}"


def post(source: str) -> str:
    return f"post.{segment(source)}"


def source_watermark(source: str) -> str:
    return f"watermark.source.{segment(source)}"


def agent_watermark(agent: str) -> str:
    return f"watermark.agent.{segment(agent)}"


def stage_watermark(stage: str) -> str:
    """A stage's promise that its output for every step up to the watermark is published."""
    return f"watermark.stage.{segment(stage)}"


def signal(agent: str, symbol: str) -> str:
    return f"signal.{segment(agent)}.{segment(symbol)}"


def agent_status(agent: str) -> str:
    return f"agent.status.{segment(agent)}"


def opportunity(symbol: str) -> str:
    return f"opportunity.{segment(symbol)}"


def intent(symbol: str) -> str:
    return f"intent.{segment(symbol)}"


def order(symbol: str) -> str:
    return f"order.{segment(symbol)}"


def fill(symbol: str) -> str:
    return f"fill.{segment(symbol)}"


def decision(symbol: str | None = None) -> str:
    return f"decision.{segment(symbol)}" if symbol is not None else "decision._portfolio"


def run_control() -> str:
    """The engine's run start/end announcements (`RunControl`)."""
    return "run.control"


# Subscription patterns.
ALL_BARS = "bar.>"
ALL_MACRO = "macro.>"
ALL_POSTS = "post.>"
ALL_SOURCE_WATERMARKS = "watermark.source.>"
ALL_AGENT_WATERMARKS = "watermark.agent.>"
ALL_STAGE_WATERMARKS = "watermark.stage.>"
ALL_SIGNALS = "signal.>"
ALL_AGENT_STATUS = "agent.status.>"
ALL_OPPORTUNITIES = "opportunity.>"
ALL_INTENTS = "intent.>"
ALL_ORDERS = "order.>"
ALL_FILLS = "fill.>"
ALL_DECISIONS = "decision.>"


def signals_of(agent: str) -> str:
    return f"signal.{segment(agent)}.>"
