"""Topic names: built by `contracts.topics` only, with safe, encoded segments."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given

from contracts import topics

from . import names, symbols

REPO = Path(__file__).resolve().parents[2]
TOPICS_FILE = Path(topics.__file__).resolve()

ONE_ARG_BUILDERS: dict[str, tuple[Callable[[str], str], str]] = {
    "bar": (topics.bar, "bar.{}"),
    "macro": (topics.macro, "macro.{}"),
    "post": (topics.post, "post.{}"),
    "source_watermark": (topics.source_watermark, "watermark.source.{}"),
    "agent_watermark": (topics.agent_watermark, "watermark.agent.{}"),
    "agent_status": (topics.agent_status, "agent.status.{}"),
    "opportunity": (topics.opportunity, "opportunity.{}"),
    "intent": (topics.intent, "intent.{}"),
    "order": (topics.order, "order.{}"),
    "fill": (topics.fill, "fill.{}"),
    "decision": (topics.decision, "decision.{}"),
    "signals_of": (topics.signals_of, "signal.{}.>"),
}

PATTERNS = {
    "ALL_BARS": "bar.>",
    "ALL_MACRO": "macro.>",
    "ALL_POSTS": "post.>",
    "ALL_SOURCE_WATERMARKS": "watermark.source.>",
    "ALL_AGENT_WATERMARKS": "watermark.agent.>",
    "ALL_SIGNALS": "signal.>",
    "ALL_AGENT_STATUS": "agent.status.>",
    "ALL_OPPORTUNITIES": "opportunity.>",
    "ALL_INTENTS": "intent.>",
    "ALL_ORDERS": "order.>",
    "ALL_FILLS": "fill.>",
    "ALL_DECISIONS": "decision.>",
}

BAD_SEGMENTS = ["", " ", "\t", "\n", "A B", " AAPL", "AAPL ", "*", ">", "A*", "A>B", "\u00a0"]


@pytest.mark.parametrize("name", sorted(ONE_ARG_BUILDERS))
def test_build_when_segment_is_plain_then_topic_is_expected(name: str) -> None:
    # Arrange
    build, template = ONE_ARG_BUILDERS[name]

    # Act
    topic = build("AAPL")

    # Assert
    assert topic == template.format("AAPL")


def test_build_when_signal_topic_then_agent_then_symbol() -> None:
    # Arrange / Act
    topic = topics.signal("momentum", "BRK.B")

    # Assert
    assert topic == "signal.momentum.BRK_B"


def test_build_when_decision_has_no_symbol_then_portfolio_topic() -> None:
    # Arrange / Act
    topic = topics.decision()

    # Assert
    assert topic == "decision._portfolio"
    assert topics.decision(None) == topic


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_subscribe_when_pattern_constant_then_matches_builder_prefix(name: str) -> None:
    # Arrange
    expected = PATTERNS[name]

    # Act
    pattern = getattr(topics, name)

    # Assert
    assert pattern == expected


@pytest.mark.parametrize("name", sorted(ONE_ARG_BUILDERS))
@pytest.mark.parametrize("symbol", ["BRK.B", "a.b.c", "."])
def test_build_when_symbol_has_dot_then_dot_is_encoded(name: str, symbol: str) -> None:
    # Arrange
    build, template = ONE_ARG_BUILDERS[name]

    # Act
    topic = build(symbol)

    # Assert
    assert topic == template.format(symbol.replace(".", "_"))
    assert topic.count(".") == template.count(".")


@pytest.mark.parametrize("name", sorted(ONE_ARG_BUILDERS))
@pytest.mark.parametrize("bad", BAD_SEGMENTS, ids=repr)
def test_build_when_segment_is_empty_blank_or_wildcard_then_value_error(
    name: str, bad: str
) -> None:
    # Arrange
    build, _ = ONE_ARG_BUILDERS[name]

    # Act / Assert
    with pytest.raises(ValueError, match="segment"):
        build(bad)


@pytest.mark.parametrize("bad", BAD_SEGMENTS, ids=repr)
def test_build_when_signal_agent_or_symbol_is_bad_then_value_error(bad: str) -> None:
    # Arrange / Act / Assert
    with pytest.raises(ValueError, match="segment"):
        topics.signal(bad, "AAPL")
    with pytest.raises(ValueError, match="segment"):
        topics.signal("momentum", bad)


@given(names, symbols)
def test_build_when_names_are_valid_contract_values_then_one_segment_each(
    agent: str, symbol: str
) -> None:
    # Arrange / Act
    topic = topics.signal(agent, symbol)

    # Assert
    assert topic.split(".") == ["signal", agent, symbol.replace(".", "_")]
    assert "*" not in topic
    assert ">" not in topic


# --- topic prefixes are spelled only in contracts/topics.py -----------------------------------


def _prefixes() -> tuple[str, ...]:
    """'bar.', 'watermark.source.', ...: derived from the module's own subscription patterns."""
    return tuple(sorted(pattern.removesuffix(">") for pattern in PATTERNS.values()))


def _docstring_nodes(tree: ast.AST) -> set[int]:
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _topic_literals(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal (or f-string part) that starts like a topic."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    docstrings = _docstring_nodes(tree)
    prefixes = _prefixes()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and node.value.startswith(prefixes)
        ):
            yield node.lineno, node.value


def _python_files(*directories: str) -> list[Path]:
    return sorted(
        path
        for directory in directories
        for path in (REPO / directory).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def test_scan_when_reading_topics_module_then_its_prefixes_are_found() -> None:
    # Arrange
    path = TOPICS_FILE

    # Act
    found = {text for _, text in _topic_literals(path)}

    # Assert: the scanner really sees the spellings (f-string parts included)
    assert {"bar.", "signal.", "watermark.source.", "decision._portfolio"} <= found
    assert set(PATTERNS.values()) <= found


def test_scan_when_engine_plugins_config_contracts_read_then_no_topic_literal_outside_topics() -> (
    None
):
    # Arrange
    files = [
        path
        for path in _python_files("engine", "plugins", "config", "contracts")
        if path.resolve() != TOPICS_FILE
    ]
    assert _python_files("engine", "plugins"), "the scan must have engine/plugins code to read"

    # Act
    offenders = [
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for path in files
        for line, text in _topic_literals(path)
    ]

    # Assert
    assert offenders == [], (
        "topic names must be built with contracts.topics, not typed as strings:\n"
        + "\n".join(offenders)
    )
