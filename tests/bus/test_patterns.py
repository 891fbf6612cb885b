"""Topic and pattern grammar: which topics a pattern matches, and what is rejected."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.bus import MessageBus, topic_matches, validate_pattern, validate_topic

MATCH_TABLE = [
    # exact segments
    ("bar.AAPL", "bar.AAPL", True),
    ("bar.AAPL", "bar.MSFT", False),
    ("bar.aapl", "bar.AAPL", False),
    ("bar", "bar.AAPL", False),
    ("bar.AAPL", "bar", False),
    ("watermark.replay", "watermark.replay", True),
    ("watermark.replay", "watermark.replay.x", False),
    ("bar.BRK_B", "bar.BRK_B", True),
    # '*' is exactly one segment
    ("bar.*", "bar.AAPL", True),
    ("bar.*", "bar", False),
    ("bar.*", "bar.AAPL.1m", False),
    ("*", "bar", True),
    ("*", "bar.AAPL", False),
    ("*.*", "bar.AAPL", True),
    ("*.AAPL", "bar.AAPL", True),
    ("*.AAPL", "signal.momentum.AAPL", False),
    ("signal.*.AAPL", "signal.momentum.AAPL", True),
    ("signal.*.AAPL", "signal.momentum.MSFT", False),
    ("signal.*.AAPL", "signal.AAPL", False),
    ("*.*.*", "signal.momentum.AAPL", True),
    # '>' is one or more trailing segments
    ("bar.>", "bar.AAPL", True),
    ("bar.>", "bar.AAPL.1m.x", True),
    ("bar.>", "bar", False),
    ("bar.>", "barx.AAPL", False),
    (">", "bar", True),
    (">", "signal.momentum.AAPL", True),
    ("bar.AAPL.>", "bar.AAPL", False),
    ("signal.*.>", "signal.momentum.AAPL", True),
    ("signal.*.>", "signal.momentum", False),
    ("*.>", "watermark.replay", True),
    ("*.>", "watermark", False),
    ("watermark.>", "watermark.source.replay", True),
    ("signal.>", "bar.AAPL", False),
]

INVALID_PATTERNS = [
    "",
    ".",
    "bar.",
    ".bar",
    "bar..AAPL",
    "bar.>.AAPL",
    ">.bar",
    "bar.>>",
    "ba*",
    "bar.A*",
    "bar.**",
    "bar.*>",
    "bar. AAPL",
    "bar.AA PL",
    " bar",
    "bar.AAPL\n",
    "bar.\tAAPL",
]

INVALID_TOPICS = [
    "",
    ".",
    "bar.",
    ".bar",
    "bar..AAPL",
    "bar.*",
    "bar.>",
    "*",
    ">",
    "bar.A*",
    "bar.>AAPL",
    "bar AAPL",
    "bar.AAPL ",
    "bar.\u00a0",
    "bar.AAPL\x00",
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCH_TABLE)
def test_match_when_pattern_and_topic_given_then_result_follows_table(
    pattern: str, topic: str, expected: bool
) -> None:
    # Arrange (the table row)
    # Act
    result = topic_matches(pattern, topic)
    # Assert
    assert result is expected


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCH_TABLE)
async def test_publish_when_pattern_and_topic_given_then_delivery_follows_table(
    pattern: str, topic: str, expected: bool
) -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe(pattern, name="s")
    # Act
    await bus.publish(topic, "m")
    # Assert
    assert sub.depth == (1 if expected else 0)
    assert bus.stats().topics[topic].unrouted == (0 if expected else 1)


@pytest.mark.parametrize("pattern", INVALID_PATTERNS)
def test_subscribe_when_pattern_invalid_then_value_error_names_it(pattern: str) -> None:
    # Arrange
    bus = MessageBus()
    # Act / Assert
    with pytest.raises(ValueError, match=re.escape(repr(pattern))):
        bus.subscribe(pattern, name="s")
    assert bus.stats().subscriptions == {}


@pytest.mark.parametrize("topic", INVALID_TOPICS)
async def test_publish_when_topic_invalid_then_value_error_names_it(topic: str) -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe(">", name="all")
    # Act / Assert
    with pytest.raises(ValueError, match=re.escape(repr(topic))):
        await bus.publish(topic, "m")
    with pytest.raises(ValueError, match=re.escape(repr(topic))):
        bus.publish_nowait(topic, "m")
    assert sub.depth == 0
    assert bus.stats().published == 0


@pytest.mark.parametrize("pattern", ["bar.*", "bar.>", ">", "*.AAPL"])
async def test_publish_when_topic_is_a_pattern_then_value_error(pattern: str) -> None:
    # Arrange
    bus = MessageBus()
    bus.subscribe(">", name="all")
    # Act / Assert
    with pytest.raises(ValueError, match="only allowed in subscription patterns"):
        await bus.publish(pattern, "m")


async def test_publish_batch_when_one_topic_invalid_then_nothing_delivered_or_counted() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe(">", name="all")
    items: list[tuple[str, object]] = [("bar.A", 1), ("bar.*", 2), ("bar.B", 3)]
    # Act / Assert
    with pytest.raises(ValueError, match=re.escape("'bar.*'")):
        await bus.publish_batch(items)
    assert sub.depth == 0
    assert bus.stats().published == 0


def test_validate_when_valid_then_returns_segments() -> None:
    # Arrange / Act
    segments = validate_topic("signal.momentum.AAPL")
    tokens = validate_pattern("signal.*.>")
    # Assert
    assert segments == ("signal", "momentum", "AAPL")
    assert tokens == ("signal", "*", ">")


def _reference_regex(pattern: str) -> re.Pattern[str]:
    """An independent formulation of the grammar: '*' one segment, '>' one or more."""
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r"[^.]+(?:\.[^.]+)*")
        else:
            parts.append(re.escape(token))
    return re.compile(r"\.".join(parts))


_segment = st.sampled_from(["a", "b", "c"])
_topic = st.lists(_segment, min_size=1, max_size=4).map(".".join)
_pattern = st.tuples(
    st.lists(st.sampled_from(["a", "b", "*"]), min_size=0, max_size=4), st.booleans()
).filter(lambda t: len(t[0]) > 0 or t[1])


@given(pattern_parts=_pattern, topic=_topic)
def test_match_when_random_pattern_and_topic_then_agrees_with_regex_reference(
    pattern_parts: tuple[list[str], bool], topic: str
) -> None:
    # Arrange
    tokens, tail = pattern_parts
    pattern = ".".join([*tokens, ">"] if tail else tokens)
    # Act
    result = topic_matches(pattern, topic)
    # Assert
    assert result == bool(_reference_regex(pattern).fullmatch(topic))


async def test_subscribe_when_several_patterns_then_one_mailbox_in_publish_order() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe(["bar.>", "watermark.source.>"], name="agent.x")
    published = [
        ("bar.AAPL", 1),
        ("signal.a.AAPL", 2),
        ("watermark.source.replay", 3),
        ("bar.MSFT", 4),
        ("watermark.source.replay", 5),
    ]
    # Act
    for topic, message in published:
        await bus.publish(topic, message)
    received = [sub.get_nowait() for _ in range(sub.depth)]
    # Assert
    assert received == [p for p in published if not p[0].startswith("signal.")]
    assert sub.pattern == "bar.> | watermark.source.>"


async def test_subscribe_when_patterns_overlap_then_message_delivered_once() -> None:
    # Arrange
    bus = MessageBus()
    sub = bus.subscribe(["bar.>", "bar.AAPL", "*.AAPL"], name="overlap")
    # Act
    await bus.publish("bar.AAPL", "m")
    # Assert
    assert sub.depth == 1
    assert sub.get_nowait() == ("bar.AAPL", "m")


def test_subscribe_when_pattern_list_empty_or_one_invalid_then_value_error() -> None:
    # Arrange
    bus = MessageBus()
    # Act / Assert
    with pytest.raises(ValueError, match="at least one pattern"):
        bus.subscribe([], name="none")
    with pytest.raises(ValueError, match="ba>"):
        bus.subscribe(["bar.>", "ba>"], name="bad")
